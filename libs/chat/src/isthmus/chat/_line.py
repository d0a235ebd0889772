"""The seed's line protocol over TCP (and TLS): one command per line, every command answered.

Commands (case-insensitive verbs; ``room:id`` as in the seed, or just ``room``)::

    HELLO [room:]id          register as ``id`` (``client`` picks a free client<N>) and join room
    NEW room[:id] [topic]    create a room (its owner joins it)
    JOIN room[:id]           join a room
    PART room                leave it
    SEND room[:id] text      send to a room            -> OK SEND room seq id
    DM nick text             direct message            -> OK DM nick seq id
    LIST rooms|clients|members room                     -> LIST <kind> [room] name ...
    WHO room                 members with their statuses
    TOPIC room [text]        read or set the topic
    HISTORY room [before] [limit]   HIST lines, then OK HISTORY room n
    KICK room nick [reason] / MODE room +o|-o|+b|-b|+m|-m|+t|-t [nick]
    REGISTER name password / AUTH name password-or-token   -> OK ... token
    PAUSE [id] / RESUME      withhold deliveries; RESUME replays what was missed
    STATUS / PING [x] / HELP / QUIT [id]

The seed took one command per connection, with ``room:id`` on each. A connection that was never
registered is registered implicitly by the first command that names ``room:id``, so a seed
client that connects, sends ``SEND main:alice hello`` and hangs up works unchanged.

Replies: ``OK <VERB> ...`` or ``ERR <VERB> <CODE> <text>``. Deliveries:
``MSG room from seq text``, ``DM from seq text``, ``EVENT kind room actor [target] [:text]``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any, ClassVar

from ._errors import ChatError, NoSuchClient
from ._model import Event, Message, Status
from ._state import Chat, Session
from ._stream import LineConnection, LineServer

__all__ = ["LineFormatter", "LineProtocolServer"]


class LineFormatter:
    """The line protocol's deliveries; the sender receives its own messages (as in the seed)."""

    echo = True
    joinable = True  # a byte stream: several messages may go out in one push

    def message(self, msg: Message) -> bytes:
        if msg.room[0] == "@":  # direct message or notice
            return f"DM {msg.sender} {msg.seq} {msg.text}\n".encode()
        return f"MSG {msg.room} {msg.sender} {msg.seq} {msg.text}\n".encode()

    def event(self, ev: Event) -> bytes | None:
        if ev.kind == "room":
            return None
        parts = ["EVENT", ev.kind, ev.room, ev.actor]
        if ev.target:
            parts.append(ev.target)
        line = " ".join(parts)
        if ev.text:
            line += " :" + ev.text
        return (line + "\n").encode()


