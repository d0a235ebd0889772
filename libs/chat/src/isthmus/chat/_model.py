"""Plain data: client statuses, messages, events, room records, limits and name rules."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Literal

from ._errors import InvalidName, LimitExceeded

__all__ = [
    "Account",
    "Event",
    "Limits",
    "Message",
    "RoomRecord",
    "Status",
    "check_nick",
    "check_room_name",
    "check_text",
    "dm_key",
]


class Status(enum.StrEnum):
    """The seed's client statuses, in lifecycle order."""

    NEW = "NEW"  #: connected, not yet registered
    CONNECTED = "CONNECTED"  #: registered under a nickname
    ACTIVE = "ACTIVE"  #: has sent at least one message
    SUSPENDED = "SUSPENDED"  #: paused: live deliveries withheld, replayed on resume
    ERROR = "ERROR"  #: failed (protocol error, slow consumer); about to close
    CLOSING = "CLOSING"  #: close requested, flushing
    CLOSED = "CLOSED"  #: gone


MessageKind = Literal["msg", "notice", "dm"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. ``room`` is the room name, or the :func:`dm_key` of a DM pair.

    ``seq`` numbers the messages of one room (or DM pair) from 1 without gaps; ``id`` is unique
    across the server (and across nodes sharing a backplane). ``ts`` is Unix time in seconds.
    """

    id: str
    room: str
    seq: int
    sender: str
    text: str
    ts: float
    kind: MessageKind = "msg"
    target: str | None = None  #: the recipient of a DM

    def to_json(self) -> dict[str, object]:
        """The JSON form used by the WebSocket and REST front ends and the backplane."""
        out: dict[str, object] = {
            "id": self.id,
            "room": self.room,
            "seq": self.seq,
            "from": self.sender,
            "text": self.text,
            "ts": self.ts,
            "kind": self.kind,
        }
        if self.target is not None:
            out["to"] = self.target
        return out

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Message:
        """Inverse of :meth:`to_json`."""
        target = d.get("to")
        kind = str(d.get("kind", "msg"))
        if kind not in ("msg", "notice", "dm"):
            kind = "msg"
        return cls(
            id=str(d["id"]),
            room=str(d["room"]),
            seq=int(d["seq"]),  # type: ignore[call-overload]
            sender=str(d["from"]),
            text=str(d["text"]),
            ts=float(d["ts"]),  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            target=None if target is None else str(target),
        )


EventKind = Literal["join", "part", "quit", "topic", "kick", "mode", "room", "status", "nick"]


@dataclass(frozen=True, slots=True)
class Event:
    """A presence or room event: someone joined, left, quit, was kicked; a topic or mode changed.

    ``actor`` did it; ``target`` is who it was done to (kick, mode +o/+b) or the new nickname
    (nick); ``text`` is the reason, topic or mode string.
    """

    kind: EventKind
    room: str
    actor: str
    target: str | None = None
    text: str = ""
    ts: float = 0.0

    def to_json(self) -> dict[str, object]:
        """The JSON form (``type`` is ``"event"`` on the WebSocket)."""
        return {
            "event": self.kind,
            "room": self.room,
            "actor": self.actor,
            "target": self.target,
            "text": self.text,
            "ts": self.ts,
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Event:
        """Inverse of :meth:`to_json`."""
        target = d.get("target")
        return cls(
            kind=str(d["event"]),  # type: ignore[arg-type]
            room=str(d["room"]),
            actor=str(d["actor"]),
            target=None if target is None else str(target),
            text=str(d.get("text", "")),
            ts=float(d.get("ts", 0.0)),  # type: ignore[arg-type]
        )


@dataclass(slots=True)
class RoomRecord:
    """The persistent part of a room."""

    name: str
    owner: str
    topic: str = ""
    moderators: set[str] = field(default_factory=set)
    bans: set[str] = field(default_factory=set)
    moderated: bool = False  #: +m: only the owner and moderators may speak
    topic_locked: bool = True  #: +t: only the owner and moderators may set the topic
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class Account:
    """A registered account: the name is the nickname it reserves."""

    name: str
    password_hash: str
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit the server enforces. The defaults are the seed's (100 clients, 255 characters).

    ``send_queue_bytes`` bounds what may wait for one slow client before it is disconnected;
    ``rate`` and ``burst`` are the per-connection token bucket (messages per second, bucket size).
    """

    max_clients: int = 100
    max_message_length: int = 255
    max_nick_length: int = 32
    max_room_name_length: int = 64
    max_topic_length: int = 390
    max_rooms: int = 10_000
    max_rooms_per_client: int = 100
    max_line_bytes: int = 4096
    history_page_max: int = 500
    send_queue_bytes: int = 4 * 1024 * 1024
    rate: float = 20.0
    burst: int = 40
    ws_message_bytes: int = 16 * 1024


_NICK = re.compile(r"[A-Za-z_\[\]\\`^{}|][A-Za-z0-9_\-\[\]\\`^{}|]*\Z")
_ROOM = re.compile(r"#?[A-Za-z0-9_\-.]+\Z")


def check_nick(nick: str, limits: Limits) -> str:
    """Return ``nick`` if valid: IRC nickname characters, no spaces, ``:``, ``@`` or ``#``."""
    if not nick or len(nick) > limits.max_nick_length or not _NICK.match(nick):
        raise InvalidName(f"invalid nickname {nick[:40]!r}")
    return nick


def check_room_name(name: str, limits: Limits) -> str:
    """Return the canonical room name: lower case, without IRC's leading ``#``; ``[a-z0-9_-.]``."""
    if not name or len(name) > limits.max_room_name_length + 1 or not _ROOM.match(name):
        raise InvalidName(f"invalid room name {name[:80]!r}")
    name = name.removeprefix("#").lower()
    if not name:
        raise InvalidName("empty room name")
    return name


def check_text(text: str, limits: Limits) -> str:
    """Return ``text`` if it is a non-empty single line within ``max_message_length``."""
    if not text:
        raise LimitExceeded("empty message")
    if len(text) > limits.max_message_length:
        raise LimitExceeded(
            f"message of {len(text)} characters exceeds the limit of {limits.max_message_length}"
        )
    if "\n" in text or "\r" in text or "\x00" in text:
        raise InvalidName("a message must be one line without NUL")
    return text


def dm_key(a: str, b: str) -> str:
    """The conversation key of the direct messages between ``a`` and ``b`` (order-free)."""
    x, y = sorted((a.casefold(), b.casefold()))
    return f"@{x}:{y}"
