"""The 32-byte frame header: layout, constants, pack and parse."""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from ._errors import ErrorCode, ProtocolError

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "Flags",
    "FrameHeader",
    "MessageType",
    "pack_header",
    "pack_header_into",
    "parse_header",
]

MAGIC = b"IW"
VERSION = 1
#: magic, version, type, flags, stream, length, total, seq, timestamp_ns
HEADER = struct.Struct("<2sBBHHIIQQ")
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 32


class Flags(enum.IntFlag):
    """Frame flags (header bytes 4-5)."""

    MSGPACK = 1
    MORE = 2
    CONTINUATION = 4
    KEYFRAME = 8


KNOWN_FLAGS = int(Flags.MSGPACK | Flags.MORE | Flags.CONTINUATION | Flags.KEYFRAME)


class MessageType(enum.IntEnum):
    """Message type codes (header byte 3)."""

    HELLO = 1
    WELCOME = 2
    GOODBYE = 3
    ERROR = 4
    PING = 5
    PONG = 6
    ACK = 7
    REQUEST_KEYFRAME = 8
    STATS = 9
    POINTER = 10
    WHEEL = 11
    KEY = 12
    STATE_PATCH = 13
    VIDEO = 64
    AUDIO = 65
    TENSOR = 66
    BLOB = 67


BINARY_TYPES = frozenset({64, 65, 66, 67})
KNOWN_TYPES = frozenset(int(t) for t in MessageType)


class FrameHeader(NamedTuple):
    """A parsed frame header. For a reassembled message ``length`` is the whole message."""

    type: int
    flags: int
    stream: int
    length: int
    total: int
    seq: int
    timestamp_ns: int


_pack = HEADER.pack
_pack_into = HEADER.pack_into
_unpack_from = HEADER.unpack_from
_new = tuple.__new__


def pack_header(
    type: int,
    flags: int,
    stream: int,
    length: int,
    total: int,
    seq: int,
    timestamp_ns: int,
) -> bytes:
    """The 32 header bytes of one frame."""
    return _pack(MAGIC, VERSION, type, flags, stream, length, total, seq, timestamp_ns)


def pack_header_into(
    buffer: bytearray | memoryview,
    offset: int,
    type: int,
    flags: int,
    stream: int,
    length: int,
    total: int,
    seq: int,
    timestamp_ns: int,
) -> None:
    """Write a header into ``buffer`` at ``offset`` (no allocation)."""
    _pack_into(
        buffer, offset, MAGIC, VERSION, type, flags, stream, length, total, seq, timestamp_ns
    )


def parse_header(
    data: bytes | bytearray | memoryview, offset: int = 0, base: int = 0
) -> FrameHeader:
    """Parse and check the header at ``data[offset:]``.

    Checks magic, version, type and reserved flags; ``base + offset`` is the frame's position
    in the stream, used for the error offsets. Stream, size and chunk rules depend on the
    connection and are checked by the decoder.
    """
    magic, version, type_, flags, stream, length, total, seq, ts = _unpack_from(data, offset)
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.BAD_MAGIC, f"magic {magic!r} is not {MAGIC!r}", base + offset)
    if version != VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"framing version {version}, expected {VERSION}",
            base + offset + 2,
        )
    if type_ not in KNOWN_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"message type {type_}", base + offset + 3)
    if flags & ~KNOWN_FLAGS:
        raise ProtocolError(
            ErrorCode.RESERVED_FLAGS, f"reserved flag bits set in {flags:#06x}", base + offset + 4
        )
    return _new(FrameHeader, (type_, flags, stream, length, total, seq, ts))
