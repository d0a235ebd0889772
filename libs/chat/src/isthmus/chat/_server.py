"""Every front end over one :class:`Chat`, in one event loop: what ``isthmus-chat serve`` runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from ._config import ServerConfig
from ._line import LineProtocolServer
from ._sqlite import SQLiteStore
from ._state import Backplane, Chat
from ._store import MemoryStore, Store

__all__ = ["ChatServer", "make_store", "serve"]

log = logging.getLogger("isthmus.chat")


def make_store(db: str) -> Store:
    """``:memory:`` → MemoryStore, ``postgres(ql)://`` → PostgresStore, else a SQLite path."""
    if db == ":memory:":
        return MemoryStore()
    if db.startswith(("postgres://", "postgresql://")):
        from ._postgres import PostgresStore

        return PostgresStore(db)
    return SQLiteStore(db)


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if not config.ssl_certfile:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
    return ctx


class ChatServer:
    """The line protocol, IRC and HTTP (REST, WebSocket, page) front ends over one chat state.

    ``async with ChatServer(config) as server:`` starts them all; ``server.line_port``,
    ``server.irc_port`` and ``server.http_port`` are the bound ports (useful with port 0).
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        store: Store | None = None,
        backplane: Backplane | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        cfg = self.config
        if backplane is None and cfg.redis:
            from ._redis import RedisBackplane

            backplane = RedisBackplane(cfg.redis)
        self.chat = Chat(
            limits=cfg.limits(),
            store=store if store is not None else make_store(cfg.db),
            backplane=backplane,
            secret=bytes.fromhex(cfg.secret) if cfg.secret else None,
            server_name=cfg.server_name,
            default_rooms=cfg.default_rooms,
            require_account=cfg.require_account,
        )
        self.line: LineProtocolServer | None = None
        self.irc: Any = None
        self.line_port: int | None = None
        self.irc_port: int | None = None
        self.http_port: int | None = None
        self._http: Any = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_sock: socket.socket | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Start the chat state and every enabled front end."""
        cfg = self.config
        tls = _ssl_context(cfg)
        await self.chat.start()
        try:
            if cfg.line:
                self.line = LineProtocolServer(self.chat)
                await self.line.start(cfg.host, cfg.line_port, ssl_context=tls)
                self.line_port = self.line.port
            if cfg.irc:
                from ._irc import IrcServer

                self.irc = IrcServer(
                    self.chat,
                    server_name=cfg.server_name,
                    motd=cfg.motd,
                    ping_interval=cfg.irc_ping_interval,
                )
                await self.irc.start(cfg.host, cfg.irc_port, ssl_context=tls)
                self.irc_port = self.irc.port
            if cfg.http:
                await self._start_http()
        except BaseException:
            await self.close()
            raise
        log.info(
            "isthmus-chat serving on %s: line %s, irc %s, http %s%s",
            cfg.host,
            self.line_port,
            self.irc_port,
            self.http_port,
            " (TLS)" if tls else "",
        )

    async def _start_http(self) -> None:
        import uvicorn

        from ._web import create_app

        cfg = self.config
        app = create_app(self.chat)
        sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.http_port))
        sock.listen(1024)
        sock.setblocking(False)
        self._http_sock = sock
        self.http_port = int(sock.getsockname()[1])
        uv_config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=cfg.access_log,
            ssl_certfile=cfg.ssl_certfile,
            ssl_keyfile=cfg.ssl_keyfile,
            ws_max_size=cfg.ws_message_bytes,
            timeout_graceful_shutdown=5,
        )
        self._http = _EmbeddedUvicorn(uv_config)
        self._http_task = asyncio.get_running_loop().create_task(
            self._http.serve(sockets=[sock]), name="isthmus.chat http"
        )
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()
                raise RuntimeError("the HTTP server stopped during startup")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop every front end (closing their connections), then the chat state."""
        if self.line is not None:
            await self.line.close()
            self.line = None
        if self.irc is not None:
            await self.irc.close()
            self.irc = None
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await self._http_task
            self._http = self._http_task = None
        if self._http_sock is not None:
            self._http_sock.close()
            self._http_sock = None
        await self.chat.close()
        self._stopped.set()

    async def __aenter__(self) -> ChatServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _EmbeddedUvicorn:
    """uvicorn's Server without its signal handling: the CLI owns the signals."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

            def install_signal_handlers(self) -> None:  # uvicorn < 0.29
                return None

        return Server(config)


async def serve(config: ServerConfig | None = None, *, stop: asyncio.Event | None = None) -> None:
    """Run a :class:`ChatServer` until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None)."""
    import signal

    loop = asyncio.get_running_loop()
    own_stop = stop is None
    stop = stop or asyncio.Event()
    if own_stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    async with ChatServer(config):
        await stop.wait()
    if own_stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
