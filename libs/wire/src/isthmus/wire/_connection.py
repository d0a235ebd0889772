"""``Connection``: the sans-IO state machine (handshake, streams, priorities, credits)."""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from ._codec import Outgoing, control_frame
from ._decoder import FrameDecoder
from ._errors import ErrorCode, LocalProtocolError, ProtocolError
from ._events import ConnectionClosed, FramesDropped, VersionMismatch
from ._header import HEADER_SIZE, Flags, FrameHeader, MessageType
from ._messages import (
    CONTROL_MESSAGES,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    Ack,
    ControlMessage,
    Error,
    Goodbye,
    Hello,
    StreamSpec,
    Welcome,
    default_streams,
)
from ._packets import INTER_CODECS, PACKET_TYPES, VideoPacket, encode_packet

__all__ = ["HANDSHAKE_MAX_FRAME_SIZE", "Connection", "Role", "State", "StreamStats"]

_S = TypeVar("_S", bound=msgspec.Struct)

#: Largest frame accepted before the handshake has agreed on a limit.
HANDSHAKE_MAX_FRAME_SIZE = 64 * 1024
_CONTROL_KINDS = frozenset({"control", "state"})
# Control messages that need no handshake, goodbye or credit bookkeeping when sent.
_PLAIN_CONTROL = frozenset(c for c in CONTROL_MESSAGES if c not in (Hello, Welcome, Goodbye, Ack))
# Messages allowed before the handshake completes, by direction.
_EARLY = frozenset({MessageType.GOODBYE, MessageType.ERROR, MessageType.PING, MessageType.PONG})


# Plain ints and module globals for the hot paths: enum attribute lookups cost ~80 ns each.
_WELCOME = int(MessageType.WELCOME)
_GOODBYE = int(MessageType.GOODBYE)
_ACK = int(MessageType.ACK)


class Role(enum.Enum):
    """Which end of the handshake a connection plays."""

    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    """Where a connection is in its life."""

    HANDSHAKE = "handshake"  #: before the welcome
    OPEN = "open"  #: any message may flow
    CLOSING = "closing"  #: one side said goodbye
    CLOSED = "closed"  #: both said goodbye, or the stream ended
    ERROR = "error"  #: the peer broke the protocol; see ``Connection.error``


