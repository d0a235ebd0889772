"""The store contract, for every store; nothing acknowledged is lost across a restart, even a
SIGKILL; processes sharing one database never hand out a sequence number twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from _client import LineClient
from _node import Node
from _services import PostgresServer
from isthmus.chat import (
    Account,
    Chat,
    Draft,
    Limits,
    MemoryStore,
    Message,
    NameInUse,
    RoomRecord,
    SQLiteStore,
    Store,
)

StoreFactory = Callable[[], Store]


async def _factory(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A function making store objects over one database of ``kind``."""
    if kind == "sqlite":
        path = tmp_path / "chat.db"
        return lambda: SQLiteStore(path)
    if kind == "postgres":
        from isthmus.chat._postgres import PostgresStore

        server: PostgresServer = request.getfixturevalue("postgres_server")
        dsn = await server.new_database()
        return lambda: PostgresStore(dsn)
    memory = MemoryStore()
    return lambda: memory


@pytest_asyncio.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = (await _factory(request.param, request, tmp_path))()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes stores over one persistent database (SQLite file, PostgreSQL database)."""
    return await _factory(request.param, request, tmp_path)


def _db_arg(factory: StoreFactory) -> str:
    """The ``--db`` of a node sharing the factory's database."""
    s = factory()
    return str(getattr(s, "dsn", None) or getattr(s, "path", ""))


def _draft(room: str, text: str, sender: str = "alice") -> Draft:
    return Draft(room, sender, text, 1_700_000_000.5)


def seqs(msgs: list[Message]) -> list[int]:
    return [m.seq for m in msgs]


# ------------------------------------------------------------------------------ the contract


@pytest.mark.asyncio
async def test_append_numbers_each_room_from_one_across_batches(store: Store) -> None:
    dm = Draft("@alice:bob", "alice", "psst", 1.25, "dm", "bob")
    got = await store.append([_draft("main", "a"), _draft("ops", "b"), _draft("main", "c"), dm])
    assert [(m.room, m.seq, m.text) for m in got] == [
        ("main", 1, "a"),
        ("ops", 1, "b"),
        ("main", 2, "c"),
        ("@alice:bob", 1, "psst"),
    ]
    assert got[0].id == "main/1" and got[0].sender == "alice" and got[0].ts == 1_700_000_000.5
    assert (got[3].kind, got[3].target) == ("dm", "bob")
    more = await store.append([_draft("main", "d"), _draft("main", "e")])
    assert [m.seq for m in more] == [3, 4]
    assert await store.append([]) == []
    assert await store.history("@alice:bob") == [got[3]]


@pytest.mark.asyncio
async def test_history_pages_backwards_and_forwards(store: Store) -> None:
    sent = await store.append([_draft("main", f"m{i}") for i in range(1, 11)])
    await store.append([_draft("other", "elsewhere")])
    assert await store.history("main", limit=100) == sent
    assert seqs(await store.history("main", limit=3)) == [8, 9, 10]
    assert seqs(await store.history("main", before=8, limit=3)) == [5, 6, 7]
    assert seqs(await store.history("main", before=2, limit=3)) == [1]
    assert seqs(await store.history("main", before=1)) == []
    assert seqs(await store.history("main", after=0, limit=4)) == [1, 2, 3, 4]
    assert seqs(await store.history("main", after=8)) == [9, 10]
    assert seqs(await store.history("main", after=10)) == []
    assert [m.text for m in await store.history("other")] == ["elsewhere"]
    assert await store.history("nowhere") == []


@pytest.mark.asyncio
async def test_last_seq_follows_appends(store: Store) -> None:
    assert await store.last_seq("main") == 0
    await store.append([_draft("main", "x"), _draft("main", "y"), _draft("ops", "z")])
    assert await store.last_seq("main") == 2
    assert await store.last_seq("ops") == 1
    assert await store.last_seq("Main") == 0  # room names are canonical already: exact match


