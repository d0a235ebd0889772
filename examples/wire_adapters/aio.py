"""asyncio adapter for ``isthmus.wire``: a template to copy into an application.

``isthmus.wire`` does no I/O (bytes in, events out). This module puts a
:class:`~isthmus.wire.Connection` on a TCP (or TLS) socket:

* :class:`WireProtocol`, an :class:`asyncio.BufferedProtocol`. Reads go through
  ``Connection.get_buffer()`` / ``buffer_updated()``, so a large payload is read by the socket
  straight into the memory its packet's ``data`` will view: no copy on the way in.
* :class:`WireSession`, the object an application uses: ``await session.send(msg)``,
  ``async for event in session``, ``await session.close()``. One writer task per session
  calls ``data_to_send(max_bytes=write_chunk)`` in a loop, writes each batch of frames
  scatter-gather with ``transport.writelines()`` and yields to the event loop in between, so a
  control message sent while a multi-megabyte packet is on its way goes out before the packet's
  next chunk. It waits while the transport is paused (``pause_writing``/``resume_writing``),
  which keeps unsent data in the connection's priority queues rather than in a socket buffer.
* :func:`connect` and :func:`serve` (plus :func:`shutdown`) for the common client/server case.

What the session does for you: answers pings, replies to the peer's goodbye and closes, and on
a :class:`~isthmus.wire.ProtocolError` sends ``goodbye_for(error)`` (an ``error`` and a
``goodbye`` telling the peer why), closes the socket and raises the error from the event
iterator. It releases its task and socket on every path: close, error, peer gone, cancellation.

Copies: reads are zero-copy. ``writelines`` joins a batch's buffers (one copy per
``write_chunk``) on Python 3.11; on 3.12+ it hands them to ``sendmsg`` and keeps views of the
unsent rest, so never modify a packet's memory after sending it (send a copy if you must).

The session logic is transport-independent: :class:`Link` is all it needs from a transport,
and ``websocket.py`` next to this file implements it on the ``websockets`` library.

Requires Python 3.11+ and ``isthmus-wire``; nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeAlias

from isthmus.wire import (
    HEADER_SIZE,
    Ack,
    AudioChunk,
    Blob,
    Connection,
    ConnectionClosed,
    Error,
    FrameHeader,
    FramesDropped,
    Goodbye,
    Hello,
    LocalProtocolError,
    MessageType,
    Ping,
    ProtocolError,
    Role,
    Tensor,
    VersionMismatch,
    VideoPacket,
    Welcome,
    parse_header,
)

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_PENDING_EVENTS",
    "DEFAULT_WRITE_CHUNK",
    "AcceptOptions",
    "Authorize",
    "Handler",
    "HandshakeRejected",
    "Link",
    "SessionClosed",
    "WireProtocol",
    "WireSession",
    "client_handshake",
    "connect",
    "default_hello",
    "register_server",
    "serve",
    "serve_session",
    "server_sessions",
    "shutdown",
]

log = logging.getLogger(__name__)

#: Bytes the writer takes from the connection per write. Smaller: control messages overtake
#: large packets sooner; larger: fewer system calls.
DEFAULT_WRITE_CHUNK = 256 * 1024
#: Received events waiting for the application before the socket stops being read.
DEFAULT_MAX_PENDING_EVENTS = 256
#: Seconds a server waits for the hello, and a client for the welcome.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Seconds ``close()`` waits for the peer's goodbye before aborting the transport.
DEFAULT_CLOSE_TIMEOUT = 5.0

_PACKETS = (VideoPacket, AudioChunk, Tensor, Blob)

#: ``authorize(hello)``: ``True`` accepts; ``False`` or a reason string rejects. May be async.
Authorize: TypeAlias = Callable[[Hello], bool | str | Awaitable[bool | str]]
#: Keyword arguments for ``Connection.accept`` (``session``, ``name``, ``streams``), or a
#: function of the hello returning them.
AcceptOptions: TypeAlias = Mapping[str, Any] | Callable[[Hello], Mapping[str, Any]] | None
#: ``async def handler(session)``: runs once per accepted connection.
Handler: TypeAlias = Callable[["WireSession"], Awaitable[None]]


class SessionClosed(ConnectionError):
    """The session is closing or closed: nothing more can be sent."""


class HandshakeRejected(ConnectionError):
    """The server answered the hello with an ``error`` and a ``goodbye`` (a bad token, an
    unsupported protocol version …) or closed the connection before welcoming us."""

    def __init__(self, error: Error | None, goodbye: Goodbye | None) -> None:
        self.error = error
        self.goodbye = goodbye
        code = error.code if error is not None else "closed"
        reason = (error.message if error is not None else "") or (
            goodbye.reason if goodbye is not None else "the connection ended during the handshake"
        )
        super().__init__(f"{code}: {reason}")

    @property
    def events(self) -> list[Error | Goodbye]:
        """The ``error`` and ``goodbye`` the server sent, in order (either may be missing)."""
        return [e for e in (self.error, self.goodbye) if e is not None]


class Link(Protocol):
    """What a :class:`WireSession` needs from a transport.

    The transport side also calls the session's ``on_data(nbytes)`` after feeding bytes to
    ``session.conn``, ``on_eof()`` when the peer's byte stream ends and ``on_lost()`` when the
    transport is gone.
    """

    async def write(self, buffers: list[Any]) -> None:
        """Write one batch of whole frames, in order; wait while the transport is paused.
        Raise ``ConnectionError`` when the transport is closed."""

    async def wait_writable(self) -> None:
        """Return when the transport accepts more data (not paused)."""

    def pause_reading(self) -> None:
        """Stop reading from the peer for now (the application is behind)."""

    def resume_reading(self) -> None:
        """Read again."""

    async def aclose(self, timeout: float) -> None:
        """Flush what was written, close, and return once the transport is gone (abort after
        ``timeout`` seconds)."""

    def abort(self) -> None:
        """Close now, dropping unsent data."""


# --------------------------------------------------------------------------------------------
# the session
# --------------------------------------------------------------------------------------------

_Item: TypeAlias = tuple[Any, FrameHeader | None] | None  # None ends the iteration


class WireSession:
    """One open ``isthmus.wire`` connection: send messages, iterate events, close.

    ``async for event in session`` yields the events of ``Connection.next_event()``: the
    peer's messages (``StatePatch``, ``VideoPacket``, ``Goodbye`` …), ``FramesDropped`` for
    packets this side dropped on a credit stream, and ``ConnectionClosed`` when the peer's stream
    ended. Iteration stops when the transport is closed; if the peer broke the protocol it then
    raises the :class:`~isthmus.wire.ProtocolError` (also kept as :attr:`error`), after the
    events decoded before the bad frame.

    ``send()`` never waits for the network, so a control message is never held up behind a
    large packet; producers of bulk data ``await session.drain()`` for back-pressure. When the
    application falls ``max_pending_events`` behind, the session stops reading the socket.

    Attributes: ``conn`` (the :class:`~isthmus.wire.Connection`, for ``stream_stats()`` and
    friends), ``hello`` (the client's hello, server side), ``welcome`` (the server's welcome),
    ``peer`` (the peer's address), ``error``, ``bytes_received``, ``bytes_sent``,
    ``last_header`` (frame header of the event last taken from the iterator).
    """

    def __init__(
        self,
        conn: Connection,
        link: Link,
        *,
        peer: str = "?",
        write_chunk: int = DEFAULT_WRITE_CHUNK,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.conn = conn
        self.peer = peer
        self.close_timeout = close_timeout
        self.error: ProtocolError | None = None
        self.hello: Hello | None = None
        self.welcome: Welcome | None = None
        self.last_header: FrameHeader | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self._link = link
        self._write_chunk = write_chunk
        self._max_pending = max(1, max_pending_events)
        self._events: asyncio.Queue[_Item] = asyncio.Queue()
        self._outbox: deque[list[Any]] = deque()  # buffers already taken from the connection
        self._wake = asyncio.Event()  # something for the writer task to do
        self._drained = asyncio.Event()  # nothing left to write
        self._drained.set()
        self._reading_paused = False
        self._eof = False  # the peer's byte stream ended
        self._lost = False  # the transport is gone
        self._peer_goodbye = False
        self._goodbye_sent = False
        self._close_request: tuple[int, str] | None = None
        self._consumed: dict[int, int] = {}  # stream -> seq of the last packet taken
        self._acked: dict[int, int] = {}
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"isthmus-wire writer {peer}"
        )

    def __repr__(self) -> str:
        return f"<WireSession {self.peer} {self.conn.state.value}>"

    # ------------------------------------------------------------------ application API

    @property
    def closing(self) -> bool:
        """True once either side said goodbye, the peer left, or the protocol broke."""
        return (
            self._close_request is not None
            or self._goodbye_sent
            or self._peer_goodbye
            or self._eof
            or self._lost
            or self.error is not None
        )

    @property
    def link(self) -> Link:
        """The transport: a :class:`WireProtocol` over TCP (``session.link.transport`` for
        ``get_extra_info``), a ``WebSocketLink`` over WebSocket (``.websocket``)."""
        return self._link

    @property
    def closed(self) -> bool:
        """True once the transport is closed and the writer task has ended."""
        return self._task.done()

    async def send(self, message: Any, *, stream: int | None = None) -> None:
        """Queue ``message`` (a control message or a packet) and wake the writer.

        Returns at once: frames go out in priority order as the transport accepts them. Raises
        :class:`SessionClosed` once the session is closing, and ``LocalProtocolError`` for what
        the protocol forbids (see ``Connection.queue``).
        """
        self._queue(message, stream)

    async def ack(self, stream: int = 2) -> None:
        """Acknowledge every packet of credit stream ``stream`` (default: video) that the
        application has taken from the iterator, returning its credits to the sender."""
        seq = self._consumed.get(stream)
        if seq is None or seq <= self._acked.get(stream, -1):
            return
        self._acked[stream] = seq
        self._queue(Ack(stream=stream, seq=seq), None)

    async def drain(self) -> None:
        """Wait until everything sent so far has been handed to the transport and the
        transport is not paused: ``await session.drain()`` after sending bulk data keeps a
        fast producer from queueing without bound."""
        await self._drained.wait()
        if self._lost:
            raise SessionClosed(f"{self.peer}: the connection is closed")
        await self._link.wait_writable()

    def request_close(self, reason: str = "", code: int = 1000) -> None:
        """Start closing without waiting: flush what is queued, say goodbye, wait for the
        peer's goodbye, close the transport. See :meth:`close`."""
        if self._close_request is None:
            self._close_request = (code, reason)
            # Keep reading whatever the application does: the peer's goodbye must get through.
            self._set_reading(True)
            self._wake.set()

    async def close(
        self, reason: str = "", code: int = 1000, *, timeout: float | None = None
    ) -> None:
        """Close gracefully and wait until the transport is closed.

        Everything already sent is flushed first (a goodbye overtaking queued frames would
        leave the peer with half a message), then a ``goodbye`` with ``code`` and ``reason``
        goes out and the session waits for the peer's goodbye. After ``timeout`` seconds
        (default :attr:`close_timeout`) or on cancellation the transport is aborted.
        Idempotent; safe after errors.
        """
        self.request_close(reason, code)
        try:
            async with asyncio.timeout(self.close_timeout if timeout is None else timeout):
                await asyncio.shield(self._task)
        except TimeoutError:
            log.info("%s: no goodbye from the peer in time; aborting", self.peer)
            self.abort()
            await self.wait_closed()
        except asyncio.CancelledError:
            self.abort()
            raise

    def abort(self) -> None:
        """Close the transport now, dropping unsent data."""
        self._link.abort()

    async def wait_closed(self) -> None:
        """Wait until the transport is closed and the writer task has ended."""
        await asyncio.shield(self._task)

    async def next_event(self) -> Any:
        """The next event, or ``None`` once the connection has ended (raises the
        ``ProtocolError`` if it ended because the peer broke the protocol)."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return None

    def __aiter__(self) -> WireSession:
        return self

    async def __anext__(self) -> Any:
        item = await self._events.get()
        if item is None:
            self._events.put_nowait(None)  # later calls end too
            if self.error is not None:
                raise self.error
            raise StopAsyncIteration
        event, header = item
        self.last_header = header
        if header is not None and isinstance(event, _PACKETS):
            self._consumed[header.stream] = header.seq
        if self._reading_paused and self._events.qsize() <= self._max_pending // 2:
            self._set_reading(True)
        return event

    async def __aenter__(self) -> WireSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ handshake (server)

    def accept(self, hello: Hello | None = None, **options: Any) -> None:
        """Answer the client's hello with a welcome (``options``: see ``Connection.accept``)."""
        self._send_now(self.conn.accept(hello, **options))

    def reject(self, reason: str, *, code: str = "rejected") -> None:
        """Refuse the client: an ``error`` and a ``goodbye``; then :meth:`close`."""
        self._goodbye_sent = True
        self._send_now(self.conn.reject(reason, code=code))

    # ------------------------------------------------------------------ transport side

    def on_data(self, nbytes: int) -> None:
        """``nbytes`` were fed to ``conn``: decode and dispatch what is complete."""
        self.bytes_received += nbytes
        self._pump()

    def on_eof(self) -> None:
        """The peer's byte stream ended."""
        if self._eof:
            return
        self._eof = True
        self.conn.receive_data(b"")  # ConnectionClosed, or `truncated` inside a frame
        self._pump()
        self._wake.set()

    def on_lost(self) -> None:
        """The transport is gone: end the event iteration and the writer task."""
        if self._lost:
            return
        self.on_eof()
        self._lost = True
        self._events.put_nowait(None)
        self._wake.set()
        self._drained.set()

    def on_error(self, exc: ProtocolError) -> None:
        """The transport found a violation of its own (a WebSocket text message, say)."""
        self._protocol_error(exc)

    # ------------------------------------------------------------------ internals

    def _queue(self, message: Any, stream: int | None) -> None:
        if self.closing:
            raise SessionClosed(f"{self.peer}: the session is closing")
        self.conn.queue(message, stream=stream)
        self._pump()  # FramesDropped of a credit stream is reported right away
        self._drained.clear()
        self._wake.set()

    def _send_now(self, buffers: list[Any]) -> None:
        """Write buffers the connection already handed out (accept, reject, goodbye_for)."""
        if buffers:
            self._outbox.append(buffers)
            self._drained.clear()
            self._wake.set()

    def _pump(self) -> None:
        conn = self.conn
        try:
            while (event := conn.next_event()) is not None:
                local = isinstance(event, FramesDropped)  # not from the peer: no header
                self._dispatch(event, None if local else conn.last_header)
        except ProtocolError as exc:
            self._protocol_error(exc)

    def _dispatch(self, event: Any, header: FrameHeader | None) -> None:
        if isinstance(event, Goodbye):
            self._peer_goodbye = True
            self._set_reading(True)
            self._wake.set()  # the writer flushes, answers with our goodbye and closes
        elif isinstance(event, ConnectionClosed):
            self._wake.set()
        elif isinstance(event, VersionMismatch):
            self._goodbye_sent = True  # the connection queued an error and a goodbye
            self._drained.clear()
            self._wake.set()
        elif isinstance(event, Hello):
            self.hello = event
        elif isinstance(event, Welcome):
            self.welcome = event
        elif isinstance(event, Ping) and not self.closing:
            self.conn.queue(event.response())
            self._drained.clear()
            self._wake.set()
        self._events.put_nowait((event, header))
        if (
            self._events.qsize() >= self._max_pending
            and not self._reading_paused
            and not self.closing
        ):
            self._set_reading(False)

    def _protocol_error(self, exc: ProtocolError) -> None:
        if self.error is not None:
            return
        self.error = exc
        log.info("%s broke the protocol: %s", self.peer, exc)
        if not self._goodbye_sent:
            self._goodbye_sent = True
            self._send_now(_through_goodbye(self.conn.goodbye_for(exc)))
        self._set_reading(False)
        self._wake.set()

    def _set_reading(self, on: bool) -> None:
        if on == (not self._reading_paused):
            return
        self._reading_paused = not on
        if not self._lost:
            if on:
                self._link.resume_reading()
            else:
                self._link.pause_reading()

    async def _flush(self) -> None:
        """Write until nothing is queued, one ``write_chunk`` at a time. ``link.write`` yields
        between batches, so messages queued meanwhile take their place in the priority order."""
        conn = self.conn
        while not self._lost:
            if self._outbox:
                buffers = self._outbox.popleft()
            elif conn.has_data_to_send:
                buffers = conn.data_to_send(self._write_chunk)
            else:
                break
            self.bytes_sent += sum(len(b) for b in buffers)
            await self._link.write(buffers)
        if not self._outbox and not conn.has_data_to_send:
            self._drained.set()

    async def _run(self) -> None:
        """The writer task: flush, and drive the closing sequence."""
        graceful = True
        try:
            while not self._lost:
                await self._flush()
                if self._lost or self._eof or self.error is not None:
                    break  # the peer is gone or broke the protocol: our last words are out
                if self._goodbye_sent:
                    if self._peer_goodbye:
                        break  # both said goodbye
                elif self._peer_goodbye or self._close_request is not None:
                    # Only now that the queues are empty: a goodbye ahead of queued frames
                    # would make the peer reject them.
                    code, reason = self._close_request or (1000, "")
                    self._goodbye_sent = True
                    try:
                        self.conn.queue(Goodbye(code=code, reason=reason))
                    except LocalProtocolError:
                        break
                    continue
                await self._wake.wait()
                self._wake.clear()
        except asyncio.CancelledError:
            graceful = False
            raise
        except Exception as exc:  # the transport failed under us
            graceful = False
            log.debug("%s: write failed: %r", self.peer, exc)
        finally:
            if not graceful:
                self._link.abort()
            try:
                await self._link.aclose(self.close_timeout)
            except Exception as exc:
                log.debug("%s: close failed: %r", self.peer, exc)
                self._link.abort()
            self._drained.set()


def _through_goodbye(buffers: list[Any]) -> list[Any]:
    """The buffers of ``goodbye_for()`` up to and including the goodbye frame.

    ``goodbye_for()`` returns every queued frame, control stream first; frames after the
    goodbye would be messages after goodbye to the peer, so they are dropped.
    """
    out: list[Any] = []
    left = 0
    goodbye = False
    for buf in buffers:
        view = memoryview(buf)
        if left <= 0:  # a frame starts with this buffer
            header = parse_header(view)
            left = HEADER_SIZE + header.length
            goodbye = header.type == MessageType.GOODBYE
        out.append(buf)
        left -= view.nbytes
        if left <= 0 and goodbye:
            break
    return out


# --------------------------------------------------------------------------------------------
# TCP: the BufferedProtocol
# --------------------------------------------------------------------------------------------


class WireProtocol(asyncio.BufferedProtocol):
    """``isthmus.wire`` on an asyncio stream transport (TCP, TLS, Unix socket).

    Creates its :class:`WireSession` (``protocol.session``) in ``connection_made`` and calls
    ``on_session(session)`` if given. Reads are zero-copy (``Connection.get_buffer``); writes
    are scatter-gather (``transport.writelines``) and respect the transport's flow control.
    """

    def __init__(
        self,
        conn: Connection,
        *,
        write_chunk: int = DEFAULT_WRITE_CHUNK,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        on_session: Callable[[WireSession], None] | None = None,
    ) -> None:
        self.conn = conn
        self.session: WireSession | None = None
        self.transport: asyncio.Transport | None = None
        self._write_chunk = write_chunk
        self._max_pending_events = max_pending_events
        self._close_timeout = close_timeout
        self._on_session = on_session
        self._writable = asyncio.Event()
        self._gone = asyncio.Event()

    # asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._writable.set()
        peer = transport.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.session = WireSession(
            self.conn,
            self,
            peer=name,
            write_chunk=self._write_chunk,
            max_pending_events=self._max_pending_events,
            close_timeout=self._close_timeout,
        )
        if self._on_session is not None:
            self._on_session(self.session)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Inside a large payload this is the payload's own memory.
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.buffer_updated(nbytes)
        assert self.session is not None
        self.session.on_data(nbytes)

    def eof_received(self) -> bool:
        assert self.session is not None and self.transport is not None
        self.session.on_eof()
        # Keep the transport open so the session can still write its goodbye (or the error
        # that explains a truncated frame); it closes the transport itself. TLS ignores this.
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()
        self._gone.set()
        if self.session is not None:
            self.session.on_lost()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # Link ---------------------------------------------------------------------------------

    async def write(self, buffers: list[Any]) -> None:
        if not self._writable.is_set():
            await self._writable.wait()
        transport = self.transport
        if transport is None or transport.is_closing():
            raise SessionClosed("the transport is closed")
        transport.writelines(buffers)
        # Let other tasks queue control messages before the next chunk is taken.
        await asyncio.sleep(0)

    async def wait_writable(self) -> None:
        await self._writable.wait()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def aclose(self, timeout: float) -> None:
        if self.transport is None:
            return
        self.transport.close()  # flushes the write buffer first
        try:
            async with asyncio.timeout(timeout):
                await self._gone.wait()
        except TimeoutError:
            self.transport.abort()
            await self._gone.wait()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


# --------------------------------------------------------------------------------------------
# handshakes, shared with websocket.py
# --------------------------------------------------------------------------------------------


def default_hello(conn: Connection, **fields: Any) -> Hello:
    """A hello announcing ``conn``'s encodings, codecs and limits (``fields`` override)."""
    values: dict[str, Any] = {
        "encodings": list(conn.encodings),
        "codecs": list(conn.codecs),
        "max_frame_size": conn.max_frame_size,
        "max_message_size": conn.max_message_size,
        "credits": conn.credits,
    }
    values.update(fields)
    return Hello(**values)


async def client_handshake(session: WireSession, hello: Hello, timeout: float) -> None:
    """Send ``hello`` and wait for the welcome. On a rejection raise
    :class:`HandshakeRejected` once the transport is closed; on anything else (timeout,
    ``ProtocolError``, cancellation) abort the transport, wait for it and re-raise."""
    error: Error | None = None
    goodbye: Goodbye | None = None
    try:
        async with asyncio.timeout(timeout):
            await session.send(hello)
            while True:
                event = await session.next_event()
                if isinstance(event, Welcome):
                    return
                if isinstance(event, Error):
                    error = event
                elif isinstance(event, Goodbye):
                    goodbye = event
                    break
                elif event is None:
                    break
            # The session answers the goodbye and closes the transport.
            await session.close()
    except BaseException:
        session.abort()
        await session.wait_closed()
        raise
    raise HandshakeRejected(error, goodbye)


async def serve_session(
    session: WireSession,
    handler: Handler,
    *,
    authorize: Authorize | None = None,
    accept: AcceptOptions = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> None:
    """The server side of one connection: wait for the hello, authorize and accept (or
    reject) it, run ``handler(session)``, then close. Logs what goes wrong and never raises
    but ``CancelledError`` (after aborting the transport)."""
    try:
        await _handshake_and_handle(session, handler, authorize, accept, handshake_timeout)
    except ProtocolError as exc:
        log.info("%s: session ended: %s", session.peer, exc)
    except (SessionClosed, LocalProtocolError) as exc:
        log.debug("%s: session ended: %s", session.peer, exc)
    except asyncio.CancelledError:
        session.abort()
        await session.wait_closed()
        raise
    except Exception:
        log.exception("%s: handler failed", session.peer)
    await session.close()


async def _handshake_and_handle(
    session: WireSession,
    handler: Handler,
    authorize: Authorize | None,
    accept: AcceptOptions,
    handshake_timeout: float,
) -> None:
    try:
        async with asyncio.timeout(handshake_timeout):
            hello = await session.next_event()
    except TimeoutError:
        log.info("%s: no hello within %s s", session.peer, handshake_timeout)
        session.abort()
        return
    if isinstance(hello, VersionMismatch):
        log.info("%s: %s", session.peer, hello.reason)  # error + goodbye already queued
        return
    if not isinstance(hello, Hello):
        return  # the peer left before saying hello
    verdict = await _authorize(authorize, hello)
    if verdict is not True:
        reason = verdict if isinstance(verdict, str) and verdict else "unauthorized"
        log.info("%s: rejected: %s", session.peer, reason)
        session.reject(reason)
        return
    session.accept(hello, **(accept(hello) if callable(accept) else (accept or {})))
    await handler(session)


async def _authorize(authorize: Authorize | None, hello: Hello) -> bool | str:
    if authorize is None:
        return True
    try:
        verdict = authorize(hello)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception:
        log.exception("authorize() failed")
        return "authorization failed"
    return verdict if isinstance(verdict, str) else bool(verdict)


# --------------------------------------------------------------------------------------------
# client and server
# --------------------------------------------------------------------------------------------


async def connect(
    host: str,
    port: int,
    hello: Hello | None = None,
    *,
    ssl: Any = None,
    write_chunk: int = DEFAULT_WRITE_CHUNK,
    max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    **conn_kwargs: Any,
) -> WireSession:
    """Open a TCP (``ssl``: TLS) connection, say ``hello`` and return the session once the
    server's welcome arrived (``session.welcome``).

    ``conn_kwargs`` go to ``Connection(Role.CLIENT, ...)``; the default hello announces them
    (:func:`default_hello`). Raises :class:`HandshakeRejected` when the server refuses,
    ``ProtocolError`` when it breaks the protocol, ``TimeoutError`` after
    ``handshake_timeout``; the socket is closed in every case.
    """
    loop = asyncio.get_running_loop()
    conn = Connection(Role.CLIENT, **conn_kwargs)
    _, protocol = await loop.create_connection(
        lambda: WireProtocol(
            conn,
            write_chunk=write_chunk,
            max_pending_events=max_pending_events,
            close_timeout=close_timeout,
        ),
        host,
        port,
        ssl=ssl,
    )
    session = protocol.session
    assert session is not None
    await client_handshake(session, hello or default_hello(conn), handshake_timeout)
    return session


class _Server(Protocol):
    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


# Live sessions of each server started by serve() (or websocket.serve_ws), for shutdown().
_LIVE: weakref.WeakKeyDictionary[Any, dict[WireSession, asyncio.Task[Any]]] = (
    weakref.WeakKeyDictionary()
)


def register_server(server: Any, live: dict[WireSession, asyncio.Task[Any]]) -> None:
    """Make :func:`shutdown` and :func:`server_sessions` know ``server``'s sessions."""
    _LIVE[server] = live


def server_sessions(server: Any) -> list[WireSession]:
    """The sessions of ``server`` that are still running (for broadcasting, say)."""
    return list(_LIVE.get(server, {}))


async def serve(
    handler: Handler,
    host: str | None = None,
    port: int = 0,
    *,
    authorize: Authorize | None = None,
    accept: AcceptOptions = None,
    ssl: Any = None,
    write_chunk: int = DEFAULT_WRITE_CHUNK,
    max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    **conn_kwargs: Any,
) -> asyncio.Server:
    """Listen on ``host``:``port`` and run ``await handler(session)`` for every accepted client.

    Each hello is accepted with ``Connection.accept(hello, **accept)`` unless
    ``authorize(hello)`` returns ``False`` or a reason string, which rejects it (an ``error`` and
    a ``goodbye`` with the reason). A hello of an unsupported protocol version is refused by the
    connection itself. When the handler returns the session is closed with a goodbye. Stop the
    server with :func:`shutdown` (``asyncio.Server.close`` alone leaves connections open).
    ``conn_kwargs`` go to ``Connection(Role.SERVER, ...)``.
    """
    loop = asyncio.get_running_loop()
    live: dict[WireSession, asyncio.Task[Any]] = {}

    def on_session(session: WireSession) -> None:
        task = loop.create_task(
            serve_session(
                session,
                handler,
                authorize=authorize,
                accept=accept,
                handshake_timeout=handshake_timeout,
            ),
            name=f"isthmus-wire session {session.peer}",
        )
        live[session] = task
        task.add_done_callback(lambda _: live.pop(session, None))

    def factory() -> WireProtocol:
        return WireProtocol(
            Connection(Role.SERVER, **conn_kwargs),
            write_chunk=write_chunk,
            max_pending_events=max_pending_events,
            close_timeout=close_timeout,
            on_session=on_session,
        )

    server = await loop.create_server(factory, host, port, ssl=ssl)
    register_server(server, live)
    return server


async def shutdown(
    server: _Server, *, reason: str = "server shutting down", timeout: float = 5.0
) -> None:
    """Stop ``server`` (from :func:`serve` or ``websocket.serve_ws``) and end its sessions:
    each says goodbye (code 1001) and closes; handlers still running after ``timeout`` seconds
    are cancelled. Returns when every socket is closed and every task has ended."""
    if isinstance(server, asyncio.AbstractServer):
        server.close()  # stop accepting first
    live = _LIVE.pop(server, {})
    for session in list(live):
        session.request_close(reason, code=1001)
    tasks = list(live.values())
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    server.close()
    await server.wait_closed()
