"""Serve an ASGI app with uvicorn inside the test's event loop, on 127.0.0.1 and a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    # pytest owns the signals; uvicorn must not install handlers in the test process.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class UvicornServer:
    """``async with UvicornServer(app) as srv:`` serves ``app``; ``srv.port``, ``srv.url`` and
    ``srv.ws_url`` address it. Leaving waits for a graceful shutdown (WebSockets get 1012)."""

    def __init__(self, app: Any, **config: Any) -> None:
        config.setdefault("lifespan", "auto")
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            **config,
        )
        self.server = _Server(self.config)
        self.task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.server.serve())
        # uvicorn offers no awaitable for "listening": watch its flag, and fail fast if it died.
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.005)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, 15)
        finally:
            self.task = None

    async def __aenter__(self) -> UvicornServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
