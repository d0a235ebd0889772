"""The WebSocket front end over uvicorn, with the ``websockets`` library as the client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from _client import LineClient
from _uvicorn import UvicornServer
from isthmus.chat import Chat, Limits, LineProtocolServer, MemoryStore, Message, SQLiteStore
from isthmus.chat._web import create_app

_refs = itertools.count(1)


class Ws:
    """A JSON WebSocket client: ``ask`` sends a request and returns the reply with its ref."""

    def __init__(self, conn: websockets.ClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []  # everything received, in order

    @classmethod
    async def open(cls, url: str) -> Ws:
        # Buffer everything the server sends: a test that is busy elsewhere is not a slow reader.
        return cls(await websockets.connect(url, max_size=None, max_queue=None))

    async def send(self, **msg: Any) -> None:
        await self.conn.send(json.dumps(msg))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.conn.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def until(
        self, match: str | Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The next frame of type ``match`` (or for which ``match`` is true)."""
        while True:
            frame = await self.recv(timeout)
            if frame.get("type") == match if isinstance(match, str) else match(frame):
                return frame

    async def ask(self, type: str, **msg: Any) -> dict[str, Any]:
        ref = next(_refs)
        await self.send(type=type, ref=ref, **msg)
        return await self.until(lambda f: f.get("ref") == ref)

    async def hello(self, nick: str, **msg: Any) -> dict[str, Any]:
        reply = await self.ask("hello", nick=nick, **msg)
        assert reply["type"] == "welcome", reply
        return reply

    def messages(self, room: str | None = None) -> list[dict[str, Any]]:
        return [
            f
            for f in self.frames
            if f.get("type") == "message" and (room is None or f["room"] == room)
        ]

    async def close(self) -> None:
        await self.conn.close()


@pytest_asyncio.fixture
async def server(chat: Chat) -> AsyncIterator[UvicornServer]:
    async with UvicornServer(create_app(chat)) as srv:
        yield srv


@contextlib.asynccontextmanager
async def clients(url: str, n: int) -> AsyncIterator[list[Ws]]:
    opened = [await Ws.open(url) for _ in range(n)]
    try:
        yield opened
    finally:
        for c in opened:
            await c.close()


# ------------------------------------------------------------------------------ basics


@pytest.mark.asyncio
async def test_hello_join_send_ack_and_presence(server: UvicornServer, chat: Chat) -> None:
    async with clients(server.ws_url, 2) as (alice, bob):
        welcome = await alice.hello("alice", rooms=["main"])
        assert welcome["nick"] == "alice" and welcome["account"] is None
        assert [(r["name"], r["nicks"]) for r in welcome["rooms"]] == [("main", ["alice"])]
        assert welcome["limits"]["max_message_length"] == 255

        await bob.hello("bob")
        joined = await bob.ask("join", room="#Main")
        assert joined["type"] == "joined" and joined["room"]["nicks"] == ["alice", "bob"]
        own = await alice.until("event")  # her own join first
        assert (own["event"], own["actor"]) == ("join", "alice")
        ev = await alice.until("event")
        assert (ev["event"], ev["room"], ev["actor"]) == ("join", "main", "bob")

        ack = await bob.ask("send", room="main", text="hello alice")
        assert (ack["type"], ack["seq"], ack["id"], ack["room"]) == ("ack", 1, "main/1", "main")
        got = await alice.until("message")
        assert (got["from"], got["text"], got["seq"], got["id"]) == (
            "bob",
            "hello alice",
            1,
            "main/1",
        )
        # The sender sees its own message too, before the ack.
        assert [m["text"] for m in bob.messages()] == ["hello alice"]

        members = await alice.ask("members", room="main")
        assert members["nicks"] == ["alice", "bob"]
        assert [w["front"] for w in members["who"]] == ["ws", "ws"]
        rooms = await alice.ask("rooms")
        assert [(r["name"], r["members"], r["last_seq"]) for r in rooms["rooms"]] == [
            ("main", 2, 1)
        ]

        parted = await bob.ask("part", room="main", reason="bye")
        assert parted == {"type": "parted", "ref": parted["ref"], "room": "main"}
        ev = await alice.until("event")
        assert (ev["event"], ev["actor"], ev["text"]) == ("part", "bob", "bye")
        pong = await alice.ask("ping", data=7)
        assert (pong["type"], pong["data"]) == ("pong", 7)

    # Closing the sockets ends the sessions; members saw them quit.
    await chat.flush()
    assert chat.sessions == {}


