"""The 32-byte frame header: layout, pack/parse round trips and the header checks' errors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.wire import (
    HEADER_SIZE,
    MAGIC,
    VERSION,
    ErrorCode,
    Flags,
    FrameHeader,
    MessageType,
    ProtocolError,
    pack_header,
    pack_header_into,
    parse_header,
)

U16, U32, U64 = 2**16 - 1, 2**32 - 1, 2**64 - 1
KNOWN_FLAGS = [0, 1, 2, 4, 8, 15, 1 | 8, 2 | 4]


def test_constants() -> None:
    assert HEADER_SIZE == 32
    assert MAGIC == b"IW"
    assert VERSION == 1
    assert [int(f) for f in Flags] == [1, 2, 4, 8]


def test_message_type_codes_match_the_spec() -> None:
    assert {t.name.lower(): int(t) for t in MessageType} == {
        "hello": 1,
        "welcome": 2,
        "goodbye": 3,
        "error": 4,
        "ping": 5,
        "pong": 6,
        "ack": 7,
        "request_keyframe": 8,
        "stats": 9,
        "pointer": 10,
        "wheel": 11,
        "key": 12,
        "state_patch": 13,
        "video": 64,
        "audio": 65,
        "tensor": 66,
        "blob": 67,
    }


def test_layout_is_little_endian_at_the_documented_offsets() -> None:
    data = pack_header(
        0x42,
        0x0F,
        0x0102,
        0x03040506,
        0x0708090A,
        0x1112131415161718,
        0x2122232425262728,
    )
    assert len(data) == 32
    assert data[0:2] == b"IW"
    assert data[2] == 1
    assert data[3] == 0x42
    assert data[4:6] == bytes([0x0F, 0x00])
    assert data[6:8] == bytes([0x02, 0x01])
    assert data[8:12] == bytes([0x06, 0x05, 0x04, 0x03])
    assert data[12:16] == bytes([0x0A, 0x09, 0x08, 0x07])
    assert data[16:24] == bytes.fromhex("1817161514131211")
    assert data[24:32] == bytes.fromhex("2827262524232221")


@pytest.mark.parametrize("type_", list(MessageType))
@pytest.mark.parametrize(
    "fields",
    [
        (0, 0, 0, 0, 0, 0),
        (15, U16, U32, U32, U64, U64),
        (8, 1, 1, 2**31, 2**63, 2**63 - 1),
        (2 | 4, 0x8000, U32 - 1, U32, 2**32, 2**53 + 1),
    ],
)
def test_round_trip_extreme_values(type_: MessageType, fields: tuple[int, ...]) -> None:
    flags, stream, length, total, seq, ts = fields
    data = pack_header(type_, flags, stream, length, total, seq, ts)
    header = parse_header(data)
    assert header == FrameHeader(int(type_), flags, stream, length, total, seq, ts)
    assert (header.seq, header.timestamp_ns) == (seq, ts)  # 64 bits kept, no float rounding


@settings(max_examples=200, deadline=None, database=None)
@given(
    type_=st.sampled_from(list(MessageType)),
    flags=st.sampled_from(KNOWN_FLAGS),
    stream=st.integers(0, U16),
    length=st.integers(0, U32),
    total=st.integers(0, U32),
    seq=st.integers(0, U64),
    ts=st.integers(0, U64),
    offset=st.integers(0, 40),
)
def test_pack_into_and_parse_at_an_offset(
    type_: int, flags: int, stream: int, length: int, total: int, seq: int, ts: int, offset: int
) -> None:
    buf = bytearray(b"\xaa" * (offset + HEADER_SIZE + 3))
    pack_header_into(buf, offset, type_, flags, stream, length, total, seq, ts)
    assert buf[:offset] == b"\xaa" * offset, "wrote before the offset"
    assert buf[offset + HEADER_SIZE :] == b"\xaa" * 3, "wrote past the header"
    assert bytes(buf[offset : offset + HEADER_SIZE]) == pack_header(
        type_, flags, stream, length, total, seq, ts
    )
    for data in (buf, bytes(buf), memoryview(buf)):
        assert parse_header(data, offset) == (type_, flags, stream, length, total, seq, ts)


@pytest.mark.parametrize(
    "args",
    [
        (1, 0, 2**16, 0, 0, 0, 0),  # stream is u16
        (1, 0, 0, 2**32, 0, 0, 0),  # length is u32
        (1, 0, 0, 0, 2**32, 0, 0),  # total is u32
        (1, 0, 0, 0, 0, 2**64, 0),  # seq is u64
        (1, 0, 0, 0, 0, -1, 0),
        (1, 0, 0, 0, 0, 0, 2**64),  # timestamp is u64
    ],
)
def test_pack_rejects_values_out_of_range(args: tuple[int, ...]) -> None:
    with pytest.raises(struct.error):
        pack_header(*args)


def _corrupt(byte_at: int, value: bytes) -> bytes:
    data = bytearray(pack_header(MessageType.PING, 0, 0, 0, 0, 0, 0))
    data[byte_at : byte_at + len(value)] = value
    return bytes(data)


# (header bytes, code, offset of the offending byte within the header)
BAD_HEADERS = [
    pytest.param(_corrupt(0, b"XW"), ErrorCode.BAD_MAGIC, 0, id="bad_magic-first-byte"),
    pytest.param(_corrupt(1, b"w"), ErrorCode.BAD_MAGIC, 0, id="bad_magic-second-byte"),
    pytest.param(_corrupt(0, b"WI"), ErrorCode.BAD_MAGIC, 0, id="bad_magic-swapped"),
    pytest.param(_corrupt(2, b"\x00"), ErrorCode.BAD_VERSION, 2, id="bad_version-0"),
    pytest.param(_corrupt(2, b"\x02"), ErrorCode.BAD_VERSION, 2, id="bad_version-2"),
    pytest.param(_corrupt(2, b"\xff"), ErrorCode.BAD_VERSION, 2, id="bad_version-255"),
    *(
        pytest.param(_corrupt(3, bytes([t])), ErrorCode.UNKNOWN_TYPE, 3, id=f"unknown_type-{t}")
        for t in (0, 14, 63, 68, 255)
    ),
    *(
        pytest.param(
            _corrupt(4, (1 << bit).to_bytes(2, "little")),
            ErrorCode.RESERVED_FLAGS,
            4,
            id=f"reserved_flags-bit{bit}",
        )
        for bit in range(4, 16)
    ),
]


@pytest.mark.parametrize(("data", "code", "at"), BAD_HEADERS)
@pytest.mark.parametrize(("offset", "base"), [(0, 0), (0, 1000), (7, 0), (7, 123_456_789_012)])
def test_header_check_error_code_and_offset(
    data: bytes, code: ErrorCode, at: int, offset: int, base: int
) -> None:
    """``base + offset`` is the frame's stream position; the error points at the bad field."""
    buf = b"\x00" * offset + data
    with pytest.raises(ProtocolError) as info:
        parse_header(buf, offset, base)
    assert info.value.code is code
    assert info.value.offset == base + offset + at
    assert str(info.value).startswith(f"{code.value} at offset {base + offset + at}")


def test_header_checks_report_the_first_bad_field() -> None:
    data = bytearray(pack_header(MessageType.PING, 0, 0, 0, 0, 0, 0))
    data[4] = 0x10
    data[3] = 99
    with pytest.raises(ProtocolError, match="unknown_type"):
        parse_header(data)
    data[2] = 9
    with pytest.raises(ProtocolError, match="bad_version"):
        parse_header(data)
    data[0] = 0
    with pytest.raises(ProtocolError, match="bad_magic"):
        parse_header(data)


def test_parse_leaves_connection_rules_to_the_decoder() -> None:
    """Stream ids, sizes and chunk rules depend on the connection, not on the header."""
    data = pack_header(MessageType.BLOB, Flags.CONTINUATION, 9999, U32, 3, 77, 1)
    assert parse_header(data) == (67, 4, 9999, U32, 3, 77, 1)


def test_parse_needs_32_bytes() -> None:
    with pytest.raises(struct.error):
        parse_header(pack_header(1, 0, 0, 0, 0, 0, 0)[:31])
    with pytest.raises(struct.error):
        parse_header(pack_header(1, 0, 0, 0, 0, 0, 0), 1)
