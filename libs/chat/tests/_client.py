"""A tiny line-protocol client for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl


class LineClient:
    """Connects, sends lines, reads lines with a timeout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, port: int, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
    ) -> LineClient:
        r, w = await asyncio.open_connection(host, port, ssl=ssl_context)
        return cls(r, w)

    def send(self, *lines: str) -> None:
        self.writer.write("".join(line + "\n" for line in lines).encode())

    async def line(self, timeout: float = 5.0) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        if not raw:
            raise EOFError("connection closed")
        return raw.decode().rstrip("\n")

    async def until(self, prefix: str, timeout: float = 5.0) -> str:
        """Read lines until one starts with ``prefix``; return it."""
        while True:
            got = await self.line(timeout)
            if got.startswith(prefix):
                return got

    async def ask(self, line: str, prefix: str = "", timeout: float = 5.0) -> str:
        """Send ``line`` and return the first reply that starts with OK/ERR (or ``prefix``)."""
        self.send(line)
        while True:
            got = await self.line(timeout)
            if prefix and got.startswith(prefix):
                return got
            if not prefix and got.startswith(("OK ", "ERR ")):
                return got

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