_OPEN = State.OPEN
_HANDSHAKE = State.HANDSHAKE


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Sending statistics of one stream."""

    sent: int
    dropped: int
    in_flight: int
    pending: bool
    queued: int


class _TxStream:
    __slots__ = ("acked", "dropped", "next_seq", "pending", "queue", "resync", "spec")

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.next_seq = 0
        self.acked = -1
        self.pending: Any = None
        self.resync = False
        self.dropped = 0
        # Outgoing messages, or whole prebuilt frames (small control messages)
        self.queue: deque[Outgoing | bytearray] = deque()

    @property
    def in_flight(self) -> int:
        return self.next_seq - 1 - self.acked


class Connection:
    """One end of an Isthmus wire connection. It does no I/O.

    Feed received bytes to :meth:`receive_data` and read events with :meth:`next_event` or
    :meth:`events`; hand messages to :meth:`send` (or :meth:`queue` then
    :meth:`data_to_send`) and write the buffers it returns, in order. Events are the message
    objects themselves (``Hello``, ``Pointer``, ``VideoPacket``, …) plus
    :class:`ConnectionClosed`, :class:`FramesDropped` and :class:`VersionMismatch`;
    :attr:`last_header` is the frame header of the last event.

    A client sends ``Hello`` first; a server answers it with :meth:`accept` (or
    :meth:`reject`). ``max_frame_size``, ``max_message_size`` and ``credits`` are this side's
    limits; the handshake settles on the smaller of both sides'. ``streams`` is the stream
    table a server announces (default: control, state, video, audio, data).
    """

    def __init__(
        self,
        role: Role,
        *,
        encodings: Iterable[str] | None = None,
        codecs: Iterable[str] = (),
        max_frame_size: int | None = None,
        max_message_size: int | None = None,
        credits: int | None = None,
        streams: Iterable[StreamSpec] | None = None,
        versions: Iterable[int] = (PROTOCOL_VERSION,),
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.role = role
        self.state = State.HANDSHAKE
        self.error: ProtocolError | None = None
        # What was set explicitly also caps a client's hello (see _own_hello).
        self._caps: dict[str, Any] = {
            name: value
            for name, value in (
                ("encodings", None if encodings is None else list(encodings)),
                ("max_frame_size", max_frame_size),
                ("max_message_size", max_message_size),
                ("credits", credits),
            )
            if value is not None
        }
        self.encodings = ("msgpack", "json") if encodings is None else tuple(encodings)
        self.codecs = tuple(codecs)
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE if max_frame_size is None else max_frame_size
        self.max_message_size = (
            DEFAULT_MAX_MESSAGE_SIZE if max_message_size is None else max_message_size
        )
        self.credits = 4 if credits is None else credits
        self.versions = tuple(versions)
        self.encoding = "json"  # until the welcome chooses
        self._msgpack = False
        self.peer_hello: Hello | None = None
        self.welcome: Welcome | None = None
        self.last_header: FrameHeader | None = None
        self._clock = clock
        self._streams: list[StreamSpec] = list(default_streams() if streams is None else streams)
        self._tx: dict[int, _TxStream] = {}
        self._order: list[_TxStream] = []
        self._set_tx_streams(self._streams)
        # Peers agree on limits in the handshake; until then frames stay small.
        self._peer_max_frame = HANDSHAKE_MAX_FRAME_SIZE
        self._peer_max_message = HANDSHAKE_MAX_FRAME_SIZE
        self._decoder = FrameDecoder(
            max_frame_size=HANDSHAKE_MAX_FRAME_SIZE,
            max_message_size=HANDSHAKE_MAX_FRAME_SIZE,
            streams=self._streams,
            on_message=self._on_message,
        )
        self._hello_sent = False
        self._hello_received = False
        self._goodbye_sent = False
        self._goodbye_received = False
        self._rx_credits: dict[int, int] = {s.id: s.credits for s in self._streams}
        self._rx_last: dict[int, int] = {}
        self._rx_acked: dict[int, int] = {}
        self._local: deque[Any] = deque()
        self._final: bytearray | None = None  # the goodbye frame, sent after all else

    # ================================================================== receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the peer; ``b""`` means its stream ended.

        Payloads of binary packets that arrive whole are handed out as views of ``data``:
        do not modify it afterwards (bytes from a socket read never are).
        """
        self._decoder.feed(data)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer for the transport to read into; then call :meth:`buffer_updated`.

        Inside a large payload it is the payload's own memory, so it is never copied.
        """
        return self._decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were read into the buffer from :meth:`get_buffer`."""
        self._decoder.buffer_updated(nbytes)

    def next_event(self) -> Any:
        """The next event, or ``None`` when more bytes are needed.

        Raises :class:`ProtocolError` when the peer broke the protocol, after the events that
        came before the bad frame; the connection is then in ``State.ERROR`` and keeps raising.
        """
        if self._local:
            return self._local.popleft()
        try:
            item = self._decoder.next()
        except ProtocolError as exc:
            self.state = State.ERROR
            self.error = exc
            raise
        if item is None:
            return None
        header, message, _ = item
        if isinstance(message, ConnectionClosed):
            if self.state is not State.ERROR:
                self.state = State.CLOSED
        else:
            self.last_header = header
        return message

    def events(self) -> Iterator[Any]:
        """Every event available now (see :meth:`next_event`)."""
        while (event := self.next_event()) is not None:
            yield event

    def _on_message(self, header: FrameHeader, message: Any, at: int) -> Any:
        # Runs while decoding, so that a violation stops the parser at the offending frame.
        type_ = header.type
        if self.state is _HANDSHAKE or self._goodbye_received:
            message = self._handshake_message(type_, message, at)
        elif type_ <= _WELCOME:
            raise ProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"{message.__class__.__name__} after the handshake",
                at + 3,
            )
        if type_ == _GOODBYE:
            self._goodbye_received = True
            self.state = State.CLOSED if self._goodbye_sent else State.CLOSING
        elif type_ == _ACK:
            self._on_ack(message, at)
        stream = header.stream
        credits = self._rx_credits.get(stream, 0)
        if credits:
            self._rx_last[stream] = header.seq
            if header.seq - self._rx_acked.get(stream, -1) > credits:
                raise ProtocolError(
                    ErrorCode.CREDIT_OVERRUN,
                    f"message {header.seq} on stream {stream} exceeds {credits} credits",
                    at,
                )
        return message

    def _handshake_message(self, type_: int, message: Any, at: int) -> Any:
        if self._goodbye_received:
            raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "a message after goodbye", at + 3)
        if self.role is Role.SERVER:
            if not self._hello_received:
                if type_ != MessageType.HELLO:
                    raise ProtocolError(
                        ErrorCode.UNEXPECTED_MESSAGE,
                        f"{message.__class__.__name__} before hello",
                        at + 3,
                    )
                self._hello_received = True
                self.peer_hello = message
                if message.protocol not in self.versions:
                    return self._version_mismatch(message)
                return message
            if type_ not in _EARLY:
                raise ProtocolError(
                    ErrorCode.UNEXPECTED_MESSAGE,
                    f"{message.__class__.__name__} before the welcome was sent",
                    at + 3,
                )
            return message
        if type_ == MessageType.WELCOME:
            if not self._hello_sent:
                raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "welcome before hello", at + 3)
            _check_stream_table(message.streams, at + HEADER_SIZE)
            self._apply_welcome(message)
            return message
        if type_ not in _EARLY:
            raise ProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE, f"{message.__class__.__name__} before welcome", at + 3
            )
        return message

    def _version_mismatch(self, hello: Hello) -> VersionMismatch:
        supported = ", ".join(str(v) for v in self.versions)
        reason = (
            f"protocol version {hello.protocol} is not supported; this server speaks {supported}"
        )
        self._enqueue(Error(code="version_mismatch", message=reason), 0)
        self._say_goodbye(Goodbye(code=1002, reason=reason))
        return VersionMismatch(offered=hello.protocol, supported=self.versions, reason=reason)

    def _on_ack(self, ack: Ack, at: int) -> None:
        tx = self._tx.get(ack.stream)
        if tx is None or not tx.spec.credits or not tx.acked <= ack.seq < tx.next_seq:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                f"ack of stream {ack.stream} seq {ack.seq}, which was not sent or is not credited",
                at + HEADER_SIZE,
            )
        tx.acked = ack.seq
        if tx.pending is not None and tx.in_flight < tx.spec.credits:
            (packet, encoded), tx.pending = tx.pending, None
            self._enqueue_packet(packet, tx.spec.id, encoded)

    # ================================================================== handshake

    def accept(
        self,
        hello: Hello | None = None,
        *,
        session: str = "",
        name: str = "",
        streams: Iterable[StreamSpec] | None = None,
    ) -> list[Any]:
        """Answer the client's hello with a welcome (server). Chooses the first encoding and
        the codecs of the client's lists this side supports, the smaller limits and credits;
        returns the buffers to send."""
        if self.role is not Role.SERVER:
            raise LocalProtocolError("only a server accepts")
        hello = hello if hello is not None else self.peer_hello
        if hello is None or self.state is not State.HANDSHAKE or self._goodbye_sent:
            raise LocalProtocolError("accept() needs a hello that was received and not answered")
        encoding = next((e for e in hello.encodings if e in self.encodings), "json")
        codecs = [c for c in hello.codecs if not self.codecs or c in self.codecs]
        max_frame = min(hello.max_frame_size, self.max_frame_size)
        max_message = min(hello.max_message_size, self.max_message_size)
        credits = max(1, min(hello.credits, self.credits))
        table = []
        for spec in self._streams if streams is None else streams:
            fields: dict[str, Any] = {}
            if spec.credits:
                fields["credits"] = min(spec.credits, credits)
            if spec.chunk_size > max_frame:
                fields["chunk_size"] = max_frame
            table.append(_replace(spec, **fields) if fields else spec)
        welcome = Welcome(
            session=session,
            name=name,
            encoding=encoding,
            codecs=codecs,
            max_frame_size=max_frame,
            max_message_size=max_message,
            credits=credits,
            streams=table,
        )
        self._enqueue(welcome, 0)
        self._apply_welcome(welcome)
        return self.data_to_send()

    def reject(self, reason: str, *, code: str = "rejected") -> list[Any]:
        """Refuse the client (bad token, full server …): an error and a goodbye."""
        self._enqueue(Error(code=code, message=reason), 0)
        self._say_goodbye(Goodbye(code=1008, reason=reason))
        return self.data_to_send()

    def _apply_welcome(self, welcome: Welcome) -> None:
        self.welcome = welcome
        self.state = State.OPEN
        self.encoding = welcome.encoding
        self._msgpack = welcome.encoding == "msgpack"
        self._peer_max_frame = welcome.max_frame_size
        self._peer_max_message = welcome.max_message_size
        self._decoder.max_frame_size = welcome.max_frame_size
        self._decoder.max_message_size = welcome.max_message_size
        self._streams = list(welcome.streams)
        self._set_tx_streams(self._streams)
        self._decoder.set_streams(self._streams)
        self._rx_credits = {s.id: s.credits for s in self._streams}

    def _set_tx_streams(self, streams: list[StreamSpec]) -> None:
        old = self._tx
        self._tx = {}
        for spec in streams:
            tx = old.get(spec.id)
            if tx is None:
                tx = _TxStream(spec)
            tx.spec = spec
            self._tx[spec.id] = tx
        self._order = sorted(self._tx.values(), key=lambda t: (t.spec.priority, t.spec.id))

    # ================================================================== sending

    def send(self, event: Any, *, stream: int | None = None) -> list[Any]:
        """Queue ``event`` and return every buffer that is ready to write, in order."""
        self.queue(event, stream=stream)
        return self.data_to_send()

    def queue(self, event: Any, *, stream: int | None = None) -> None:
        """Schedule ``event`` without producing bytes yet; see :meth:`data_to_send`."""
        if type(event) in _PLAIN_CONTROL and self.state is _OPEN:
            # The common case, kept short: a control message on an open connection.
            tx = self._tx.get(event.STREAM if stream is None else stream)
            if tx is not None and tx.spec.kind in _CONTROL_KINDS:
                self._enqueue(event, tx.spec.id)
                return
        if self._goodbye_sent or self.state in (State.CLOSED, State.ERROR):
            raise LocalProtocolError(
                f"cannot send {type(event).__name__}: connection is {self.state.value}"
            )
        if isinstance(event, ControlMessage):
            type_ = event.TYPE
            if isinstance(event, Hello):
                if self.role is not Role.CLIENT or self._hello_sent:
                    raise LocalProtocolError("a client sends one hello, first")
                event = self._own_hello(event)
                self._hello_sent = True
                self._peer_max_frame = HANDSHAKE_MAX_FRAME_SIZE
                self._decoder.max_frame_size = event.max_frame_size
                self._decoder.max_message_size = event.max_message_size
            elif type_ == MessageType.WELCOME:
                raise LocalProtocolError("a server answers a hello with accept()")
            elif self.state is State.HANDSHAKE and (
                type_ not in _EARLY or (self.role is Role.CLIENT and not self._hello_sent)
            ):
                raise LocalProtocolError(f"{type(event).__name__} before the handshake completed")
        elif not isinstance(event, PACKET_TYPES):
            raise TypeError(f"not an isthmus.wire message: {type(event).__name__}")
        elif self.state is State.HANDSHAKE:
            raise LocalProtocolError(f"{type(event).__name__} before the handshake completed")
        sid = event.STREAM if stream is None else stream
        tx = self._tx.get(sid)
        if tx is None:
            raise LocalProtocolError(f"stream {sid} is not in the stream table")
        if (tx.spec.kind in _CONTROL_KINDS) != isinstance(event, ControlMessage):
            raise LocalProtocolError(
                f"{type(event).__name__} cannot travel on {tx.spec.kind} stream {sid}"
            )
        if type(event) is Goodbye:
            self._say_goodbye(event)
            return
        if type(event) is Ack:
            if event.seq > self._rx_last.get(event.stream, -1):
                raise LocalProtocolError(
                    f"ack of seq {event.seq} on stream {event.stream}, which was not received"
                )
            self._rx_acked[event.stream] = max(self._rx_acked.get(event.stream, -1), event.seq)
        if isinstance(event, ControlMessage):
            self._enqueue(event, sid)
            return
        # Encode (and check the size) now, so that a packet held for credits cannot fail
        # later, when an ack releases it inside receive_data().
        encoded = encode_packet(event)
        self._check_size(len(encoded[0]) + encoded[1].nbytes, event)
        if tx.spec.credits:
            self._credit_send(tx, event, encoded)
        else:
            self._enqueue_packet(event, sid, encoded)

    def _own_hello(self, hello: Hello) -> Hello:
        # Settings given to this connection take part too: the hello offers the smaller of its
        # own limits and the connection's, and only encodings and codecs this side handles.
        caps = self._caps
        fields: dict[str, Any] = {}
        if "encodings" in caps:
            fields["encodings"] = [e for e in hello.encodings if e in caps["encodings"]]
            if not fields["encodings"]:
                raise LocalProtocolError(
                    f"none of the hello's encodings {hello.encodings} is in {caps['encodings']}"
                )
        if self.codecs:
            wanted = hello.codecs or list(self.codecs)
            fields["codecs"] = [c for c in wanted if c in self.codecs]
        for name in ("max_frame_size", "max_message_size", "credits"):
            if name in caps:
                fields[name] = min(getattr(hello, name), caps[name])
        return _replace(hello, **fields) if fields else hello

    def ack(self, stream: int = 2) -> list[Any]:
        """Acknowledge everything received so far on credit stream ``stream``."""
        seq = self._rx_last.get(stream)
        if seq is None:
            raise LocalProtocolError(f"nothing received on credit stream {stream} to acknowledge")
        return self.send(Ack(stream=stream, seq=seq))

    def close(self, reason: str = "", code: int = 1000) -> list[Any]:
        """Say goodbye; returns the buffers to send: everything still queued, then the
        goodbye (it never overtakes data queued before it)."""
        if self._goodbye_sent:
            return self.data_to_send()
        return self.send(Goodbye(code=code, reason=reason))

    def goodbye_for(self, error: ProtocolError) -> list[Any]:
        """After a :class:`ProtocolError`: an error and a goodbye telling the peer why.

        This aborts: what is queued on other streams is dropped (write these buffers and
        close), and the connection stays in ``State.ERROR``. Messages already queued on the
        control stream go first, so its sequence numbers stay continuous.
        """
        if self._goodbye_sent:
            return []
        control = self._tx[0]
        for tx in self._order:
            if tx is not control:
                tx.queue.clear()
                tx.pending = None
        self._enqueue(Error(code=error.code.value, message=error.message, offset=error.offset), 0)
        self._say_goodbye(Goodbye(code=1002, reason=str(error)))
        state = self.state
        out = self.data_to_send()
        self.state = State.ERROR if self.error is not None else state
        return out

    def data_to_send(self, max_bytes: int | None = None) -> list[Any]:
        """Buffers of queued frames in priority order. With ``max_bytes``, stops after the
        frame that reaches it, so a writer that calls this between writes lets a later control
        message overtake the rest of a large packet."""
        out: list[Any] = []
        sent = 0
        order = self._order
        while True:
            for tx in order:
                if tx.queue:
                    break
            else:
                if self._final is not None:
                    # The goodbye, once everything queued before it is out.
                    out.append(self._final)
                    self._final = None
                return out
            item = tx.queue[0]
            if type(item) is bytearray:
                out.append(item)
                sent += len(item)
                tx.queue.popleft()
            else:
                assert isinstance(item, Outgoing)
                sent += item.next_frame(out)
                if item.done:
                    tx.queue.popleft()
            if max_bytes is not None and sent >= max_bytes:
                return out

    @property
    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would return anything."""
        return self._final is not None or any(tx.queue for tx in self._order)

    def stream_stats(self, stream: int) -> StreamStats:
        """Sending statistics of ``stream``."""
        tx = self._tx[stream]
        return StreamStats(
            sent=tx.next_seq,
            dropped=tx.dropped,
            in_flight=tx.in_flight,
            pending=tx.pending is not None,
            queued=len(tx.queue),
        )

    # ------------------------------------------------------------------ internals

    @property
    def goodbye_sent(self) -> bool:
        """Whether this side has said goodbye (it may send nothing more)."""
        return self._goodbye_sent

    @property
    def goodbye_received(self) -> bool:
        """Whether the peer has said goodbye."""
        return self._goodbye_received

    def _say_goodbye(self, goodbye: Goodbye) -> None:
        # The goodbye is held back until every frame queued before it has been handed out.
        sid = 0
        tx = self._tx[sid]
        seq = tx.next_seq
        self._final = control_frame(goodbye, sid, seq, self._clock(), self._msgpack)
        tx.next_seq = seq + 1
        self._goodbye_sent = True
        self.state = State.CLOSED if self._goodbye_received else State.CLOSING

    def _credit_send(self, tx: _TxStream, packet: Any, encoded: tuple[bytes, memoryview]) -> None:
        inter = isinstance(packet, VideoPacket) and packet.codec in INTER_CODECS
        # Only inter-codec non-key frames depend on others; everything else stands alone.
        key = not inter or packet.keyframe
        if not key and tx.resync:
            tx.dropped += 1  # the chain is broken until the next keyframe
            return
        if inter and key:
            tx.resync = False
        if tx.pending is None and tx.in_flight < tx.spec.credits:
            self._enqueue_packet(packet, tx.spec.id, encoded)
            return
        pending = tx.pending
        if pending is None:
            tx.pending = (packet, encoded)
            return
        if key:
            # Latest wins: a keyframe or an independent packet replaces whatever waits.
            tx.pending = (packet, encoded)
            self._dropped(tx, 1, False)
            return
        waiting = pending[0]
        if (
            not isinstance(waiting, VideoPacket)
            or waiting.codec not in INTER_CODECS
            or waiting.keyframe
        ):
            # Keep the waiting keyframe and lose this frame.
            self._dropped(tx, 1, True)
        else:
            # Two non-key frames of an inter codec: whichever is dropped, the other cannot be
            # decoded, so both go and the stream waits for a keyframe.
            tx.pending = None
            self._dropped(tx, 2, True)

    def _dropped(self, tx: _TxStream, count: int, keyframe_needed: bool) -> None:
        tx.dropped += count
        tx.resync = tx.resync or keyframe_needed
        self._local.append(
            FramesDropped(stream=tx.spec.id, count=count, keyframe_needed=keyframe_needed)
        )

    def _enqueue(self, event: ControlMessage, sid: int) -> None:
        tx = self._tx[sid]
        seq = tx.next_seq
        ts = self._clock()
        chunk = min(tx.spec.chunk_size or self._peer_max_frame, self._peer_max_frame)
        msgpack = self._msgpack and event.TYPE > _WELCOME
        try:
            frame = control_frame(event, sid, seq, ts, msgpack)
        except (OverflowError, TypeError, ValueError) as exc:  # e.g. 2**70 in a value
            raise LocalProtocolError(f"cannot encode {type(event).__name__}: {exc}") from None
        if not msgpack and type(event) in _FLOAT_FIELDS:
            _check_finite(event)
        total = len(frame) - HEADER_SIZE
        if total <= chunk and total <= self._peer_max_message:
            tx.next_seq = seq + 1
            tx.queue.append(frame)
            return
        self._check_size(total, event)
        # Larger than a chunk: cut the encoded body into frames.
        flags = Flags.MSGPACK if msgpack else 0
        body = [memoryview(frame)[HEADER_SIZE:]]
        item = Outgoing(event.TYPE, flags, sid, seq, ts, body, total, chunk)
        tx.next_seq = seq + 1
        tx.queue.append(item)

    def _enqueue_packet(self, packet: Any, sid: int, encoded: tuple[bytes, memoryview]) -> None:
        # ``encoded`` was made and size-checked by queue(), when the application sent it.
        tx = self._tx[sid]
        seq = tx.next_seq
        chunk = min(tx.spec.chunk_size or self._peer_max_frame, self._peer_max_frame)
        prefix, data = encoded
        total = len(prefix) + data.nbytes
        flags = Flags.KEYFRAME if isinstance(packet, VideoPacket) and packet.keyframe else 0
        item = Outgoing(packet.TYPE, flags, sid, seq, self._clock(), [prefix, data], total, chunk)
        tx.next_seq = seq + 1
        tx.queue.append(item)

    def _check_size(self, total: int, event: Any) -> None:
        if total > self._peer_max_message or total > 0xFFFFFFFF:
            raise LocalProtocolError(
                f"{type(event).__name__} of {total} bytes exceeds the peer's limit of "
                f"{self._peer_max_message}"
            )


# Typed float fields of control messages: JSON has no NaN or infinity (msgspec writes null, which
# the peer's typed decoder rejects), so such values are refused before they are sent.
_FLOAT_FIELDS: dict[type[ControlMessage], tuple[str, ...]] = {
    cls: names
    for cls in CONTROL_MESSAGES
    if (
        names := tuple(
            f.name for f in msgspec.structs.fields(cls) if f.type in (float, float | None)
        )
    )
}


def _check_finite(event: ControlMessage) -> None:
    for name in _FLOAT_FIELDS[type(event)]:
        value = getattr(event, name)
        if value is not None and not math.isfinite(value):
            raise LocalProtocolError(
                f"{type(event).__name__}.{name} is {value}, which JSON cannot carry"
            )


def _check_stream_table(streams: list[StreamSpec], at: int) -> None:
    """A welcome's stream table must keep stream 0 as the control stream, with unique u16 ids."""
    ids = [s.id for s in streams]
    if len(set(ids)) != len(ids) or any(not 0 <= i <= 0xFFFF for i in ids):
        raise ProtocolError(ErrorCode.INVALID_PAYLOAD, f"bad stream ids in welcome: {ids}", at)
    if not any(s.id == 0 and s.kind == "control" for s in streams):
        raise ProtocolError(
            ErrorCode.INVALID_PAYLOAD, "the welcome's stream table has no control stream 0", at
        )
    if any(s.credits < 0 or s.chunk_size < 0 for s in streams):
        raise ProtocolError(ErrorCode.INVALID_PAYLOAD, "negative credits or chunk size", at)


def _replace(struct: _S, **fields: Any) -> _S:
    return msgspec.structs.replace(struct, **fields)
