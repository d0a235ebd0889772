"""PostgreSQL store (asyncpg): the same tables and semantics as the SQLite store, for production
and for several server processes on several machines.

Sequence numbers come from a counter row per room, bumped with ``INSERT ... ON CONFLICT DO UPDATE
... RETURNING`` in the transaction that inserts the messages: a second process appending to the
same room waits for the row lock and continues from the committed value, so numbers never
collide. Counter rows are locked in room-name order, so two batches touching the same rooms
cannot deadlock.

Needs the ``postgres`` extra: ``pip install "isthmus-chat[postgres]"``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ._errors import NameInUse, StoreError
from ._model import Account, Message, RoomRecord
from ._sqlite import room_from_json, room_to_json
from ._store import Draft, Store

__all__ = ["PostgresStore"]

log = logging.getLogger("isthmus.chat")

# Table names carry a prefix: a production database is often shared with other applications.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_counters (key TEXT PRIMARY KEY, last BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS chat_messages (
    room TEXT NOT NULL, seq BIGINT NOT NULL, sender TEXT NOT NULL, text TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, target TEXT,
    PRIMARY KEY (room, seq)
);
CREATE TABLE IF NOT EXISTS chat_rooms (name TEXT PRIMARY KEY, data JSONB NOT NULL);
CREATE TABLE IF NOT EXISTS chat_accounts (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog: serialize schema setup
# across processes with a transaction-scoped advisory lock (an arbitrary, fixed key).
_SCHEMA_LOCK = 0x15_7C_4A_7

_COUNT = """
INSERT INTO chat_counters (key, last)
SELECT * FROM unnest($1::text[], $2::bigint[])
ON CONFLICT (key) DO UPDATE SET last = chat_counters.last + EXCLUDED.last
RETURNING key, last
"""

_INSERT = """
INSERT INTO chat_messages (room, seq, sender, text, ts, kind, target)
SELECT * FROM unnest(
    $1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[]
)
"""

_COLS = "room, seq, sender, text, ts, kind, target"


def _asyncpg() -> Any:
    try:
        return importlib.import_module("asyncpg")
    except ImportError as exc:
        raise ImportError(
            "PostgresStore needs asyncpg: pip install 'isthmus-chat[postgres]'"
        ) from exc


def _row_message(row: Any) -> Message:
    return Draft(
        row["room"], row["sender"], row["text"], row["ts"], row["kind"], row["target"]
    ).numbered(int(row["seq"]))


class PostgresStore(Store):
    """A store in a PostgreSQL database, through an asyncpg connection pool.

    ``dsn`` is a ``postgresql://user:password@host:port/database`` URL (or anything asyncpg
    accepts); ``min_size``/``max_size`` bound the pool; ``command_timeout`` (seconds) fails a
    statement that hangs instead of stalling the chat's writer. The tables (``chat_*``) are
    created on :meth:`open`. Every database failure is raised as :class:`StoreError`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        command_timeout: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.command_timeout = command_timeout
        pg = self._pg = _asyncpg()
        self._pool: Any = None
        # A pooled connection the server closed (restart, failover, idle timeout) fails at its
        # next use before anything was written: such calls are retried once, after expiring
        # every pooled connection (when one was closed, its siblings usually were too).
        self._stale: tuple[type[BaseException], ...] = (
            pg.InterfaceError,
            pg.InternalClientError,
            pg.PostgresConnectionError,
            pg.AdminShutdownError,
            OSError,
        )

    @property
    def pool(self) -> Any:
        """The asyncpg pool (:class:`StoreError` before :meth:`open` and after :meth:`close`)."""
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Map asyncpg and connection failures onto :class:`StoreError`."""
        pg = self._pg
        try:
            yield
        except (
            pg.PostgresError,
            pg.InterfaceError,
            pg.InternalClientError,
            OSError,
            TimeoutError,
        ) as exc:
            raise StoreError(f"postgresql: {type(exc).__name__}: {exc}") from exc

    async def _call(self, method: str, *args: Any) -> Any:
        """``pool.<method>(*args)`` (a read or an idempotent write), retried once on a fresh
        connection when the pooled one turns out to be closed."""
        with self._errors():
            try:
                return await getattr(self.pool, method)(*args)
            except self._stale as exc:
                await self._renew(exc)
                return await getattr(self.pool, method)(*args)

    async def _renew(self, exc: BaseException) -> None:
        log.warning("postgresql: reconnecting after %s: %s", type(exc).__name__, exc)
        await self.pool.expire_connections()

    async def open(self) -> None:
        if self._pool is not None:
            return
        with self._errors():
            pool = await self._pg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                command_timeout=self.command_timeout,
            )
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                    await conn.execute(_SCHEMA)
            except BaseException:
                await pool.close()
                raise
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with self._errors():
                await pool.close()

    async def append(self, drafts: Sequence[Draft]) -> list[Message]:
        if not drafts:
            return []
        counts: dict[str, int] = {}
        for d in drafts:
            counts[d.room] = counts.get(d.room, 0) + 1
        rooms = sorted(counts)  # one lock order for every writer: no deadlocks
        with self._errors():
            for attempt in range(2):
                async with self.pool.acquire() as conn:
                    tx = conn.transaction()
                    try:
                        await tx.start()
                    except self._stale as exc:
                        if attempt:
                            raise
                        # Only BEGIN was sent, on a closed connection: retrying is safe.
                        await self._renew(exc)
                        continue
                    try:
                        rows = await conn.fetch(_COUNT, rooms, [counts[r] for r in rooms])
                        next_seq = {r["key"]: int(r["last"]) - counts[r["key"]] + 1 for r in rows}
                        out = []
                        for d in drafts:
                            seq = next_seq[d.room]
                            next_seq[d.room] = seq + 1
                            out.append(d.numbered(seq))
                        await conn.execute(
                            _INSERT,
                            [m.room for m in out],
                            [m.seq for m in out],
                            [m.sender for m in out],
                            [m.text for m in out],
                            [m.ts for m in out],
                            [m.kind for m in out],
                            [m.target for m in out],
                        )
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await tx.rollback()
                        raise
                    # If COMMIT fails the outcome is unknown: the caller gets StoreError, so
                    # nothing is acknowledged (and a client that sends again may duplicate).
                    await tx.commit()
                    return out
        raise AssertionError("unreachable")

    async def history(
        self, room: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> list[Message]:
        if after is not None:
            rows = await self._call(
                "fetch",
                f"SELECT {_COLS} FROM chat_messages WHERE room = $1 AND seq > $2 "
                "ORDER BY seq LIMIT $3",
                room,
                after,
                limit,
            )
        else:
            rows = await self._call(
                "fetch",
                f"SELECT {_COLS} FROM chat_messages WHERE room = $1 AND seq < $2 "
                "ORDER BY seq DESC LIMIT $3",
                room,
                2**62 if before is None else before,
                limit,
            )
            rows.reverse()
        return [_row_message(r) for r in rows]

    async def last_seq(self, room: str) -> int:
        last = await self._call("fetchval", "SELECT last FROM chat_counters WHERE key = $1", room)
        return 0 if last is None else int(last)

    async def load_rooms(self) -> list[RoomRecord]:
        rows = await self._call("fetch", "SELECT data FROM chat_rooms ORDER BY name")
        return [room_from_json(r["data"]) for r in rows]

    async def save_room(self, record: RoomRecord) -> None:
        await self._call(
            "execute",
            "INSERT INTO chat_rooms (name, data) VALUES ($1, $2::jsonb) "
            "ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data",
            record.name,
            room_to_json(record),
        )

    async def delete_room(self, name: str) -> None:
        await self._call("execute", "DELETE FROM chat_rooms WHERE name = $1", name)

    async def get_account(self, name: str) -> Account | None:
        row = await self._call(
            "fetchrow",
            "SELECT name, hash, created FROM chat_accounts WHERE key = $1",
            name.casefold(),
        )
        return None if row is None else Account(row["name"], row["hash"], row["created"])

    async def create_account(self, account: Account) -> None:
        with self._errors():
            try:
                await self.pool.execute(
                    "INSERT INTO chat_accounts (key, name, hash, created) VALUES ($1, $2, $3, $4)",
                    account.name.casefold(),
                    account.name,
                    account.password_hash,
                    account.created or time.time(),
                )
            except self._pg.UniqueViolationError as exc:
                raise NameInUse(f"account {account.name!r} exists") from exc

    async def get_meta(self, key: str) -> str | None:
        value = await self._call("fetchval", "SELECT value FROM chat_meta WHERE key = $1", key)
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        await self._call(
            "execute",
            "INSERT INTO chat_meta (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            key,
            value,
        )