@pytest.mark.asyncio
async def test_bad_requests_get_errors_and_the_connection_stays(server: UvicornServer) -> None:
    async with clients(server.ws_url, 1) as (ws,):
        await ws.conn.send("{not json")
        assert (await ws.recv())["code"] == "BAD_JSON"
        await ws.conn.send("[1, 2]")
        assert (await ws.recv())["code"] == "BAD_REQUEST"
        assert (await ws.ask("fly"))["code"] == "UNKNOWN_TYPE"
        assert (await ws.ask("send", room="main", text="x"))["code"] == "NOT_REGISTERED"
        assert (await ws.ask("hello"))["code"] == "BAD_REQUEST"
        assert (await ws.ask("hello", nick="no spaces"))["code"] == "INVALID_NAME"
        await ws.hello("carol")
        assert (await ws.ask("hello", nick="carol"))["code"] == "ALREADY_REGISTERED"
        err = await ws.ask("send", room="main", text="not joined")
        assert (err["type"], err["code"]) == ("error", "NOT_IN_ROOM")
        assert (await ws.ask("join", room="nowhere"))["code"] == "NO_SUCH_ROOM"
        assert (await ws.ask("join"))["code"] == "BAD_REQUEST"
        assert (await ws.ask("join", room="main", after=-1))["code"] == "BAD_REQUEST"
        await ws.ask("join", room="main")
        assert (await ws.ask("send", room="main", text="x" * 256))["code"] == "LIMIT_EXCEEDED"
        await ws.conn.send(b'{"type": "ping", "ref": "bin"}')  # binary frames carry JSON too
        assert (await ws.until("pong"))["ref"] == "bin"
        assert (await ws.ask("ping"))["type"] == "pong"


@pytest.mark.asyncio
async def test_oversized_message_closes_with_1009() -> None:
    async with Chat(limits=Limits(rate=0, ws_message_bytes=1024)) as chat:
        async with UvicornServer(create_app(chat)) as srv:
            async with clients(srv.ws_url, 1) as (ws,):
                await ws.hello("big")
                await ws.send(type="send", room="main", text="x" * 2000)
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await ws.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            await chat.flush()
            assert chat.sessions == {}


@pytest.mark.asyncio
async def test_rate_limit_applies_per_connection() -> None:
    async with Chat(limits=Limits(rate=0.01, burst=2)) as chat:
        async with UvicornServer(create_app(chat)) as srv:
            async with clients(srv.ws_url, 1) as (ws,):
                await ws.hello("fast", rooms=["main"])
                assert (await ws.ask("send", room="main", text="1"))["type"] == "ack"
                assert (await ws.ask("send", room="main", text="2"))["type"] == "ack"
                assert (await ws.ask("send", room="main", text="3"))["code"] == "RATE_LIMITED"


@pytest.mark.asyncio
async def test_sockets_beyond_twice_max_clients_are_refused() -> None:
    async with Chat(limits=Limits(max_clients=1)) as chat:
        async with UvicornServer(create_app(chat)) as srv:
            async with clients(srv.ws_url, 18) as idle:  # 2 x max_clients + 16
                assert (await idle[0].hello("first"))["nick"] == "first"
                assert (await idle[1].ask("hello", nick="second"))["code"] == "LIMIT_EXCEEDED"
                async with clients(srv.ws_url, 1) as (extra,):
                    with pytest.raises(websockets.ConnectionClosed) as info:
                        await extra.recv()
                    assert info.value.rcvd is not None
                    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1013, "server full")