def _safe(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


class LineConn(LineConnection):
    """One line-protocol client."""

    VERBS: ClassVar[frozenset[str]] = frozenset(
        [
            "HELLO",
            "NEW",
            "JOIN",
            "PART",
            "SEND",
            "DM",
            "MSG",
            "LIST",
            "WHO",
            "TOPIC",
            "HISTORY",
            "KICK",
            "MODE",
            "REGISTER",
            "AUTH",
            "PAUSE",
            "RESUME",
            "STATUS",
            "PING",
            "HELP",
            "QUIT",
            "ERROR",
        ]
    )

    def __init__(self, server: LineServer) -> None:
        super().__init__(server)
        self.account: str | None = None
        self._verb = "?"

    def on_open(self) -> None:
        if len(self.server.connections) > self.chat.limits.max_clients * 2 + 16:
            # Far more sockets than clients allowed: refuse early instead of parsing their lines.
            self.push(b"ERR HELLO LIMIT_EXCEEDED the server is full\n")
            self.close("full")

    def on_chat_error(self, line: bytes, exc: ChatError) -> None:
        self.reply(f"ERR {self._verb} {exc.code} {_safe(str(exc))}\n".encode())

    def ok(self, verb: str, *rest: object) -> None:
        text = " ".join(str(r) for r in (verb, *rest))
        self.reply(f"OK {text}\n".encode())

    def protocol_error(self, text: str) -> None:
        self.push(f"ERR {self._verb} PROTOCOL {text}\n".encode())
        self.close(text)

    async def handle_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            self._verb = "?"
            self.reply(b"ERR ? ENCODING lines must be UTF-8\n")
            return
        verb, _, rest = line.strip().partition(" ")
        verb = verb.upper()
        self._verb = verb
        if verb not in self.VERBS:
            self.reply(f"ERR {verb[:20]} UNKNOWN_COMMAND try HELP\n".encode())
            return
        handler = getattr(self, "cmd_" + verb.lower())
        await handler(rest.strip())

    # ------------------------------------------------------------- helpers

    def _split_target(self, arg: str) -> tuple[str, str | None]:
        room, sep, cid = arg.partition(":")
        return room, (cid if sep else None)

    async def _ensure(self, cid: str | None, room: str | None = None) -> Session:
        """The registered session; registers ``cid`` implicitly (the seed's one-shot form)."""
        if self.session is not None:
            if cid and cid.casefold() != self.session.key and cid != "client":
                raise ChatError(f"this connection is {self.session.nick}, not {cid}")
            return self.session
        if not cid:
            raise ChatError("say HELLO room:id first")
        session = await self._register(cid)
        if room:
            self.chat.join(session, room)
        return session

    async def _register(self, cid: str) -> Session:
        if cid == "client":
            n = len(self.chat.sessions) + 1
            while f"client{n}".casefold() in self.chat.sessions:
                n += 1
            cid = f"client{n}"
        account = (
            self.account if self.account and self.account.casefold() == cid.casefold() else None
        )
        session = await self.chat.connect(cid, front="line", sink=self, account=account)
        session.info["peer"] = self.peer
        self.session = session
        return session

    # ------------------------------------------------------------- commands

    async def cmd_hello(self, arg: str) -> None:
        room, cid = self._split_target(arg.split(" ")[0]) if arg else ("main", "client")
        if cid is None:  # "HELLO alice": no room part
            room, cid = "main", room
        session = self.session or await self._register(cid or "client")
        joined = self.chat.join(session, room or "main")
        self.ok("HELLO", session.nick, joined.name)

    async def cmd_new(self, arg: str) -> None:
        target, _, topic = arg.partition(" ")
        room, cid = self._split_target(target)
        s = await self._ensure(cid)
        r = self.chat.create_room(s, room, topic)
        # OK only once the room is in the store: a crash after OK NEW must not lose it.
        saved = asyncio.ensure_future(self.chat.flush())
        self.reply_later(saved, lambda _r: f"OK NEW {r.name}\n".encode(), _err("NEW"))

    async def cmd_join(self, arg: str) -> None:
        room, cid = self._split_target(arg.split(" ")[0])
        s = await self._ensure(cid)
        r = self.chat.join(s, room)
        self.ok("JOIN", r.name, len(r.members))

    async def cmd_part(self, arg: str) -> None:
        room, _, reason = arg.partition(" ")
        s = await self._ensure(None)
        r = self.chat.part(s, self._split_target(room)[0], reason)
        self.ok("PART", r.name)

    async def cmd_send(self, arg: str) -> None:
        target, _, text = arg.partition(" ")
        room, cid = self._split_target(target)
        s = await self._ensure(cid, room)
        if s.status is Status.SUSPENDED:  # the seed: sending resumes a paused client
            await self.chat.resume(s)
        fut = self.chat.post(s, room, text)
        self.reply_later(fut, _ok_send, _err("SEND"))

    async def cmd_dm(self, arg: str) -> None:
        nick, _, text = arg.partition(" ")
        s = await self._ensure(None)
        fut = self.chat.post_dm(s, nick, text)
        self.reply_later(fut, _ok_dm, _err("DM"))

    cmd_msg = cmd_dm

    async def cmd_list(self, arg: str) -> None:
        kind, _, room = arg.partition(" ")
        kind = (kind or "rooms").lower()
        if kind in ("rooms", "chatrooms", "room"):
            names = [r.name for r in self.chat.list_rooms()]
            self.reply(("LIST rooms " + " ".join(names)).rstrip().encode() + b"\n")
        elif kind in ("clients", "client"):
            names = [s.nick for s in self.chat.sessions.values()]
            names += [rc.nick for rc in self.chat.remote_clients.values()]  # on other nodes
            names.sort(key=str.casefold)
            self.reply(("LIST clients " + " ".join(names)).rstrip().encode() + b"\n")
        elif kind in ("members", "member"):
            r = self.chat.room(room.strip() or "main")
            self.reply(f"LIST members {r.name} {' '.join(r.nicks())}".rstrip().encode() + b"\n")
        else:
            raise ChatError("LIST rooms, LIST clients or LIST members <room>")

    async def cmd_who(self, arg: str) -> None:
        r = self.chat.room(arg.strip() or "main")
        for s in sorted(r.members.values(), key=lambda s: s.key):
            role = (
                "owner"
                if s.key == r.record.owner.casefold()
                else ("moderator" if s.key in r.record.moderators else "member")
            )
            self.reply(f"WHO {r.name} {s.nick} {s.status.value} {s.front} {role}\n".encode())
        self.ok("WHO", r.name, len(r.members))

    async def cmd_topic(self, arg: str) -> None:
        room, sep, topic = arg.partition(" ")
        if not sep:
            r = self.chat.room(room)
            self.ok("TOPIC", r.name, ":" + r.topic)
            return
        s = await self._ensure(None)
        fut = self.chat.set_topic(s, room, topic.removeprefix(":"))
        self.reply_later(fut, lambda _r: f"OK TOPIC {room}\n".encode(), _err("TOPIC"))

    async def cmd_history(self, arg: str) -> None:
        parts = arg.split()
        if not parts:
            raise ChatError("HISTORY room [before] [limit]")
        before = int(parts[1]) if len(parts) > 1 and parts[1] != "-" else None
        limit = int(parts[2]) if len(parts) > 2 else 50
        room = parts[0]
        if room.startswith("@") and self.session is not None:
            msgs = await self.chat.dm_history(self.session, room[1:], before=before, limit=limit)
        else:
            msgs = await self.chat.history(room, before=before, limit=limit, session=self.session)
        for m in msgs:
            self.reply(f"HIST {m.room} {m.sender} {m.seq} {m.ts:.3f} {m.text}\n".encode())
        self.ok("HISTORY", room, len(msgs))

    async def cmd_kick(self, arg: str) -> None:
        room, nick, *reason = arg.split(" ", 2)
        s = await self._ensure(None)
        self.chat.kick(s, room, nick, reason[0] if reason else "")
        self.ok("KICK", room, nick)

    async def cmd_mode(self, arg: str) -> None:
        parts = arg.split()
        if len(parts) < 2:
            raise ChatError("MODE room +o|-o|+b|-b|+m|-m|+t|-t [nick]")
        s = await self._ensure(None)
        fut = self.chat.set_mode(s, parts[0], parts[1], parts[2] if len(parts) > 2 else None)
        text = " ".join(parts)
        self.reply_later(fut, lambda _r: f"OK MODE {text}\n".encode(), _err("MODE"))

    async def cmd_register(self, arg: str) -> None:
        name, _, password = arg.partition(" ")
        token = await self.chat.register_account(name, password)
        self.account = name
        self.ok("REGISTER", name, token)

    async def cmd_auth(self, arg: str) -> None:
        name, _, secret = arg.partition(" ")
        token = await self.chat.login(name, secret)
        self.account = name
        self.ok("AUTH", name, token)

    async def cmd_pause(self, arg: str) -> None:
        s = await self._ensure(None)
        if arg and arg != s.nick:  # PAUSE <id> of another client: moderators of every room only
            raise NoSuchClient("a client may pause itself only")
        self.chat.pause(s)
        self.ok("PAUSE", s.nick)

    async def cmd_resume(self, arg: str) -> None:
        s = await self._ensure(None)
        missed = await self.chat.resume(s)
        self.ok("RESUME", s.nick, len(missed))

    async def cmd_status(self, arg: str) -> None:
        self.reply(f"STATUS {json.dumps(self.chat.status(), separators=(',', ':'))}\n".encode())

    async def cmd_ping(self, arg: str) -> None:
        self.reply(f"PONG {arg}".rstrip().encode() + b"\n")

    async def cmd_help(self, arg: str) -> None:
        self.reply(("OK HELP " + " ".join(sorted(self.VERBS))).encode() + b"\n")

    async def cmd_error(self, arg: str) -> None:  # the seed's client-side ERROR: log and close
        self.ok("ERROR")
        self.close("client error: " + arg[:200])

    async def cmd_quit(self, arg: str) -> None:
        nick = self.session.nick if self.session is not None else "-"
        if self.session is not None:
            session, self.session = self.session, None
            session.status = Status.CLOSING
            self.chat.disconnect(session, "quit")
        self.ok("QUIT", nick)
        self._advance()
        self.close("quit")


def _ok_send(m: Message) -> bytes:
    return f"OK SEND {m.room} {m.seq} {m.id}\n".encode()


def _ok_dm(m: Message) -> bytes:
    return f"OK DM {m.target} {m.seq} {m.id}\n".encode()


def _err(verb: str) -> Any:
    def render(exc: BaseException) -> bytes:
        code = exc.code if isinstance(exc, ChatError) else "INTERNAL"
        return f"ERR {verb} {code} {_safe(str(exc))}\n".encode()

    return render


class LineProtocolServer(LineServer):
    """The line protocol front end: ``await LineProtocolServer(chat).start(host, port)``."""

    protocol = LineConn

    def __init__(self, chat: Chat) -> None:
        super().__init__(chat, LineFormatter())

    async def start(
        self,
        host: str | None = "127.0.0.1",
        port: int = 10010,
        *,
        ssl_context: ssl.SSLContext | None = None,
        **kw: Any,
    ) -> Any:
        """Listen on ``host:port`` (the seed's 10010 by default; 0 picks a free port)."""
        return await super().start(host, port, ssl_context=ssl_context, **kw)
