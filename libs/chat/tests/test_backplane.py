"""Scale-out over the Redis backplane: real server processes sharing a store and a real
redis-server, with line-protocol clients on each."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from _client import LineClient
from _node import Node
from _services import PostgresServer, RedisServer, free_port, start_redis
from isthmus.chat import Chat, Event, LineFormatter, MemoryStore, Message


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0
) -> None:
    """Poll ``check`` (a query answered by a server) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


class Cluster:
    """Chat server processes sharing one store and one Redis channel, and their clients."""

    def __init__(self, db: str, redis: str) -> None:
        self.db = db
        self.redis = redis
        self.channel = f"isthmus-test-{uuid.uuid4().hex[:8]}"
        self.nodes: list[Node] = []
        self.clients: list[LineClient] = []

    async def node(self) -> Node:
        n = await Node.start(self.db, redis=self.redis, channel=self.channel, heartbeat=0.5)
        self.nodes.append(n)
        return n

    async def client(self, node: Node, nick: str | None = None) -> LineClient:
        """A client of ``node``: registered as ``nick`` in ``main``, or an observer (None)."""
        c = await LineClient.open(node.port)
        self.clients.append(c)
        if nick is not None:
            assert await c.ask(f"HELLO main:{nick}") == f"OK HELLO {nick} main"
        return c

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        for n in self.nodes:
            await n.stop()


async def members(c: LineClient, room: str = "main") -> list[str]:
    line = await c.ask(f"LIST members {room}", "LIST members")
    return line.split()[3:]


async def rooms(c: LineClient) -> list[str]:
    return (await c.ask("LIST rooms", "LIST rooms")).split()[2:]


