"""SQLite store: the embedded default. WAL mode, so readers never block the writer.

Calls run on the event loop's thread: each is a few tens of microseconds (the chat state batches
every message of one loop tick into one :meth:`SQLiteStore.append` transaction), far less than a
thread hop would cost. ``synchronous=NORMAL`` in WAL mode keeps every committed transaction
across a crash or kill of the process; only an OS crash or power loss may lose the last ones
(``durable=True`` selects ``synchronous=FULL`` for that).

WAL checkpoints (which copy the log into the database and fsync it) would otherwise run inside
a commit on the loop's thread and stall every connection for up to a hundred milliseconds; the
automatic checkpoint is off and a passive checkpoint runs in a worker thread, on its own
connection, after every ``checkpoint_every`` messages.

Several server processes may share one database file: sequence numbers come from a counter row
updated inside ``BEGIN IMMEDIATE``, so they never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from ._errors import NameInUse, StoreError
from ._model import Account, Message, RoomRecord
from ._store import Draft, Store

__all__ = ["SQLiteStore"]

log = logging.getLogger("isthmus.chat")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL, text TEXT NOT NULL,
    ts REAL NOT NULL, kind TEXT NOT NULL, target TEXT,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def room_to_json(r: RoomRecord) -> str:
    """A room record as JSON (sets become sorted lists)."""
    return json.dumps(
        {
            "name": r.name,
            "owner": r.owner,
            "topic": r.topic,
            "moderators": sorted(r.moderators),
            "bans": sorted(r.bans),
            "moderated": r.moderated,
            "topic_locked": r.topic_locked,
            "created": r.created,
        }
    )


def room_from_json(text: str) -> RoomRecord:
    """Inverse of :func:`room_to_json`."""
    d = json.loads(text)
    return RoomRecord(
        name=d["name"],
        owner=d["owner"],
        topic=d.get("topic", ""),
        moderators=set(d.get("moderators", ())),
        bans=set(d.get("bans", ())),
        moderated=bool(d.get("moderated", False)),
        topic_locked=bool(d.get("topic_locked", True)),
        created=float(d.get("created", 0.0)),
    )


def _row_message(row: tuple[str, int, str, str, float, str, str | None]) -> Message:
    room, seq, sender, text, ts, kind, target = row
    return Draft(room, sender, text, ts, kind, target).numbered(seq)  # type: ignore[arg-type]


class SQLiteStore(Store):
    """A store in one SQLite file (``":memory:"`` for a throwaway one)."""

    def __init__(
        self, path: str | Path, *, durable: bool = False, checkpoint_every: int = 2000
    ) -> None:
        self.path = str(path)
        self.durable = durable
        self.checkpoint_every = checkpoint_every
        self._db: sqlite3.Connection | None = None
        self._since_checkpoint = 0
        self._checkpoint: asyncio.Future[None] | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def open(self) -> None:
        if self._db is not None:
            return
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        # Switching to WAL takes an exclusive lock and SQLite does not wait for it: when two
        # processes open a new database at once, one sees "database is locked". Retry a while.
        for attempt in range(200):
            try:
                db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt == 199:
                    db.close()
                    raise
                await asyncio.sleep(0.05)
        db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=10000")
        if self.path != ":memory:":
            db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run off the loop
        db.executescript(_SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._checkpoint is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._checkpoint
            self._checkpoint = None
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()

    def _start_checkpoint(self) -> None:
        self._since_checkpoint = 0
        fut = asyncio.get_running_loop().run_in_executor(None, self._run_checkpoint)
        self._checkpoint = fut
        fut.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, fut: asyncio.Future[None]) -> None:
        if self._checkpoint is fut:
            self._checkpoint = None
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("sqlite checkpoint failed: %s", fut.exception())

    def _run_checkpoint(self) -> None:
        # A connection of its own: the loop's connection is not used from two threads at once.
        con = sqlite3.connect(self.path, timeout=10)
        try:
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            con.close()

    async def append(self, drafts: Sequence[Draft]) -> list[Message]:
        db = self.db
        counts: dict[str, int] = {}
        for d in drafts:
            counts[d.room] = counts.get(d.room, 0) + 1
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                next_seq: dict[str, int] = {}
                for room, n in counts.items():
                    row = db.execute(
                        "INSERT INTO counters (key, last) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET last = last + excluded.last "
                        "RETURNING last",
                        (room, n),
                    ).fetchone()
                    next_seq[room] = int(row[0]) - n + 1
                out = []
                for d in drafts:
                    seq = next_seq[d.room]
                    next_seq[d.room] = seq + 1
                    out.append(d.numbered(seq))
                db.executemany(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(m.room, m.seq, m.sender, m.text, m.ts, m.kind, m.target) for m in out],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        self._since_checkpoint += len(out)
        if (
            self._since_checkpoint >= self.checkpoint_every
            and self._checkpoint is None
            and self.path != ":memory:"
        ):
            self._start_checkpoint()
        return out

    async def history(
        self, room: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> list[Message]:
        cols = "room, seq, sender, text, ts, kind, target"
        if after is not None:
            rows = self.db.execute(
                f"SELECT {cols} FROM messages WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
                (room, after, limit),
            ).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {cols} FROM messages WHERE room = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (room, 2**62 if before is None else before, limit),
            ).fetchall()
            rows.reverse()
        return [_row_message(r) for r in rows]

    async def last_seq(self, room: str) -> int:
        row = self.db.execute("SELECT last FROM counters WHERE key = ?", (room,)).fetchone()
        return 0 if row is None else int(row[0])

    async def load_rooms(self) -> list[RoomRecord]:
        return [room_from_json(r[0]) for r in self.db.execute("SELECT data FROM rooms")]

    async def save_room(self, record: RoomRecord) -> None:
        self.db.execute(
            "INSERT INTO rooms (name, data) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET data = excluded.data",
            (record.name, room_to_json(record)),
        )

    async def delete_room(self, name: str) -> None:
        self.db.execute("DELETE FROM rooms WHERE name = ?", (name,))

    async def get_account(self, name: str) -> Account | None:
        row = self.db.execute(
            "SELECT name, hash, created FROM accounts WHERE key = ?", (name.casefold(),)
        ).fetchone()
        return None if row is None else Account(row[0], row[1], row[2])

    async def create_account(self, account: Account) -> None:
        try:
            self.db.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?)",
                (
                    account.name.casefold(),
                    account.name,
                    account.password_hash,
                    account.created or time.time(),
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise NameInUse(f"account {account.name!r} exists") from exc

    async def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
