"""The machinery under the newline-framed TCP front ends (the seed line protocol and IRC).

* Writes are coalesced: a delivery appends bytes to the connection's pending list, and one
  callback per loop tick writes each dirty connection's list with one ``write``. A room
  broadcast of N messages to M members costs M writes, not N x M.
* Reads land in one receive buffer per server, a slot of an :class:`isthmus.buffer.BufferPool`,
  through :class:`asyncio.BufferedProtocol`: an idle connection holds no receive buffer, only
  the bytes of an unfinished line.
* Commands of one connection run in order in a worker task that exists only while there are
  lines to handle; replies go out in command order even when some wait for the store.
* A connection whose unsent bytes pass ``Limits.send_queue_bytes`` is a slow consumer: it is
  dropped instead of stalling the room. Too many unhandled lines pause reading (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from isthmus.buffer import BufferPool

from ._errors import ChatError, SlowConsumer
from ._model import Status
from ._sink import Formatter
from ._state import Chat, Session

__all__ = ["LineConnection", "LineServer", "Outbox"]

log = logging.getLogger("isthmus.chat")

_RECV_SIZE = 64 * 1024
_MAX_QUEUED_LINES = 1024  # unhandled lines before reading pauses


class Outbox:
    """One flush callback per loop tick for every connection with pending bytes."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: list[LineConnection] = []
        self._scheduled = False

    def mark(self, conn: LineConnection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn._flush()


_Reply = (
    bytes | tuple[asyncio.Future[Any], Callable[[Any], bytes], Callable[[BaseException], bytes]]
)


class LineConnection(asyncio.BufferedProtocol):
    """One client connection of a newline-framed protocol. Subclasses implement
    :meth:`handle_line` (and may override :meth:`on_open`, :meth:`on_close`)."""

    fmt: Formatter
    transport: asyncio.Transport | None

    def __init__(self, server: LineServer) -> None:
        self.server = server
        self.chat = server.chat
        self.fmt = server.formatter
        self.transport = None
        self.session: Session | None = None
        self.peer: str = "?"
        self._tail = b""
        self._lines: deque[bytes] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._out: list[bytes] | None = None
        self._replies: deque[_Reply] = deque()
        self._closed = False
        self._paused = False

    # ------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)
        self.on_open()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.rbuf

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self.server.rbuf[:nbytes])
        if self._tail:
            data = self._tail + data
        if b"\n" not in data:
            self._tail = data
        else:
            *lines, self._tail = data.split(b"\n")
            self._lines.extend(lines)
            if self._worker is None and not self._closed:
                self._worker = asyncio.get_running_loop().create_task(self._run())
            if len(self._lines) > _MAX_QUEUED_LINES and not self._paused:
                self._paused = True
                assert self.transport is not None
                self.transport.pause_reading()
        if len(self._tail) > self.server.chat.limits.max_line_bytes:
            self._tail = b""
            self.protocol_error(f"line longer than {self.server.chat.limits.max_line_bytes} bytes")

    def eof_received(self) -> bool | None:
        # Handle the lines already received, then close (a client may send and half-close).
        if self._tail:
            self._lines.append(self._tail)
            self._tail = b""
        if self._worker is None and self._lines:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        if self._worker is not None:
            self._worker.add_done_callback(lambda _t: self.close("end of input"))
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        self._out = None
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        for item in self._replies:
            if isinstance(item, tuple):
                item[0].remove_done_callback(self._advance)
        self._replies.clear()
        session, self.session = self.session, None
        if session is not None:
            self.chat.disconnect(session, self.quit_reason(exc))
        self.on_close()
        self.transport = None

    # ------------------------------------------------------------- commands

    async def _run(self) -> None:
        try:
            while self._lines and not self._closed:
                line = self._lines.popleft()
                if line.endswith(b"\r"):
                    line = line[:-1]
                if self._paused and len(self._lines) < _MAX_QUEUED_LINES // 2:
                    self._paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                try:
                    await self.handle_line(line)
                except ChatError as exc:
                    self.on_chat_error(line, exc)
        except Exception:
            log.exception("%s: command handler failed", self.peer)
            self.close("internal error")
        finally:
            self._worker = None

    async def handle_line(self, line: bytes) -> None:
        """Handle one line (without its line ending)."""
        raise NotImplementedError

    def on_chat_error(self, line: bytes, exc: ChatError) -> None:
        """Reply to a refused command."""
        raise NotImplementedError

    def on_open(self) -> None:
        """Called when the connection is made."""

    def on_close(self) -> None:
        """Called once when the connection is gone."""

    def quit_reason(self, exc: Exception | None) -> str:
        return "connection closed" if exc is None else f"connection lost: {exc}"

    def protocol_error(self, text: str) -> None:
        """The peer broke the framing: report and close."""
        self.close(text)

    # ------------------------------------------------------------- output

    def push(self, data: bytes) -> None:
        """Queue bytes; they are written with everything else pending at the end of the tick."""
        # Called once per delivery: the common case (already pending) is one append.
        out = self._out
        if out is not None:
            out.append(data)
        elif not self._closed:
            self._out = [data]
            self.server.outbox.mark(self)

    def _flush(self) -> None:
        out, self._out = self._out, None
        t = self.transport
        if out is None or t is None or t.is_closing():
            return
        t.write(out[0] if len(out) == 1 else b"".join(out))
        if t.get_write_buffer_size() > self.chat.limits.send_queue_bytes:
            self.slow_consumer()

    def slow_consumer(self) -> None:
        """The client does not read fast enough: drop it so the room does not stall."""
        self.chat.counters["slow_consumers"] += 1
        log.warning("%s: slow consumer, disconnecting", self.peer)
        if self.session is not None:
            self.session.status = Status.ERROR
            self.chat.disconnect(self.session, SlowConsumer.code.lower())
            self.session = None
        self._closed = True
        if self.transport is not None:
            self.transport.abort()

    def reply(self, data: bytes) -> None:
        """Send a reply after every earlier reply of this connection."""
        if self._replies:
            self._replies.append(data)
        else:
            self.push(data)

    def reply_later(
        self,
        fut: asyncio.Future[Any],
        ok: Callable[[Any], bytes],
        err: Callable[[BaseException], bytes],
    ) -> None:
        """Send ``ok(result)`` or ``err(exception)`` when ``fut`` is done, in command order."""
        self._replies.append((fut, ok, err))
        if len(self._replies) == 1:
            fut.add_done_callback(self._advance)

    def _advance(self, _fut: object = None) -> None:
        replies = self._replies
        while replies:
            head = replies[0]
            if isinstance(head, bytes):
                replies.popleft()
                self.push(head)
                continue
            fut, ok, err = head
            if not fut.done():
                fut.add_done_callback(self._advance)
                return
            replies.popleft()
            exc = None if fut.cancelled() else fut.exception()
            if fut.cancelled():
                self.push(err(asyncio.CancelledError()))
            elif exc is not None:
                self.push(err(exc))
            else:
                self.push(ok(fut.result()))

    def close(self, reason: str = "") -> None:
        """Flush what is pending and close the connection."""
        if self.transport is None or self.transport.is_closing():
            return
        self._closed = True
        if self._out is not None:
            self._flush()
        self.transport.close()


class LineServer:
    """A listening socket whose connections are ``protocol`` instances over one :class:`Chat`."""

    protocol: ClassVar[type[LineConnection]] = LineConnection

    def __init__(self, chat: Chat, formatter: Formatter) -> None:
        self.chat = chat
        self.formatter = formatter
        self.connections: set[LineConnection] = set()
        self._pool = BufferPool(_RECV_SIZE, 1, exhaustion="raise")
        self._slot = self._pool.acquire()
        self.rbuf: memoryview = self._slot.asarray().data.cast("B")
        self.outbox = Outbox()
        self._server: asyncio.Server | None = None

    async def start(
        self,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> asyncio.Server:
        """Listen (``port=0`` picks a free port; see :attr:`port`)."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(
                lambda: self.protocol(self), sock=sock, ssl=ssl_context, backlog=1024
            )
        else:
            self._server = await loop.create_server(
                lambda: self.protocol(self),
                host,
                port,
                ssl=ssl_context,
                backlog=1024,
                reuse_address=True,
            )
        return self._server

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, close every connection, release the receive buffer."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close("server shutting down")
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)
        self.rbuf.release()
        self._slot.release()
        self._pool.close()