@pytest_asyncio.fixture
async def cluster(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """Sharing a SQLite file (or, with ``indirect`` param "postgres", a PostgreSQL database)."""
    if getattr(request, "param", "sqlite") == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        db = await pg.new_database()
    else:
        db = str(tmp_path / "chat.db")
    c = Cluster(db, redis_server.url)
    try:
        yield c
    finally:
        await c.close()


# ---------------------------------------------------------------------------- across processes


@pytest.mark.asyncio
@pytest.mark.parametrize("cluster", ["sqlite", "postgres"], indirect=True)
async def test_messages_and_dms_cross_nodes_with_shared_numbering(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    alice, bob = await cluster.client(a, "alice"), await cluster.client(b, "bob")
    watch_a = await cluster.client(a)

    assert (await alice.ask("SEND main hello from A")).startswith("OK SEND main 1 ")
    assert await bob.until("MSG ") == "MSG main alice 1 hello from A"
    assert (await bob.ask("SEND main hello from B")).startswith("OK SEND main 2 ")
    assert await alice.until("MSG main bob") == "MSG main bob 2 hello from B"

    # Presence: node A lists bob, who is connected to node B.
    await eventually(lambda: _has(members(watch_a), "bob"), "node A lists bob")
    assert await members(watch_a) == ["alice", "bob"]
    assert (await alice.ask("DM bob psst")).startswith("OK DM bob 1 ")
    assert await bob.until("DM ") == "DM alice 1 psst"
    assert (await bob.ask("DM alice back")).startswith("OK DM alice 2 ")
    assert await alice.until("DM ") == "DM bob 2 back"
    assert (await alice.ask("DM nobody hi")).startswith("ERR DM NO_SUCH_CLIENT")
    # A nickname in use on another node is in use.
    assert (await watch_a.ask("HELLO main:bob")).startswith("ERR HELLO NAME_IN_USE")

    bob.send("HISTORY main")
    assert [(await bob.until("HIST")).split()[2:4] for _ in range(2)] == [
        ["alice", "1"],
        ["bob", "2"],
    ]


async def _has(names: Awaitable[list[str]], nick: str, present: bool = True) -> bool:
    return (nick in await names) is present


@pytest.mark.asyncio
async def test_a_node_started_later_learns_who_is_there_and_parts_propagate(
    cluster: Cluster,
) -> None:
    a = await cluster.node()
    alice = await cluster.client(a, "alice")
    b = await cluster.node()  # after alice joined: it learns of her from node A's sync
    carol = await cluster.client(b, "carol")
    watch_b = await cluster.client(b)
    await eventually(lambda: _has(members(watch_b), "alice"), "node B lists alice")
    assert await members(watch_b) == ["alice", "carol"]
    assert await alice.until("EVENT join main carol") == "EVENT join main carol"

    assert await carol.ask("PART main bye") == "OK PART main"
    assert await alice.until("EVENT part") == "EVENT part main carol :bye"
    assert await members(alice) == ["alice"]

    assert await carol.ask("JOIN main") == "OK JOIN main 1"
    assert await alice.until("EVENT join main carol") == "EVENT join main carol"
    # A clean stop: its clients quit everywhere at once.
    assert await cluster.nodes[1].stop() == 0
    assert (await alice.until("EVENT quit")).startswith("EVENT quit main carol :")
    assert await members(alice) == ["alice"]


@pytest.mark.asyncio
async def test_a_room_created_on_one_node_is_joinable_on_the_other(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    alice = await cluster.client(a, "alice")
    bob = await cluster.client(b, "bob")
    assert await alice.ask("NEW ops:alice incidents") == "OK NEW ops"
    await eventually(lambda: _has(rooms(bob), "ops"), "node B knows room ops")
    assert await bob.ask("TOPIC ops") == "OK TOPIC ops :incidents"
    assert await bob.ask("JOIN ops") == "OK JOIN ops 1"
    assert await alice.until("EVENT join ops") == "EVENT join ops bob"
    assert (await alice.ask("SEND ops status?")).startswith("OK SEND ops 1 ")
    assert await bob.until("MSG ops") == "MSG ops alice 1 status?"
    # The owner's moderation reaches across: a kick on A removes bob on B.
    assert await alice.ask("KICK ops bob enough") == "OK KICK ops bob"
    assert await bob.until("EVENT kick") == "EVENT kick ops alice bob :enough"
    assert (await bob.ask("SEND ops still here?")).startswith("ERR SEND NOT_IN_ROOM")


@pytest.mark.asyncio
async def test_killing_a_node_leaves_the_other_serving(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    alice, _bob = await cluster.client(a, "alice"), await cluster.client(b, "bob")
    assert await alice.until("EVENT join main bob") == "EVENT join main bob"

    await b.kill()
    # Node B's heartbeats stop: node A declares it gone and its clients quit.
    assert await alice.until("EVENT quit", timeout=15) == "EVENT quit main bob :node gone"
    assert await members(alice) == ["alice"]
    assert (await alice.ask("SEND main anyone?")).startswith("OK SEND main 1 ")
    assert (await alice.ask("DM bob hello?")).startswith("ERR DM NO_SUCH_CLIENT")

    c = await cluster.node()  # a replacement node joins the running one
    dave = await cluster.client(c, "dave")
    assert await alice.until("EVENT join main dave") == "EVENT join main dave"
    assert (await alice.ask("SEND main welcome")).startswith("OK SEND main 2 ")
    assert await dave.until("MSG ") == "MSG main alice 2 welcome"


# ---------------------------------------------------------------------------- in one process


class Inbox:
    """A sink that collects what a chat delivers, as line-protocol lines."""

    fmt = LineFormatter()

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()

    def push(self, data: bytes) -> None:
        for line in data.decode().splitlines():
            self.lines.put_nowait(line)

    def close(self, reason: str) -> None:
        pass

    async def until(self, prefix: str, timeout: float = 10.0) -> str:
        while True:
            line = await asyncio.wait_for(self.lines.get(), timeout)
            if line.startswith(prefix):
                return line


def _backplane(url: str, channel: str, node: str) -> Any:
    from isthmus.chat._redis import RedisBackplane

    return RedisBackplane(url, channel=channel, node_id=node, heartbeat=0.5)


@pytest.mark.asyncio
async def test_the_backplane_reconnects_after_redis_restarts() -> None:
    redis = start_redis()
    channel = "restart"
    one = Chat(store=MemoryStore(), backplane=_backplane(redis.url, channel, "one"))
    two = Chat(store=MemoryStore(), backplane=_backplane(redis.url, channel, "two"))
    try:
        await one.start()
        await two.start()
        inbox = Inbox()
        alice = await one.connect("alice", front="test")
        one.join(alice, "main")
        bob = await two.connect("bob", front="test", sink=inbox)
        two.join(bob, "main")
        await one.send(alice, "main", "before")
        assert await inbox.until("MSG") == "MSG main alice 1 before"

        port = redis.port
        redis.stop(9)  # SIGKILL: connections drop, nothing is said
        redis = start_redis(port)
        # Published while the backplane reconnects: may be lost (it is in the store).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            await one.send(alice, "main", "after the restart")
            try:
                got = await inbox.until("MSG", timeout=0.3)
                break
            except TimeoutError:
                assert loop.time() < deadline, "no message crossed after Redis restarted"
        assert got.startswith("MSG main alice ") and got.endswith(" after the restart")
        final = await one.send(alice, "main", "final")
        assert (
            await inbox.until(f"MSG main alice {final.seq} ") == f"MSG main alice {final.seq} final"
        )
        # Presence was resynchronised: each side knows the other's client again.
        assert "bob" in one.remote_clients and "alice" in two.remote_clients
        assert one.room("main").nicks() == ["alice", "bob"]
    finally:
        await one.close()
        await two.close()
        redis.stop()


@pytest.mark.asyncio
async def test_only_other_nodes_payloads_are_delivered_and_garbage_is_skipped(
    redis_server: RedisServer,
) -> None:
    import redis.asyncio as aioredis

    got: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    a = _backplane(redis_server.url, "own", "a")
    b = _backplane(redis_server.url, "own", "b")
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await a.start(got["a"].append)
        await b.start(got["b"].append)
        msg = Message("main/1", "main", 1, "alice", "hi", 1.0)
        a.publish({"t": "msg", "node": "a", "msg": msg.to_json()})
        await raw.publish("own", b"not json")
        await raw.publish("own", json.dumps([1, 2]))
        ev = Event("join", "main", "bob", None, "", 2.0)
        b.publish({"t": "ev", "node": "b", "ev": ev.to_json()})

        async def settled() -> bool:
            return any(p.get("t") == "ev" for p in got["a"]) and any(
                p.get("t") == "msg" for p in got["b"]
            )

        await eventually(settled, "both payloads arrived")
        kinds_a = [p["t"] for p in got["a"]]
        kinds_b = [p["t"] for p in got["b"]]
        assert "msg" not in kinds_a and "ev" not in kinds_b  # never one's own
        assert Message.from_json(next(p for p in got["b"] if p["t"] == "msg")["msg"]) == msg
        assert kinds_a[0] == "up" and kinds_b[0] == "up"
        assert a.peers == ["b"] and b.peers == ["a"]
        await b.close()
        await eventually(_async(lambda: {"t": "gone", "node": "b"} in got["a"]), "a sees b go")
        assert a.peers == []
    finally:
        await a.close()
        await b.close()
        await raw.aclose()


def _async(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return fn()

    return check


@pytest.mark.asyncio
async def test_start_fails_clearly_when_redis_is_unreachable() -> None:
    bp = _backplane(f"redis://127.0.0.1:{free_port()}/0", "x", "lonely")
    with pytest.raises(ConnectionError, match=r"redis backplane at redis://127\.0\.0\.1"):
        await bp.start(lambda p: None)
    await bp.close()
    chat = Chat(backplane=_backplane(f"redis://127.0.0.1:{free_port()}/0", "x", "y"))
    with pytest.raises(ConnectionError):
        await chat.start()
    await chat.close()


def test_without_redis_py_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.chat._redis import RedisBackplane

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ImportError, match=r"isthmus-chat\[redis\]"):
        RedisBackplane()
