#!/usr/bin/env python3
"""A chat server for browsers, IRC clients and scripts at once, with a bot: isthmus-chat in a file.

    python examples/chat-app/chat_app.py              # serve; open the printed addresses
    python examples/chat-app/chat_app.py --irc-port 6697 --http-port 8080 --db chat.db
    python examples/chat-app/chat_app.py --demo       # a scripted conversation over every front end
    python examples/chat-app/chat_app.py --help

It starts an ``isthmus.chat.ChatServer``: the line protocol, IRC and HTTP (REST, WebSocket and a
web page) over one chat state, in one event loop. Then it connects an IRC bot to it, written with
the ``irc`` package from PyPI (``irc.client_aio``): the bot joins #main, greets whoever joins and
answers ``!time`` and ``!who``. A browser, weechat or irssi, and ``nc`` then share #main.

``--demo`` also drives a scripted conversation: ``alice`` on the line protocol and ``bob`` on the
WebSocket talk to each other and to the bot; it prints what each front end received and exits 0
when every message of the conversation reached all three (the IRC bot, the line client, the
WebSocket client), 1 when one did not. ``--json`` prints that report as JSON instead.

Exit status: 0 after Ctrl-C or SIGTERM (serving) or a demo that checked out; 1 a demo that did
not, or an error; 2 bad options; 130 a demo interrupted by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import irc.client
import irc.client_aio
import websockets

from isthmus.chat import ChatServer, ServerConfig

log = logging.getLogger("chat_app")

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
FRONTS = ("line", "irc", "websocket")


# ------------------------------------------------------------------------------------------
# the bot: an IRC client written with the `irc` package
# ------------------------------------------------------------------------------------------


class ChatBot:
    """An IRC bot: joins ``channel``, greets whoever joins, answers ``!time``, ``!who``, ``!help``.

    ``await bot.start(host, port)`` connects and returns once the bot is in the channel;
    ``await bot.close()`` quits and waits until the connection is closed. The bot asks for the
    IRCv3 ``echo-message`` capability, so the server sends its own messages back to it too:
    ``on_message(nick, text, raw_line)`` sees the channel exactly as the server delivered it.
    """

    def __init__(
        self,
        nick: str = "chatbot",
        channel: str = "#main",
        *,
        on_message: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.nick = nick
        self.channel = channel
        self.on_message = on_message
        self.answered = 0  # commands answered
        self._conn: irc.client_aio.AioConnection | None = None
        self._joined: asyncio.Future[None] | None = None
        self._gone: asyncio.Future[None] | None = None
        self._raw = ""  # the line being handled
        self._names: list[str] = []  # the NAMES reply being collected
        self._who_asked: list[str] = []  # nicks waiting for the end of that reply

    async def start(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Connect, register, join the channel; OSError or TimeoutError when that fails."""
        loop = asyncio.get_running_loop()
        self._joined, self._gone = loop.create_future(), loop.create_future()
        reactor = irc.client_aio.AioReactor(loop=loop)
        for event, handler in [
            ("all_raw_messages", self._on_raw),
            ("welcome", self._on_welcome),
            ("nicknameinuse", self._on_refused),
            ("erroneusnickname", self._on_refused),
            ("join", self._on_join),
            ("pubmsg", self._on_pubmsg),
            ("namreply", self._on_namreply),
            ("endofnames", self._on_endofnames),
            ("disconnect", self._on_disconnect),
        ]:
            reactor.add_global_handler(event, handler)
        self._conn = reactor.server()
        await self._conn.connect(host, port, self.nick, ircname="isthmus-chat example bot")
        try:
            await asyncio.wait_for(asyncio.shield(self._joined), timeout)
        except BaseException:
            await self.close()
            raise
        log.info("bot %s joined %s on %s:%d", self.nick, self.channel, host, port)

    async def close(self, message: str = "bye") -> None:
        """Send QUIT and wait (at most 5 s) until the server has closed the connection."""
        conn, self._conn = self._conn, None
        if conn is None or self._gone is None:
            return
        if conn.is_connected():
            conn.quit(message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._gone), 5.0)
        conn.disconnect()  # a no-op once the server has hung up
        await asyncio.sleep(0)  # let the transport finish closing its socket

    # ------------------------------------------------------------- IRC events

    def _on_raw(self, conn: Any, event: irc.client.Event) -> None:
        self._raw = event.arguments[0]  # the events this line makes come next

    def _on_welcome(self, conn: Any, event: irc.client.Event) -> None:
        conn.cap("REQ", "echo-message")
        conn.join(self.channel)

    def _on_refused(self, conn: Any, event: irc.client.Event) -> None:
        if self._joined is not None and not self._joined.done():
            self._joined.set_exception(OSError(f"the server refused the nickname {self.nick}"))

    def _on_join(self, conn: Any, event: irc.client.Event) -> None:
        nick = event.source.nick
        if event.target.lower() != self.channel.lower():
            return
        if nick == conn.get_nickname():
            conn.privmsg(self.channel, f"{nick} here: say !time or !who")
            if self._joined is not None and not self._joined.done():
                self._joined.set_result(None)
        else:
            conn.privmsg(self.channel, f"welcome, {nick}! say !time or !who")

    def _on_pubmsg(self, conn: Any, event: irc.client.Event) -> None:
        nick, text = event.source.nick, event.arguments[0]
        if self.on_message is not None:
            self.on_message(nick, text, self._raw)
        if nick == conn.get_nickname():
            return  # our own message, echoed back
        command = text.strip().lower()
        if command == "!time":
            now = datetime.datetime.now(datetime.UTC)
            conn.privmsg(self.channel, f"{nick}: it is {now:%H:%M:%S} UTC, {now:%A %d %B %Y}")
            self.answered += 1
        elif command == "!who":
            if not self._who_asked:
                conn.names([self.channel])  # answered at the end of the NAMES reply
            self._who_asked.append(nick)
        elif command == "!help":
            conn.privmsg(self.channel, f"{nick}: !time says the time, !who who is here")
            self.answered += 1

    def _on_namreply(self, conn: Any, event: irc.client.Event) -> None:
        # arguments: "=", channel, "nick @op nick ..."
        self._names.extend(n.lstrip("@+") for n in event.arguments[2].split())

    def _on_endofnames(self, conn: Any, event: irc.client.Event) -> None:
        names, self._names = sorted(self._names, key=str.casefold), []
        asked, self._who_asked = self._who_asked, []
        if not asked:
            return  # the names that came with our own JOIN
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        for nick in asked:
            conn.privmsg(self.channel, f"{nick}: {len(names)} in {self.channel}: {shown}")
            self.answered += 1

    def _on_disconnect(self, conn: Any, event: irc.client.Event) -> None:
        if self._joined is not None and not self._joined.done():
            self._joined.set_exception(ConnectionError("the IRC server closed the connection"))
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)


