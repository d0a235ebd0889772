"""The ASGI app: REST, a WebSocket and a web page over one :class:`Chat` (Starlette).

``create_app(chat)`` returns a Starlette application that any ASGI server can host;
``isthmus-chat serve`` runs it under uvicorn next to the line protocol and IRC, over the same
``Chat``. With ``manage_chat=True`` the app's lifespan starts and closes the chat itself, for
``uvicorn --factory isthmus.chat._web:app_from_env`` or any other ASGI server.

REST (JSON in, JSON out). Errors are ``{"error": CODE, "detail": text}`` where ``CODE`` is the
:class:`ChatError` code, with the HTTP status: 400 invalid name, limit, bad request; 401 auth;
403 permission, banned, not in the room; 404 no such room or client; 409 room exists, name in
use; 413 body too large; 429 rate limited; 503 store error. ``GET /openapi.json`` describes
every route (OpenAPI 3.1).

Routes (request body -> response):

* ``POST /clients/register`` ``{name, room="main", password?}`` -> ``{id, room, status,
  token?}``: a REST session (no socket: it reads through history) joined to ``room``.
* ``POST /messages/send`` ``{id, room, message}`` -> the stored Message (with ``seq``, ``id``).
* ``GET /chatrooms/list`` and ``GET /rooms`` -> ``{rooms}``: topic, member count, ``last_seq``.
* ``POST /clients/pause``, ``/clients/resume`` (-> ``missed``), ``/clients/close``: ``{id}``.
* ``GET /server/status`` -> :meth:`Chat.status`.
* ``POST /accounts`` (201) and ``POST /login``: ``{name, password}`` -> ``{name, token}``.
* ``POST /rooms`` ``{name, topic?, id?}`` (201): create a room; its creator owns and joins it.
* ``GET /rooms/{room}`` -> the room with ``nicks`` and ``who`` (nick, role, status, front).
* ``GET /rooms/{room}/history?before=&after=&limit=`` -> ``{room, messages}``, oldest first.
* ``POST /rooms/{room}/messages`` ``{text, id?}`` -> the stored Message.
* ``GET /dms/{peer}?before=&limit=`` -> ``{peer, messages}`` and ``POST /dms/{peer}``
  ``{text}`` -> the stored Message: the Bearer token's account and ``peer``.
* ``GET /clients`` -> ``{clients}``: id, front, status, rooms (and clients on other nodes).

Who may act for a session: a REST session is addressed by ``id`` (its nickname). A guest REST
session (registered without a password or token) may be driven by anyone who knows its ``id``,
as in the seed; an account's session needs ``Authorization: Bearer <token>`` of that account,
and sessions of the other front ends (WebSocket, line, IRC) need their account's token too
(a guest on another front end cannot be driven over REST). Without ``id``, a Bearer token acts
for the account's live session. Registering with a password logs into that account, or creates
it when the name is free, and returns a token. Reading (rooms, history, clients, status) needs
nothing; direct messages need the token of one of their two parties.

WebSocket ``/ws``: JSON text frames. Every request may carry ``ref``, echoed in its reply.

* ``{"type":"hello","nick":..,"token"?:..,"password"?:..,"rooms"?:[..],"resume"?:{room: seq}}``
  -> ``{"type":"welcome","nick","account","token","server","rooms":[..],"errors":[..],
  "limits"}``; for each room of ``resume``, every message after ``seq`` (read from history page
  by page), then ``{"type":"synced","room","seq"}``, then live traffic: live deliveries that
  arrive while the backlog is read are held back and those already sent are dropped, so there
  is neither a gap nor a duplicate at the boundary.
* ``join {room, create?, after?, history?}`` -> ``joined {room}`` (with ``nicks``), then with
  ``after`` (messages after that seq) or ``history`` (the last N) the backlog and ``synced``;
  ``part {room, reason?}`` -> ``parted``; ``send {room, text}`` -> ``ack {id, seq, room}`` once
  stored; ``dm {to, text}`` -> ``ack``; ``topic {room, topic?}`` -> ``topic``;
  ``history {room | peer, before?, after?, limit?}`` -> ``history {room, messages}``;
  ``members {room}`` -> ``members {room, nicks, who}``; ``rooms`` -> ``rooms``; ``ping`` ->
  ``pong``. A refused request gets ``{"type":"error","ref","code","detail"}``.
* The server pushes ``{"type":"message", ...}`` (:meth:`Message.to_json`) and
  ``{"type":"event", ...}`` (:meth:`Event.to_json`: join, part, quit, kick, topic, mode).
* Limits: a frame over ``Limits.ws_message_bytes`` closes the socket with 1009; malformed JSON
  gets an error reply and the socket stays. Output waits in a queue drained by a writer task; a
  client whose queue passes ``Limits.send_queue_bytes`` while its socket is full (it does not
  read) is dropped with close code 1013, reason ``slow consumer``, and its rooms see it quit.
  The token bucket of the session applies (``RATE_LIMITED``). More than ``2 x max_clients +
  16`` sockets are refused (1013, ``server full``). Tokens travel in messages, never in
  cookies, so a page on another origin cannot act for a visitor (no origin check needed).
* Server-side closes: 1000 when the account logged in elsewhere or the client was closed over
  REST, 1001 when the chat shuts down, 1012 when the HTTP server restarts (uvicorn), 1013 as
  above: a client should reconnect (with ``resume``) on all but 1000, 1008 and 1009.

The page (``GET /``, ``static=True``): plain HTML and JavaScript (no framework, no build step)
under a strict Content-Security-Policy (``script-src 'self'``, no inline code). It logs in as a
guest or an account, lists and joins rooms (history loads on join), shows members live, sends
messages and direct messages, and reconnects with ``resume``. User text is only ever set with
``textContent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable
from importlib import resources
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

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
    RoomExists,
    SlowConsumer,
    StoreError,
)
from ._model import Event, Message, Status, check_nick, dm_key
from ._sink import Formatter
from ._state import Chat, Room, Session

__all__ = [
    "BadRequest",
    "WsConnection",
    "WsFormatter",
    "app_from_env",
    "create_app",
    "http_status",
    "openapi_document",
]

log = logging.getLogger("isthmus.chat")

T = TypeVar("T")


class BadRequest(ChatError):
    """A request the web front end cannot parse: bad JSON, a missing or mistyped field."""

    code = "BAD_REQUEST"


class _TooLarge(LimitExceeded):
    """A request body over the size bound (HTTP 413)."""


class _WsRefused(ChatError):
    """A WebSocket request refused with a code of the WebSocket protocol's own."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