# ------------------------------------------------------------------------------ history, resume


@pytest.mark.asyncio
async def test_join_with_history_or_after_sends_the_backlog(
    server: UvicornServer, chat: Chat
) -> None:
    poster = await chat.connect("poster", front="test")
    chat.join(poster, "main")
    for i in range(1, 8):
        await chat.send(poster, "main", f"m{i}")
    async with clients(server.ws_url, 2) as (a, b):
        await a.hello("a")
        assert (await a.ask("join", room="main", history=3))["type"] == "joined"
        synced = await a.until("synced")
        assert synced["seq"] == 7
        assert [m["seq"] for m in a.messages()] == [5, 6, 7]

        await b.hello("b")
        await b.ask("join", room="main", after=4)
        assert (await b.until("synced"))["seq"] == 7
        assert [m["text"] for m in b.messages()] == ["m5", "m6", "m7"]

        page = await a.ask("history", room="main", before=5, limit=2)
        assert [m["seq"] for m in page["messages"]] == [3, 4]
        page = await a.ask("history", room="main", after=5)
        assert [m["seq"] for m in page["messages"]] == [6, 7]


class _Racing:
    """Store mixin: while ``racer`` is set, it runs before every read of ``main``'s history."""

    racer: Callable[[], Awaitable[None]] | None = None

    async def history(self, room: str, **kw: Any) -> list[Message]:
        if self.racer is not None and room == "main":
            await self.racer()
        return await super().history(room, **kw)  # type: ignore[misc]


class RacingMemoryStore(_Racing, MemoryStore):
    pass


class RacingSQLiteStore(_Racing, SQLiteStore):
    pass


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
@pytest.mark.asyncio
async def test_resume_after_reconnect_has_no_gap_and_no_duplicate(
    store_kind: str, tmp_path: Path
) -> None:
    """A client reconnects with its last seen seq. Around every page of its backlog read, one
    message is stored and delivered just before the read (so the page has it and so does the
    live stream) and one is posted as the read starts (so only the live stream has it): the
    client must still receive every message after its seq exactly once, in order."""
    store = (
        RacingSQLiteStore(tmp_path / "chat.db") if store_kind == "sqlite" else RacingMemoryStore()
    )
    async with Chat(store=store, limits=Limits(rate=0, history_page_max=7)) as chat:
        poster = await chat.connect("poster", front="test")
        chat.join(poster, "main")
        numbers = itertools.count(1)
        late: list[asyncio.Future[Message]] = []
        reads = 0

        async def racer() -> None:
            nonlocal reads
            reads += 1
            await chat.send(poster, "main", f"m{next(numbers)}")
            late.append(chat.post(poster, "main", f"m{next(numbers)}"))

        async with UvicornServer(create_app(chat)) as srv:
            first = await Ws.open(srv.ws_url)
            await first.hello("bob", rooms=["main"])
            for _ in range(5):
                await chat.send(poster, "main", f"m{next(numbers)}")
            while len(first.messages()) < 5:
                await first.recv()
            last_seen = first.messages()[-1]["seq"]
            await first.close()
            for _ in range(30):  # posted while bob is away
                await chat.send(poster, "main", f"m{next(numbers)}")

            second = await Ws.open(srv.ws_url)
            try:
                store.racer = racer
                await second.hello("bob", resume={"main": last_seen})
                synced = await second.until("synced")
                store.racer = None
                await asyncio.gather(*late)
                final = chat.room("main").last_seq
                while not any(m["seq"] == final for m in second.messages()):
                    await second.recv()
                await second.ask("ping")  # anything still in flight arrives before the pong
                assert reads >= 4  # the backlog took several pages, each raced
                assert last_seen == 5 and final == 35 + 2 * reads
                seqs = [m["seq"] for m in second.messages()]
                assert seqs == list(range(6, final + 1))
                assert [m["text"] for m in second.messages()] == [f"m{i}" for i in seqs]
                assert synced["room"] == "main" and synced["seq"] >= 35
            finally:
                await second.close()


