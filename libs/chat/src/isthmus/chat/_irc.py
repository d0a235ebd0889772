"""The IRC front end: an RFC 1459/2812 subset with IRCv3 capabilities, over :mod:`._stream`.

Channels are ``#room``; the state's room ``main`` is ``#main`` here, so IRC users share rooms
with the line protocol and the WebSocket. Supported: NICK, USER, PASS, CAP (``server-time``,
``message-tags``, ``echo-message``, ``sasl``), AUTHENTICATE (SASL PLAIN), JOIN, PART, PRIVMSG,
NOTICE, NAMES, LIST, TOPIC, MODE (channel ``o b m t``; user mode query), KICK, WHO, WHOIS,
PING/PONG, QUIT, MOTD, AWAY, ISON, USERHOST, VERSION, LUSERS, TAGMSG (accepted, not relayed).

Deliveries are encoded by an :class:`IrcFormatter`. The state encodes each message once per
distinct formatter object, so the server keeps one formatter per capability combination and a
connection switches between them when its capabilities change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._errors import (
    AuthError,
    Banned,
    ChatError,
    InvalidName,
    LimitExceeded,
    NameInUse,
    NoSuchClient,
    NoSuchRoom,
    NotInRoom,
    PermissionDenied,
    RateLimited,
)
from ._model import Event, Message, check_nick, check_room_name
from ._state import Chat, Room, Session
from ._stream import LineConnection, LineServer
from ._version import __version__

__all__ = [
    "IrcFormatter",
    "IrcMessage",
    "IrcServer",
    "escape_tag_value",
    "format_message",
    "parse_message",
    "unescape_tag_value",
]

#: The capabilities this server offers (``sasl`` is advertised as ``sasl=PLAIN`` to 302 clients).
CAPABILITIES = ("echo-message", "message-tags", "sasl", "server-time")

_MAX_LINE = 512  # bytes of the non-tag part, CR LF included (RFC 1459)
_MAX_TAGS = 4096  # bytes of the tag part, "@" and the trailing space included (IRCv3)
_SASL_CHUNK = 400
_MAX_TARGETS = 4
_VERSION = f"isthmus-chat-{__version__}"

# ------------------------------------------------------------------------------ parsing


@dataclass(slots=True)
class IrcMessage:
    """One parsed IRC line: ``@tags :source VERB params...``."""

    verb: str
    params: list[str] = field(default_factory=list)
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPE = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})


def unescape_tag_value(value: str) -> str:
    """Decode an IRCv3 tag value (``\\:`` is ``;``, ``\\s`` a space; a lone ``\\`` is dropped)."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\":
            i += 1
            if i < n:
                out.append(_UNESCAPE.get(value[i], value[i]))
        else:
            out.append(c)
        i += 1
    return "".join(out)


def escape_tag_value(value: str) -> str:
    """Encode a tag value per the IRCv3 message-tags specification."""
    return value.translate(_ESCAPE)


def parse_message(line: str) -> IrcMessage:
    """Split one line (without CR LF) into tags, source, verb and params.

    Atoms are separated by one or more spaces (RFC 1459); a parameter starting with ``:`` is
    the trailing one and keeps its spaces. The verb keeps its case. An empty verb means the
    line had no command.
    """
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw, _, rest = rest[1:].partition(" ")
        for item in raw.split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = unescape_tag_value(value)
    rest = rest.lstrip(" ")
    source = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
    verb, _, rest = rest.lstrip(" ").partition(" ")
    params: list[str] = []
    while rest:
        rest = rest.lstrip(" ")
        if not rest:
            break
        if rest[0] == ":":
            params.append(rest[1:])
            break
        param, _, rest = rest.partition(" ")
        params.append(param)
    return IrcMessage(verb, params, source, tags)


def format_message(
    verb: str,
    *params: str,
    source: str | None = None,
    tags: dict[str, str] | None = None,
    trailing: bool = False,
) -> str:
    """Join atoms into a line (without CR LF). The last parameter gets a ``:`` when it must
    (empty, has a space, starts with ``:``) or when ``trailing`` asks for it."""
    parts: list[str] = []
    if tags:
        parts.append(
            "@" + ";".join(k if v == "" else f"{k}={escape_tag_value(v)}" for k, v in tags.items())
        )
    if source:
        parts.append(":" + source)
    parts.append(verb)
    if params:
        parts.extend(params[:-1])
        last = params[-1]
        if trailing or not last or " " in last or last[0] == ":":
            last = ":" + last
        parts.append(last)
    return " ".join(parts)