_STATUS: dict[type[ChatError], int] = {
    _TooLarge: 413,
    BadRequest: 400,
    InvalidName: 400,
    LimitExceeded: 400,
    AuthError: 401,
    PermissionDenied: 403,
    Banned: 403,
    NotInRoom: 403,
    NoSuchRoom: 404,
    NoSuchClient: 404,
    RoomExists: 409,
    NameInUse: 409,
    RateLimited: 429,
    StoreError: 503,
    SlowConsumer: 503,
}


def http_status(exc: ChatError) -> int:
    """The HTTP status a :class:`ChatError` maps to (400 for codes without a better one)."""
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 400


async def _durable(aw: Awaitable[T]) -> T:
    """Await a store-backed operation; a failure that is not a ChatError is a store error."""
    try:
        return await aw
    except ChatError:
        raise
    except Exception as exc:
        log.warning("store operation failed: %r", exc)
        raise StoreError(f"the store failed: {type(exc).__name__}") from exc


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------ WebSocket


class WsFormatter:
    """The WebSocket's deliveries: one JSON text frame per message or event.

    A message frame starts with ``{"type":"message","room":..,"seq":..`` so that a connection
    catching up after a reconnect can tell a duplicate by a prefix match, without parsing.
    """

    echo = True

    def message(self, msg: Message) -> bytes:
        d: dict[str, object] = {
            "type": "message",
            "room": msg.room,
            "seq": msg.seq,
            "id": msg.id,
            "from": msg.sender,
            "text": msg.text,
            "ts": msg.ts,
            "kind": msg.kind,
        }
        if msg.target is not None:
            d["to"] = msg.target
        return _dumps(d).encode()

    def event(self, ev: Event) -> bytes | None:
        return _dumps({"type": "event", **ev.to_json()}).encode()


_FORMATTER = WsFormatter()
_MESSAGE_HEAD = re.compile(rb'\{"type":"message","room":"([^"\\]*)","seq":(\d+)')


class _Decoder:
    """bytes -> str for ASGI text frames, once per fanned-out message: the chat pushes the same
    bytes object to every WebSocket member in a row, so remembering the last one suffices."""

    __slots__ = ("raw", "text")

    def __init__(self) -> None:
        self.raw = b""
        self.text = ""

    def __call__(self, data: bytes) -> str:
        if data is not self.raw:
            self.raw, self.text = data, data.decode()
        return self.text


_decode = _Decoder()

_WS_TYPES = frozenset(
    ["hello", "join", "part", "send", "dm", "topic", "history", "members", "rooms", "ping"]
)


def _room_json(room: Room) -> dict[str, object]:
    return {**room.to_json(), "nicks": room.nicks()}


def _role(room: Room, key: str) -> str:
    if key == room.record.owner.casefold():
        return "owner"
    return "moderator" if key in room.record.moderators else "member"


def _who(room: Room) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [
        {"nick": s.nick, "role": _role(room, s.key), "status": s.status.value, "front": s.front}
        for s in room.members.values()
    ]
    out.extend(
        {"nick": nick, "role": _role(room, key), "status": "CONNECTED", "front": "remote"}
        for key, nick in room.remote.items()
        if key not in room.members
    )
    out.sort(key=lambda d: str(d["nick"]).casefold())
    return out


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise BadRequest(f"{key} must be a string")
    return v


def _req_str(d: dict[str, Any], key: str) -> str:
    v = _opt_str(d, key)
    if v is None or v == "":
        raise BadRequest(f"{key} is required")
    return v


def _opt_int(d: dict[str, Any], key: str) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise BadRequest(f"{key} must be a non-negative integer")
    return v


