"""WebSocket adapter for ``isthmus.wire`` on the ``websockets`` library (asyncio API, 13+).

Copy this file together with ``aio.py`` (it reuses its :class:`~aio.WireSession`, handshake
and shutdown code). The session and its API are the same as over TCP; only the transport
differs:

* Each binary WebSocket message carries one or more **whole** wire frames: the buffers of one
  ``data_to_send(max_bytes=write_chunk)`` call. That is what a browser wants: every
  ``onmessage`` hands ``isthmus-wire.mjs``'s ``Decoder.feed()`` an ``ArrayBuffer`` of complete
  frames (the decoder also copes with frames split across messages, as other peers may send
  them). Received messages go to ``Connection.receive_data(message)``; a binary packet's
  ``data`` then views the message's bytes, no copy.
* Copies: ``websockets`` copies every payload when it builds a frame (``Frame.serialize``
  writes header and payload into a ``BytesIO``; a client also masks, another copy), and it
  joins the fragments of a fragmented message on receipt. So sending a batch of buffers as a
  fragmented message (``websocket.send(iterable)``) is not zero-copy either: it saves the
  ``b"".join`` here only to pay it at the receiver, adds a frame per buffer plus an empty final
  one, and waits for the transport between fragments. This adapter therefore sends one buffer
  as it is and joins several into one message. Use the TCP adapter where copies matter.
* Flow control is ``websockets``': ``send()`` waits while its write buffer is above
  ``write_limit``. Between messages the writer yields, so control messages overtake large
  packets exactly as over TCP.
* ``compression`` is off (video, audio and tensors do not deflate; control messages are tiny)
  and ``max_size`` (the largest message accepted) follows from the frame limit: a sender using
  this adapter puts at most ``write_chunk`` bytes plus one frame in a message.
* A text message is a protocol violation: the peer gets an ``error`` and a ``goodbye``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.connection import Connection as WebSocket
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from isthmus.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    Connection,
    ErrorCode,
    Hello,
    ProtocolError,
    Role,
)

from .aio import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_PENDING_EVENTS,
    DEFAULT_WRITE_CHUNK,
    AcceptOptions,
    Authorize,
    Handler,
    SessionClosed,
    WireSession,
    client_handshake,
    default_hello,
    register_server,
    serve_session,
)

__all__ = ["WebSocketLink", "connect_ws", "open_session", "serve_ws"]


class WebSocketLink:
    """The :class:`~aio.Link` of a session over a ``websockets`` connection: one reader
    task feeds received messages to the connection; the session's writer sends messages."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._can_read = asyncio.Event()
        self._can_read.set()
        self._reader: asyncio.Task[None] | None = None

    def start(self, session: WireSession) -> None:
        """Start reading into ``session`` (call once, right after creating it)."""
        self._reader = asyncio.get_running_loop().create_task(
            self._read(session), name=f"isthmus-wire ws reader {session.peer}"
        )

    async def _read(self, session: WireSession) -> None:
        websocket = self.websocket
        try:
            while True:
                if not self._can_read.is_set():
                    await self._can_read.wait()
                try:
                    message = await websocket.recv()
                except ConnectionClosed:
                    break
                if session.error is not None:
                    continue  # drain until the close completes
                if isinstance(message, str):
                    session.on_error(
                        ProtocolError(
                            ErrorCode.INVALID_PAYLOAD,
                            "a text WebSocket message; isthmus.wire needs binary messages",
                            session.bytes_received,
                        )
                    )
                    continue
                session.conn.receive_data(message)  # bytes: packets view them, no copy
                session.on_data(len(message))
        finally:
            session.on_lost()

    # Link ---------------------------------------------------------------------------------

    async def write(self, buffers: list[Any]) -> None:
        if len(buffers) == 1:
            message: bytes | bytearray | memoryview = memoryview(buffers[0])
        else:
            message = b"".join(buffers)
        try:
            await self.websocket.send(message)  # waits while above websockets' write_limit
        except ConnectionClosed as exc:
            raise SessionClosed(str(exc)) from exc

    async def wait_writable(self) -> None:
        return  # send() already waited for the transport

    def pause_reading(self) -> None:
        self._can_read.clear()

    def resume_reading(self) -> None:
        self._can_read.set()

    async def aclose(self, timeout: float) -> None:
        self._can_read.set()  # let the reader see the close
        try:
            async with asyncio.timeout(timeout):
                await self.websocket.close()
                if self._reader is not None:
                    await self._reader
        except TimeoutError:
            self.abort()
            await self.websocket.wait_closed()
            if self._reader is not None:
                await self._reader

    def abort(self) -> None:
        self._can_read.set()
        transport = self.websocket.transport
        if transport is not None:
            transport.abort()


