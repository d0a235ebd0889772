"""Control-message bodies (JSON / MessagePack via msgspec) and the outgoing-frame builder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar

import msgspec

from ._header import HEADER_SIZE, Flags, pack_header, pack_header_into
from ._messages import CONTROL_MESSAGES, ControlMessage

__all__ = [
    "CONTROL_BY_TYPE",
    "Codec",
    "Encoding",
    "Outgoing",
    "control_frame",
    "decode_body",
    "decode_message",
    "encode_message",
]

Encoding = Literal["msgpack", "json"]
M = TypeVar("M", bound=ControlMessage)
M_co = TypeVar("M_co", bound=ControlMessage, covariant=True)


class _TypedDecoder(Protocol[M_co]):
    def decode(self, data: bytes | bytearray | memoryview, /) -> M_co: ...


CONTROL_BY_TYPE: dict[int, type[ControlMessage]] = {int(c.TYPE): c for c in CONTROL_MESSAGES}
_MSGPACK = msgspec.msgpack.Encoder()
_JSON = msgspec.json.Encoder()
_MP_DECODERS: dict[int, msgspec.msgpack.Decoder[Any]] = {
    t: msgspec.msgpack.Decoder(c) for t, c in CONTROL_BY_TYPE.items()
}
_JSON_DECODERS: dict[int, msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(c) for t, c in CONTROL_BY_TYPE.items()
}
# The same decoders keyed by class, for decode_message (no enum-to-int conversion per call).
_BY_CLASS: dict[str, dict[type[ControlMessage], Any]] = {
    "msgpack": {c: _MP_DECODERS[t] for t, c in CONTROL_BY_TYPE.items()},
    "json": {c: _JSON_DECODERS[t] for t, c in CONTROL_BY_TYPE.items()},
}
_ENCODERS: dict[str, Any] = {"msgpack": _MSGPACK, "json": _JSON}


def encode_message(message: ControlMessage, encoding: Encoding = "msgpack") -> bytes:
    """The body of a control message (no frame header)."""
    result: bytes = _ENCODERS[encoding].encode(message)
    return result


def decode_message(
    cls: type[ControlMessage], data: bytes | bytearray | memoryview, encoding: Encoding = "msgpack"
) -> ControlMessage:
    """Decode and validate a control-message body of class ``cls``.

    Raises ``msgspec.DecodeError`` (a ``ValueError``) on invalid input.
    """
    result: ControlMessage = _BY_CLASS[encoding][cls].decode(data)
    return result


def decode_body(type_: int, data: bytes | bytearray | memoryview, msgpack: bool) -> Any:
    """Decode the body of a frame of control type ``type_``."""
    return (_MP_DECODERS if msgpack else _JSON_DECODERS)[type_].decode(data)


def control_frame(
    message: ControlMessage, stream: int, seq: int, timestamp_ns: int, msgpack: bool
) -> bytearray:
    """One whole frame (header and body) of a control message, built in one allocation."""
    buf = bytearray(HEADER_SIZE)
    (_MSGPACK if msgpack else _JSON).encode_into(message, buf, HEADER_SIZE)
    n = len(buf) - HEADER_SIZE
    pack_header_into(buf, 0, message.TYPE, 1 if msgpack else 0, stream, n, n, seq, timestamp_ns)
    return buf


class Outgoing:
    """A message on its way out: its header fields and body parts, cut into frames of at most
    ``chunk`` payload bytes (0: one frame). Payload parts are sliced, never copied."""

    __slots__ = ("chunk", "flags", "parts", "pos", "seq", "stream", "total", "ts", "type")

    def __init__(
        self,
        type_: int,
        flags: int,
        stream: int,
        seq: int,
        ts: int,
        parts: list[Any],
        total: int,
        chunk: int,
    ) -> None:
        self.type = type_
        self.flags = flags
        self.stream = stream
        self.seq = seq
        self.ts = ts
        self.parts = parts
        self.total = total
        self.chunk = chunk if 0 < chunk < total else 0
        self.pos = 0

    @property
    def done(self) -> bool:
        """Whether every byte has been handed out."""
        return self.pos >= self.total

    def next_frame(self, out: list[Any]) -> int:
        """Append the buffers of the next frame to ``out``; return its size in bytes."""
        if not self.chunk:
            # Unchunked: one header, then the parts as they are (scatter-gather). A small
            # first part (a packet's fixed fields) rides in the header's buffer.
            self.pos = self.total
            head = pack_header(
                self.type, self.flags, self.stream, self.total, self.total, self.seq, self.ts
            )
            parts = self.parts
            if parts and isinstance(parts[0], bytes) and len(parts[0]) <= 4096:
                out.append(head + parts[0])
                out.extend(p for p in parts[1:] if len(p))
            else:
                out.append(head)
                out.extend(p for p in parts if len(p))
            return HEADER_SIZE + self.total
        start = self.pos
        n = min(self.chunk, self.total - start)
        flags = self.flags
        if start:
            flags |= Flags.CONTINUATION
        if start + n < self.total:
            flags |= Flags.MORE
        out.append(pack_header(self.type, flags, self.stream, n, self.total, self.seq, self.ts))
        # Walk the parts for [start, start + n).
        want, skip = n, start
        for part in self.parts:
            size = len(part)
            if skip >= size:
                skip -= size
                continue
            take = min(size - skip, want)
            view = part if isinstance(part, memoryview) else memoryview(part)
            out.append(view[skip : skip + take])
            want -= take
            skip = 0
            if not want:
                break
        self.pos = start + n
        return HEADER_SIZE + n


class Codec:
    """Control-message bodies in one encoding, for hot loops.

    ``encode`` is msgspec's own bound encoder method and :meth:`decoder` returns msgspec's
    typed decoder for a message class, so a loop that holds them pays nothing over calling
    msgspec directly: the messages are defined once and the codec adds no layer.
    """

    __slots__ = ("_decoders", "encode", "encode_into", "encoding")

    def __init__(self, encoding: Encoding = "msgpack") -> None:
        if encoding not in _ENCODERS:
            raise ValueError(f"unknown encoding {encoding!r}; use 'msgpack' or 'json'")
        self.encoding = encoding
        encoder = _ENCODERS[encoding]
        #: ``encode(message) -> bytes``
        self.encode: Callable[[ControlMessage], bytes] = encoder.encode
        #: ``encode_into(message, buffer, offset)``: append to a bytearray in place
        self.encode_into: Callable[..., None] = encoder.encode_into
        self._decoders = _BY_CLASS[encoding]

    def decoder(self, cls: type[M]) -> _TypedDecoder[M]:
        """msgspec's decoder for ``cls``: ``codec.decoder(Pointer).decode(data)``."""
        decoder: _TypedDecoder[M] = self._decoders[cls]
        return decoder

    def decode(self, cls: type[M], data: bytes | bytearray | memoryview) -> M:
        """Decode and validate a body of class ``cls`` (raises ``msgspec.DecodeError``)."""
        result: M = self._decoders[cls].decode(data)
        return result
