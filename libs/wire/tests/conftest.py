"""Fixtures shared by the isthmus-wire tests.

``connect`` builds a client and a server, runs the handshake and returns a :class:`Pair` that
moves bytes between them (recording every byte, so tests can compute stream offsets).
``raw`` builds frames and packet bodies by hand from the byte layout in docs/libraries/wire.md,
for peers that misbehave and for checking the layout independently of the encoder.

Both fixtures are session-scoped factories without state of their own, so hypothesis tests can
use them. Every connection made here has a counting clock, so timestamps are reproducible.
nox runs the whole suite twice: with the native buffer core and with ISTHMUS_PUREPYTHON=1.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from isthmus.buffer import IMPLEMENTATION
from isthmus.wire import (
    HEADER_SIZE,
    Connection,
    ControlMessage,
    FrameHeader,
    Hello,
    MessageType,
    ProtocolError,
    Role,
    Welcome,
    pack_header,
    parse_header,
)


def pytest_report_header() -> str:
    return f"isthmus.buffer.IMPLEMENTATION = {IMPLEMENTATION}"


def counting_clock(start: int = 1_000) -> Callable[[], int]:
    """A monotonic clock that ticks by one per call."""
    return itertools.count(start).__next__


def join(buffers: Iterable[Any]) -> bytes:
    """The bytes of a list of buffers (bytes, bytearray, memoryview or isthmus Buffer)."""
    return b"".join(bytes(memoryview(b)) for b in buffers)


def until_error(conn: Connection) -> tuple[list[Any], ProtocolError | None]:
    """The events a connection has ready, and the ProtocolError that stopped them (if any)."""
    events = []
    while True:
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            return events, exc
        if event is None:
            return events, None
        events.append(event)


@dataclass
class Pair:
    """A client and a server after the handshake, and every byte that went between them.
    ``hello`` is the hello the server received."""

    client: Connection
    server: Connection
    hello: Hello
    welcome: Welcome
    to_client_log: bytearray = field(default_factory=bytearray)
    to_server_log: bytearray = field(default_factory=bytearray)

    def deliver_to_client(self, buffers: Iterable[Any]) -> list[Any]:
        """Give ``buffers`` to the client as one read; the client's events."""
        data = join(buffers)
        self.to_client_log += data
        if data:
            self.client.receive_data(data)
        return list(self.client.events())

    def deliver_to_server(self, buffers: Iterable[Any]) -> list[Any]:
        """Give ``buffers`` to the server as one read; the server's events."""
        data = join(buffers)
        self.to_server_log += data
        if data:
            self.server.receive_data(data)
        return list(self.server.events())

    def to_client(self, max_bytes: int | None = None) -> list[Any]:
        """Move what the server has queued to the client; the client's events."""
        return self.deliver_to_client(self.server.data_to_send(max_bytes))

    def to_server(self, max_bytes: int | None = None) -> list[Any]:
        """Move what the client has queued to the server; the server's events."""
        return self.deliver_to_server(self.client.data_to_send(max_bytes))

    @property
    def client_offset(self) -> int:
        """Stream offset of the next byte the client will receive."""
        return len(self.to_client_log)

    @property
    def server_offset(self) -> int:
        """Stream offset of the next byte the server will receive."""
        return len(self.to_server_log)


def _connect(
    hello: Hello | None = None,
    *,
    client: dict[str, Any] | None = None,
    accept: dict[str, Any] | None = None,
    **server: Any,
) -> Pair:
    hello = Hello() if hello is None else hello
    c = Connection(Role.CLIENT, clock=counting_clock(1_000), **(client or {}))
    s = Connection(Role.SERVER, clock=counting_clock(5_000), **server)
    c.queue(hello)
    pair = Pair(c, s, hello, Welcome())
    (received,) = pair.to_server()
    assert isinstance(received, Hello)
    pair.hello = received  # the client's own settings may have capped what it offers
    events = pair.deliver_to_client(s.accept(received, **(accept or {})))
    assert len(events) == 1 and isinstance(events[0], Welcome)
    assert events[0] == s.welcome
    pair.welcome = events[0]
    return pair


@pytest.fixture(scope="session")
def connect() -> Callable[..., Pair]:
    """``connect(hello=None, *, client={...}, accept={...}, **server_kwargs) -> Pair``."""
    return _connect


# Default stream of each message type (docs: message types table).
DEFAULT_STREAM = {
    **{int(t): 0 for t in MessageType if t < MessageType.STATE_PATCH},
    int(MessageType.STATE_PATCH): 1,
    int(MessageType.VIDEO): 2,
    int(MessageType.AUDIO): 3,
    int(MessageType.TENSOR): 4,
    int(MessageType.BLOB): 4,
}


