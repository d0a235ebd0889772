"""PostgresStore beyond the shared store contract: failures are StoreErrors, a failed write is
neither acknowledged nor leaves a gap, and lost connections are replaced."""

from __future__ import annotations

import sys

import asyncpg
import pytest

from _services import PostgresServer, free_port
from isthmus.chat import Chat, Draft, Limits, StoreError
from isthmus.chat._postgres import PostgresStore


def _draft(text: str) -> Draft:
    return Draft("main", "alice", text, 1.0)


@pytest.mark.asyncio
async def test_an_unreachable_server_or_a_closed_store_is_a_store_error() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/chat")
    with pytest.raises(StoreError, match="postgresql"):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.append([_draft("x")])
    await store.close()


@pytest.mark.asyncio
async def test_a_failed_send_is_refused_and_leaves_no_gap(
    postgres_server: PostgresServer, pg_dsn: str
) -> None:
    async with Chat(store=PostgresStore(pg_dsn), limits=Limits(rate=0)) as chat:
        alice = await chat.connect("alice", front="test")
        chat.join(alice, "main")
        assert (await chat.send(alice, "main", "one")).seq == 1
        # The database starts refusing one text: that send fails, the next ones go on.
        admin = await asyncpg.connect(pg_dsn)
        try:
            await admin.execute(
                "ALTER TABLE chat_messages ADD CONSTRAINT no_boom CHECK (text <> 'boom')"
            )
        finally:
            await admin.close()
        with pytest.raises(StoreError, match="no_boom"):
            await chat.send(alice, "main", "boom")
        assert (await chat.send(alice, "main", "two")).seq == 2
        assert [m.text for m in await chat.history("main")] == ["one", "two"]


async def _drop_connections(server: PostgresServer, dsn: str) -> int:
    """Have the server close every connection to the database of ``dsn`` (a restart, say)."""
    admin = await asyncpg.connect(server.dsn())
    try:
        n: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            dsn.rsplit("/", 1)[1],
        )
    finally:
        await admin.close()
    return n


@pytest.mark.asyncio
async def test_connections_the_server_drops_are_replaced(
    postgres_server: PostgresServer, pg_dsn: str
) -> None:
    store = PostgresStore(pg_dsn, min_size=2, max_size=2)
    await store.open()
    try:
        await store.append([_draft("before")])
        assert await _drop_connections(postgres_server, pg_dsn) == 2
        assert await store.last_seq("main") == 1
        assert await _drop_connections(postgres_server, pg_dsn) >= 1
        assert [m.seq for m in await store.append([_draft("after")])] == [2]
        assert [m.text for m in await store.history("main")] == ["before", "after"]
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_its_tables_are_prefixed_and_open_is_idempotent(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    await store.open()
    try:
        tables = await store.pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        assert [t["tablename"] for t in tables] == [
            "chat_accounts",
            "chat_counters",
            "chat_messages",
            "chat_meta",
            "chat_rooms",
        ]
    finally:
        await store.close()
    await store.close()


def test_without_asyncpg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(ImportError, match=r"isthmus-chat\[postgres\]"):
        PostgresStore("postgresql://localhost/chat")
