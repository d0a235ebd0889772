"""The chat state: rooms, sessions, messages, presence. No I/O of its own.

Every mutation happens synchronously, on the event loop's thread, before anything is awaited, so a
front end that handles a client's commands in order sees their effects in order. Persistence
is deferred to one writer task that batches everything queued in a loop tick into one store
transaction; the futures :meth:`Chat.post` and friends return resolve once it is durable, and a
message is fanned out only then, so nothing a client saw acknowledged can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._auth import TokenSigner, hash_password, verify_password
from ._errors import (
    AuthError,
    Banned,
    ChatError,
    LimitExceeded,
    NameInUse,
    NoSuchClient,
    NoSuchRoom,
    NotInRoom,
    PermissionDenied,
    RateLimited,
    RoomExists,
)
from ._model import (
    Account,
    Event,
    Limits,
    Message,
    MessageKind,
    RoomRecord,
    Status,
    check_nick,
    check_room_name,
    check_text,
    dm_key,
)
from ._ratelimit import TokenBucket
from ._sink import Sink
from ._store import Draft, MemoryStore, Store

__all__ = ["Backplane", "Chat", "RemoteClient", "Room", "Session"]

log = logging.getLogger("isthmus.chat")


class Session:
    """One connected client, whichever front end it came through."""

    __slots__ = (
        "account",
        "bucket",
        "created",
        "front",
        "info",
        "key",
        "nick",
        "paused_at",
        "rooms",
        "sink",
        "status",
    )

    def __init__(
        self, nick: str, front: str, sink: Sink | None, account: str | None, limits: Limits
    ) -> None:
        self.nick = nick
        self.key = nick.casefold()
        self.front = front
        self.sink = sink
        self.account = account
        self.status = Status.CONNECTED
        self.rooms: set[str] = set()
        self.bucket = TokenBucket(limits.rate, limits.burst)
        self.created = time.time()
        self.paused_at: dict[str, int] = {}
        #: Per-front details (IRC user, realname, host and capabilities; peer address ...).
        self.info: dict[str, Any] = {}

    @property
    def live(self) -> bool:
        """Connected and not closed."""
        return self.status not in (Status.CLOSING, Status.CLOSED, Status.ERROR)

    def __repr__(self) -> str:
        return f"<Session {self.nick} {self.front} {self.status}>"


class Room:
    """A room: its persistent record, its local members and the members other nodes report."""

    __slots__ = ("last_seq", "members", "record", "remote")

    def __init__(self, record: RoomRecord) -> None:
        self.record = record
        self.members: dict[str, Session] = {}
        self.remote: dict[str, str] = {}  # key -> nick of members on other nodes
        self.last_seq = 0

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def topic(self) -> str:
        return self.record.topic

    def nicks(self) -> list[str]:
        """Everyone present, here and on other nodes, sorted case-insensitively."""
        names = [s.nick for s in self.members.values()]
        names.extend(n for k, n in self.remote.items() if k not in self.members)
        return sorted(names, key=str.casefold)

    def is_moderator(self, nick: str) -> bool:
        """Owner or moderator."""
        key = nick.casefold()
        return key == self.record.owner.casefold() or key in self.record.moderators

    def to_json(self) -> dict[str, object]:
        """Room summary for REST, WebSocket and LIST."""
        r = self.record
        return {
            "name": r.name,
            "topic": r.topic,
            "owner": r.owner,
            "moderators": sorted(r.moderators),
            "members": len(self.nicks()),
            "last_seq": self.last_seq,
            "moderated": r.moderated,
            "created": r.created,
        }


class RemoteClient:
    """A client connected to another node, as that node announced it on the backplane."""

    __slots__ = ("nick", "node", "rooms")

    def __init__(self, node: str, nick: str) -> None:
        self.node = node
        self.nick = nick
        self.rooms: set[str] = set()

    def __repr__(self) -> str:
        return f"<RemoteClient {self.nick}@{self.node} {sorted(self.rooms)}>"


class Backplane:
    """Shares messages, events and room changes between server processes (scale-out).

    Subclasses deliver what other nodes publish by calling ``on_remote(payload)`` on the loop
    thread, never the node's own payloads; :meth:`publish` must not block (queue and send from
    a task). Payloads are JSON-able dicts ``{"t": kind, "node": node_id, ...}``. Besides what
    the chat publishes, a backplane delivers two kinds of its own: ``{"t": "up"}`` each time it
    (re)connects or hears from a node it did not know (the chat then announces its clients and
    asks the others for theirs), and ``{"t": "gone", "node": id}`` when a node said goodbye or
    fell silent (the chat then drops that node's clients).
    """

    node_id: str = ""

    async def start(self, on_remote: Callable[[dict[str, Any]], None]) -> None:
        """Connect and start delivering remote payloads."""
        raise NotImplementedError

    def publish(self, payload: dict[str, Any]) -> None:
        """Send ``payload`` to every other node."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop and release connections."""
        raise NotImplementedError


@dataclass(slots=True)
class _Op:
    draft: Draft | None = None
    call: Callable[[], Awaitable[Any]] | None = None
    fut: asyncio.Future[Any] | None = field(default=None)


class Chat:
    """The shared state every front end talks to.

    Use it as ``async with Chat(...) as chat:`` (or :meth:`start`/:meth:`close`). ``store`` is
    a :class:`Store` (a :class:`MemoryStore` by default), ``backplane`` an optional
    :class:`Backplane`, ``secret`` the token-signing key (persisted in the store when not
    given), ``default_rooms`` rooms that always exist (the seed's ``main``).
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        store: Store | None = None,
        backplane: Backplane | None = None,
        secret: bytes | None = None,
        server_name: str = "isthmus.chat",
        default_rooms: Iterable[str] = ("main",),
        require_account: bool = False,
    ) -> None:
        self.limits = limits or Limits()
        self.store: Store = store if store is not None else MemoryStore()
        self.backplane = backplane
        self.server_name = server_name
        self.require_account = require_account
        self._secret = secret
        self._default_rooms = [check_room_name(r, self.limits) for r in default_rooms]
        self.signer: TokenSigner | None = None
        self.rooms: dict[str, Room] = {}
        self.sessions: dict[str, Session] = {}
        self.started = 0.0
        self.counters: dict[str, int] = {
            "messages": 0,
            "deliveries": 0,
            "slow_consumers": 0,
            "connections": 0,
        }
        self._ops: list[_Op] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._listeners: list[Callable[[str, Any], None]] = []
        #: Clients on other nodes (casefolded nick -> client), learnt from the backplane.
        self.remote_clients: dict[str, RemoteClient] = {}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the store, load rooms, make the default rooms, start the writer and backplane."""
        await self.store.open()
        secret = self._secret
        if secret is None:
            stored = await self.store.get_meta("token_secret")
            if stored is None:
                stored = os.urandom(32).hex()
                await self.store.set_meta("token_secret", stored)
            secret = bytes.fromhex(stored)
        self.signer = TokenSigner(secret)
        for rec in await self.store.load_rooms():
            room = Room(rec)
            room.last_seq = await self.store.last_seq(rec.name)
            self.rooms[rec.name] = room
        for name in self._default_rooms:
            if name not in self.rooms:
                rec = RoomRecord(name=name, owner="", topic="", created=time.time())
                self.rooms[name] = Room(rec)
                await self.store.save_room(rec)
        self._wake = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name="isthmus.chat writer"
        )
        if self.backplane is not None:
            await self.backplane.start(self._on_remote)
        self.started = time.time()

    async def close(self) -> None:
        """Disconnect everyone, flush pending writes, stop the writer, close store and backplane."""
        if self._closed:
            return
        self._closed = True
        for s in list(self.sessions.values()):
            if s.sink is not None:
                with contextlib.suppress(Exception):
                    s.sink.close("server shutting down")
            self.disconnect(s, "server shutting down")
        if self._writer is not None:
            await self._drain()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self.backplane is not None:
            await self.backplane.close()
        await self.store.close()

    async def __aenter__(self) -> Chat:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def subscribe(self, listener: Callable[[str, Any], None]) -> None:
        """Call ``listener(kind, obj)`` for every message (``"message"``) and event (``"event"``)
        this node delivers: for metrics, logs and tests."""
        self._listeners.append(listener)

    # ---------------------------------------------------------------- writer

    def _enqueue(self, op: _Op) -> asyncio.Future[Any]:
        if self._closed or self._wake is None:
            raise ChatError("the chat server is not running")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        op.fut = fut
        self._ops.append(op)
        self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops:
                ops, self._ops = self._ops, []
                await self._run_ops(ops)

    async def _run_ops(self, ops: list[_Op]) -> None:
        i = 0
        while i < len(ops):
            op = ops[i]
            if op.draft is not None:
                j = i
                while j < len(ops) and ops[j].draft is not None:
                    j += 1
                batch = ops[i:j]
                try:
                    msgs = await self.store.append([o.draft for o in batch])  # type: ignore[misc]
                except Exception as exc:
                    log.exception("store append failed")
                    for o in batch:
                        if o.fut is not None and not o.fut.done():
                            o.fut.set_exception(exc)
                else:
                    self._fanout_batch(msgs)
                    for o, msg in zip(batch, msgs, strict=True):
                        if self.backplane is not None:
                            self.backplane.publish(
                                {"t": "msg", "node": self.backplane.node_id, "msg": msg.to_json()}
                            )
                        if o.fut is not None and not o.fut.done():
                            o.fut.set_result(msg)
                i = j
                continue
            assert op.call is not None
            try:
                result = await op.call()
            except Exception as exc:
                log.exception("store write failed")
                if op.fut is not None and not op.fut.done():
                    op.fut.set_exception(exc)
            else:
                if op.fut is not None and not op.fut.done():
                    op.fut.set_result(result)
            i += 1

    async def _drain(self) -> None:
        while self._ops:
            ops, self._ops = self._ops, []
            await self._run_ops(ops)

    async def flush(self) -> None:
        """Wait until everything queued so far is durable (and its messages delivered)."""
        if self._ops:
            await self._enqueue(_Op(call=_noop))

    def _persist_room(self, room: Room) -> asyncio.Future[Any]:
        rec = room.record
        fut = self._enqueue(_Op(call=lambda: self.store.save_room(rec)))
        if self.backplane is not None:
            from ._sqlite import room_to_json

            self.backplane.publish(
                {"t": "room", "node": self.backplane.node_id, "room": room_to_json(rec)}
            )
        return fut

    # ---------------------------------------------------------------- delivery

    def _fanout_batch(self, msgs: list[Message]) -> None:
        """Fan out a committed batch: each run of messages to one room goes out together."""
        k = 0
        while k < len(msgs):
            room = msgs[k].room
            e = k + 1
            while e < len(msgs) and msgs[e].room == room:
                e += 1
            if e - k == 1 or room[0] == "@":
                for m in msgs[k:e]:
                    self._fanout(m)
            else:
                self._fanout_run(msgs[k:e])
            k = e

    def _fanout_run(self, msgs: list[Message]) -> None:
        """Several messages to one room: one push per member of all of them, encoded once per
        formatter, where the formatter's bytes may be concatenated (``joinable``)."""
        self.counters["messages"] += len(msgs)
        room = self.rooms.get(msgs[0].room)
        if room is None:
            return
        room.last_seq = max(room.last_seq, msgs[-1].seq)
        senders = {m.sender.casefold() for m in msgs}
        cache: dict[int, tuple[list[bytes], bytes | None]] = {}
        n = 0
        suspended = Status.SUSPENDED
        for s in room.members.values():
            sink = s.sink
            if sink is None or s.status is suspended:
                continue
            fmt = sink.fmt
            entry = cache.get(id(fmt))
            if entry is None:
                parts = [fmt.message(m) for m in msgs]
                joined = b"".join(parts) if getattr(fmt, "joinable", False) else None
                entry = cache[id(fmt)] = (parts, joined)
            parts, joined = entry
            if not fmt.echo and s.key in senders:
                mine = [p for p, m in zip(parts, msgs, strict=True) if m.sender.casefold() != s.key]
            elif joined is not None:
                sink.push(joined)
                n += len(msgs)
                continue
            else:
                mine = parts
            for p in mine:
                sink.push(p)
            n += len(mine)
        self.counters["deliveries"] += n
        if self._listeners:
            for m in msgs:
                for listener in self._listeners:
                    listener("message", m)

    def _fanout(self, msg: Message) -> None:
        self.counters["messages"] += 1
        if msg.room[0] == "@":  # a direct message (or notice): its two parties
            members: Iterable[Session] = [
                s
                for s in (
                    self.sessions.get(msg.sender.casefold()),
                    self.sessions.get((msg.target or "").casefold()),
                )
                if s is not None
            ]
        else:
            room = self.rooms.get(msg.room)
            if room is None:
                return
            room.last_seq = max(room.last_seq, msg.seq)
            members = room.members.values()
        sender = msg.sender.casefold()
        cache: dict[int, bytes] = {}
        n = 0
        suspended = Status.SUSPENDED
        # Neighbouring members mostly share a formatter: an identity check on the previous one
        # skips the cache lookup (this loop runs once per delivery).
        last: object = None
        data = b""
        echo = True
        for s in members:
            sink = s.sink
            if sink is None or s.status is suspended:
                continue
            fmt = sink.fmt
            if fmt is not last:
                last, echo = fmt, fmt.echo
                cached = cache.get(id(fmt))
                if cached is None:
                    cached = cache[id(fmt)] = fmt.message(msg)
                data = cached
            if not echo and s.key == sender:
                continue
            sink.push(data)
            n += 1
        self.counters["deliveries"] += n
        for listener in self._listeners:
            listener("message", msg)

    def _emit(self, ev: Event, *, local_only: bool = False, extra: Session | None = None) -> None:
        """Deliver ``ev`` to the room's members (and ``extra``, e.g. a member who just left)."""
        room = self.rooms.get(ev.room)
        targets: list[Session] = list(room.members.values()) if room is not None else []
        if extra is not None and extra not in targets:
            targets.append(extra)
        cache: dict[int, bytes | None] = {}
        for s in targets:
            sink = s.sink
            if sink is None or s.status is Status.SUSPENDED:
                continue
            fmt = sink.fmt
            key = id(fmt)
            if key not in cache:
                cache[key] = fmt.event(ev)
            data = cache[key]
            if data is not None:
                sink.push(data)
        if not local_only and self.backplane is not None:
            self.backplane.publish({"t": "ev", "node": self.backplane.node_id, "ev": ev.to_json()})
        for listener in self._listeners:
            listener("event", ev)

    def _publish(self, payload: dict[str, Any]) -> None:
        if self.backplane is not None:
            payload["node"] = self.backplane.node_id
            self.backplane.publish(payload)

    def _snapshot(self) -> dict[str, list[str]]:
        """This node's clients and their rooms, for the ``hello``/``sync`` payloads."""
        return {s.nick: sorted(s.rooms) for s in self.sessions.values()}

    def _remote_client(self, node: str, nick: str) -> RemoteClient:
        rc = self.remote_clients.get(nick.casefold())
        if rc is None:
            rc = self.remote_clients[nick.casefold()] = RemoteClient(node, nick)
        else:
            rc.node, rc.nick = node, nick
        return rc

    def _drop_remote(self, key: str, quit_reason: str | None = None) -> RemoteClient | None:
        """Forget a remote client; with ``quit_reason``, its rooms' members see it quit."""
        rc = self.remote_clients.pop(key, None)
        if rc is None:
            return None
        now = time.time()
        for name in sorted(rc.rooms):
            room = self.rooms.get(name)
            present = room is not None and room.remote.pop(key, None) is not None
            if present and quit_reason is not None:
                self._emit(Event("quit", name, rc.nick, None, quit_reason, now), local_only=True)
        return rc

    def _apply_snapshot(self, node: str, clients: dict[str, list[str]]) -> None:
        for key in [k for k, rc in self.remote_clients.items() if rc.node == node]:
            self._drop_remote(key)
        for nick, rooms in clients.items():
            if nick.casefold() in self.sessions:
                continue  # a stale announcement of a nick that is connected here now
            rc = self._remote_client(node, str(nick))
            for name in rooms:
                room = self.rooms.get(name)
                if room is not None:
                    room.remote[rc.nick.casefold()] = rc.nick
                    rc.rooms.add(name)

    def _on_remote(self, payload: dict[str, Any]) -> None:
        """Apply what another node published."""
        kind = payload.get("t")
        node = str(payload.get("node", ""))
        try:
            if kind == "msg":
                self._fanout(Message.from_json(payload["msg"]))
            elif kind == "ev":
                ev = Event.from_json(payload["ev"])
                room = self.rooms.get(ev.room)
                victim: Session | None = None
                if room is not None:
                    key = (ev.target or ev.actor).casefold()
                    if ev.kind == "join":
                        room.remote[ev.actor.casefold()] = ev.actor
                        self._remote_client(node, ev.actor).rooms.add(room.name)
                    elif ev.kind in ("part", "quit", "kick"):
                        room.remote.pop(key, None)
                        rc = self.remote_clients.get(key)
                        if rc is not None:
                            rc.rooms.discard(room.name)
                    elif ev.kind == "topic":
                        room.record.topic = ev.text
                    elif (
                        ev.kind == "nick"
                        and ev.target is not None
                        and room.remote.pop(ev.actor.casefold(), None) is not None
                    ):
                        room.remote[ev.target.casefold()] = ev.target
                    if ev.kind == "kick" and ev.target is not None:
                        victim = room.members.get(ev.target.casefold())
                        if victim is not None:
                            self._leave(victim, room)
                self._emit(ev, local_only=True, extra=victim)  # the kicked member sees it too
            elif kind == "room":
                from ._sqlite import room_from_json

                rec = room_from_json(payload["room"])
                room = self.rooms.get(rec.name)
                if room is None:
                    self.rooms[rec.name] = Room(rec)
                else:
                    room.record = rec
            elif kind == "sess":  # a client connected (up), left, or was renamed (old)
                old = payload.get("old")
                rc = self._drop_remote(str(old).casefold()) if old else None
                nick = str(payload["nick"])
                if payload.get("up"):
                    new = self._remote_client(node, nick)
                    for name in rc.rooms if rc is not None else ():
                        room = self.rooms.get(name)
                        if room is not None:
                            room.remote[new.nick.casefold()] = new.nick
                            new.rooms.add(name)
                else:
                    self._drop_remote(nick.casefold())
            elif kind in ("hello", "sync"):  # a node's clients; "hello" asks for ours too
                self._apply_snapshot(node, payload["clients"])
                if kind == "hello":
                    self._publish({"t": "sync", "clients": self._snapshot()})
            elif kind == "up":  # our backplane (re)connected: announce, ask for the others
                self._publish({"t": "hello", "clients": self._snapshot()})
            elif kind == "gone":  # a node left or fell silent: its clients quit
                for key in [k for k, rc in self.remote_clients.items() if rc.node == node]:
                    self._drop_remote(key, "node gone")
        except (KeyError, ValueError, TypeError, AttributeError):
            log.warning("dropped a malformed backplane payload: %.200r", payload)

    # ---------------------------------------------------------------- sessions

    async def connect(
        self,
        nick: str,
        *,
        front: str,
        sink: Sink | None = None,
        account: str | None = None,
    ) -> Session:
        """Register a client under ``nick``. ``account`` is the name it authenticated as.

        A guest may not take a nickname an account reserves; an authenticated account displaces
        an older session of its own (a reconnect). Raises :class:`NameInUse`,
        :class:`LimitExceeded` (``max_clients``), :class:`AuthError` (``require_account``).
        """
        check_nick(nick, self.limits)
        key = nick.casefold()
        if account is None:
            if self.require_account:
                raise AuthError("this server requires an account: log in first")
            if await self.store.get_account(nick) is not None:
                raise NameInUse(f"{nick} is a registered account: log in to use it")
        elif account.casefold() != key:
            raise AuthError(f"logged in as {account}, not {nick}")
        old = self.sessions.get(key)
        if old is not None:
            if account is None or old.account is None or old.account.casefold() != key:
                raise NameInUse(f"{nick} is in use")
            if old.sink is not None:
                old.sink.close("logged in elsewhere")
            self.disconnect(old, "logged in elsewhere")
        elif account is None and key in self.remote_clients:
            raise NameInUse(f"{nick} is in use on another node")
        if len(self.sessions) >= self.limits.max_clients:
            raise LimitExceeded(f"the server is full ({self.limits.max_clients} clients)")
        session = Session(nick, front, sink, account, self.limits)
        self.sessions[key] = session
        self.counters["connections"] += 1
        self._publish({"t": "sess", "nick": nick, "up": True})
        return session

    def disconnect(self, session: Session, reason: str = "") -> None:
        """Remove the session, leaving its rooms (members see a ``quit`` event)."""
        if self.sessions.get(session.key) is not session:
            session.status = Status.CLOSED
            return
        del self.sessions[session.key]
        session.status = Status.CLOSED
        now = time.time()
        for name in list(session.rooms):
            room = self.rooms.get(name)
            if room is None:
                continue
            room.members.pop(session.key, None)
            ev = Event("quit", name, session.nick, None, reason, now)
            self._emit(ev)
        session.rooms.clear()
        self._publish({"t": "sess", "nick": session.nick, "up": False})

    def rename(self, session: Session, new: str) -> str:
        """Change a guest's nickname (IRC ``NICK``). Returns the old one."""
        check_nick(new, self.limits)
        key = new.casefold()
        if key != session.key and key in self.sessions:
            raise NameInUse(f"{new} is in use")
        if session.account is not None and key != session.key:
            raise PermissionDenied("an account's nickname is its name")
        old = session.nick
        del self.sessions[session.key]
        for name in session.rooms:
            room = self.rooms[name]
            room.members.pop(session.key, None)
            room.members[key] = session
        session.nick, session.key = new, key
        self.sessions[key] = session
        self._publish({"t": "sess", "nick": new, "old": old, "up": True})
        now = time.time()
        for name in sorted(session.rooms):
            self._emit(Event("nick", name, old, new, "", now))
        return old

    def session(self, nick: str) -> Session:
        """The connected session of ``nick``; :class:`NoSuchClient` otherwise."""
        s = self.sessions.get(nick.casefold())
        if s is None:
            raise NoSuchClient(f"no client named {nick}")
        return s

    def pause(self, session: Session) -> None:
        """Suspend live deliveries to ``session``; :meth:`resume` replays what it missed."""
        if session.status is Status.SUSPENDED:
            return
        session.status = Status.SUSPENDED
        for name in session.rooms:
            room = self.rooms.get(name)
            if room is not None:
                session.paused_at[name] = room.last_seq

    async def resume(self, session: Session) -> list[Message]:
        """Resume deliveries, first pushing every message the session missed while paused."""
        if session.status is not Status.SUSPENDED:
            return []
        await self.flush()
        missed: list[Message] = []
        for name, seq in session.paused_at.items():
            while True:
                page = await self.store.history(name, after=seq, limit=self.limits.history_page_max)
                missed.extend(page)
                if len(page) < self.limits.history_page_max:
                    break
                seq = page[-1].seq
        session.paused_at.clear()
        session.status = Status.ACTIVE
        sink = session.sink
        if sink is not None:
            for m in missed:
                if m.sender.casefold() != session.key or sink.fmt.echo:
                    sink.push(sink.fmt.message(m))
        return missed

    # ---------------------------------------------------------------- accounts

    async def register_account(self, name: str, password: str) -> str:
        """Create an account; returns a session token. :class:`NameInUse` if taken."""
        check_nick(name, self.limits)
        if len(password) < 4 or len(password) > 256:
            raise LimitExceeded("a password has 4 to 256 characters")
        live = self.sessions.get(name.casefold())
        if live is not None and live.account is None:
            # The guest using the nick may claim it; anyone else may not while it is in use.
            pass
        pw_hash = await asyncio.get_running_loop().run_in_executor(None, hash_password, password)
        await self.store.create_account(Account(name, pw_hash, time.time()))
        return self.issue_token(name)

    async def login(self, name: str, password: str) -> str:
        """Check a password or a token for ``name``; returns a fresh token. :class:`AuthError`."""
        canonical = await self.authenticate(name, password)
        return self.issue_token(canonical)

    async def authenticate(self, name: str, secret: str) -> str:
        """The canonical account name if ``secret`` is its password or a valid token for it."""
        if self.signer is not None and self.signer.looks_like_token(secret):
            try:
                who = self.signer.verify(secret)
            except AuthError:
                pass
            else:
                if who.casefold() == name.casefold() or not name:
                    return who
        acct = await self.store.get_account(name)
        if acct is None:
            raise AuthError("unknown account or wrong password")
        ok = await asyncio.get_running_loop().run_in_executor(
            None, verify_password, secret, acct.password_hash
        )
        if not ok:
            raise AuthError("unknown account or wrong password")
        return acct.name

    def issue_token(self, name: str) -> str:
        """A signed session token for account ``name``."""
        if self.signer is None:
            raise ChatError("the chat server is not running")
        return self.signer.issue(name)

    def verify_token(self, token: str) -> str:
        """The account a token names; :class:`AuthError` if it is forged or expired."""
        if self.signer is None:
            raise ChatError("the chat server is not running")
        return self.signer.verify(token)

    # ---------------------------------------------------------------- rooms

    def room(self, name: str) -> Room:
        """The room ``name`` (``#`` prefix and case ignored); :class:`NoSuchRoom` otherwise."""
        room = self.rooms.get(check_room_name(name, self.limits))
        if room is None:
            raise NoSuchRoom(f"no room named {name}")
        return room

    def create_room(self, session: Session, name: str, topic: str = "") -> Room:
        """Create a room owned by ``session`` (who joins it). Durable when ``persisted`` is."""
        canonical = check_room_name(name, self.limits)
        if canonical in self.rooms:
            raise RoomExists(f"room {canonical} exists")
        if len(self.rooms) >= self.limits.max_rooms:
            raise LimitExceeded(f"the server has its maximum of {self.limits.max_rooms} rooms")
        if len(topic) > self.limits.max_topic_length:
            raise LimitExceeded("topic too long")
        rec = RoomRecord(name=canonical, owner=session.nick, topic=topic, created=time.time())
        room = Room(rec)
        self.rooms[canonical] = room
        self._persist_room(room)
        self._emit(
            Event("room", canonical, session.nick, None, topic, rec.created), local_only=True
        )
        self.join(session, canonical)
        return room

    def join(self, session: Session, name: str, *, create: bool = False) -> Room:
        """Join a room (creating it first when ``create`` and it does not exist)."""
        canonical = check_room_name(name, self.limits)
        room = self.rooms.get(canonical)
        if room is None:
            if not create:
                raise NoSuchRoom(f"no room named {canonical}")
            return self.create_room(session, canonical)
        if session.key in room.members:
            return room
        if _banned(room.record, session.nick):
            raise Banned(f"you are banned from {canonical}")
        if len(session.rooms) >= self.limits.max_rooms_per_client:
            raise LimitExceeded(f"at most {self.limits.max_rooms_per_client} rooms per client")
        room.members[session.key] = session
        session.rooms.add(canonical)
        if session.status is Status.SUSPENDED:
            session.paused_at.setdefault(canonical, room.last_seq)
        self._emit(Event("join", canonical, session.nick, None, "", time.time()))
        return room

    def part(self, session: Session, name: str, reason: str = "") -> Room:
        """Leave a room; its members (and the leaver) see a ``part`` event."""
        room = self.room(name)
        if session.key not in room.members:
            raise NotInRoom(f"you are not in {room.name}")
        self._emit(Event("part", room.name, session.nick, None, reason[:200], time.time()))
        self._leave(session, room)
        return room

    def _leave(self, session: Session, room: Room) -> None:
        room.members.pop(session.key, None)
        session.rooms.discard(room.name)
        session.paused_at.pop(room.name, None)

    def _require_mod(self, session: Session, room: Room) -> None:
        if not room.is_moderator(session.nick):
            raise PermissionDenied(f"you are not a moderator of {room.name}")

    def set_topic(self, session: Session, name: str, topic: str) -> asyncio.Future[Any]:
        """Set a room's topic (moderators only while the room is topic-locked)."""
        room = self.room(name)
        if session.key not in room.members:
            raise NotInRoom(f"you are not in {room.name}")
        if room.record.topic_locked:
            self._require_mod(session, room)
        if len(topic) > self.limits.max_topic_length:
            raise LimitExceeded(f"a topic has at most {self.limits.max_topic_length} characters")
        room.record.topic = topic
        fut = self._persist_room(room)
        self._emit(Event("topic", room.name, session.nick, None, topic, time.time()))
        return fut

    def kick(self, session: Session, name: str, target: str, reason: str = "") -> None:
        """Remove ``target`` from the room (moderators only)."""
        room = self.room(name)
        self._require_mod(session, room)
        victim = room.members.get(target.casefold())
        if victim is None and target.casefold() not in room.remote:
            raise NotInRoom(f"{target} is not in {room.name}")
        nick = victim.nick if victim is not None else room.remote[target.casefold()]
        ev = Event("kick", room.name, session.nick, nick, reason[:200], time.time())
        self._emit(ev)
        if victim is not None:
            self._leave(victim, room)
        room.remote.pop(target.casefold(), None)
        rc = self.remote_clients.get(target.casefold())
        if rc is not None:
            rc.rooms.discard(room.name)

    def set_mode(
        self, session: Session, name: str, flag: str, arg: str | None = None
    ) -> asyncio.Future[Any]:
        """Change one room mode: ``+o``/``-o nick`` (moderator), ``+b``/``-b nick`` (ban, which
        also kicks), ``+m``/``-m`` (moderated), ``+t``/``-t`` (topic lock)."""
        room = self.room(name)
        self._require_mod(session, room)
        rec = room.record
        if len(flag) != 2 or flag[0] not in "+-" or flag[1] not in "obmt":
            raise ChatError(f"unknown mode {flag!r}")
        on = flag[0] == "+"
        letter = flag[1]
        if letter in "ob":
            if not arg:
                raise ChatError(f"mode {flag} needs a nickname")
            check_nick(arg, self.limits)
            bucket = rec.moderators if letter == "o" else rec.bans
            (bucket.add if on else bucket.discard)(arg.casefold())
        elif letter == "m":
            rec.moderated = on
        else:
            rec.topic_locked = on
        fut = self._persist_room(room)
        text = flag if arg is None else f"{flag} {arg}"
        self._emit(Event("mode", room.name, session.nick, arg, text, time.time()))
        if letter == "b" and on and arg is not None and arg.casefold() in room.members:
            self.kick(session, room.name, arg, "banned")
        return fut

    def list_rooms(self) -> list[Room]:
        """Every room, sorted by name."""
        return [self.rooms[k] for k in sorted(self.rooms)]

    # ---------------------------------------------------------------- messages

    def _check_send(self, session: Session, text: str) -> None:
        if not session.live:
            raise ChatError("the session is closed")
        check_text(text, self.limits)
        if not session.bucket.take():
            raise RateLimited(
                f"slow down: at most {self.limits.rate:g} messages a second "
                f"(bursts of {self.limits.burst})"
            )

    def post(
        self, session: Session, room: str, text: str, kind: MessageKind = "msg"
    ) -> asyncio.Future[Message]:
        """Send ``text`` to a room. Checks happen now (raising :class:`ChatError`); the future
        resolves to the numbered :class:`Message` once it is durable and delivered."""
        r = self.rooms.get(room)
        if r is None:
            r = self.room(room)
        if session.key not in r.members:
            raise NotInRoom(f"join {r.name} before sending to it")
        if r.record.moderated and not r.is_moderator(session.nick):
            raise PermissionDenied(f"{r.name} is moderated")
        self._check_send(session, text)
        if session.status is Status.CONNECTED:
            session.status = Status.ACTIVE
        return self._enqueue(_Op(draft=Draft(r.name, session.nick, text, time.time(), kind)))

    async def send(
        self, session: Session, room: str, text: str, kind: MessageKind = "msg"
    ) -> Message:
        """:meth:`post` and wait: returns the durable, delivered :class:`Message`."""
        return await self.post(session, room, text, kind)

    def post_dm(
        self, session: Session, target: str, text: str, kind: MessageKind = "dm"
    ) -> asyncio.Future[Message]:
        """Send a direct message to the client ``target``, connected here or on another node.
        ``kind="notice"`` marks an IRC NOTICE (which clients must not answer automatically)."""
        peer = self.sessions.get(target.casefold()) or self.remote_clients.get(target.casefold())
        if peer is None:
            raise NoSuchClient(f"no client named {target}")
        self._check_send(session, text)
        if session.status is Status.CONNECTED:
            session.status = Status.ACTIVE
        draft = Draft(
            dm_key(session.nick, peer.nick), session.nick, text, time.time(), kind, peer.nick
        )
        return self._enqueue(_Op(draft=draft))

    async def send_dm(
        self, session: Session, target: str, text: str, kind: MessageKind = "dm"
    ) -> Message:
        """:meth:`post_dm` and wait."""
        return await self.post_dm(session, target, text, kind)

    async def history(
        self,
        room: str,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
        session: Session | None = None,
    ) -> list[Message]:
        """A page of a room's history (ascending). With ``session``, DM history is readable only
        by its two parties."""
        limit = max(1, min(limit, self.limits.history_page_max))
        if room.startswith("@"):
            if session is not None and session.key not in room[1:].split(":"):
                raise PermissionDenied("not your conversation")
            key = room
        else:
            key = self.room(room).name
        await self.flush()
        return await self.store.history(key, before=before, after=after, limit=limit)

    async def dm_history(
        self, session: Session, peer: str, *, before: int | None = None, limit: int = 50
    ) -> list[Message]:
        """The direct messages between ``session`` and ``peer``."""
        return await self.history(
            dm_key(session.nick, peer), before=before, limit=limit, session=session
        )

    def status(self) -> dict[str, object]:
        """Server status for ``GET /server/status`` and the line protocol's ``STATUS``."""
        by_status: dict[str, int] = {}
        for s in self.sessions.values():
            by_status[s.status.value] = by_status.get(s.status.value, 0) + 1
        return {
            "server": self.server_name,
            "uptime": round(time.time() - self.started, 3) if self.started else 0.0,
            "clients": len(self.sessions),
            "max_clients": self.limits.max_clients,
            "rooms": len(self.rooms),
            "statuses": by_status,
            "node": self.backplane.node_id if self.backplane is not None else None,
            **self.counters,
        }


def _banned(rec: RoomRecord, nick: str) -> bool:
    return nick.casefold() in rec.bans


async def _noop() -> None:
    return None