class Raw:
    """Frames and packet bodies built by hand from the documented byte layout."""

    MSGPACK, MORE, CONTINUATION, KEYFRAME = 1, 2, 4, 8

    @staticmethod
    def frame(
        type_: int,
        body: bytes = b"",
        *,
        stream: int | None = None,
        seq: int = 0,
        flags: int = 0,
        length: int | None = None,
        total: int | None = None,
        ts: int = 0,
    ) -> bytes:
        """One frame; ``length``/``total`` default to ``len(body)``."""
        stream = DEFAULT_STREAM[int(type_)] if stream is None else stream
        length = len(body) if length is None else length
        total = length if total is None else total
        head = struct.pack("<2sBBHHIIQQ", b"IW", 1, type_, flags, stream, length, total, seq, ts)
        assert head == pack_header(type_, flags, stream, length, total, seq, ts)
        return head + bytes(body)

    @staticmethod
    def control(
        message: ControlMessage,
        *,
        seq: int = 0,
        stream: int | None = None,
        encoding: str = "json",
        ts: int = 0,
    ) -> bytes:
        """A whole control frame, its body encoded with msgspec directly."""
        if encoding == "json":
            body, flags = msgspec.json.encode(message), 0
        else:
            body, flags = msgspec.msgpack.encode(message), Raw.MSGPACK
        return Raw.frame(message.TYPE, body, stream=stream, seq=seq, flags=flags, ts=ts)

    @staticmethod
    def chunked(
        type_: int,
        body: bytes,
        *,
        chunk: int,
        stream: int | None = None,
        seq: int = 0,
        ts: int = 0,
        flags: int = 0,
    ) -> list[bytes]:
        """A message cut into frames of ``chunk`` payload bytes (MORE / CONTINUATION flags)."""
        pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        frames = []
        for i, piece in enumerate(pieces):
            f = flags | (Raw.CONTINUATION if i else 0) | (Raw.MORE if i < len(pieces) - 1 else 0)
            frames.append(
                Raw.frame(type_, piece, stream=stream, seq=seq, flags=f, total=len(body), ts=ts)
            )
        return frames

    # --- packet bodies (docs: binary packet bodies) -----------------------------------------

    @staticmethod
    def video_body(
        data: bytes = b"",
        *,
        codec: int = 1,
        vflags: int = 0,
        reserved: int = 0,
        width: int = 0,
        height: int = 0,
        config: bytes = b"",
        config_len: int | None = None,
        pts: int = 0,
    ) -> bytes:
        n = len(config) if config_len is None else config_len
        head = struct.pack("<BBHIIIq", codec, vflags, reserved, width, height, n, pts)
        return head + config + data

    @staticmethod
    def audio_body(
        data: bytes = b"",
        *,
        rate: int = 48000,
        channels: int = 2,
        fmt: int = 1,
        codec: int = 0,
        pts: int = 0,
    ) -> bytes:
        return struct.pack("<IHBBq", rate, channels, fmt, codec, pts) + data

    @staticmethod
    def tensor_body(
        data: bytes,
        *,
        dtype: str,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        data_offset: int | None = None,
        ndim: int | None = None,
        reserved: int = 0,
    ) -> bytes:
        """Fields, dtype, shape, strides, padding to ``data_offset`` (default: the next
        multiple of 64, as senders do), then ``data``."""
        dt = dtype.encode("ascii")
        pos = 8 + (len(dt) + 7) // 8 * 8
        head = pos + 16 * len(shape)
        offset = (head + 63) // 64 * 64 if data_offset is None else data_offset
        fields = bytearray(max(offset, head))
        struct.pack_into(
            "<BBHI", fields, 0, len(shape) if ndim is None else ndim, len(dt), reserved, offset
        )
        fields[8 : 8 + len(dt)] = dt
        struct.pack_into(f"<{len(shape)}Q{len(shape)}q", fields, pos, *shape, *strides)
        return bytes(fields) + data

    @staticmethod
    def blob_body(
        data: bytes = b"",
        *,
        mime: bytes = b"application/octet-stream",
        name: bytes = b"",
        mime_len: int | None = None,
        name_len: int | None = None,
    ) -> bytes:
        m = len(mime) if mime_len is None else mime_len
        n = len(name) if name_len is None else name_len
        return struct.pack("<HH", m, n) + mime + name + data

    # --- reading ----------------------------------------------------------------------------

    @staticmethod
    def frames(data: bytes | bytearray) -> list[tuple[FrameHeader, bytes]]:
        """Split well-formed bytes into (header, payload) pairs."""
        out = []
        pos = 0
        while pos < len(data):
            header = parse_header(data, pos)
            end = pos + HEADER_SIZE + header.length
            out.append((header, bytes(data[pos + HEADER_SIZE : end])))
            pos = end
        assert pos == len(data), "the bytes end inside a frame"
        return out

    join = staticmethod(join)
    until_error = staticmethod(until_error)


@pytest.fixture(scope="session")
def raw() -> type[Raw]:
    """The :class:`Raw` frame builder."""
    return Raw
