"""The storage interface, and the in-memory store used by tests and ``--db :memory:``.

A store is the authority on message sequence numbers: :meth:`Store.append` assigns each draft
its ``seq`` (and so its ``id``) inside the same transaction that makes it durable, so several
server processes sharing one database never hand out a number twice.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import NameInUse
from ._model import Account, Message, MessageKind, RoomRecord

__all__ = ["Draft", "MemoryStore", "Store", "message_id"]


@dataclass(frozen=True, slots=True)
class Draft:
    """A message before the store numbered it."""

    room: str
    sender: str
    text: str
    ts: float
    kind: MessageKind = "msg"
    target: str | None = None

    def numbered(self, seq: int) -> Message:
        """The :class:`Message` this draft becomes as number ``seq`` of its room."""
        return Message(
            id=message_id(self.room, seq),
            room=self.room,
            seq=seq,
            sender=self.sender,
            text=self.text,
            ts=self.ts,
            kind=self.kind,
            target=self.target,
        )


def message_id(room: str, seq: int) -> str:
    """A message id unique across the server and every node sharing its store."""
    return f"{room}/{seq}"


class Store(abc.ABC):
    """Rooms, accounts, history and a small key/value table, all async.

    Implementations: :class:`MemoryStore`, :class:`~isthmus.chat.SQLiteStore` (the embedded
    default, WAL) and :class:`~isthmus.chat.PostgresStore` (asyncpg).
    """

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and create the schema if needed."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    @abc.abstractmethod
    async def append(self, drafts: Sequence[Draft]) -> list[Message]:
        """Number and persist ``drafts`` in one transaction; durable when this returns."""

    @abc.abstractmethod
    async def history(
        self, room: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> list[Message]:
        """Messages of ``room`` in ascending ``seq``: the newest ``limit`` below ``before``, or
        the oldest ``limit`` above ``after`` (both bounds exclusive)."""

    @abc.abstractmethod
    async def last_seq(self, room: str) -> int:
        """The highest ``seq`` of ``room`` (0 when it has none)."""

    @abc.abstractmethod
    async def load_rooms(self) -> list[RoomRecord]:
        """Every persisted room."""

    @abc.abstractmethod
    async def save_room(self, record: RoomRecord) -> None:
        """Insert or update a room."""

    @abc.abstractmethod
    async def delete_room(self, name: str) -> None:
        """Forget a room (its history stays)."""

    @abc.abstractmethod
    async def get_account(self, name: str) -> Account | None:
        """The account of that (case-insensitive) name, if any."""

    @abc.abstractmethod
    async def create_account(self, account: Account) -> None:
        """Add an account; :class:`NameInUse` if the name is taken."""

    @abc.abstractmethod
    async def get_meta(self, key: str) -> str | None:
        """A server setting persisted in the store (the token secret, for one)."""

    @abc.abstractmethod
    async def set_meta(self, key: str, value: str) -> None:
        """Persist a server setting."""


class MemoryStore(Store):
    """Everything in dictionaries: fast, and gone when the process exits."""

    def __init__(self) -> None:
        self._msgs: dict[str, list[Message]] = {}
        self._rooms: dict[str, RoomRecord] = {}
        self._accounts: dict[str, Account] = {}
        self._meta: dict[str, str] = {}

    async def append(self, drafts: Sequence[Draft]) -> list[Message]:
        out = []
        for d in drafts:
            log = self._msgs.setdefault(d.room, [])
            msg = d.numbered(len(log) + 1)
            log.append(msg)
            out.append(msg)
        return out

    async def history(
        self, room: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> list[Message]:
        log = self._msgs.get(room, [])
        if after is not None:
            return log[after : after + limit]  # seq n sits at index n - 1
        end = len(log) if before is None else max(0, min(len(log), before - 1))
        return log[max(0, end - limit) : end]

    async def last_seq(self, room: str) -> int:
        return len(self._msgs.get(room, ()))

    async def load_rooms(self) -> list[RoomRecord]:
        return list(self._rooms.values())

    async def save_room(self, record: RoomRecord) -> None:
        self._rooms[record.name] = record

    async def delete_room(self, name: str) -> None:
        self._rooms.pop(name, None)

    async def get_account(self, name: str) -> Account | None:
        return self._accounts.get(name.casefold())

    async def create_account(self, account: Account) -> None:
        key = account.name.casefold()
        if key in self._accounts:
            raise NameInUse(f"account {account.name!r} exists")
        self._accounts[key] = Account(
            account.name, account.password_hash, account.created or time.time()
        )

    async def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value