@pytest.mark.asyncio
async def test_rooms_save_update_load_delete(store: Store) -> None:
    rec = RoomRecord(
        name="ops",
        owner="alice",
        topic="incidents",
        moderators={"bob"},
        bans={"mallory"},
        moderated=True,
        topic_locked=False,
        created=1_700_000_000.25,
    )
    await store.save_room(rec)
    await store.save_room(RoomRecord(name="main", owner=""))
    loaded = {r.name: r for r in await store.load_rooms()}
    assert loaded["ops"] == rec
    assert loaded["main"].topic_locked is True
    rec.topic = "all clear"
    rec.moderators.add("carol")
    await store.save_room(rec)
    loaded = {r.name: r for r in await store.load_rooms()}
    assert loaded["ops"].topic == "all clear"
    assert loaded["ops"].moderators == {"bob", "carol"}
    await store.delete_room("ops")
    await store.delete_room("never-existed")
    assert [r.name for r in await store.load_rooms()] == ["main"]


@pytest.mark.asyncio
async def test_accounts_are_case_insensitive_and_unique(store: Store) -> None:
    assert await store.get_account("alice") is None
    await store.create_account(Account("Alice", "scrypt$hash", 1_700_000_000.0))
    for spelling in ("alice", "ALICE", "Alice"):
        acct = await store.get_account(spelling)
        assert acct == Account("Alice", "scrypt$hash", 1_700_000_000.0)
    with pytest.raises(NameInUse):
        await store.create_account(Account("aLiCe", "other", 1.0))
    assert (await store.get_account("alice")) == Account("Alice", "scrypt$hash", 1_700_000_000.0)


@pytest.mark.asyncio
async def test_meta_keeps_the_last_value(store: Store) -> None:
    assert await store.get_meta("token_secret") is None
    await store.set_meta("token_secret", "00ff")
    await store.set_meta("other", "x")
    await store.set_meta("token_secret", "abcd")
    assert await store.get_meta("token_secret") == "abcd"
    assert await store.get_meta("other") == "x"


# --------------------------------------------------------------------------- across restarts


@pytest.mark.asyncio
async def test_a_restarted_chat_has_everything_it_acknowledged(durable: StoreFactory) -> None:
    limits = Limits(rate=0)
    async with Chat(store=durable(), limits=limits) as chat:
        alice = await chat.connect("alice", front="test")
        bob = await chat.connect("bob", front="test")
        chat.join(bob, "main")
        room = chat.create_room(alice, "ops", "incidents")
        await chat.set_mode(alice, "ops", "+o", "bob")
        await chat.set_topic(alice, "ops", "all hands")
        chat.join(alice, "main")
        sent = [await chat.send(alice, "main", f"hello {i}") for i in range(5)]
        sent.append(await chat.send(alice, "ops", "in ops"))
        dm = await chat.send_dm(alice, "bob", "psst")
        token = await chat.register_account("Carol", "secret-pw")
        assert room.last_seq == 1

    async with Chat(store=durable(), limits=limits) as chat:
        assert sorted(chat.rooms) == ["main", "ops"]
        ops = chat.room("ops")
        assert (ops.topic, ops.record.owner, ops.record.moderators) == (
            "all hands",
            "alice",
            {"bob"},
        )
        assert (chat.room("main").last_seq, ops.last_seq) == (5, 1)
        assert await chat.history("main") == sent[:5]
        assert await chat.history("ops") == sent[5:]
        assert await chat.history(dm.room) == [dm]
        assert await chat.authenticate("carol", "secret-pw") == "Carol"
        assert chat.verify_token(token) == "Carol"  # the signing secret was kept
        dave = await chat.connect("dave", front="test")
        chat.join(dave, "main")
        assert (await chat.send(dave, "main", "after the restart")).seq == 6