# ------------------------------------------------------------------------------------------
# the other two front ends, as a script sees them
# ------------------------------------------------------------------------------------------


class LineClient:
    """The line protocol (``nc`` does the same by hand): ``HELLO room:nick``, ``SEND room text``.

    ``on_message(nick, text, raw_line)`` is called for every ``MSG`` line; :meth:`command`
    sends one command and returns its ``OK``/``ERR`` reply (replies come in command order).
    """

    def __init__(self, on_message: Callable[[str, str, str], None] | None = None) -> None:
        self.on_message = on_message
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._replies: list[asyncio.Future[str]] = []
        self._task: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection(host, port)
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def command(self, line: str, timeout: float = 10.0) -> str:
        """Send ``line``; its reply (``OK ...``); ChatError-like RuntimeError for ``ERR ...``."""
        assert self._writer is not None
        fut = asyncio.get_running_loop().create_future()
        self._replies.append(fut)
        self._writer.write(line.encode() + b"\n")
        reply: str = await asyncio.wait_for(fut, timeout)
        if reply.startswith("ERR "):
            raise RuntimeError(f"{line!r} was refused: {reply}")
        return reply

    async def _read(self) -> None:
        assert self._reader is not None
        while raw := await self._reader.readline():
            line = raw.decode().rstrip("\r\n")
            if line.startswith(("OK ", "ERR ")):
                if self._replies and not (fut := self._replies.pop(0)).done():
                    fut.set_result(line)
            elif line.startswith("MSG ") and self.on_message is not None:
                _, _room, nick, _seq, text = line.split(" ", 4)
                self.on_message(nick, text, line)
        for fut in self._replies:
            if not fut.done():
                fut.set_exception(ConnectionError("the server closed the connection"))

    async def close(self) -> None:
        """``QUIT``, then close the socket."""
        if self._writer is None:
            return
        with contextlib.suppress(Exception):
            await self.command("QUIT", timeout=5.0)
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5.0)
            self._task.cancel()
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        self._writer = None


