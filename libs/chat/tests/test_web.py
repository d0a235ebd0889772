"""The REST API and the page, served by uvicorn on 127.0.0.1 and called with httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from _client import LineClient
from _uvicorn import UvicornServer
from isthmus.chat import (
    Chat,
    Draft,
    Limits,
    LineProtocolServer,
    MemoryStore,
    Message,
    SQLiteStore,
)
from isthmus.chat._web import create_app


@pytest_asyncio.fixture
async def server(chat: Chat) -> AsyncIterator[UvicornServer]:
    async with UvicornServer(create_app(chat)) as srv:
        yield srv


@pytest_asyncio.fixture
async def http(server: UvicornServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def err(resp: httpx.Response) -> tuple[int, str]:
    body = resp.json()
    assert set(body) == {"error", "detail"}, body
    return resp.status_code, body["error"]


# ------------------------------------------------------------------------------ seed endpoints


@pytest.mark.asyncio
async def test_seed_endpoints_register_send_list_pause_resume_close(
    http: httpx.AsyncClient, chat: Chat
) -> None:
    r = await http.post("/clients/register", json={"name": "alice"})
    assert r.status_code == 200
    assert r.json() == {"id": "alice", "room": "main", "status": "CONNECTED"}
    r = await http.post("/clients/register", json={"name": "bob", "room": "main"})
    assert r.json()["id"] == "bob"

    r = await http.post("/messages/send", json={"id": "alice", "room": "main", "message": "hi"})
    assert r.status_code == 200
    msg = r.json()
    assert (msg["room"], msg["seq"], msg["id"], msg["from"], msg["text"], msg["kind"]) == (
        "main",
        1,
        "main/1",
        "alice",
        "hi",
        "msg",
    )
    # Acknowledged means stored: the history has it.
    assert [m.text for m in await chat.store.history("main")] == ["hi"]

    rooms = (await http.get("/chatrooms/list")).json()["rooms"]
    main = next(room for room in rooms if room["name"] == "main")
    assert (main["members"], main["last_seq"], main["topic"]) == (2, 1, "")

    status = (await http.get("/server/status")).json()
    assert status["clients"] == 2 and status["rooms"] == 1 and status["messages"] == 1

    r = await http.post("/clients/pause", json={"id": "bob"})
    assert r.json() == {"id": "bob", "status": "SUSPENDED"}
    await http.post("/messages/send", json={"id": "alice", "room": "main", "message": "missed"})
    r = await http.post("/clients/resume", json={"id": "bob"})
    assert r.json() == {"id": "bob", "status": "ACTIVE", "missed": 1}

    r = await http.post("/clients/close", json={"id": "bob"})
    assert r.json() == {"id": "bob", "status": "CLOSED"}
    clients = (await http.get("/clients")).json()["clients"]
    assert [c["id"] for c in clients] == ["alice"]
    assert err(await http.post("/clients/close", json={"id": "bob"})) == (404, "NO_SUCH_CLIENT")


@pytest.mark.asyncio
async def test_history_pages_by_before_after_and_limit(http: httpx.AsyncClient) -> None:
    await http.post("/clients/register", json={"name": "alice"})
    for i in range(1, 6):
        r = await http.post("/rooms/main/messages", json={"id": "alice", "text": f"m{i}"})
        assert r.json()["seq"] == i

    async def seqs(**params: Any) -> list[int]:
        r = await http.get("/rooms/main/history", params=params)
        assert r.status_code == 200
        assert r.json()["room"] == "main"
        return [m["seq"] for m in r.json()["messages"]]

    assert await seqs() == [1, 2, 3, 4, 5]
    assert await seqs(limit=2) == [4, 5]
    assert await seqs(before=4, limit=2) == [2, 3]
    assert await seqs(after=3) == [4, 5]
    assert await seqs(after=1, limit=2) == [2, 3]
    assert err(await http.get("/rooms/main/history", params={"limit": "x"})) == (
        400,
        "BAD_REQUEST",
    )
    assert err(await http.get("/rooms/nowhere/history")) == (404, "NO_SUCH_ROOM")
    # A direct conversation is not a room: its history is under /dms with a token.
    assert err(await http.get("/rooms/@alice:bob/history"))[0] == 400


# ------------------------------------------------------------------------------ errors


@pytest.mark.asyncio
async def test_errors_map_to_http_statuses(http: httpx.AsyncClient, chat: Chat) -> None:
    await http.post("/clients/register", json={"name": "alice"})
    cases: Sequence[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/clients/register", {"name": "alice"}, 409, "NAME_IN_USE"),
        ("POST", "/clients/register", {"name": "bad nick"}, 400, "INVALID_NAME"),
        ("POST", "/clients/register", {"name": "carol", "room": "nowhere"}, 404, "NO_SUCH_ROOM"),
        ("POST", "/clients/register", {}, 400, "BAD_REQUEST"),
        ("POST", "/clients/register", {"name": 5}, 400, "BAD_REQUEST"),
        (
            "POST",
            "/messages/send",
            {"id": "alice", "room": "main", "message": "x" * 256},
            400,
            "LIMIT_EXCEEDED",
        ),
        (
            "POST",
            "/messages/send",
            {"id": "alice", "room": "main", "message": ""},
            400,
            "BAD_REQUEST",
        ),
        (
            "POST",
            "/messages/send",
            {"id": "ghost", "room": "main", "message": "x"},
            404,
            "NO_SUCH_CLIENT",
        ),
        (
            "POST",
            "/messages/send",
            {"id": "alice", "room": "nowhere", "message": "x"},
            404,
            "NO_SUCH_ROOM",
        ),
        ("POST", "/rooms", {"id": "alice", "name": "main"}, 409, "ROOM_EXISTS"),
        ("POST", "/rooms", {"name": "side"}, 401, "AUTH_FAILED"),
        ("POST", "/login", {"name": "alice", "password": "nope"}, 401, "AUTH_FAILED"),
        ("GET", "/rooms/nowhere", {}, 404, "NO_SUCH_ROOM"),
        ("GET", "/dms/alice", {}, 401, "AUTH_FAILED"),
    ]
    for method, path, body, status, code in cases:
        r = await http.request(method, path, json=body if method == "POST" else None)
        assert err(r) == (status, code), (method, path, body, r.text)

    # Not a member of the room: 403.
    await http.post("/rooms", json={"id": "alice", "name": "side"})
    await http.post("/clients/register", json={"name": "bob"})
    r = await http.post("/messages/send", json={"id": "bob", "room": "side", "message": "x"})
    assert err(r) == (403, "NOT_IN_ROOM")
    # Banned: 403.
    chat.set_mode(chat.session("alice"), "side", "+b", "mallory")
    r = await http.post("/clients/register", json={"name": "mallory", "room": "side"})
    assert err(r) == (403, "BANNED")
    assert "mallory" not in chat.sessions  # a failed registration leaves no session behind

    # Malformed bodies, unknown routes and methods are JSON errors too.
    r = await http.post(
        "/messages/send", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert err(r) == (400, "BAD_REQUEST")
    assert err(await http.post("/messages/send", json=[1, 2])) == (400, "BAD_REQUEST")
    assert err(await http.get("/no/such/route")) == (404, "NOT_FOUND")
    assert err(await http.get("/messages/send")) == (405, "METHOD_NOT_ALLOWED")
    big = {"id": "alice", "room": "main", "message": "x" * 100_000}
    assert err(await http.post("/messages/send", json=big)) == (413, "LIMIT_EXCEEDED")


@pytest.mark.asyncio
async def test_rate_limit_is_429() -> None:
    async with Chat(limits=Limits(rate=0.01, burst=2)) as chat:
        async with UvicornServer(create_app(chat)) as srv:
            async with httpx.AsyncClient(base_url=srv.url) as http:
                await http.post("/clients/register", json={"name": "alice"})
                body = {"id": "alice", "room": "main", "message": "x"}
                assert (await http.post("/messages/send", json=body)).status_code == 200
                assert (await http.post("/messages/send", json=body)).status_code == 200
                r = await http.post("/messages/send", json=body)
                assert err(r) == (429, "RATE_LIMITED")


class FailingStore(MemoryStore):
    """A store whose disk fails on demand."""

    fail = False

    async def append(self, drafts: Sequence[Draft]) -> list[Message]:
        if self.fail:
            raise OSError("disk I/O error")
        return await super().append(drafts)


@pytest.mark.asyncio
async def test_store_failure_is_503_and_nothing_is_acknowledged() -> None:
    store = FailingStore()
    async with Chat(store=store, limits=Limits(rate=0)) as chat:
        async with UvicornServer(create_app(chat)) as srv:
            async with httpx.AsyncClient(base_url=srv.url) as http:
                await http.post("/clients/register", json={"name": "alice"})
                store.fail = True
                body = {"id": "alice", "room": "main", "message": "lost?"}
                assert err(await http.post("/messages/send", json=body)) == (503, "STORE_ERROR")
                store.fail = False
                r = await http.post("/messages/send", json={**body, "message": "kept"})
                assert r.status_code == 200
                history = (await http.get("/rooms/main/history")).json()["messages"]
                assert [m["text"] for m in history] == ["kept"]


# ------------------------------------------------------------------------------ accounts, auth


@pytest.mark.asyncio
async def test_accounts_login_and_account_sessions_need_their_token(
    http: httpx.AsyncClient,
) -> None:
    r = await http.post("/accounts", json={"name": "alice", "password": "s3cret!"})
    assert r.status_code == 201
    assert r.json()["name"] == "alice"
    assert err(await http.post("/accounts", json={"name": "alice", "password": "other"})) == (
        409,
        "NAME_IN_USE",
    )
    r = await http.post("/login", json={"name": "alice", "password": "s3cret!"})
    assert r.status_code == 200
    token = r.json()["token"]

    # A guest cannot take an account's name; the account's token can.
    assert err(await http.post("/clients/register", json={"name": "alice"})) == (409, "NAME_IN_USE")
    r = await http.post("/clients/register", json={"name": "alice"}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["token"]

    send = {"id": "alice", "room": "main", "message": "hello"}
    assert err(await http.post("/messages/send", json=send)) == (401, "AUTH_FAILED")
    bad = bearer(token[:-4] + "AAAA")
    assert err(await http.post("/messages/send", json=send, headers=bad)) == (401, "AUTH_FAILED")
    assert (await http.post("/messages/send", json=send, headers=bearer(token))).status_code == 200
    # The token alone names the session.
    r = await http.post("/rooms/main/messages", json={"text": "by token"}, headers=bearer(token))
    assert r.json()["from"] == "alice"

    # Another account's token does not open alice's session.
    bob_token = (await http.post("/accounts", json={"name": "bob", "password": "bobpass"})).json()[
        "token"
    ]
    r = await http.post("/clients/pause", json={"id": "alice"}, headers=bearer(bob_token))
    assert err(r) == (403, "PERMISSION_DENIED")
    assert err(await http.post("/clients/close", json={"id": "alice"})) == (401, "AUTH_FAILED")
    # A token for an account without a session cannot post.
    r = await http.post("/rooms/main/messages", json={"text": "x"}, headers=bearer(bob_token))
    assert err(r) == (404, "NO_SUCH_CLIENT")


@pytest.mark.asyncio
async def test_register_with_password_creates_or_logs_into_the_account(
    http: httpx.AsyncClient,
) -> None:
    r = await http.post("/clients/register", json={"name": "carol", "password": "pw-carol"})
    assert r.status_code == 200
    token = r.json()["token"]
    assert (await http.post("/clients/close", json={"id": "carol"}, headers=bearer(token))).json()[
        "status"
    ] == "CLOSED"
    # The account now exists: the wrong password is refused, the right one logs in.
    r = await http.post("/clients/register", json={"name": "carol", "password": "wrong"})
    assert err(r) == (401, "AUTH_FAILED")
    r = await http.post("/clients/register", json={"name": "carol", "password": "pw-carol"})
    assert r.status_code == 200
    r = await http.post("/login", json={"name": "carol", "password": "pw-carol"})
    assert r.status_code == 200
    # A nick a guest is using is not turned into an account from under it.
    await http.post("/clients/register", json={"name": "dave"})
    r = await http.post("/clients/register", json={"name": "dave", "password": "pw-dave"})
    assert err(r) == (409, "NAME_IN_USE")
    r = await http.post("/login", json={"name": "dave", "password": "pw-dave"})
    assert err(r) == (401, "AUTH_FAILED")


@pytest.mark.asyncio
async def test_direct_messages_need_a_token_and_reach_the_peer(http: httpx.AsyncClient) -> None:
    alice = (await http.post("/accounts", json={"name": "alice", "password": "pw-alice"})).json()
    bob = (await http.post("/accounts", json={"name": "bob", "password": "pw-bob"})).json()
    eve = (await http.post("/accounts", json={"name": "eve", "password": "pw-eve"})).json()
    # Direct messages go to connected clients: bob registers a session.
    await http.post("/clients/register", json={"name": "bob"}, headers=bearer(bob["token"]))
    assert err(await http.post("/dms/bob", json={"text": "hi"})) == (401, "AUTH_FAILED")
    # alice has no session: one exists just long enough to send.
    r = await http.post("/dms/bob", json={"text": "hi bob"}, headers=bearer(alice["token"]))
    assert r.status_code == 200
    msg = r.json()
    assert (msg["kind"], msg["from"], msg["to"], msg["seq"]) == ("dm", "alice", "bob", 1)
    assert [c["id"] for c in (await http.get("/clients")).json()["clients"]] == ["bob"]
    r = await http.post("/dms/alice", json={"text": "hi alice"}, headers=bearer(bob["token"]))
    assert err(r) == (404, "NO_SUCH_CLIENT")  # alice is not connected

    for token, peer in ((alice["token"], "bob"), (bob["token"], "alice")):
        r = await http.get(f"/dms/{peer}", headers=bearer(token))
        assert [m["text"] for m in r.json()["messages"]] == ["hi bob"]
    # Anyone else sees their own (empty) conversation, never alice and bob's.
    r = await http.get("/dms/bob", headers=bearer(eve["token"]))
    assert r.json() == {"peer": "bob", "messages": []}


# ------------------------------------------------------------------------------ rooms, clients


@pytest.mark.asyncio
async def test_create_room_info_and_post(http: httpx.AsyncClient) -> None:
    await http.post("/clients/register", json={"name": "alice"})
    r = await http.post("/rooms", json={"id": "alice", "name": "Lobby", "topic": "welcome"})
    assert r.status_code == 201
    assert (r.json()["name"], r.json()["owner"], r.json()["nicks"]) == ("lobby", "alice", ["alice"])
    await http.post("/clients/register", json={"name": "bob", "room": "lobby"})
    info = (await http.get("/rooms/LOBBY")).json()
    assert info["topic"] == "welcome" and info["members"] == 2
    assert info["who"] == [
        {"nick": "alice", "role": "owner", "status": "CONNECTED", "front": "rest"},
        {"nick": "bob", "role": "member", "status": "CONNECTED", "front": "rest"},
    ]
    r = await http.post("/rooms/lobby/messages", json={"id": "bob", "text": "hey"})
    assert (r.json()["room"], r.json()["seq"]) == ("lobby", 1)
    listed = {room["name"]: room for room in (await http.get("/rooms")).json()["rooms"]}
    assert listed["lobby"]["last_seq"] == 1 and listed["lobby"]["members"] == 2


@pytest.mark.asyncio
async def test_clients_lists_every_front_and_rest_drives_only_rest_guests(
    http: httpx.AsyncClient, line_server: LineProtocolServer
) -> None:
    line = await LineClient.open(line_server.port)
    try:
        assert await line.ask("HELLO main:liner") == "OK HELLO liner main"
        await http.post("/clients/register", json={"name": "rester"})
        clients = (await http.get("/clients")).json()["clients"]
        assert [(c["id"], c["front"], c["status"], c["rooms"]) for c in clients] == [
            ("liner", "line", "CONNECTED", ["main"]),
            ("rester", "rest", "CONNECTED", ["main"]),
        ]
        # A line-protocol guest cannot be driven over REST by naming it.
        r = await http.post("/messages/send", json={"id": "liner", "room": "main", "message": "x"})
        assert err(r) == (403, "PERMISSION_DENIED")
        assert err(await http.post("/clients/close", json={"id": "liner"})) == (
            403,
            "PERMISSION_DENIED",
        )
        # The REST client's message reaches the line client.
        await http.post("/messages/send", json={"id": "rester", "room": "main", "message": "yo"})
        assert await line.until("MSG ") == "MSG main rester 1 yo"
    finally:
        await line.close()


# ------------------------------------------------------------------------------ OpenAPI, page


@pytest.mark.asyncio
async def test_openapi_describes_every_route_and_validates(http: httpx.AsyncClient) -> None:
    from starlette.routing import Route, WebSocketRoute

    doc = (await http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    app = create_app(Chat())
    for route in app.routes:
        assert isinstance(route, Route | WebSocketRoute)
        assert route.path in doc["paths"], route.path
        methods = (route.methods or {"GET"}) if isinstance(route, Route) else {"GET"}
        for method in methods - {"HEAD"}:
            assert method.lower() in doc["paths"][route.path], (method, route.path)
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["responses"], path
            for resp in op["responses"].values():
                for media in resp.get("content", {}).values():
                    ref = media["schema"].get("$ref")
                    if ref:
                        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)


@pytest.mark.asyncio
async def test_page_has_strict_csp_and_its_assets(http: httpx.AsyncClient) -> None:
    r = await http.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script" in r.text and 'src="static/app.js"' in r.text
    js = await http.get("/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text and "insertAdjacentHTML" not in js.text
    css = await http.get("/static/app.css")
    assert css.headers["content-type"].startswith("text/css")
    assert err(await http.get("/static/../_web.py"))[0] == 404
    assert err(await http.get("/static/index.html"))[0] == 404


@pytest.mark.asyncio
async def test_static_false_serves_no_page(chat: Chat) -> None:
    async with UvicornServer(create_app(chat, static=False)) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            assert (await http.get("/")).status_code == 404
            assert (await http.get("/static/app.js")).status_code == 404
            assert "/" not in (await http.get("/openapi.json")).json()["paths"]
            assert (await http.get("/server/status")).status_code == 200


@pytest.mark.asyncio
async def test_cors_origins(chat: Chat) -> None:
    app = create_app(chat, cors_origins=["http://page.test"])
    async with UvicornServer(app) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.options(
                "/messages/send",
                headers={
                    "Origin": "http://page.test",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == "http://page.test"
            r = await http.get("/chatrooms/list", headers={"Origin": "http://evil.test"})
            assert "access-control-allow-origin" not in r.headers


# ------------------------------------------------------------------------------ lifespan


@pytest.mark.asyncio
async def test_manage_chat_runs_the_chat_in_the_lifespan(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    chat = Chat(store=SQLiteStore(db), limits=Limits(rate=0))
    async with UvicornServer(create_app(chat, manage_chat=True), lifespan="on") as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/clients/register", json={"name": "alice"})
            assert r.status_code == 200
            r = await http.post(
                "/messages/send", json={"id": "alice", "room": "main", "message": "x"}
            )
            assert r.json()["seq"] == 1
    # The server's shutdown closed the chat: the REST session (no socket) is gone too, and
    # the message is in the database.
    assert chat.sessions == {}
    async with Chat(store=SQLiteStore(db)) as again:
        assert [m.text for m in await again.history("main")] == ["x"]


@pytest.mark.asyncio
async def test_app_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.chat._web import app_from_env

    monkeypatch.setenv("ISTHMUS_CHAT_DB", ":memory:")
    monkeypatch.setenv("ISTHMUS_CHAT_SERVER_NAME", "env.test")
    monkeypatch.setenv("ISTHMUS_CHAT_DEFAULT_ROOMS", "main,lobby")
    async with UvicornServer(app_from_env(), lifespan="on") as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            assert (await http.get("/server/status")).json()["server"] == "env.test"
            rooms = (await http.get("/chatrooms/list")).json()["rooms"]
            assert [r["name"] for r in rooms] == ["lobby", "main"]