@pytest.mark.asyncio
async def test_two_stores_on_one_database_never_share_a_number(durable: StoreFactory) -> None:
    one, two = durable(), durable()
    await one.open()
    await two.open()
    try:

        async def writer(s: Store, n: int) -> list[tuple[str, int]]:
            out = []
            for i in range(n):
                batch = [_draft("main", f"{i}a"), _draft("ops", f"{i}b"), _draft("main", f"{i}c")]
                out += [(m.room, m.seq) for m in await s.append(batch)]
            return out

        results = await asyncio.gather(*(writer(s, 15) for s in (one, two, one, two)))
        got = [x for r in results for x in r]
        assert len(got) == len(set(got)) == 4 * 15 * 3
        assert sorted(seq for room, seq in got if room == "main") == list(range(1, 121))
        assert sorted(seq for room, seq in got if room == "ops") == list(range(1, 61))
        assert [m.seq for m in await two.history("main", limit=500)] == list(range(1, 121))
        assert await one.last_seq("ops") == 60
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_sigkill_right_after_acknowledgements_loses_nothing(durable: StoreFactory) -> None:
    db = _db_arg(durable)
    node = await Node.start(db)
    c = await LineClient.open(node.port)
    try:
        assert await c.ask("HELLO main:alice") == "OK HELLO alice main"
        assert await c.ask("NEW ops:alice incidents") == "OK NEW ops"
        assert await c.ask("TOPIC ops all hands") == "OK TOPIC ops"
        assert (await c.ask("REGISTER bob pw-of-bob")).startswith("OK REGISTER bob ")
        # Pipelined: every OK SEND means that message is durable.
        c.send(*(f"SEND main message {i}" for i in range(1, 31)))
        acks = [await c.until("OK SEND") for _ in range(30)]
        assert [int(a.split()[3]) for a in acks] == list(range(1, 31))
        await node.kill()
    finally:
        await c.close()
        await node.kill()

    node = await Node.start(db)
    c = await LineClient.open(node.port)
    try:
        assert await c.ask("HELLO main:carol") == "OK HELLO carol main"
        c.send("HISTORY main - 100")
        hist = [await c.until("HIST ") for _ in range(30)]
        assert await c.until("OK HISTORY") == "OK HISTORY main 30"
        assert [h.split(" ", 5)[3:6:2] for h in hist] == [
            [str(i), f"message {i}"] for i in range(1, 31)
        ]
        assert (await c.ask("SEND main after the kill")).startswith("OK SEND main 31 ")
        assert await c.ask("TOPIC ops") == "OK TOPIC ops :all hands"
        assert (await c.ask("AUTH bob pw-of-bob")).startswith("OK AUTH bob ")
    finally:
        await c.close()
        assert await node.stop() == 0


@pytest.mark.asyncio
async def test_two_processes_sharing_a_database_append_without_collisions(
    durable: StoreFactory,
) -> None:
    db = _db_arg(durable)
    # Both start at once on an empty database: they race to create the schema, too.
    started = await asyncio.gather(Node.start(db), Node.start(db), return_exceptions=True)
    nodes = [n for n in started if isinstance(n, Node)]
    clients: list[LineClient] = []
    try:
        for n in started:
            if isinstance(n, BaseException):
                raise n
        clients = [await LineClient.open(n.port) for n in nodes]
        for c, nick in zip(clients, ("alice", "bob"), strict=True):
            assert await c.ask(f"HELLO main:{nick}") == f"OK HELLO {nick} main"

        async def blast(c: LineClient, who: str) -> list[int]:
            c.send(*(f"SEND main {who} {i}" for i in range(100)))
            return [int((await c.until("OK SEND")).split()[3]) for _ in range(100)]

        mine = await asyncio.gather(*(blast(c, w) for c, w in zip(clients, "ab", strict=True)))
        assert sorted(mine[0] + mine[1]) == list(range(1, 201))
        assert mine[0] == sorted(mine[0]) and mine[1] == sorted(mine[1])
        clients[0].send("HISTORY main - 500")
        hist = [await clients[0].until("HIST ") for _ in range(200)]
        assert [int(h.split()[3]) for h in hist] == list(range(1, 201))
    finally:
        for c in clients:
            await c.close()
        codes = [await n.stop() for n in nodes]
    assert codes == [0, 0]