class WsConnection:
    """One WebSocket client: the :class:`Sink` the chat pushes to, its bounded send queue (a
    writer task drains it) and its requests (handled one at a time, in order)."""

    def __init__(self, chat: Chat, ws: WebSocket) -> None:
        self.chat = chat
        self.limits = chat.limits
        self.fmt: Formatter = _FORMATTER
        self.ws = ws
        self.session: Session | None = None
        client = ws.client
        self.peer = client.host if client is not None else "?"
        self._queue: deque[tuple[str, int]] = deque()
        self._queued = 0
        self._held: list[bytes] | None = None  # live deliveries waiting for a backlog
        self._held_bytes = 0
        self._floors: dict[str, int] = {}  # room -> last seq a backlog sent
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._sending = False  # the writer is inside a send (waiting for the socket)

    # ---------------------------------------------------------------- Sink

    def push(self, data: bytes) -> None:
        """Queue a delivery; must not block. Over the bound, the client is dropped."""
        if self._close is not None:
            return
        held = self._held
        if held is not None:
            held.append(data)
            self._held_bytes += len(data)
            if self._sending and self._queued + self._held_bytes > self.limits.send_queue_bytes:
                self._slow_consumer()
            return
        if self._floors and self._stale(data):
            return
        self._put(_decode(data), len(data))

    def close(self, reason: str) -> None:
        """Close after what is queued. The session ends when the socket does (the chat may
        have disconnected it already: that is harmless)."""
        self._shut(1001 if "shutting down" in reason else 1000, reason[:120])

    # ---------------------------------------------------------------- output

    def _put(self, text: str, size: int, *, bounded: bool = True) -> None:
        if self._close is not None:
            return
        self._queue.append((text, size))
        self._queued += size
        self._wake.set()
        # Over the bound while the writer waits for the socket: the client does not keep up.
        # (A burst into an idle writer is drained in the next tick and does not count.)
        if bounded and self._sending and self._queued > self.limits.send_queue_bytes:
            self._slow_consumer()

    def reply(self, kind: str, ref: object = None, **fields: object) -> None:
        """Queue a reply ``{"type": kind, "ref": ref, **fields}``."""
        if self._close is not None:
            return
        obj: dict[str, object] = {"type": kind}
        if ref is not None:
            obj["ref"] = ref
        obj.update(fields)
        text = _dumps(obj)
        self._put(text, len(text))

    def error(self, ref: object, code: str, detail: str) -> None:
        """Queue an error reply."""
        self.reply("error", ref, code=code, detail=detail)

    def _stale(self, data: bytes) -> bool:
        """True for a message a backlog already sent (seq at or below the room's floor)."""
        m = _MESSAGE_HEAD.match(data)
        if m is None:
            return False
        room = m.group(1).decode()
        floor = self._floors.get(room)
        if floor is None:
            return False
        if int(m.group(2)) <= floor:
            return True
        del self._floors[room]  # past the boundary: later deliveries are all new
        return False

    def _slow_consumer(self) -> None:
        if self._close is not None:
            return
        self.chat.counters["slow_consumers"] += 1
        log.warning("%s: slow WebSocket consumer, disconnecting", self.peer)
        self._queue.clear()
        self._queued = 0
        self._held = None
        self._held_bytes = 0
        self._floors.clear()
        self._shut(1013, "slow consumer")
        session, self.session = self.session, None
        if session is not None:
            session.status = Status.ERROR
            # push() runs inside the chat's loop over the room's members: leave afterwards.
            asyncio.get_running_loop().call_soon(
                self.chat.disconnect, session, SlowConsumer.code.lower()
            )

    def _shut(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        self._wake.set()
        self._space.set()

    async def _write_loop(self) -> None:
        send = self.ws.send
        queue = self._queue
        low = self.limits.send_queue_bytes // 2
        try:
            while True:
                if not queue:
                    if self._close is not None:
                        break
                    self._space.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                text, size = queue.popleft()
                self._queued -= size
                # Blocks while the transport is over its high-water mark: the queue then grows
                # until the client reads or passes the bound.
                self._sending = True
                await send({"type": "websocket.send", "text": text})
                self._sending = False
                if self._queued <= low:
                    self._space.set()
            code, reason = self._close
            await send({"type": "websocket.close", "code": code, "reason": reason})
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the peer is gone; the reader sees the disconnect
        finally:
            if self._close is None:
                self._close = (1006, "connection lost")
            self._space.set()

    # ---------------------------------------------------------------- input

    async def run(self) -> None:
        """Serve the connection until either side closes it."""
        await self.ws.accept()
        writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name="isthmus.chat ws writer"
        )
        limit = self.limits.ws_message_bytes
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if self._close is not None:
                    continue
                text = message.get("text")
                if text is None:
                    raw = message.get("bytes") or b""
                    if len(raw) > limit:
                        self._shut(1009, f"message over {limit} bytes")
                        continue
                    try:
                        text = raw.decode()
                    except UnicodeDecodeError:
                        self.error(None, "BAD_JSON", "frames must be UTF-8 JSON")
                        continue
                elif len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
                    self._shut(1009, f"message over {limit} bytes")
                    continue
                await self._request(text)
        finally:
            if self._close is None:
                self._close = (1000, "")
            self._wake.set()
            self._space.set()
            session, self.session = self.session, None
            if session is not None:
                self.chat.disconnect(session, "connection closed")
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _request(self, text: str) -> None:
        try:
            req = json.loads(text)
        except ValueError:
            self.error(None, "BAD_JSON", "not valid JSON")
            return
        if not isinstance(req, dict):
            self.error(None, "BAD_REQUEST", "a request is a JSON object")
            return
        ref = req.get("ref")
        if not isinstance(ref, str | int | float | bool):
            ref = None
        kind = req.get("type")
        if kind not in _WS_TYPES:
            self.error(ref, "UNKNOWN_TYPE", f"unknown request type {str(kind)[:40]!r}")
            return
        try:
            await getattr(self, "_on_" + str(kind))(req, ref)
        except ChatError as exc:
            self.error(ref, exc.code, str(exc))
        except Exception:
            log.exception("%s: WebSocket request %s failed", self.peer, kind)
            self.error(ref, "INTERNAL", "internal error")

    def _need(self) -> Session:
        s = self.session
        if s is None:
            raise _WsRefused("NOT_REGISTERED", "say hello first")
        return s

    # ---------------------------------------------------------------- backlog

    async def _catch_up(self, plan: list[tuple[Room, int | None, int | None, int]]) -> None:
        """Send each room's backlog, then the live deliveries held meanwhile (minus any the
        backlog already had). ``plan`` is ``(room, after, last, last_seq at join)``;
        :attr:`_held` was set before the joins."""
        try:
            for room, after, last, base in plan:
                sent = await self._backlog(room, after, last, base)
                if self._close is not None:
                    return
                self._floors[room.name] = sent
                self.reply("synced", room=room.name, seq=sent)
        finally:
            self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        self._held_bytes = 0
        if held and self._close is None:
            for data in held:
                if not (self._floors and self._stale(data)):
                    self._put(_decode(data), len(data))

    async def _backlog(self, room: Room, after: int | None, last: int | None, base: int) -> int:
        """Queue the messages after ``after`` (or the last ``last``); returns the seq up to
        which the client now has everything (live deliveries at or below it are dropped)."""
        fmt = self.fmt
        if last is not None:
            msgs = await _durable(self.chat.history(room.name, limit=last))
            for m in msgs:
                data = fmt.message(m)
                self._put(data.decode(), len(data), bounded=False)
            return msgs[-1].seq if msgs else 0
        page = max(1, min(self.limits.history_page_max, 200))
        top = after or 0
        sent = False
        while self._close is None:
            msgs = await _durable(self.chat.history(room.name, after=top, limit=page))
            for m in msgs:
                data = fmt.message(m)
                self._put(data.decode(), len(data), bounded=False)
            if msgs:
                top, sent = msgs[-1].seq, True
            if len(msgs) < page:
                break
            # Pace a long backlog by what the client reads, instead of queueing it all.
            while self._queued > self.limits.send_queue_bytes // 2 and self._close is None:
                self._space.clear()
                await self._space.wait()
        # A client claiming more than the room had when it joined (a store that was reset)
        # must still get every live message after that.
        return top if sent else min(top, base)

    # ---------------------------------------------------------------- requests

    async def _on_hello(self, req: dict[str, Any], ref: object) -> None:
        if self.session is not None:
            raise _WsRefused("ALREADY_REGISTERED", f"already registered as {self.session.nick}")
        chat = self.chat
        nick = _opt_str(req, "nick")
        token = _opt_str(req, "token")
        password = _opt_str(req, "password")
        account: str | None = None
        if token:
            account = chat.verify_token(token)
            nick = nick or account
        elif password:
            if not nick:
                raise BadRequest("nick is required")
            account = await chat.authenticate(nick, password)
        if not nick:
            raise BadRequest("nick is required")
        rooms = req.get("rooms") or []
        resume = req.get("resume") or {}
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise BadRequest("rooms must be a list of room names")
        if not isinstance(resume, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in resume.values()
        ):
            raise BadRequest("resume maps room names to the last seq seen")
        session = await chat.connect(nick, front="ws", sink=self, account=account)
        if self._close is not None:  # closed while connecting
            chat.disconnect(session, "connection closed")
            return
        session.info["peer"] = self.peer
        self.session = session
        self._held = []  # from the first join on, until the backlogs are out
        joined: dict[str, Room] = {}
        plan: list[tuple[Room, int | None, int | None, int]] = []
        errors: list[dict[str, str]] = []
        for name, after in [*((r, None) for r in rooms), *resume.items()]:
            try:
                room = chat.join(session, name)
            except ChatError as exc:
                errors.append({"room": name, "code": exc.code, "detail": str(exc)})
                continue
            joined[room.name] = room
            if after is not None:
                plan.append((room, after, None, room.last_seq))
        self.reply(
            "welcome",
            ref,
            nick=session.nick,
            account=account,
            token=chat.issue_token(account) if account else None,
            server=chat.server_name,
            rooms=[_room_json(r) for r in joined.values()],
            errors=errors,
            limits={
                "max_message_length": self.limits.max_message_length,
                "max_nick_length": self.limits.max_nick_length,
                "ws_message_bytes": self.limits.ws_message_bytes,
                "history_page_max": self.limits.history_page_max,
            },
        )
        await self._catch_up(plan)

    async def _on_join(self, req: dict[str, Any], ref: object) -> None:
        s = self._need()
        name = _req_str(req, "room")
        after = _opt_int(req, "after")
        last = _opt_int(req, "history")
        backlog = after is not None or bool(last)
        if backlog:
            self._held = []
        try:
            room = self.chat.join(s, name, create=bool(req.get("create")))
        except BaseException:
            self._release()
            raise
        self.reply("joined", ref, room=_room_json(room))
        if backlog:
            await self._catch_up([(room, after, last or None, room.last_seq)])

    async def _on_part(self, req: dict[str, Any], ref: object) -> None:
        s = self._need()
        room = self.chat.part(s, _req_str(req, "room"), _opt_str(req, "reason") or "")
        self._floors.pop(room.name, None)
        self.reply("parted", ref, room=room.name)

    def _ack(self, fut: asyncio.Future[Message], ref: object) -> None:
        if fut.cancelled():
            self.error(ref, "STORE_ERROR", "cancelled")
            return
        exc = fut.exception()
        if exc is not None:
            code = exc.code if isinstance(exc, ChatError) else StoreError.code
            self.error(ref, code, str(exc) or type(exc).__name__)
            return
        m = fut.result()
        extra = {"to": m.target} if m.target is not None else {}
        self.reply("ack", ref, id=m.id, seq=m.seq, room=m.room, **extra)

    async def _on_send(self, req: dict[str, Any], ref: object) -> None:
        s = self._need()
        room = _req_str(req, "room")
        text = _req_str(req, "text")
        if s.status is Status.SUSPENDED:  # as in the seed: sending resumes a paused client
            await _durable(self.chat.resume(s))
        fut = self.chat.post(s, room, text)
        fut.add_done_callback(lambda f: self._ack(f, ref))

    async def _on_dm(self, req: dict[str, Any], ref: object) -> None:
        s = self._need()
        fut = self.chat.post_dm(s, _req_str(req, "to"), _req_str(req, "text"))
        fut.add_done_callback(lambda f: self._ack(f, ref))

    async def _on_topic(self, req: dict[str, Any], ref: object) -> None:
        s = self._need()
        name = _req_str(req, "room")
        topic = _opt_str(req, "topic")
        if topic is None:
            room = self.chat.room(name)
            self.reply("topic", ref, room=room.name, topic=room.topic)
            return
        fut = self.chat.set_topic(s, name, topic)
        await _durable(fut)
        room = self.chat.room(name)
        self.reply("topic", ref, room=room.name, topic=room.topic)

    async def _on_history(self, req: dict[str, Any], ref: object) -> None:
        s = self._need()
        before = _opt_int(req, "before")
        after = _opt_int(req, "after")
        limit = _opt_int(req, "limit") or 50
        peer = _opt_str(req, "peer")
        if peer:
            key = dm_key(s.nick, check_nick(peer, self.limits))
            msgs = await _durable(
                self.chat.history(key, before=before, after=after, limit=limit, session=s)
            )
        else:
            key = self.chat.room(_req_str(req, "room")).name
            msgs = await _durable(self.chat.history(key, before=before, after=after, limit=limit))
        self.reply("history", ref, room=key, messages=[m.to_json() for m in msgs])

    async def _on_members(self, req: dict[str, Any], ref: object) -> None:
        self._need()
        room = self.chat.room(_req_str(req, "room"))
        self.reply("members", ref, room=room.name, nicks=room.nicks(), who=_who(room))

    async def _on_rooms(self, req: dict[str, Any], ref: object) -> None:
        self._need()
        self.reply("rooms", ref, rooms=[r.to_json() for r in self.chat.list_rooms()])

    async def _on_ping(self, req: dict[str, Any], ref: object) -> None:
        data = req.get("data")
        self.reply("pong", ref, **({"data": data} if data is not None else {}))