# ------------------------------------------------------------------------------ slow consumer


async def _raw_hello(port: int, nick: str) -> tuple[socket.socket, ClientProtocol]:
    """A WebSocket client on a raw socket with a small receive buffer: it says hello, waits for
    the welcome, and then reads nothing until the test says so."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"), max_size=None)
        proto.send_request(proto.connect())
        await loop.sock_sendall(sock, b"".join(proto.data_to_send()))
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert data, "closed during the handshake"
            proto.receive_data(data)
            for ev in proto.events_received():
                if isinstance(ev, Response):
                    assert ev.status_code == 101
                    hello = {"type": "hello", "nick": nick, "rooms": ["main"]}
                    proto.send_text(json.dumps(hello).encode())
                    await loop.sock_sendall(sock, b"".join(proto.data_to_send()))
                elif ev.opcode is Opcode.TEXT and json.loads(ev.data)["type"] == "welcome":
                    return sock, proto
    except BaseException:
        sock.close()
        raise


@pytest.mark.asyncio
async def test_slow_consumer_is_disconnected_and_the_room_goes_on() -> None:
    limits = Limits(rate=0, send_queue_bytes=64 * 1024, max_message_length=4000)
    async with Chat(limits=limits) as chat:
        poster = await chat.connect("poster", front="test")
        chat.join(poster, "main")
        async with UvicornServer(create_app(chat)) as srv:
            sock, proto = await _raw_hello(srv.port, "slowpoke")
            watcher = await Ws.open(srv.ws_url)
            try:
                await watcher.hello("watcher", rooms=["main"])
                text = "y" * 4000
                posted = 0
                # Kernel buffers, uvicorn's write buffer, then the 64 KiB queue: at most a few
                # MiB pass before the bound; 20 MB would mean the bound never applied.
                while "slowpoke" in chat.sessions and posted < 5000:
                    await asyncio.gather(*(chat.post(poster, "main", text) for _ in range(50)))
                    posted += 50
                assert "slowpoke" not in chat.sessions, "the slow client was never dropped"
                assert chat.counters["slow_consumers"] == 1
                quit_ev = await watcher.until(lambda f: f.get("event") == "quit", timeout=10)
                assert (quit_ev["actor"], quit_ev["text"]) == ("slowpoke", "slow_consumer")
                # The room goes on for everyone else.
                ack = await watcher.ask("send", room="main", text="still here")
                assert ack["type"] == "ack" and ack["seq"] == posted + 1

                # When the slow client finally reads, the stream ends with close 1013.
                loop = asyncio.get_running_loop()
                while proto.close_rcvd is None:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
                    if not data:
                        break
                    proto.receive_data(data)
                    proto.events_received()
                assert proto.close_rcvd is not None
                assert (proto.close_rcvd.code, proto.close_rcvd.reason) == (1013, "slow consumer")
            finally:
                sock.close()
                await watcher.close()


# ------------------------------------------------------------------------------ cross-front


@pytest.mark.asyncio
async def test_websocket_and_line_protocol_share_rooms_and_dms(
    server: UvicornServer, line_server: LineProtocolServer
) -> None:
    line = await LineClient.open(line_server.port)
    async with clients(server.ws_url, 1) as (ws,):
        try:
            assert await line.ask("HELLO main:liner") == "OK HELLO liner main"
            await ws.hello("webby", rooms=["main"])
            assert await line.until("EVENT join") == "EVENT join main webby"

            assert (await ws.ask("send", room="main", text="from the web"))["seq"] == 1
            assert await line.until("MSG ") == "MSG main webby 1 from the web"

            assert (await line.ask("SEND main from the line")).startswith("OK SEND main 2 ")
            got = await ws.until("message")
            assert (got["from"], got["text"], got["seq"]) == ("liner", "from the line", 2)

            # Direct messages both ways.
            ack = await ws.ask("dm", to="liner", text="psst")
            assert (ack["type"], ack["to"]) == ("ack", "liner")
            assert await line.until("DM ") == "DM webby 1 psst"
            assert (await line.ask("DM webby hi back")).startswith("OK DM webby 2")
            dm = await ws.until(lambda f: f.get("kind") == "dm" and f["from"] == "liner")
            assert (dm["text"], dm["to"], dm["room"]) == ("hi back", "webby", "@liner:webby")
            hist = await ws.ask("history", peer="liner")
            assert [m["text"] for m in hist["messages"]] == ["psst", "hi back"]

            # main is topic-locked and ownerless; a room the web client creates is its own.
            reply = await ws.ask("topic", room="main", topic="hello all")
            assert (reply["type"], reply["code"]) == ("error", "PERMISSION_DENIED")
            created = await ws.ask("join", room="lounge", create=True)
            assert created["room"]["owner"] == "webby"
            assert (await line.ask("JOIN lounge")) == "OK JOIN lounge 2"
            reply = await ws.ask("topic", room="lounge", topic="hello all")
            assert (reply["type"], reply["topic"]) == ("topic", "hello all")
            assert await line.until("EVENT topic") == "EVENT topic lounge webby :hello all"
            assert (await ws.ask("topic", room="lounge"))["topic"] == "hello all"
        finally:
            await line.close()


# ------------------------------------------------------------------------------ accounts


@pytest.mark.asyncio
async def test_accounts_tokens_and_logged_in_elsewhere(server: UvicornServer, chat: Chat) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = (await http.post("/accounts", json={"name": "dana", "password": "pw-dana"})).json()[
            "token"
        ]
    async with clients(server.ws_url, 4) as (guest, first, second, third):
        assert (await guest.ask("hello", nick="dana"))["code"] == "NAME_IN_USE"
        welcome = await first.hello("dana", token=token, rooms=["main"])
        assert welcome["account"] == "dana" and welcome["token"]
        assert chat.session("dana").front == "ws"
        assert (await third.ask("hello", nick="dana", password="wrong"))["code"] == "AUTH_FAILED"
        # Logging in again moves the session to the new socket; the old one is closed.
        welcome = await second.hello("dana", password="pw-dana")
        assert welcome["account"] == "dana"
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await first.recv()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1000, "logged in elsewhere")
        # The account's WebSocket session can be driven over REST only with its token.
        async with httpx.AsyncClient(base_url=server.url) as http:
            body = {"id": "dana", "room": "main", "message": "via rest"}
            assert (await http.post("/messages/send", json=body)).status_code == 401
            await second.ask("join", room="main")
            r = await http.post(
                "/messages/send", json=body, headers={"Authorization": f"Bearer {welcome['token']}"}
            )
            assert r.status_code == 200
        got = await second.until("message")
        assert got["text"] == "via rest"


@pytest.mark.asyncio
async def test_rest_cannot_drive_a_websocket_guest(server: UvicornServer) -> None:
    async with clients(server.ws_url, 1) as (ws,):
        await ws.hello("wsguest", rooms=["main"])
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/clients/close", json={"id": "wsguest"})
            assert r.status_code == 403 and r.json()["error"] == "PERMISSION_DENIED"
            r = await http.get("/clients")
            assert [(c["id"], c["front"]) for c in r.json()["clients"]] == [("wsguest", "ws")]
        assert (await ws.ask("ping"))["type"] == "pong"


@pytest.mark.asyncio
async def test_server_shutdown_closes_websockets(chat: Chat) -> None:
    srv = UvicornServer(create_app(chat))
    await srv.start()
    ws = await Ws.open(srv.ws_url)
    try:
        await ws.hello("leaver", rooms=["main"])
        await srv.stop()
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        assert chat.sessions == {}
    finally:
        await ws.close()
        await srv.stop()