def open_session(
    websocket: WebSocket,
    conn: Connection,
    *,
    write_chunk: int = DEFAULT_WRITE_CHUNK,
    max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
) -> WireSession:
    """A :class:`~aio.WireSession` running ``conn`` over an open ``websocket``."""
    link = WebSocketLink(websocket)
    address = websocket.remote_address
    peer = f"ws {address[0]}:{address[1]}" if isinstance(address, tuple) else "ws ?"
    session = WireSession(
        conn,
        link,
        peer=peer,
        write_chunk=write_chunk,
        max_pending_events=max_pending_events,
        close_timeout=close_timeout,
    )
    link.start(session)
    return session


def _max_size(conn_kwargs: Mapping[str, Any], write_chunk: int) -> int:
    return (
        int(conn_kwargs.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE)) + write_chunk + HEADER_SIZE
    )


async def serve_ws(
    handler: Handler,
    host: str | None = None,
    port: int = 0,
    *,
    authorize: Authorize | None = None,
    accept: AcceptOptions = None,
    write_chunk: int = DEFAULT_WRITE_CHUNK,
    max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    max_size: int | None = None,
    ws_options: Mapping[str, Any] | None = None,
    **conn_kwargs: Any,
) -> Server:
    """Like :func:`aio.serve`, over WebSocket: run ``await handler(session)`` for every client
    whose hello is accepted.

    ``ws_options`` go to ``websockets.asyncio.server.serve`` (``ssl``, ``origins``,
    ``process_request`` for HTTP-level checks …); ``max_size`` defaults to the largest message
    a peer using this adapter sends. Stop with :func:`aio.shutdown` (each session says goodbye
    first) or ``server.close()`` (WebSocket close 1001 straight away).
    """
    live: dict[WireSession, asyncio.Task[Any]] = {}

    async def ws_handler(websocket: ServerConnection) -> None:
        session = open_session(
            websocket,
            Connection(Role.SERVER, **conn_kwargs),
            write_chunk=write_chunk,
            max_pending_events=max_pending_events,
            close_timeout=close_timeout,
        )
        task = asyncio.current_task()
        assert task is not None
        live[session] = task
        try:
            await serve_session(
                session,
                handler,
                authorize=authorize,
                accept=accept,
                handshake_timeout=handshake_timeout,
            )
        finally:
            live.pop(session, None)

    options: dict[str, Any] = {
        "compression": None,
        "max_size": max_size or _max_size(conn_kwargs, write_chunk),
    }
    options.update(ws_options or {})
    server = await ws_serve(ws_handler, host, port, **options)
    register_server(server, live)
    return server


async def connect_ws(
    uri: str,
    hello: Hello | None = None,
    *,
    write_chunk: int = DEFAULT_WRITE_CHUNK,
    max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    max_size: int | None = None,
    ws_options: Mapping[str, Any] | None = None,
    **conn_kwargs: Any,
) -> WireSession:
    """Like :func:`aio.connect`, over WebSocket: open ``uri`` (``ws://`` or ``wss://``), say
    ``hello`` and return the session once welcomed. ``ws_options`` go to
    ``websockets.asyncio.client.connect`` (``additional_headers``, ``ssl``, ``proxy`` …)."""
    conn = Connection(Role.CLIENT, **conn_kwargs)
    options: dict[str, Any] = {
        "compression": None,
        "max_size": max_size or _max_size(conn_kwargs, write_chunk),
    }
    options.update(ws_options or {})
    websocket: ClientConnection = await ws_connect(uri, **options)
    session = open_session(
        websocket,
        conn,
        write_chunk=write_chunk,
        max_pending_events=max_pending_events,
        close_timeout=close_timeout,
    )
    await client_handshake(session, hello or default_hello(conn), handshake_timeout)
    return session