class WebClient:
    """The WebSocket front end, as the web page uses it: JSON messages on ``/ws``.

    ``{"type": "hello", "nick": ...}`` registers, ``{"type": "send", "room": ..., "text": ...}``
    sends; the server pushes ``{"type": "message", ...}`` for every message of a joined room,
    which ``on_message(nick, text, raw_json)`` receives.
    """

    def __init__(self, on_message: Callable[[str, str, str], None] | None = None) -> None:
        self.on_message = on_message
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}

    async def open(self, url: str, nick: str) -> dict[str, Any]:
        """Connect and say hello; returns the server's answer to the hello."""
        self._ws = await websockets.connect(url)
        self._task = asyncio.get_running_loop().create_task(self._read())
        return await self.request({"type": "hello", "nick": nick}, "welcome")

    async def request(
        self, msg: dict[str, Any], answer: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send ``msg`` and return the next pushed message of type ``answer`` (or ``error``)."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(answer, []).append(fut)
        await self._ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, timeout)
        if reply.get("type") == "error":
            raise RuntimeError(f"{msg} was refused: {reply}")
        return reply

    async def send(self, room: str, text: str) -> None:
        await self._ws.send(json.dumps({"type": "send", "room": room, "text": text}))

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self._ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "message" and self.on_message is not None:
                    self.on_message(str(msg.get("from")), str(msg.get("text")), raw)
                waiters = self._waiting.get("error" if kind == "error" else kind) or (
                    self._waiting.get(next(iter(self._waiting), ""), []) if kind == "error" else []
                )
                if waiters:
                    waiters.pop(0).set_result(msg)
        for waiters in self._waiting.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError("the WebSocket closed"))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5.0)
        self._ws = None


