"""``FrameDecoder``: bytes in, ``(header, message)`` out. Framing, chunk reassembly, sequence
numbers and body decoding, with no handshake or credit logic (that is the connection's)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ._codec import _JSON_DECODERS, _MP_DECODERS, CONTROL_BY_TYPE, decode_body
from ._errors import ErrorCode, ProtocolError
from ._header import (
    BINARY_TYPES,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Flags,
    FrameHeader,
    parse_header,
)
from ._messages import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    StreamSpec,
    Welcome,
    default_streams,
)
from ._packets import decode_packet

__all__ = ["LARGE_FRAME", "FrameDecoder", "Received"]

# Payloads at least this large get memory of their own, so that they can be read into
# directly (``get_buffer``) and handed out without a copy.
LARGE_FRAME = 64 * 1024
_CONTROL_KINDS = frozenset({"control", "state"})
_MORE = int(Flags.MORE)
_CONT = int(Flags.CONTINUATION)
_MSGPACK = int(Flags.MSGPACK)
_unpack_from = HEADER.unpack_from
_new = tuple.__new__

#: A decoded message with its header and the stream offset of its first frame.
Received = tuple[FrameHeader, Any, int]
Hook = Callable[[FrameHeader, Any, int], Any]


class _Assembly:
    __slots__ = ("at", "chunks", "filled", "header", "mem")

    def __init__(self, header: FrameHeader, at: int) -> None:
        self.header = header
        self.at = at
        self.mem = np.empty(header.total, dtype=np.uint8).data.cast("B")
        self.filled = 0
        # (offset in the message, stream offset of that chunk's payload), for error offsets
        self.chunks: list[tuple[int, int]] = []

    def stream_offset(self, body_offset: int) -> int:
        """Where byte ``body_offset`` of the reassembled message was in the stream."""
        found = self.at + HEADER_SIZE + body_offset
        for start, at in self.chunks:
            if start > body_offset:
                break
            found = at + body_offset - start
        return found


def _uninitialised(n: int) -> memoryview:
    # numpy's empty() does not zero the memory (a bytearray would).
    return np.empty(n, dtype=np.uint8).data.cast("B")


class FrameDecoder:
    """Parse frames from a byte stream and decode their messages.

    ``feed(data)`` takes bytes as they arrive (``b""`` is end of stream) and ``next()``
    returns ``(header, message, offset)`` or ``None``. A :class:`ProtocolError` is raised by
    ``next()`` once the messages before the bad frame have been taken, and on every call
    after. Payloads of binary packets that arrive whole in one ``feed`` are views into the
    fed object: do not modify it afterwards.
    """

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        streams: Iterable[StreamSpec] | None = None,
        on_message: Hook | None = None,
    ) -> None:
        self._max_frame_size = max_frame_size
        self._max_message_size = max_message_size
        self._fast_limit = min(max_frame_size, max_message_size, LARGE_FRAME - 1)
        self._kinds: dict[int, str] = {}
        self.set_streams(default_streams() if streams is None else streams)
        self._on_message = on_message
        self._next_seq: dict[int, int] = {}
        self._asm: dict[int, _Assembly] = {}
        self._stage = bytearray()  # a partial header, or a partial small payload
        self._hdr: FrameHeader | None = None  # header whose payload is being received
        self._frame_at = 0  # stream offset of the current frame
        self._target: memoryview | None = None  # where the current payload is being written
        self._filled = 0
        self._offset = 0  # stream offset of the next byte
        self._ready: deque[Received | ProtocolError] = deque()
        self._failed: ProtocolError | None = None
        self._ended = False
        self._rbuf: bytearray | None = None
        self._lent_target = False
        self._last_large = False  # the last frame was large or a chunk

    # ------------------------------------------------------------------ configuration

    def set_streams(self, streams: Iterable[StreamSpec]) -> None:
        """Replace the stream table (ids and kinds) frames are checked against."""
        self._kinds = {s.id: s.kind for s in streams}

    @property
    def max_frame_size(self) -> int:
        """Largest frame payload accepted (``frame_too_large`` beyond)."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int) -> None:
        self._max_frame_size = value
        self._fast_limit = min(value, self._max_message_size, LARGE_FRAME - 1)

    @property
    def max_message_size(self) -> int:
        """Largest message accepted, over all its chunks (``message_too_large`` beyond)."""
        return self._max_message_size

    @max_message_size.setter
    def max_message_size(self, value: int) -> None:
        self._max_message_size = value
        self._fast_limit = min(self._max_frame_size, value, LARGE_FRAME - 1)

    @property
    def offset(self) -> int:
        """Bytes received so far."""
        return self._offset

    @property
    def failed(self) -> ProtocolError | None:
        """The error that stopped decoding, if any."""
        return self._failed

    @property
    def idle(self) -> bool:
        """True at a frame boundary with no chunked message half received."""
        return self._hdr is None and not self._stage and not self._asm

    # ------------------------------------------------------------------ output

    def next(self) -> Received | None:
        """The next decoded message, ``None`` if more bytes are needed."""
        if self._ready:
            item = self._ready.popleft()
            if isinstance(item, ProtocolError):
                raise item
            return item
        if self._failed is not None:
            raise self._failed
        return None

    def __len__(self) -> int:
        return len(self._ready)

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes | bytearray | memoryview, *, volatile: bool = False) -> None:
        """Take received bytes; ``b""`` means the stream ended.

        ``volatile`` says the caller will reuse ``data``'s memory, so nothing may keep a view
        of it.
        """
        if self._failed is not None or self._ended:
            return
        mv = data if isinstance(data, memoryview) else memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if not mv.nbytes:
            self._end()
            return
        try:
            self._feed(mv, volatile)
        except ProtocolError as exc:
            self._fail(exc)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer to receive into, then call :meth:`buffer_updated` (the shape of
        ``asyncio.BufferedProtocol``). Inside a large or chunked payload this is the memory
        the payload will be handed out in, so the bytes are never copied."""
        if self._target is not None and self._filled < len(self._target):
            self._lent_target = True
            return self._target[self._filled :]
        self._lent_target = False
        if self._rbuf is None:
            self._rbuf = bytearray(LARGE_FRAME)
        if self._hdr is None and self._last_large:
            # Large frames tend to come in runs (the chunks of a big message): read only the
            # header, so that the payload after it is read straight into its own memory.
            # Below LARGE_FRAME a copy costs less than the extra read.
            return memoryview(self._rbuf)[: HEADER_SIZE - len(self._stage)]
        return memoryview(self._rbuf)

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written into the buffer from :meth:`get_buffer`."""
        if self._lent_target:
            self._lent_target = False
            if self._failed is not None or nbytes <= 0:
                return
            self._filled += nbytes
            self._offset += nbytes
            try:
                hdr, target = self._hdr, self._target
                if hdr is not None and target is not None and self._filled >= len(target):
                    self._payload_done(hdr, target, False)
            except ProtocolError as exc:
                self._fail(exc)
            return
        assert self._rbuf is not None
        if nbytes > 0:
            self.feed(memoryview(self._rbuf)[:nbytes], volatile=True)

    # ------------------------------------------------------------------ internals

    def _fail(self, exc: ProtocolError) -> None:
        self._failed = exc
        self._ready.append(exc)
        self._stage.clear()
        self._target = None
        self._asm.clear()

    def _end(self) -> None:
        self._ended = True
        if self._hdr is not None or self._stage:
            self._fail(
                ProtocolError(
                    ErrorCode.TRUNCATED, "the stream ended inside a frame", self._frame_at
                )
            )
        elif self._asm:
            first = min(a.at for a in self._asm.values())
            self._fail(
                ProtocolError(
                    ErrorCode.TRUNCATED, "the stream ended inside a chunked message", first
                )
            )
        else:
            from ._events import ConnectionClosed

            self._ready.append((FrameHeader(0, 0, 0, 0, 0, 0, 0), ConnectionClosed(), self._offset))

    def _feed(self, mv: memoryview, volatile: bool) -> None:
        pos = 0
        n = mv.nbytes
        stage = self._stage
        next_seq = self._next_seq
        while pos < n:
            hdr = self._hdr
            if hdr is None and not stage and n - pos >= HEADER_SIZE:
                # Fast path: a whole, small, unchunked control frame with nothing unusual about
                # it. Anything else (including every error) takes the general path below.
                magic, version, type_, flags, stream, length, total, seq, ts = _unpack_from(mv, pos)
                end = pos + HEADER_SIZE + length
                if (
                    end <= n
                    and magic == MAGIC
                    and version == VERSION
                    and flags <= _MSGPACK
                    and type_ in CONTROL_BY_TYPE
                    and length == total
                    and length <= self._fast_limit
                    and self._kinds.get(stream) in _CONTROL_KINDS
                    and seq == next_seq.get(stream, 0)
                    and stream not in self._asm
                ):
                    at = self._frame_at = self._offset
                    next_seq[stream] = seq + 1
                    self._last_large = False
                    payload = mv[pos + HEADER_SIZE : end]
                    pos = end
                    self._offset += HEADER_SIZE + length
                    try:
                        message = (_MP_DECODERS if flags else _JSON_DECODERS)[type_].decode(payload)
                    except ValueError as exc:  # DecodeError; UnicodeDecodeError on bad UTF-8
                        name = CONTROL_BY_TYPE[type_].__name__
                        raise ProtocolError(
                            ErrorCode.INVALID_PAYLOAD, f"{name}: {exc}", at + HEADER_SIZE
                        ) from None
                    self._deliver(
                        _new(FrameHeader, (type_, flags, stream, length, total, seq, ts)),
                        message,
                        at,
                    )
                    continue
            if hdr is None:
                if stage:
                    take = min(HEADER_SIZE - len(stage), n - pos)
                    stage += mv[pos : pos + take]
                    pos += take
                    self._offset += take
                    if len(stage) < HEADER_SIZE:
                        return
                    hdr = self._header(stage, 0)
                    stage.clear()
                elif n - pos >= HEADER_SIZE:
                    self._frame_at = self._offset
                    hdr = self._header(mv, pos)
                    pos += HEADER_SIZE
                    self._offset += HEADER_SIZE
                else:
                    self._frame_at = self._offset
                    stage += mv[pos:]
                    self._offset += n - pos
                    return
                self._hdr = hdr
                if not self._start_payload(hdr):  # an empty payload, already done
                    continue
            length = hdr.length
            target = self._target
            if target is not None:
                if (
                    not self._filled
                    and not volatile
                    and n - pos >= length
                    and not hdr.flags & (_MORE | _CONT)
                ):
                    # The whole large payload is here: hand out a view, drop the fresh memory.
                    self._target = None
                    self._payload_done(hdr, mv[pos : pos + length], False)
                    pos += length
                    self._offset += length
                    continue
                take = min(length - self._filled, n - pos)
                target[self._filled : self._filled + take] = mv[pos : pos + take]
                self._filled += take
                pos += take
                self._offset += take
                if self._filled < length:
                    return
                self._payload_done(hdr, target, False)
                continue
            if not stage and n - pos >= length:
                self._payload_done(hdr, mv[pos : pos + length], volatile)
                pos += length
                self._offset += length
                continue
            take = min(length - len(stage), n - pos)
            stage += mv[pos : pos + take]
            pos += take
            self._offset += take
            if len(stage) < length:
                return
            body = bytes(stage)
            stage.clear()
            self._payload_done(hdr, memoryview(body), False)

    def _header(self, data: bytearray | memoryview, pos: int) -> FrameHeader:
        at = self._frame_at
        hdr = parse_header(data, pos, at - pos)
        type_, flags, stream, length, total, seq, ts = hdr
        kind = self._kinds.get(stream)
        if kind is None:
            raise ProtocolError(ErrorCode.UNKNOWN_STREAM, f"stream {stream} is not open", at + 6)
        if length > self.max_frame_size:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {length} bytes; the limit is {self.max_frame_size}",
                at + 8,
            )
        if total > self.max_message_size:
            raise ProtocolError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"message of {total} bytes; the limit is {self.max_message_size}",
                at + 12,
            )
        if (type_ in BINARY_TYPES) == (kind in _CONTROL_KINDS):
            what = "binary packet" if type_ in BINARY_TYPES else "control message"
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                f"a {what} (type {type_}) on {kind} stream {stream}",
                at + HEADER_SIZE,
            )
        asm = self._asm.get(stream)
        if flags & _CONT:
            if asm is None:
                raise ProtocolError(ErrorCode.BAD_CHUNK, "a continuation without a start", at + 4)
            first = asm.header
            if (
                type_ != first.type
                or seq != first.seq
                or total != first.total
                or ts != first.timestamp_ns
            ):
                raise ProtocolError(
                    ErrorCode.BAD_CHUNK,
                    "a continuation whose type, seq, total or timestamp differs from its start",
                    at + 4,
                )
            end = asm.filled + length
            if end > total or (not flags & _MORE and end != total):
                raise ProtocolError(
                    ErrorCode.BAD_CHUNK, f"chunks add up to {end} bytes, not {total}", at + 4
                )
            return hdr
        if asm is not None:
            raise ProtocolError(ErrorCode.BAD_CHUNK, "a new message inside a chunked one", at + 4)
        expected = self._next_seq.get(stream, 0)
        if seq != expected:
            raise ProtocolError(
                ErrorCode.SEQUENCE, f"seq {seq} on stream {stream}, expected {expected}", at + 16
            )
        self._next_seq[stream] = seq + 1
        if flags & _MORE:
            if length >= total:
                raise ProtocolError(
                    ErrorCode.BAD_CHUNK, "a first chunk as long as its whole message", at + 4
                )
            self._asm[stream] = _Assembly(hdr, at)
        elif total != length:
            raise ProtocolError(
                ErrorCode.BAD_CHUNK,
                f"unchunked frame with total {total} != length {length}",
                at + 4,
            )
        return hdr

    def _start_payload(self, hdr: FrameHeader) -> bool:
        """Get ready for the payload; False when it is empty (and so already handled)."""
        self._filled = 0
        if hdr.flags & (_MORE | _CONT):
            asm = self._asm[hdr.stream]
            self._target = asm.mem[asm.filled : asm.filled + hdr.length]
        elif hdr.length >= LARGE_FRAME:
            self._target = _uninitialised(hdr.length)
        else:
            self._target = None
        if not hdr.length:
            # Nothing to wait for.
            target = self._target if self._target is not None else memoryview(b"")
            self._payload_done(hdr, target, False)
            return False
        return True

    def _payload_done(self, hdr: FrameHeader, payload: memoryview, volatile: bool) -> None:
        self._hdr = None
        self._target = None
        self._filled = 0
        at = self._frame_at
        flags = hdr.flags
        self._last_large = hdr.length >= LARGE_FRAME
        asm = None
        if flags & (_MORE | _CONT):
            asm = self._asm[hdr.stream]
            asm.chunks.append((asm.filled, at + HEADER_SIZE))
            asm.filled += hdr.length
            if flags & _MORE:
                return
            del self._asm[hdr.stream]
            first = asm.header
            hdr = FrameHeader(
                first.type,
                first.flags & ~_MORE,
                first.stream,
                first.total,
                first.total,
                first.seq,
                first.timestamp_ns,
            )
            payload = asm.mem
            at = asm.at
        type_ = hdr.type
        base = at + HEADER_SIZE
        if type_ in BINARY_TYPES:
            if volatile:
                payload = memoryview(payload.tobytes())
            try:
                message = decode_packet(type_, payload, base)
            except ProtocolError as exc:
                if asm is None:
                    raise
                # Point at the offending byte in the chunk that carried it.
                offset = asm.stream_offset(exc.offset - base)
                raise ProtocolError(exc.code, exc.message, offset) from None
        else:
            try:
                message = decode_body(type_, payload, bool(flags & _MSGPACK))
            except ValueError as exc:  # DecodeError; UnicodeDecodeError on bad UTF-8
                name = CONTROL_BY_TYPE[type_].__name__
                raise ProtocolError(ErrorCode.INVALID_PAYLOAD, f"{name}: {exc}", base) from None
        self._deliver(hdr, message, at)

    def _deliver(self, hdr: FrameHeader, message: Any, at: int) -> None:
        if self._on_message is not None:
            message = self._on_message(hdr, message, at)
            if message is None:
                return
        if isinstance(message, Welcome):
            # Frames after a welcome may use the streams it announced.
            self.set_streams(message.streams)
        self._ready.append((hdr, message, at))