def _iso(ts: float) -> str:
    ms = int(ts * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{ms:03d}Z"


def _clean(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ").replace("\x00", "")


# ------------------------------------------------------------------------------ formatter


class IrcFormatter:
    """IRC deliveries for one capability combination (``server-time``, ``message-tags``,
    ``echo-message``). Shared by every connection with that combination."""

    __slots__ = ("_quit_key", "_server", "echo", "last_quit", "message_tags", "server_time")
    joinable = True  # a byte stream: several messages may go out in one push

    def __init__(
        self, server: IrcServer, *, server_time: bool, message_tags: bool, echo: bool
    ) -> None:
        self._server = server
        self.server_time = server_time
        self.message_tags = message_tags
        self.echo = echo
        #: The bytes of the latest QUIT: the state emits one quit event per room, and the same
        #: object comes back for each, so a connection can deliver it once (see IrcConn.push).
        self.last_quit: bytes | None = None
        self._quit_key: tuple[str, float, str] | None = None

    def _tags(self, ts: float, msgid: str | None = None) -> str:
        if self.server_time:
            if self.message_tags and msgid is not None:
                return f"@time={_iso(ts)};msgid={escape_tag_value(msgid)} "
            return f"@time={_iso(ts)} "
        if self.message_tags and msgid is not None:
            return f"@msgid={escape_tag_value(msgid)} "
        return ""

    def message(self, msg: Message) -> bytes:
        """``PRIVMSG``/``NOTICE`` to ``#room`` (or to the recipient's nick for a DM)."""
        verb = "NOTICE" if msg.kind == "notice" else "PRIVMSG"
        target = msg.target if msg.room[0] == "@" and msg.target else "#" + msg.room
        mask = self._server.mask(msg.sender)
        return f"{self._tags(msg.ts, msg.id)}:{mask} {verb} {target} :{msg.text}\r\n".encode()

    def event(self, ev: Event) -> bytes | None:
        """JOIN, PART, QUIT, KICK, TOPIC and MODE lines; nothing for other events."""
        kind = ev.kind
        chan = "#" + ev.room
        if kind == "join":
            body = f"JOIN {chan}"
        elif kind == "part":
            body = f"PART {chan} :{_clean(ev.text)}" if ev.text else f"PART {chan}"
        elif kind == "quit":
            key = (ev.actor, ev.ts, ev.text)
            if key == self._quit_key and self.last_quit is not None:
                return self.last_quit
            reason = _clean(ev.text) or "Quit"
            data = f"{self._tags(ev.ts)}:{self._server.mask(ev.actor)} QUIT :{reason}\r\n".encode()
            self._quit_key, self.last_quit = key, data
            return data
        elif kind == "kick":
            body = f"KICK {chan} {ev.target} :{_clean(ev.text) or ev.actor}"
        elif kind == "topic":
            body = f"TOPIC {chan} :{_clean(ev.text)}"
        elif kind == "mode":
            flag, _, arg = ev.text.partition(" ")
            if arg and flag.endswith("b"):
                arg += "!*@*"
            body = f"MODE {chan} {flag} {arg}".rstrip()
        else:
            return None
        return f"{self._tags(ev.ts)}:{self._server.mask(ev.actor)} {body}\r\n".encode()


# ------------------------------------------------------------------------------ connection


def _nothing(_result: object) -> bytes:
    return b""


_Handler = Callable[["IrcConn", IrcMessage], Awaitable[None]]


class IrcConn(LineConnection):
    """One IRC client connection."""

    #: Commands allowed before registration completes.
    PRE_REGISTRATION: ClassVar[frozenset[str]] = frozenset(
        ["CAP", "NICK", "USER", "PASS", "AUTHENTICATE", "PING", "PONG", "QUIT"]
    )
    #: Minimum parameter counts (461 ERR_NEEDMOREPARAMS below them).
    MIN_PARAMS: ClassVar[dict[str, int]] = {
        "USER": 4,
        "PASS": 1,
        "JOIN": 1,
        "PART": 1,
        "TOPIC": 1,
        "MODE": 1,
        "KICK": 2,
        "AUTHENTICATE": 1,
        "CAP": 1,
        "ISON": 1,
        "USERHOST": 1,
        "WHOIS": 1,
    }
    HANDLERS: ClassVar[dict[str, _Handler]] = {}

    def __init__(self, server: LineServer) -> None:
        super().__init__(server)
        assert isinstance(server, IrcServer)
        self.srv = server
        self._ifmt = server.formatter_for(False, False, False)
        self.fmt = self._ifmt
        self.nick: str | None = None  # pending before registration, then the session's
        self.user: str | None = None
        self.realname = ""
        self.password: str | None = None
        self.account: str | None = None
        self.caps: set[str] = set()
        self.cap_302 = False
        self.away: str | None = None
        self.umodes: set[str] = set()
        self._negotiating = False
        self._sasl_mech: str | None = None
        self._sasl_buf = ""
        self._seen_quit: bytes | None = None
        self._quit_reason: str | None = None
        self._verb = "?"
        self._target = ""
        self.last_rx = time.monotonic()
        self.ping_sent: float | None = None

    # ------------------------------------------------------------- plumbing

    @property
    def me(self) -> str:
        """The nickname numerics address (``*`` before one is known)."""
        if self.session is not None:
            return self.session.nick
        return self.nick or "*"

    def push(self, data: bytes) -> None:
        # One QUIT line per quitter, although the state sends one quit event per shared room.
        if data is self._ifmt.last_quit:
            if data is self._seen_quit:
                return
            self._seen_quit = data
        LineConnection.push(self, data)  # not super(): this runs once per delivery

    def send_line(self, verb: str, *params: str, source: str | None = None) -> None:
        """Reply with one line from ``source`` (the server by default); last param trailing."""
        line = format_message(verb, *params, source=source or self.srv.server_name, trailing=True)
        self.reply((line + "\r\n").encode())

    def numeric(self, code: str, *params: str, text: bool = True) -> None:
        """Reply with a numeric addressed to this client; with ``text`` the last parameter is
        a trailing one (``:`` even without spaces), as RFC 1459 writes human-readable text."""
        self.reply(self._numeric(code, *params, text=text))

    def _numeric(self, code: str, *params: str, text: bool = True) -> bytes:
        name = self.srv.server_name
        line = format_message(code, self.me, *params, source=name, trailing=text)
        return (line + "\r\n").encode()

    def buffer_updated(self, nbytes: int) -> None:
        self.last_rx = time.monotonic()
        self.ping_sent = None
        super().buffer_updated(nbytes)

    def on_open(self) -> None:
        if len(self.server.connections) > self.chat.limits.max_clients * 2 + 16:
            self.close("the server is full")

    def on_close(self) -> None:
        for key in [k for k, c in self.srv.users.items() if c is self]:
            del self.srv.users[key]

    def close(self, reason: str = "") -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            if self._quit_reason is None and reason:
                self._quit_reason = reason
            self.push(f"ERROR :Closing Link: {self.peer} ({_clean(reason)})\r\n".encode())
        super().close(reason)

    def quit_reason(self, exc: Exception | None) -> str:
        return self._quit_reason or super().quit_reason(exc)

    def check_idle(self, now: float, interval: float) -> None:
        """Ping a client idle for ``interval``; close one that did not answer within another."""
        if self.ping_sent is not None:
            if now - self.ping_sent >= interval:
                self.close(f"Ping timeout: {interval:g} seconds")
        elif now - self.last_rx >= interval:
            self.ping_sent = now
            self.push(f"PING :{self.srv.server_name}\r\n".encode())

    async def _settle(self) -> None:
        """Wait for this client's messages still being stored, so that a PART or QUIT reaches
        the room after them."""
        futs = [item[0] for item in self._replies if isinstance(item, tuple)]
        if futs:
            await asyncio.wait(futs)

    # ------------------------------------------------------------- dispatch

    async def handle_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        body = len(raw)
        if raw[:1] == b"@":
            sp = raw.find(b" ")
            tags_len = (sp if sp >= 0 else len(raw)) + 1
            body -= tags_len
            if tags_len > _MAX_TAGS:
                self.numeric("417", "Input line was too long")
                return
        if body + 2 > _MAX_LINE:
            self.numeric("417", "Input line was too long")
            return
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            line = raw.decode("latin-1")  # old clients still send legacy 8-bit text
        msg = parse_message(line)
        verb = msg.verb.upper()
        if not verb or verb.isdigit():
            return
        self._verb = verb
        self._target = msg.params[0] if msg.params else ""
        handler = self.HANDLERS.get(verb)
        if handler is None:
            self.numeric("421", verb[:32], "Unknown command")
            return
        if self.session is None and verb not in self.PRE_REGISTRATION:
            self.numeric("451", "You have not registered")
            return
        if len(msg.params) < self.MIN_PARAMS.get(verb, 0):
            self.numeric("461", verb, "Not enough parameters")
            return
        await handler(self, msg)

    def on_chat_error(self, line: bytes, exc: ChatError) -> None:
        self.reply(self._error(exc, self._verb, self._target))

    def _error(self, exc: BaseException, verb: str, target: str) -> bytes:
        """The reply for a refused request: the RFC numeric that fits, else a server NOTICE."""
        sending = verb in ("PRIVMSG", "NOTICE")
        chan = target.startswith("#")
        text = _clean(str(exc))
        if isinstance(exc, NoSuchRoom):
            return self._numeric("403", target, "No such channel")
        if isinstance(exc, NoSuchClient):
            return self._numeric("401", target, "No such nick/channel")
        if isinstance(exc, NameInUse):
            return self._numeric("433", target, f"Nickname is already in use ({text})")
        if isinstance(exc, InvalidName):
            if verb == "NICK":
                return self._numeric("432", target, "Erroneous nickname")
            if chan or verb in ("JOIN", "PART", "LIST", "NAMES"):
                return self._numeric("403", target, f"No such channel ({text})")
            if not sending and verb != "WHOIS":
                return self._notice(f"{verb} {target}: {text}")
            return self._numeric("401", target, "No such nick/channel")
        if isinstance(exc, NotInRoom):
            if sending:
                return self._numeric("404", target, f"Cannot send to channel ({text})")
            return self._numeric("442", target, "You're not on that channel")
        if isinstance(exc, PermissionDenied):
            if sending:
                return self._numeric("404", target, f"Cannot send to channel ({text})")
            if verb == "NICK":
                return self._numeric("432", target, f"Erroneous nickname ({text})")
            return self._numeric("482", target, "You're not channel operator")
        if isinstance(exc, Banned):
            return self._numeric("474", target, "Cannot join channel (+b)")
        if isinstance(exc, AuthError):
            return self._numeric("464", f"Password incorrect ({text})")
        if isinstance(exc, LimitExceeded) and verb == "JOIN" and chan:
            return self._numeric("405", target, f"You have joined too many channels ({text})")
        if isinstance(exc, (LimitExceeded, RateLimited)) and sending:
            return self._notice(f"*** Message to {target} not sent: {text}")
        return self._notice(f"*** {verb} {target}: {text}".replace("  ", " "))

    def _notice(self, text: str) -> bytes:
        line = format_message(
            "NOTICE", self.me, _clean(text), source=self.srv.server_name, trailing=True
        )
        return (line + "\r\n").encode()

    def _session(self) -> Session:
        assert self.session is not None
        return self.session

    # ------------------------------------------------------------- registration

    async def cmd_cap(self, m: IrcMessage) -> None:
        sub = m.params[0].upper()
        me = self.session.nick if self.session is not None else "*"
        if sub == "LS":
            if self.session is None:
                self._negotiating = True
            if len(m.params) > 1 and m.params[1].isdigit() and int(m.params[1]) >= 302:
                self.cap_302 = True
            caps = " ".join(
                "sasl=PLAIN" if c == "sasl" and self.cap_302 else c for c in CAPABILITIES
            )
            self.send_line("CAP", me, "LS", caps)
        elif sub == "LIST":
            self.send_line("CAP", me, "LIST", " ".join(sorted(self.caps)))
        elif sub == "REQ":
            if self.session is None:
                self._negotiating = True
            wanted = m.params[1].split() if len(m.params) > 1 else []
            if wanted and all(c.lstrip("-") in CAPABILITIES for c in wanted):
                for c in wanted:
                    if c.startswith("-"):
                        self.caps.discard(c[1:])
                    else:
                        self.caps.add(c)
                self._set_formatter()
                self.send_line("CAP", me, "ACK", " ".join(wanted))
            else:
                self.send_line("CAP", me, "NAK", m.params[1] if len(m.params) > 1 else "")
        elif sub == "END":
            if self._negotiating:
                self._negotiating = False
                await self._try_register()
        else:
            self.numeric("410", sub[:32], "Invalid CAP command")

    def _set_formatter(self) -> None:
        caps = self.caps
        self._ifmt = self.srv.formatter_for(
            "server-time" in caps, "message-tags" in caps, "echo-message" in caps
        )
        self.fmt = self._ifmt

    async def cmd_pass(self, m: IrcMessage) -> None:
        if self.session is not None:
            self.numeric("462", "You may not reregister")
            return
        self.password = m.params[0]

    async def cmd_user(self, m: IrcMessage) -> None:
        if self.session is not None or self.user is not None:
            self.numeric("462", "You may not reregister")
            return
        ident = "".join(c for c in m.params[0] if c.isalnum() or c in "-_.")[:16]
        self.user = ident or "user"
        self.realname = _clean(m.params[3])[:200]
        await self._try_register()

    async def cmd_nick(self, m: IrcMessage) -> None:
        if not m.params or not m.params[0]:
            self.numeric("431", "No nickname given")
            return
        new = m.params[0]
        try:
            check_nick(new, self.chat.limits)
        except InvalidName:
            self.numeric("432", new[:64], "Erroneous nickname")
            return
        s = self.session
        if s is None:
            if new.casefold() in self.chat.sessions:
                self.numeric("433", new, "Nickname is already in use")
                return
            self.nick = new
            await self._try_register()
            return
        if new == s.nick:
            return
        if (
            s.account is None
            and new.casefold() != s.key
            and await self.chat.store.get_account(new) is not None
        ):
            self.numeric("433", new, "Nickname is reserved by an account: log in to use it")
            return
        old_mask = self.srv.mask(s.nick)
        old_key = s.key
        try:
            self.chat.rename(s, new)
        except ChatError as exc:
            self.reply(self._error(exc, "NICK", new))
            return
        self.nick = s.nick
        if self.srv.users.get(old_key) is self:
            del self.srv.users[old_key]
        self.srv.users[s.key] = self
        line = f":{old_mask} NICK :{s.nick}\r\n".encode()
        self.push(line)
        told = {s.key}
        for name in s.rooms:
            room = self.chat.rooms.get(name)
            if room is None:
                continue
            for key, member in room.members.items():
                if key not in told and isinstance(member.sink, IrcConn):
                    told.add(key)
                    member.sink.push(line)

    async def cmd_authenticate(self, m: IrcMessage) -> None:
        arg = m.params[0]
        if self.session is not None or self.account is not None:
            self.numeric("907", "You have already authenticated using SASL")
            return
        if "sasl" not in self.caps:
            self.numeric("904", "SASL authentication failed (request the sasl capability)")
            return
        if arg == "*":
            self._sasl_mech, self._sasl_buf = None, ""
            self.numeric("906", "SASL authentication aborted")
            return
        if self._sasl_mech is None:
            if arg.upper() != "PLAIN":
                self.numeric("908", "PLAIN", "are available SASL mechanisms")
                self.numeric("904", "SASL authentication failed")
                return
            self._sasl_mech, self._sasl_buf = "PLAIN", ""
            self.reply(b"AUTHENTICATE +\r\n")
            return
        if arg != "+":
            self._sasl_buf += arg
        if len(self._sasl_buf) > 4 * _SASL_CHUNK:
            self._sasl_mech, self._sasl_buf = None, ""
            self.numeric("905", "SASL message too long")
            return
        if len(arg) == _SASL_CHUNK:
            return  # more chunks follow
        data, self._sasl_mech, self._sasl_buf = self._sasl_buf, None, ""
        try:
            authzid, authcid, password = base64.b64decode(data, validate=True).split(b"\0")
            name = authcid.decode()
            if authzid and authzid != authcid:
                raise AuthError("authorization identity differs from the authentication one")
            account = await self.chat.authenticate(name, password.decode())
        except (ValueError, binascii.Error, UnicodeDecodeError, ChatError):
            self.numeric("904", "SASL authentication failed")
            return
        self.account = account
        mask = f"{self.nick or account}!{self.user or account}@{self.srv.host}"
        self.numeric("900", mask, account, f"You are now logged in as {account}")
        self.numeric("903", "SASL authentication successful")

    async def _try_register(self) -> None:
        if self.session is not None or self._negotiating or not self.nick or not self.user:
            return
        nick = self.nick
        account = self.account
        if account is None and self.password is not None:
            account = await self._pass_login(nick, self.password)
            if account is None and await self.chat.store.get_account(nick) is not None:
                self.numeric("464", "Password incorrect")
                self._advance()
                self.close("Bad password")
                return
        if account is not None and account.casefold() != nick.casefold():
            nick = account  # an account's nickname is its name; 001 tells the client
        try:
            session = await self.chat.connect(nick, front="irc", sink=self, account=account)
        except NameInUse as exc:
            self.nick = None
            self.numeric("433", nick, f"Nickname is already in use ({_clean(str(exc))})")
            return
        except InvalidName:
            self.nick = None
            self.numeric("432", nick, "Erroneous nickname")
            return
        except AuthError as exc:
            self.numeric("464", f"Password incorrect ({_clean(str(exc))})")
            self._advance()
            self.close("Authentication required")
            return
        except LimitExceeded as exc:
            self.close(str(exc))
            return
        if self._closed:  # the client went away while we waited for the store
            self.chat.disconnect(session, "connection closed")
            return
        self.session = session
        self.nick = session.nick
        self.account = account
        session.info.update(user=self.user, realname=self.realname, peer=self.peer)
        self.srv.users[session.key] = self
        self._welcome()

    async def _pass_login(self, nick: str, secret: str) -> str | None:
        try:
            return await self.chat.authenticate(nick, secret)
        except AuthError:
            pass
        name, sep, rest = secret.partition(":")  # the common "account:password" form
        if sep:
            with contextlib.suppress(AuthError):
                return await self.chat.authenticate(name, rest)
        return None

    def _welcome(self) -> None:
        srv = self.srv
        lim = self.chat.limits
        me = self.me
        network = srv.network
        self.numeric("001", f"Welcome to the {network} IRC network, {srv.mask(me)}")
        self.numeric("002", f"Your host is {srv.server_name}, running version {_VERSION}")
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(srv.created))
        self.numeric("003", f"This server was created {created}")
        self.numeric("004", srv.server_name, _VERSION, "i", "bmot", "bo", text=False)
        tokens = [
            "CASEMAPPING=ascii",
            "CHANTYPES=#",
            "CHANMODES=b,,,mt",
            "PREFIX=(o)@",
            f"NICKLEN={lim.max_nick_length}",
            f"CHANNELLEN={lim.max_room_name_length + 1}",
            f"TOPICLEN={lim.max_topic_length}",
            "KICKLEN=200",
            "AWAYLEN=200",
            "MODES=4",
            f"CHANLIMIT=#:{lim.max_rooms_per_client}",
            f"NETWORK={network}",
        ]
        self.numeric("005", *tokens, "are supported by this server")
        targmax = f"TARGMAX=PRIVMSG:{_MAX_TARGETS},NOTICE:{_MAX_TARGETS},JOIN:,PART:,KICK:"
        self.numeric("005", f"MAXTARGETS={_MAX_TARGETS}", targmax, "are supported by this server")
        self._lusers()
        self._motd()

    def _lusers(self) -> None:
        n = len(self.chat.sessions)
        self.numeric("251", f"There are {n} users and 0 invisible on 1 servers")
        self.numeric("254", str(len(self.chat.rooms)), "channels formed")
        self.numeric("255", f"I have {n} clients and 1 servers")

    def _motd(self) -> None:
        motd = self.srv.motd
        if not motd:
            self.numeric("422", "MOTD File is missing")
            return
        self.numeric("375", f"- {self.srv.server_name} Message of the day -")
        for text in motd.splitlines() or [""]:
            self.numeric("372", f"- {text}")
        self.numeric("376", "End of /MOTD command.")

    # ------------------------------------------------------------- channels

    async def cmd_join(self, m: IrcMessage) -> None:
        s = self._session()
        if m.params[0] == "0":  # JOIN 0: leave every channel
            await self._settle()
            for name in sorted(s.rooms):
                with contextlib.suppress(ChatError):
                    self.chat.part(s, name, "")
            return
        for chan in m.params[0].split(","):
            if not chan:
                continue
            if not chan.startswith("#"):
                self.numeric("403", chan, "No such channel")
                continue
            try:
                if check_room_name(chan, self.chat.limits) in s.rooms:
                    continue  # already there: nothing to do, as on other servers
                room = self.chat.join(s, chan, create=True)
            except ChatError as exc:
                self.reply(self._error(exc, "JOIN", chan))
                continue
            if room.topic:
                self.numeric("332", "#" + room.name, _clean(room.topic))
            self._names(room)

    def _names(self, room: Room) -> None:
        chan = "#" + room.name
        head = f":{self.srv.server_name} 353 {self.me} = {chan} :"
        budget = _MAX_LINE - 2 - len(head.encode())
        names = [("@" if room.is_moderator(n) else "") + n for n in room.nicks()]
        line: list[str] = []
        size = 0
        for name in names:
            if line and size + len(name) + 1 > budget:
                self.reply((head + " ".join(line) + "\r\n").encode())
                line, size = [], 0
            line.append(name)
            size += len(name) + 1
        if line:
            self.reply((head + " ".join(line) + "\r\n").encode())
        self.numeric("366", chan, "End of /NAMES list.")

    async def cmd_names(self, m: IrcMessage) -> None:
        s = self._session()
        if not m.params or not m.params[0]:
            for name in sorted(s.rooms):
                room = self.chat.rooms.get(name)
                if room is not None:
                    self._names(room)
            return
        for chan in m.params[0].split(","):
            try:
                room = self.chat.room(chan)
            except ChatError:
                self.numeric("366", chan, "End of /NAMES list.")
                continue
            self._names(room)

    async def cmd_part(self, m: IrcMessage) -> None:
        s = self._session()
        reason = _clean(m.params[1]) if len(m.params) > 1 else ""
        await self._settle()
        for chan in m.params[0].split(","):
            if not chan:
                continue
            try:
                self.chat.part(s, chan, reason)
            except ChatError as exc:
                self.reply(self._error(exc, "PART", chan))

    async def cmd_topic(self, m: IrcMessage) -> None:
        s = self._session()
        chan = m.params[0]
        try:
            room = self.chat.room(chan)
        except ChatError as exc:
            self.reply(self._error(exc, "TOPIC", chan))
            return
        chan = "#" + room.name
        if len(m.params) == 1:
            if room.topic:
                self.numeric("332", chan, _clean(room.topic))
            else:
                self.numeric("331", chan, "No topic is set")
            return
        topic = _clean(m.params[1])[: self.chat.limits.max_topic_length]
        try:
            fut = self.chat.set_topic(s, room.name, topic)
        except ChatError as exc:
            self.reply(self._error(exc, "TOPIC", chan))
            return
        self.reply_later(fut, _nothing, lambda exc: self._error(exc, "TOPIC", chan))

    async def cmd_list(self, m: IrcMessage) -> None:
        self.numeric("321", "Channel", "Users  Name")
        if m.params and m.params[0]:
            rooms = []
            for chan in m.params[0].split(","):
                with contextlib.suppress(ChatError):
                    rooms.append(self.chat.room(chan))
        else:
            rooms = self.chat.list_rooms()
        for room in rooms:
            self.numeric("322", "#" + room.name, str(len(room.nicks())), _clean(room.topic))
        self.numeric("323", "End of /LIST")

    async def cmd_mode(self, m: IrcMessage) -> None:
        s = self._session()
        target = m.params[0]
        if not target.startswith("#"):
            await self._user_mode(s, m)
            return
        try:
            room = self.chat.room(target)
        except ChatError as exc:
            self.reply(self._error(exc, "MODE", target))
            return
        chan = "#" + room.name
        rec = room.record
        if len(m.params) == 1:
            modes = "+" + ("m" if rec.moderated else "") + ("t" if rec.topic_locked else "")
            self.numeric("324", chan, modes, text=False)
            self.numeric("329", chan, str(int(rec.created)), text=False)
            return
        args = list(m.params[2:])
        sign = "+"
        changes = 0
        for letter in m.params[1]:
            if letter in "+-":
                sign = letter
                continue
            if letter == "b" and not args:
                for ban in sorted(rec.bans):
                    self.numeric("367", chan, f"{ban}!*@*", text=False)
                self.numeric("368", chan, "End of channel ban list")
                continue
            if letter not in "obmt":
                self.numeric("472", letter, "is unknown mode char to me")
                continue
            arg: str | None = None
            if letter in "ob":
                if not args:
                    self.numeric("461", "MODE", "Not enough parameters")
                    continue
                arg = args.pop(0)
                if letter == "b":
                    arg = arg.partition("!")[0]  # a ban mask names a nickname here
                try:
                    check_nick(arg, self.chat.limits)
                except InvalidName:
                    self.numeric("696", chan, letter, arg, "Invalid mode parameter")
                    continue
            changes += 1
            if changes > 4:
                break
            try:
                fut = self.chat.set_mode(s, room.name, sign + letter, arg)
            except ChatError as exc:
                self.reply(self._error(exc, "MODE", chan))
                if isinstance(exc, PermissionDenied):
                    return
                continue
            self.reply_later(fut, _nothing, lambda exc: self._error(exc, "MODE", chan))

    async def _user_mode(self, s: Session, m: IrcMessage) -> None:
        target = m.params[0]
        if target.casefold() != s.key:
            if target.casefold() in self.chat.sessions:
                self.numeric("502", "Can't change mode for other users")
            else:
                self.numeric("401", target, "No such nick/channel")
            return
        if len(m.params) == 1:
            self.numeric("221", "+" + "".join(sorted(self.umodes)), text=False)
            return
        sign = "+"
        applied = ""
        for letter in m.params[1]:
            if letter in "+-":
                sign = letter
            elif letter in "iw":
                was = letter in self.umodes
                if sign == "+" and not was:
                    self.umodes.add(letter)
                    applied += "+" + letter
                elif sign == "-" and was:
                    self.umodes.discard(letter)
                    applied += "-" + letter
            else:
                self.numeric("501", "Unknown MODE flag")
        if applied:
            self.send_line("MODE", s.nick, applied, source=self.srv.mask(s.nick))

    async def cmd_kick(self, m: IrcMessage) -> None:
        s = self._session()
        chan = m.params[0]
        reason = _clean(m.params[2]) if len(m.params) > 2 else ""
        try:
            room = self.chat.room(chan)
            if s.key not in room.members:
                raise NotInRoom(f"you are not in {room.name}")
        except ChatError as exc:
            self.reply(self._error(exc, "KICK", chan))
            return
        chan = "#" + room.name
        for nick in m.params[1].split(","):
            try:
                self.chat.kick(s, room.name, nick, reason)
            except NotInRoom:
                self.numeric("441", nick, chan, "They aren't on that channel")
            except ChatError as exc:
                self.reply(self._error(exc, "KICK", chan))
                if isinstance(exc, PermissionDenied):
                    return

    # ------------------------------------------------------------- messages

    async def cmd_privmsg(self, m: IrcMessage) -> None:
        await self._send(m, notice=False)

    async def cmd_notice(self, m: IrcMessage) -> None:
        await self._send(m, notice=True)

    async def _send(self, m: IrcMessage, *, notice: bool) -> None:
        s = self._session()
        verb = "NOTICE" if notice else "PRIVMSG"
        if not m.params or not m.params[0]:
            self.numeric("411", f"No recipient given ({verb})")
            return
        if len(m.params) < 2 or not m.params[1]:
            self.numeric("412", "No text to send")
            return
        text = m.params[1]
        for target in m.params[0].split(",")[:_MAX_TARGETS]:
            try:
                if target.startswith("#"):
                    fut = self.chat.post(s, target[1:], text, "notice" if notice else "msg")
                else:
                    fut = self.chat.post_dm(s, target, text, "notice" if notice else "dm")
            except ChatError as exc:
                self.reply(self._error(exc, verb, target))
                continue
            self.reply_later(fut, _nothing, _error_for(self, verb, target))

    async def cmd_tagmsg(self, m: IrcMessage) -> None:
        """Client-only tags (typing notifications ...) are accepted and not relayed."""

    # ------------------------------------------------------------- queries

    async def cmd_who(self, m: IrcMessage) -> None:
        mask = m.params[0] if m.params and m.params[0] else "*"
        if mask.startswith("#"):
            with contextlib.suppress(ChatError):
                room = self.chat.room(mask)
                chan = "#" + room.name
                for nick in room.nicks():
                    member = room.members.get(nick.casefold())
                    flags = ("G" if self._is_away(member) else "H") + (
                        "@" if room.is_moderator(nick) else ""
                    )
                    self._who_line(chan, nick, member, flags)
        else:
            member = self.chat.sessions.get(mask.casefold())
            if member is not None:
                self._who_line("*", member.nick, member, "G" if self._is_away(member) else "H")
        self.numeric("315", mask, "End of WHO list")

    @staticmethod
    def _is_away(s: Session | None) -> bool:
        return s is not None and isinstance(s.sink, IrcConn) and s.sink.away is not None

    def _who_line(self, chan: str, nick: str, s: Session | None, flags: str) -> None:
        srv = self.srv
        user = srv.user_of(nick)
        realname = str(s.info.get("realname") or nick) if s is not None else nick
        self.numeric("352", chan, user, srv.host, srv.server_name, nick, flags, f"0 {realname}")

    async def cmd_whois(self, m: IrcMessage) -> None:
        srv = self.srv
        for nick in m.params[-1].split(",")[:_MAX_TARGETS]:
            s = self.chat.sessions.get(nick.casefold())
            if s is None:
                self.numeric("401", nick, "No such nick/channel")
                self.numeric("318", nick, "End of /WHOIS list.")
                continue
            realname = str(s.info.get("realname") or s.nick)
            self.numeric("311", s.nick, srv.user_of(s.nick), srv.host, "*", realname)
            chans = []
            for name in sorted(s.rooms):
                room = self.chat.rooms.get(name)
                op = room is not None and room.is_moderator(s.nick)
                chans.append(("@" if op else "") + "#" + name)
            if chans:
                self.numeric("319", s.nick, " ".join(chans))
            self.numeric("312", s.nick, srv.server_name, f"isthmus-chat ({s.front})")
            if isinstance(s.sink, IrcConn) and s.sink.away is not None:
                self.numeric("301", s.nick, s.sink.away)
            if s.account is not None:
                self.numeric("330", s.nick, s.account, "is logged in as")
            self.numeric("318", s.nick, "End of /WHOIS list.")

    async def cmd_ison(self, m: IrcMessage) -> None:
        sessions = self.chat.sessions
        wanted = " ".join(m.params).split()
        present = [sessions[n.casefold()].nick for n in wanted if n.casefold() in sessions]
        self.numeric("303", " ".join(present))

    async def cmd_userhost(self, m: IrcMessage) -> None:
        out = []
        for nick in m.params[:5]:
            s = self.chat.sessions.get(nick.casefold())
            if s is not None:
                away = "-" if self._is_away(s) else "+"
                out.append(f"{s.nick}={away}{self.srv.user_of(s.nick)}@{self.srv.host}")
        self.numeric("302", " ".join(out))

    async def cmd_away(self, m: IrcMessage) -> None:
        if m.params and m.params[0]:
            self.away = _clean(m.params[0])[:200]
            self.numeric("306", "You have been marked as being away")
        else:
            self.away = None
            self.numeric("305", "You are no longer marked as being away")

    async def cmd_motd(self, m: IrcMessage) -> None:
        self._motd()

    async def cmd_lusers(self, m: IrcMessage) -> None:
        self._lusers()

    async def cmd_version(self, m: IrcMessage) -> None:
        self.numeric("351", _VERSION, self.srv.server_name, "isthmus-chat IRC front end")

    async def cmd_ping(self, m: IrcMessage) -> None:
        if not m.params:
            self.numeric("409", "No origin specified")
            return
        name = self.srv.server_name
        self.send_line("PONG", name, m.params[-1])

    async def cmd_pong(self, m: IrcMessage) -> None:
        """Any input already counts as a sign of life (see :meth:`buffer_updated`)."""

    async def cmd_quit(self, m: IrcMessage) -> None:
        reason = _clean(m.params[0])[:200] if m.params else ""
        quit_text = f"Quit: {reason}" if reason else "Quit"
        await self._settle()
        self._quit_reason = quit_text
        session, self.session = self.session, None
        if session is not None:
            self.chat.disconnect(session, quit_text)
        self._advance()
        self.close(quit_text)


def _error_for(conn: IrcConn, verb: str, target: str) -> Callable[[BaseException], bytes]:
    def render(exc: BaseException) -> bytes:
        return conn._error(exc, verb, target)

    return render


IrcConn.HANDLERS.update(
    {
        name[4:].upper(): getattr(IrcConn, name)
        for name in dir(IrcConn)
        if name.startswith("cmd_") and callable(getattr(IrcConn, name))
    }
)

# ------------------------------------------------------------------------------ server


class IrcServer(LineServer):
    """The IRC front end: ``srv = IrcServer(chat); await srv.start(host, 6667)``.

    ``server_name`` names the server in numerics and sender masks (the chat's name by
    default), ``motd`` is the message of the day (422 when None), ``ping_interval`` is how long
    a client may stay silent before it is pinged, and again before it is dropped (0 disables).
    """

    protocol = IrcConn

    def __init__(
        self,
        chat: Chat,
        *,
        server_name: str | None = None,
        motd: str | None = None,
        ping_interval: float = 120.0,
        network: str | None = None,
    ) -> None:
        self.server_name = server_name or chat.server_name
        #: The host part of every sender mask (a fixed cloak: client addresses stay private).
        self.host = self.server_name
        self.network = network or self.server_name
        self.motd = motd
        self.ping_interval = ping_interval
        self.created = time.time()
        #: Registered IRC connections by case-folded nickname (their USER names the masks).
        self.users: dict[str, IrcConn] = {}
        self._formatters: dict[tuple[bool, bool, bool], IrcFormatter] = {}
        self._pinger: asyncio.Task[None] | None = None
        super().__init__(chat, self.formatter_for(False, False, False))

    def formatter_for(self, server_time: bool, message_tags: bool, echo: bool) -> IrcFormatter:
        """The shared formatter of one capability combination."""
        key = (server_time, message_tags, echo)
        fmt = self._formatters.get(key)
        if fmt is None:
            fmt = self._formatters[key] = IrcFormatter(
                self, server_time=server_time, message_tags=message_tags, echo=echo
            )
        return fmt

    def user_of(self, nick: str) -> str:
        """The USER name of an IRC client, the nickname for clients of other front ends."""
        conn = self.users.get(nick.casefold())
        return conn.user if conn is not None and conn.user else nick

    def mask(self, nick: str) -> str:
        """``nick!user@host``, the source of what ``nick`` does."""
        conn = self.users.get(nick.casefold())
        user = conn.user if conn is not None and conn.user else nick
        return f"{nick}!{user}@{self.host}"

    async def start(
        self,
        host: str | None = "127.0.0.1",
        port: int = 6667,
        *,
        ssl_context: ssl.SSLContext | None = None,
        **kw: Any,
    ) -> asyncio.Server:
        """Listen on ``host:port`` (6667 by default; 0 picks a free port, see :attr:`port`)."""
        server = await super().start(host, port, ssl_context=ssl_context, **kw)
        if self.ping_interval > 0:
            self._pinger = asyncio.get_running_loop().create_task(
                self._ping_loop(), name="isthmus.chat irc pinger"
            )
        return server

    async def _ping_loop(self) -> None:
        interval = self.ping_interval
        while True:
            await asyncio.sleep(interval / 4)
            now = time.monotonic()
            for conn in list(self.connections):
                if isinstance(conn, IrcConn):
                    conn.check_idle(now, interval)

    async def close(self) -> None:
        """Stop pinging and listening; close every connection."""
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        await super().close()