# ------------------------------------------------------------------------------------------
# the demo: a scripted conversation, checked on every front end
# ------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the front ends received: per front, (nick, text, raw line) in arrival order."""

    lines: dict[str, list[tuple[str, str, str]]] = field(
        default_factory=lambda: {f: [] for f in FRONTS}
    )
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def recorder(self, front: str) -> Callable[[str, str, str], None]:
        def record(nick: str, text: str, raw: str) -> None:
            self.lines[front].append((nick, text, raw))
            self.changed.set()

        return record

    def has(self, front: str, nick: str, text: str) -> bool:
        return any(n == nick and t == text for n, t, _ in self.lines[front])

    def everywhere(self, nick: str, text: str) -> bool:
        return all(self.has(f, nick, text) for f in FRONTS)

    def find(self, nick: str, prefix: str, fronts: tuple[str, ...] = FRONTS) -> str | None:
        """A text from ``nick`` starting with ``prefix`` that each of ``fronts`` received."""
        for n, text, _ in self.lines[fronts[0]]:
            if n == nick and text.startswith(prefix) and all(self.has(f, n, text) for f in fronts):
                return text
        return None

    async def until(self, ready: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        """Wait (woken by each arrival, no polling) until ``ready()`` returns something true."""
        deadline = time.monotonic() + timeout
        while not (result := ready()):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: not there within {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return result


async def demo(
    server: ChatServer, bot: ChatBot, seen: Seen, opts: argparse.Namespace
) -> dict[str, Any]:
    """alice (line protocol) and bob (WebSocket) talk to each other and to the bot (IRC).

    Every message of the room from the moment all three are in must reach all three: the
    server's own record of the room (``Chat.subscribe``) is what the front ends are checked
    against. Returns the report (see :func:`print_report`).
    """
    host = _client_host(opts.host)
    room, channel = "main", bot.channel
    record: list[dict[str, Any]] = []  # the room's messages, as the server fanned them out
    server.chat.subscribe(
        lambda kind, obj: (
            record.append(obj.to_json()) if kind == "message" and obj.room == room else None
        )
    )
    alice = LineClient(seen.recorder("line"))
    bob = WebClient(seen.recorder("websocket"))
    try:
        await alice.open(host, server.line_port)
        await alice.command(f"HELLO {room}:alice")
        await seen.until(
            lambda: seen.find(bot.nick, "welcome, alice", ("line", "irc")), "the bot greeting alice"
        )
        await bob.open(f"ws://{host}:{server.http_port}/ws", "bob")
        await bob.request({"type": "join", "room": room}, "joined")
        start_seq = server.chat.room(room).last_seq  # everyone is in from here on

        async def says(client: LineClient | WebClient, nick: str, text: str) -> None:
            if isinstance(client, LineClient):
                await client.command(f"SEND {room} {text}")
            else:
                await client.send(room, text)
            await seen.until(lambda: seen.everywhere(nick, text), f"{nick}'s {text!r}")

        await seen.until(lambda: seen.find(bot.nick, "welcome, bob"), "the bot greeting bob")
        await says(
            alice, "alice", f"hi bob! alice here, on the line protocol ({host}:{server.line_port})"
        )
        await says(bob, "bob", "hi alice! bob here, in a browser tab (WebSocket)")
        await says(alice, "alice", "!time")
        time_answer = await seen.until(lambda: seen.find(bot.nick, "alice: it is"), "!time")
        await says(bob, "bob", "!who")
        who_answer = await seen.until(lambda: seen.find(bot.nick, "bob: "), "!who")
        await says(bob, "bob", f"the bot is on IRC, {channel} on port {server.irc_port}")
        await says(alice, "alice", "bye!")
        await server.chat.flush()
    finally:
        await bob.close()
        await alice.close()
    conversation = [m for m in record if int(m["seq"]) > start_seq]
    messages = [
        {
            "seq": m["seq"],
            "from": m["from"],
            "text": m["text"],
            "seen": {f: seen.has(f, str(m["from"]), str(m["text"])) for f in FRONTS},
        }
        for m in conversation
    ]
    return {
        "ok": bool(messages) and all(all(m["seen"].values()) for m in messages),
        "messages": messages,
        "received": {f: [raw for _, _, raw in seen.lines[f]] for f in FRONTS},
        "bot": {"nick": bot.nick, "time": time_answer, "who": who_answer},
        "ports": {"line": server.line_port, "irc": server.irc_port, "http": server.http_port},
    }


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console()
    titles = {"line": "alice, line protocol", "irc": "the bot, IRC", "websocket": "bob, WebSocket"}
    for front in FRONTS:
        # Text, not markup: what clients say may contain [brackets].
        body = Text("\n".join(report["received"][front]) or "(nothing)")
        console.print(Panel(body, title=f"what {titles[front]} received", title_align="left"))
    table = Table(title="every message of the conversation, by front end", title_justify="left")
    table.add_column("seq", justify="right")
    table.add_column("from", style="bold")
    table.add_column("text")
    for front in FRONTS:
        table.add_column(front, justify="center")
    for m in report["messages"]:
        marks = ["[green]✓[/green]" if m["seen"][f] else "[red]✗[/red]" for f in FRONTS]
        table.add_row(str(m["seq"]), Text(m["from"]), Text(m["text"]), *marks)
    console.print(table)
    if report["ok"]:
        console.print("[green]every message crossed every front end[/green]")
    else:
        console.print("[red]some messages did not reach every front end[/red]")


# ------------------------------------------------------------------------------------------
# serving
# ------------------------------------------------------------------------------------------


def _client_host(host: str) -> str:
    """Where a client on this machine connects when the server binds ``host``."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def print_addresses(server: ChatServer, bot: ChatBot) -> None:
    from rich.console import Console
    from rich.table import Table

    host = _client_host(server.config.host)
    web = f"[{host}]" if ":" in host else host
    table = Table(title="isthmus-chat is running: connect with", title_justify="left")
    table.add_column("client", style="bold")
    table.add_column("how")
    table.add_row("browser", f"http://{web}:{server.http_port}/")
    table.add_row("irssi", f"irssi -c {host} -p {server.irc_port}   then /join {bot.channel}")
    table.add_row(
        "weechat",
        f"/server add isthmus {host}/{server.irc_port} -notls; /connect isthmus; "
        f"/join {bot.channel}",
    )
    table.add_row("line protocol", f"nc {host} {server.line_port}   then HELLO main:yourname")
    table.add_row("REST", f"curl http://{web}:{server.http_port}/server/status")
    table.add_row("the bot", f"{bot.nick} in {bot.channel}: say !time or !who")
    Console().print(table)
    log.info("Ctrl-C stops the server")


async def run(opts: argparse.Namespace) -> int:
    """Start the server and the bot; then serve until Ctrl-C/SIGTERM, or run the demo."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = ServerConfig(
        host=opts.host,
        line_port=opts.line_port,
        irc_port=opts.irc_port,
        http_port=opts.http_port,
        db=opts.db,
    )
    seen = Seen()
    try:
        async with ChatServer(config) as server:
            bot = ChatBot(opts.bot_nick, "#" + opts.room.lstrip("#"))
            if opts.demo:
                bot.on_message = seen.recorder("irc")
            try:
                await _unless_stopped(bot.start(_client_host(opts.host), server.irc_port), stop)
                if not opts.demo:
                    print_addresses(server, bot)
                    await stop.wait()
                    return 0
                report = await _unless_stopped(demo(server, bot, seen, opts), stop)
            finally:
                await bot.close()
    except _Stopped:
        log.warning("interrupted")
        return 0 if not opts.demo else EXIT_INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if opts.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["ok"] else EXIT_FAILED


class _Stopped(Exception):
    """Ctrl-C or SIGTERM arrived."""


async def _unless_stopped(work: Awaitable[Any], stop: asyncio.Event) -> Any:
    """Await ``work`` unless ``stop`` is set first (then cancel it and raise _Stopped)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise _Stopped
    return task.result()


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d = ServerConfig()
    p = argparse.ArgumentParser(
        prog="chat_app.py",
        description="Serve isthmus-chat (line protocol, IRC, WebSocket, REST and a web page) with "
        "an IRC bot in #main, and print how to connect.",
        epilog="Ctrl-C or SIGTERM stops the server. --demo: a scripted conversation between a "
        "line-protocol client, a WebSocket client and the bot; exit 0 when every message "
        "reached every front end.",
    )
    p.add_argument("--host", default=d.host, help=f"address to bind (default {d.host})")
    p.add_argument(
        "--line-port", type=int, help=f"line protocol port (default {d.line_port}; 0: any free)"
    )
    p.add_argument("--irc-port", type=int, help=f"IRC port (default {d.irc_port}; 0: any free)")
    p.add_argument(
        "--http-port",
        type=int,
        help=f"web page, WebSocket and REST port (default {d.http_port}; 0: any free)",
    )
    p.add_argument(
        "--db",
        help=f"SQLite file, :memory: or a postgresql:// DSN (default {d.db}; :memory: with --demo)",
    )
    p.add_argument("--room", default="main", help="the bot's room (default main, #main on IRC)")
    p.add_argument("--bot-nick", default="chatbot", help="the bot's nickname (default chatbot)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="run a scripted conversation across every front end, report, exit "
        "(ports default to free ones)",
    )
    p.add_argument("--json", action="store_true", help="--demo: print the report as JSON")
    p.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(INFO)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv)
    d = ServerConfig()
    for name in ("line_port", "irc_port", "http_port"):
        if getattr(opts, name) is None:  # the demo must not collide with a running server
            setattr(opts, name, 0 if opts.demo else getattr(d, name))
        elif not 0 <= getattr(opts, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be 0..65535")
    if opts.db is None:
        opts.db = ":memory:" if opts.demo else d.db
    if opts.json and not opts.demo:
        parser.error("--json goes with --demo")
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=opts.log_level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
    if opts.log_level != "DEBUG":  # uvicorn says "connection open" for every WebSocket
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    try:
        return asyncio.run(run(opts))
    except (OSError, TimeoutError, RuntimeError, ConnectionError) as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
