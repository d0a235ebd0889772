"""A small raw IRC client for the IRC front end's tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from isthmus.chat._irc import IrcMessage, parse_message


@dataclass
class Line:
    """One received line: the text and its parse."""

    raw: str
    msg: IrcMessage

    @property
    def verb(self) -> str:
        return self.msg.verb

    @property
    def params(self) -> list[str]:
        return self.msg.params

    @property
    def tags(self) -> dict[str, str]:
        return self.msg.tags

    @property
    def source(self) -> str | None:
        return self.msg.source


class IrcClient:
    """Connects, sends raw lines, reads parsed lines (``msg.raw`` keeps the text)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.nick = "*"

    @classmethod
    async def open(
        cls, port: int, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> IrcClient:
        r, w = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname="localhost" if ssl_context else None
        )
        return cls(r, w)

    @classmethod
    async def connect(
        cls, port: int, nick: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> IrcClient:
        """Open and register as ``nick`` (reads through the end of the MOTD)."""
        c = await cls.open(port, ssl_context)
        await c.register(nick)
        return c

    def send(self, *lines: str) -> None:
        self.writer.write("".join(line + "\r\n" for line in lines).encode())

    async def read(self, timeout: float = 5.0) -> Line:
        data = await asyncio.wait_for(self.reader.readline(), timeout)
        if not data:
            raise EOFError("connection closed")
        assert data.endswith(b"\r\n"), data
        text = data[:-2].decode()
        return Line(text, parse_message(text))

    async def until(self, *verbs: str, timeout: float = 5.0) -> Line:
        """Skip lines until one whose verb is in ``verbs``; return it."""
        while True:
            msg = await self.read(timeout)
            if msg.verb in verbs:
                return msg

    async def collect(self, *stop: str) -> list[Line]:
        """Every line up to and including the first whose verb is in ``stop``."""
        out = []
        while True:
            msg = await self.read()
            out.append(msg)
            if msg.verb in stop:
                return out

    async def sync(self, token: str = "sync") -> list[Line]:
        """PING the server; return what arrived before the PONG (all earlier commands of this
        client are answered and their messages delivered by then)."""
        self.send(f"PING {token}")
        out: list[Line] = []
        while True:
            msg = await self.read()
            if msg.verb == "PONG" and msg.params[-1] == token:
                return out
            out.append(msg)

    async def register(self, nick: str, user: str = "u", realname: str = "Real Name") -> None:
        self.send(f"NICK {nick}", f"USER {user} 0 * :{realname}")
        welcome = await self.until("001")
        self.nick = welcome.params[0]
        await self.until("376", "422")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