# ------------------------------------------------------------------------------ REST


def _error_response(code: str, detail: str, status: int) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


async def _chat_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatError)
    return _error_response(exc.code, str(exc), http_status(exc))


_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 400: "BAD_REQUEST"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    resp = _error_response(code, str(exc.detail), exc.status_code)
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("HTTP %s %s failed", request.method, request.url.path, exc_info=exc)
    return _error_response("INTERNAL", "internal error", 500)


_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?")


def _security_headers(request: Request) -> dict[str, str]:
    # 'self' covers ws:/wss: of the same host in CSP 3; older browsers need them spelled out.
    connect = "'self'"
    host = request.headers.get("host", "")
    if _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


class _Web:
    """The route handlers, over one chat."""

    def __init__(self, chat: Chat, static: bool) -> None:
        self.chat = chat
        self.sockets: set[WsConnection] = set()
        self.assets: dict[str, bytes] = {}
        if static:
            base = resources.files("isthmus.chat").joinpath("static")
            self.assets = {name: base.joinpath(name).read_bytes() for name in _ASSETS}
        self.body_limit = max(64 * 1024, chat.limits.ws_message_bytes)

    # ---------------------------------------------------------------- helpers

    async def body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_limit:
            raise _TooLarge(f"the body is over {self.body_limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.body_limit:
                raise _TooLarge(f"the body is over {self.body_limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BadRequest("the body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return data

    def bearer(self, request: Request) -> str | None:
        """The account an ``Authorization: Bearer`` token names, or None without one."""
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("use Authorization: Bearer <token>")
        return self.chat.verify_token(token.strip())

    def actor(self, request: Request, body: dict[str, Any]) -> Session:
        """The session a write request acts for (see the module docstring for the rules)."""
        account = self.bearer(request)
        cid = _opt_str(body, "id")
        if cid:
            s = self.chat.session(cid)
            if s.account is not None:
                if account is None:
                    raise AuthError(f"{s.nick} is an account: send its Bearer token")
                if account.casefold() != s.account.casefold():
                    raise PermissionDenied(f"the token is not {s.nick}'s")
            elif s.front != "rest":
                raise PermissionDenied(f"{s.nick} is a {s.front} client, not a REST one")
            return s
        if account is None:
            raise AuthError("send the client's id, or a Bearer token")
        s2 = self.chat.sessions.get(account.casefold())
        if s2 is None:
            raise NoSuchClient(f"{account} has no session: POST /clients/register first")
        return s2

    def need_account(self, request: Request) -> str:
        account = self.bearer(request)
        if account is None:
            raise AuthError("this needs Authorization: Bearer <token>")
        return account

    @staticmethod
    def query_int(request: Request, key: str) -> int | None:
        raw = request.query_params.get(key)
        if raw is None or raw == "":
            return None
        if not raw.isdigit():
            raise BadRequest(f"{key} must be a non-negative integer")
        return int(raw)

    @staticmethod
    def client_json(s: Session) -> dict[str, object]:
        return {
            "id": s.nick,
            "front": s.front,
            "status": s.status.value,
            "account": s.account is not None,
            "rooms": sorted(s.rooms),
        }

    # ---------------------------------------------------------------- seed endpoints

    async def register(self, request: Request) -> Response:
        chat = self.chat
        body = await self.body(request)
        name = _req_str(body, "name")
        room = _opt_str(body, "room") or "main"
        password = _opt_str(body, "password")
        account = self.bearer(request)
        if password:
            check_nick(name, chat.limits)
            if await _durable(chat.store.get_account(name)) is None:
                if name.casefold() in chat.sessions:  # do not create an account for a guest's nick
                    raise NameInUse(f"{name} is in use")
                await chat.register_account(name, password)
                account = name
            else:
                account = await chat.authenticate(name, password)
        elif account is not None and account.casefold() != name.casefold():
            raise AuthError(f"the token is {account}'s, not {name}'s")
        session = await chat.connect(name, front="rest", sink=None, account=account)
        try:
            joined = chat.join(session, room)
        except BaseException:
            chat.disconnect(session, "registration failed")
            raise
        out: dict[str, object] = {
            "id": session.nick,
            "room": joined.name,
            "status": session.status.value,
        }
        if account is not None:
            out["token"] = chat.issue_token(account)
        return JSONResponse(out)

    async def send_message(self, request: Request) -> Response:
        body = await self.body(request)
        if not _opt_str(body, "id"):
            raise BadRequest("id is required")
        s = self.actor(request, body)
        room = _req_str(body, "room")
        text = _req_str(body, "message")
        return await self._post(s, room, text)

    async def _post(self, s: Session, room: str, text: str) -> Response:
        if s.status is Status.SUSPENDED:  # as in the seed: sending resumes a paused client
            await _durable(self.chat.resume(s))
        msg = await _durable(self.chat.post(s, room, text))
        return JSONResponse(msg.to_json())

    async def list_rooms(self, request: Request) -> Response:
        return JSONResponse({"rooms": [r.to_json() for r in self.chat.list_rooms()]})

    async def _client_op(self, request: Request) -> Session:
        body = await self.body(request)
        _req_str(body, "id")
        return self.actor(request, body)

    async def pause(self, request: Request) -> Response:
        s = await self._client_op(request)
        self.chat.pause(s)
        return JSONResponse({"id": s.nick, "status": s.status.value})

    async def resume(self, request: Request) -> Response:
        s = await self._client_op(request)
        missed = await _durable(self.chat.resume(s))
        return JSONResponse({"id": s.nick, "status": s.status.value, "missed": len(missed)})

    async def close_client(self, request: Request) -> Response:
        s = await self._client_op(request)
        s.status = Status.CLOSING
        if s.sink is not None:
            s.sink.close("closed over REST")
        self.chat.disconnect(s, "closed")
        return JSONResponse({"id": s.nick, "status": s.status.value})

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.chat.status())

    # ---------------------------------------------------------------- accounts

    async def create_account(self, request: Request) -> Response:
        body = await self.body(request)
        name = _req_str(body, "name")
        token = await _durable(self.chat.register_account(name, _req_str(body, "password")))
        return JSONResponse({"name": name, "token": token}, status_code=201)

    async def login(self, request: Request) -> Response:
        body = await self.body(request)
        name = _req_str(body, "name")
        canonical = await _durable(self.chat.authenticate(name, _req_str(body, "password")))
        return JSONResponse({"name": canonical, "token": self.chat.issue_token(canonical)})

    # ---------------------------------------------------------------- rooms

    async def create_room(self, request: Request) -> Response:
        body = await self.body(request)
        name = _req_str(body, "name")
        topic = _opt_str(body, "topic") or ""
        s = self.actor(request, body)
        room = self.chat.create_room(s, name, topic)
        return JSONResponse(_room_json(room), status_code=201)

    async def room_info(self, request: Request) -> Response:
        room = self.chat.room(request.path_params["room"])
        return JSONResponse({**_room_json(room), "who": _who(room)})

    async def room_history(self, request: Request) -> Response:
        room = self.chat.room(request.path_params["room"])  # refuses DM keys
        msgs = await _durable(
            self.chat.history(
                room.name,
                before=self.query_int(request, "before"),
                after=self.query_int(request, "after"),
                limit=self.query_int(request, "limit") or 50,
            )
        )
        return JSONResponse({"room": room.name, "messages": [m.to_json() for m in msgs]})

    async def post_room_message(self, request: Request) -> Response:
        body = await self.body(request)
        room = self.chat.room(request.path_params["room"])
        text = _opt_str(body, "text") or _req_str(body, "message")
        return await self._post(self.actor(request, body), room.name, text)

    # ---------------------------------------------------------------- direct messages

    async def dm_history(self, request: Request) -> Response:
        account = self.need_account(request)
        peer = check_nick(request.path_params["peer"], self.chat.limits)
        msgs = await _durable(
            self.chat.history(
                dm_key(account, peer),
                before=self.query_int(request, "before"),
                limit=self.query_int(request, "limit") or 50,
            )
        )
        return JSONResponse({"peer": peer, "messages": [m.to_json() for m in msgs]})

    async def post_dm(self, request: Request) -> Response:
        account = self.need_account(request)
        body = await self.body(request)
        peer = check_nick(request.path_params["peer"], self.chat.limits)
        text = _opt_str(body, "text") or _req_str(body, "message")
        chat = self.chat
        s = chat.sessions.get(account.casefold())
        if s is not None:
            msg = await _durable(chat.post_dm(s, peer, text))
            return JSONResponse(msg.to_json())
        # No live session: a momentary one that joins no room, so nobody sees it come and go.
        s = await chat.connect(account, front="rest", sink=None, account=account)
        try:
            msg = await _durable(chat.post_dm(s, peer, text))
        finally:
            chat.disconnect(s, "done")
        return JSONResponse(msg.to_json())

    # ---------------------------------------------------------------- clients

    async def clients(self, request: Request) -> Response:
        chat = self.chat
        out = [self.client_json(s) for s in chat.sessions.values()]
        out.extend(
            {
                "id": rc.nick,
                "front": "remote",
                "status": Status.CONNECTED.value,
                "account": False,
                "rooms": sorted(rc.rooms),
                "node": rc.node,
            }
            for key, rc in chat.remote_clients.items()
            if key not in chat.sessions
        )
        out.sort(key=lambda d: str(d["id"]).casefold())
        return JSONResponse({"clients": out})

    # ---------------------------------------------------------------- page, schema, socket

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(static=bool(self.assets)))

    async def page(self, request: Request) -> Response:
        return self._asset(request, "index.html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.assets or name == "index.html":
            raise HTTPException(404, f"no file {name[:60]}")
        return self._asset(request, name)

    def _asset(self, request: Request, name: str) -> Response:
        return Response(
            self.assets[name], media_type=_ASSETS[name], headers=_security_headers(request)
        )

    async def websocket(self, ws: WebSocket) -> None:
        conn = WsConnection(self.chat, ws)
        if len(self.sockets) >= self.chat.limits.max_clients * 2 + 16:
            # Far more sockets than clients allowed: refuse before reading their requests.
            await ws.accept()
            await ws.close(1013, "server full")
            return
        self.sockets.add(conn)
        try:
            await conn.run()
        finally:
            self.sockets.discard(conn)


def create_app(
    chat: Chat,
    *,
    manage_chat: bool = False,
    static: bool = True,
    cors_origins: Iterable[str] = (),
) -> Starlette:
    """The ASGI app over ``chat``: REST, the ``/ws`` WebSocket and (``static``) the web page.

    With ``manage_chat`` the app's lifespan starts and closes ``chat``; otherwise the caller
    does (``isthmus-chat serve`` shares one chat between every front end). ``cors_origins``
    lets pages on those origins call the REST API (``["*"]`` for any).
    """
    web = _Web(chat, static)
    routes: list[BaseRoute] = [
        Route("/clients/register", web.register, methods=["POST"]),
        Route("/messages/send", web.send_message, methods=["POST"]),
        Route("/chatrooms/list", web.list_rooms, methods=["GET"]),
        Route("/clients/pause", web.pause, methods=["POST"]),
        Route("/clients/resume", web.resume, methods=["POST"]),
        Route("/clients/close", web.close_client, methods=["POST"]),
        Route("/server/status", web.status, methods=["GET"]),
        Route("/accounts", web.create_account, methods=["POST"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/rooms", web.list_rooms, methods=["GET"]),
        Route("/rooms", web.create_room, methods=["POST"]),
        Route("/rooms/{room}", web.room_info, methods=["GET"]),
        Route("/rooms/{room}/history", web.room_history, methods=["GET"]),
        Route("/rooms/{room}/messages", web.post_room_message, methods=["POST"]),
        Route("/dms/{peer}", web.dm_history, methods=["GET"]),
        Route("/dms/{peer}", web.post_dm, methods=["POST"]),
        Route("/clients", web.clients, methods=["GET"]),
        Route("/openapi.json", web.openapi, methods=["GET"]),
        WebSocketRoute("/ws", web.websocket),
    ]
    if static:
        routes.append(Route("/", web.page, methods=["GET"]))
        routes.append(Route("/static/{name}", web.static, methods=["GET"]))
    middleware: list[Middleware] = []
    origins = list(cors_origins)
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    lifespan: Any = None
    if manage_chat:

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await chat.start()
            try:
                yield
            finally:
                await chat.close()

    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ChatError: _chat_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.chat = chat
    return app


def app_from_env() -> Starlette:
    """An app over a chat configured like ``isthmus-chat serve`` (``ISTHMUS_CHAT_*`` variables,
    ``ISTHMUS_CHAT_CONFIG``), whose lifespan runs the chat: for
    ``uvicorn --factory isthmus.chat._web:app_from_env`` and other ASGI servers."""
    from ._config import load_config
    from ._server import make_store

    cfg = load_config()
    backplane = None
    if cfg.redis:
        from ._redis import RedisBackplane

        backplane = RedisBackplane(cfg.redis)
    chat = Chat(
        limits=cfg.limits(),
        store=make_store(cfg.db),
        backplane=backplane,
        secret=bytes.fromhex(cfg.secret) if cfg.secret else None,
        server_name=cfg.server_name,
        default_rooms=cfg.default_rooms,
        require_account=cfg.require_account,
    )
    return create_app(chat, manage_chat=True)


# ------------------------------------------------------------------------------ OpenAPI


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_TEXT = {
    400: "invalid name, limit exceeded or bad request",
    401: "missing, wrong or expired credentials",
    403: "not allowed (permission, ban, not in the room, another client's session)",
    404: "no such room or client",
    409: "the room or name exists",
    413: "the body is too large",
    429: "rate limited",
    503: "the store failed",
}


def _op(
    op_id: str,
    summary: str,
    ok: tuple[int, dict[str, Any], str],
    errors: Iterable[int] = (),
    *,
    body: str | None = None,
    params: Iterable[dict[str, Any]] = (),
    auth: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    status, schema, text = ok
    responses: dict[str, Any] = {str(status): _json(schema, text)}
    codes = set(errors)
    if body is not None:
        codes |= {400, 413}
    for code in sorted(codes):
        responses[str(code)] = _json(_ref("Error"), _ERROR_TEXT[code])
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if auth == "optional":
        op["security"] = [{}, {"bearer": []}]
    elif auth == "required":
        op["security"] = [{"bearer": []}]
    return op


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query_int(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 0},
    }


def _obj(props: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    req = list(required)
    if req:
        out["required"] = req
    return out


_S = {"type": "string"}
_I = {"type": "integer"}
_N = {"type": "number"}
_B = {"type": "boolean"}


def _strings() -> dict[str, Any]:
    return {"type": "array", "items": _S}


def openapi_document(*, static: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the app's routes, served at ``GET /openapi.json``."""
    status_enum = {"type": "string", "enum": [s.value for s in Status]}
    schemas: dict[str, Any] = {
        "Error": _obj({"error": _S, "detail": _S}, ["error", "detail"]),
        "Message": _obj(
            {
                "id": _S,
                "room": {**_S, "description": "room name, or @a:b for a direct conversation"},
                "seq": {**_I, "description": "1, 2, 3 ... per room, without gaps"},
                "from": _S,
                "to": {**_S, "description": "the recipient of a direct message"},
                "text": _S,
                "ts": {**_N, "description": "Unix time in seconds"},
                "kind": {"type": "string", "enum": ["msg", "notice", "dm"]},
            },
            ["id", "room", "seq", "from", "text", "ts", "kind"],
        ),
        "Room": _obj(
            {
                "name": _S,
                "topic": _S,
                "owner": _S,
                "moderators": _strings(),
                "members": {**_I, "description": "how many are present"},
                "last_seq": _I,
                "moderated": _B,
                "created": _N,
            },
            ["name", "topic", "members", "last_seq"],
        ),
        "Member": _obj(
            {
                "nick": _S,
                "role": {"type": "string", "enum": ["owner", "moderator", "member"]},
                "status": _S,
                "front": _S,
            },
            ["nick", "role", "status", "front"],
        ),
        "RoomDetail": {
            "allOf": [
                _ref("Room"),
                _obj(
                    {"nicks": _strings(), "who": {"type": "array", "items": _ref("Member")}},
                    ["nicks"],
                ),
            ]
        },
        "RoomList": _obj({"rooms": {"type": "array", "items": _ref("Room")}}, ["rooms"]),
        "History": _obj(
            {"room": _S, "messages": {"type": "array", "items": _ref("Message")}},
            ["room", "messages"],
        ),
        "DmHistory": _obj(
            {"peer": _S, "messages": {"type": "array", "items": _ref("Message")}},
            ["peer", "messages"],
        ),
        "Client": _obj(
            {
                "id": _S,
                "front": {**_S, "description": "rest, ws, line, irc, or remote (another node)"},
                "status": _S,
                "account": _B,
                "rooms": _strings(),
                "node": _S,
            },
            ["id", "front", "status", "rooms"],
        ),
        "ClientList": _obj({"clients": {"type": "array", "items": _ref("Client")}}, ["clients"]),
        "Registered": _obj(
            {
                "id": _S,
                "room": _S,
                "status": status_enum,
                "token": {**_S, "description": "for an account's session"},
            },
            ["id", "room", "status"],
        ),
        "ClientState": _obj(
            {
                "id": _S,
                "status": status_enum,
                "missed": {**_I, "description": "messages replayed by a resume"},
            },
            ["id", "status"],
        ),
        "ServerStatus": {
            **_obj(
                {
                    "server": _S,
                    "uptime": _N,
                    "clients": _I,
                    "max_clients": _I,
                    "rooms": _I,
                    "statuses": {"type": "object", "additionalProperties": _I},
                    "node": {"type": ["string", "null"]},
                    "messages": _I,
                    "deliveries": _I,
                    "slow_consumers": _I,
                    "connections": _I,
                },
                ["server", "clients", "rooms"],
            ),
        },
        "Token": _obj({"name": _S, "token": _S}, ["name", "token"]),
        "Credentials": _obj({"name": _S, "password": _S}, ["name", "password"]),
        "RegisterRequest": _obj(
            {
                "name": {**_S, "description": "the client id (nickname)"},
                "room": {**_S, "default": "main"},
                "password": {
                    **_S,
                    "description": "log into the account, or create it if the name is free",
                },
            },
            ["name"],
        ),
        "SendRequest": _obj({"id": _S, "room": _S, "message": _S}, ["id", "room", "message"]),
        "ClientRef": _obj({"id": _S}, ["id"]),
        "RoomCreate": _obj(
            {"name": _S, "topic": _S, "id": {**_S, "description": "the creating client"}},
            ["name"],
        ),
        "RoomMessage": _obj(
            {"text": _S, "id": {**_S, "description": "the sending client"}}, ["text"]
        ),
        "DmRequest": _obj({"text": _S}, ["text"]),
    }
    room_p = _path_param("room", "room name (case-insensitive, without #)")
    peer_p = _path_param("peer", "the other party's nickname")
    before = _query_int("before", "only messages with a smaller seq (the newest of those)")
    after = _query_int("after", "only messages with a larger seq (the oldest of those)")
    limit = _query_int("limit", "page size (default 50, at most the server's page maximum)")
    write_errors = (401, 403, 404, 429, 503)
    paths: dict[str, Any] = {
        "/clients/register": {
            "post": _op(
                "registerClient",
                "Register a REST client and join a room",
                (200, _ref("Registered"), "the new session"),
                (401, 404, 409, 503),
                body="RegisterRequest",
                auth="optional",
            )
        },
        "/messages/send": {
            "post": _op(
                "sendMessage",
                "Send a message to a room as a client",
                (200, _ref("Message"), "the stored message"),
                write_errors,
                body="SendRequest",
                auth="optional",
            )
        },
        "/chatrooms/list": {
            "get": _op("listChatrooms", "Every room", (200, _ref("RoomList"), "the rooms"))
        },
        "/clients/pause": {
            "post": _op(
                "pauseClient",
                "Withhold live deliveries from a client",
                (200, _ref("ClientState"), "the client"),
                (401, 403, 404),
                body="ClientRef",
                auth="optional",
            )
        },
        "/clients/resume": {
            "post": _op(
                "resumeClient",
                "Resume a paused client (it is sent what it missed)",
                (200, _ref("ClientState"), "the client"),
                (401, 403, 404, 503),
                body="ClientRef",
                auth="optional",
            )
        },
        "/clients/close": {
            "post": _op(
                "closeClient",
                "Disconnect a client",
                (200, _ref("ClientState"), "the client, now CLOSED"),
                (401, 403, 404),
                body="ClientRef",
                auth="optional",
            )
        },
        "/server/status": {
            "get": _op("serverStatus", "Server status", (200, _ref("ServerStatus"), "status"))
        },
        "/accounts": {
            "post": _op(
                "createAccount",
                "Create an account",
                (201, _ref("Token"), "the account's session token"),
                (409, 503),
                body="Credentials",
            )
        },
        "/login": {
            "post": _op(
                "login",
                "Log in with a password or a token",
                (200, _ref("Token"), "a fresh session token"),
                (401, 503),
                body="Credentials",
            )
        },
        "/rooms": {
            "get": _op("listRooms", "Every room", (200, _ref("RoomList"), "the rooms")),
            "post": _op(
                "createRoom",
                "Create a room (its creator owns and joins it)",
                (201, _ref("RoomDetail"), "the new room"),
                (401, 403, 404, 409),
                body="RoomCreate",
                auth="optional",
            ),
        },
        "/rooms/{room}": {
            "get": _op(
                "getRoom",
                "A room with its members",
                (200, _ref("RoomDetail"), "the room"),
                (400, 404),
                params=[room_p],
            )
        },
        "/rooms/{room}/history": {
            "get": _op(
                "roomHistory",
                "A page of a room's messages, oldest first",
                (200, _ref("History"), "the page"),
                (400, 404, 503),
                params=[room_p, before, after, limit],
            )
        },
        "/rooms/{room}/messages": {
            "post": _op(
                "postRoomMessage",
                "Send a message to a room",
                (200, _ref("Message"), "the stored message"),
                write_errors,
                body="RoomMessage",
                params=[room_p],
                auth="optional",
            )
        },
        "/dms/{peer}": {
            "get": _op(
                "dmHistory",
                "Direct messages between the token's account and peer",
                (200, _ref("DmHistory"), "the page, oldest first"),
                (400, 401, 503),
                params=[peer_p, before, limit],
                auth="required",
            ),
            "post": _op(
                "sendDm",
                "Send a direct message to a connected client",
                (200, _ref("Message"), "the stored message"),
                write_errors,
                body="DmRequest",
                params=[peer_p],
                auth="required",
            ),
        },
        "/clients": {
            "get": _op("listClients", "Every connected client", (200, _ref("ClientList"), "them"))
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                (200, {"type": "object"}, "the OpenAPI 3.1 document"),
            )
        },
        "/ws": {
            "get": {
                "operationId": "websocket",
                "summary": "The WebSocket (JSON text frames)",
                "description": (
                    "Upgrade to a WebSocket. Send {type: hello, nick, token?, password?, "
                    "rooms?, resume?: {room: last seq}}; then join, part, send, dm, topic, "
                    "history, members, rooms, ping. The server pushes message and event frames."
                ),
                "responses": {"101": {"description": "switching to the WebSocket protocol"}},
            }
        },
    }
    if static:
        html = {"text/html": {"schema": _S}}
        paths["/"] = {
            "get": {
                "operationId": "page",
                "summary": "The chat web page",
                "responses": {"200": {"description": "the page", "content": html}},
            }
        }
        paths["/static/{name}"] = {
            "get": {
                "operationId": "asset",
                "summary": "The page's script, style sheet and icon",
                "parameters": [_path_param("name", "app.js, app.css or favicon.svg")],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            "text/javascript": {"schema": _S},
                            "text/css": {"schema": _S},
                            "image/svg+xml": {"schema": _S},
                        },
                    },
                    "404": _json(_ref("Error"), "no such file"),
                },
            }
        }
    from ._version import __version__

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "isthmus-chat",
            "version": __version__,
            "description": (
                "REST API of isthmus-chat. Errors are {error: CODE, detail}. Reading needs no "
                "credentials; acting for an account's session needs its Bearer token."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a session token from POST /accounts, POST /login, "
                    "POST /clients/register with a password, or any other front end",
                }
            },
        },
    }
