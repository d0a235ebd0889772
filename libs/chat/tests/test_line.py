"""The seed's line protocol over real TCP (and TLS) connections."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import trustme

from _client import LineClient
from isthmus.chat import Chat, Limits, LineProtocolServer


@pytest_asyncio.fixture
async def pair(line_server: LineProtocolServer) -> AsyncIterator[tuple[LineClient, LineClient]]:
    a = await LineClient.open(line_server.port)
    b = await LineClient.open(line_server.port)
    assert await a.ask("HELLO main:alice") == "OK HELLO alice main"
    assert await b.ask("HELLO main:bob") == "OK HELLO bob main"
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_every_member_including_the_sender_gets_a_message(
    pair: tuple[LineClient, LineClient],
) -> None:
    a, b = pair
    a.send("SEND main:alice hello everyone")
    assert await a.until("MSG ") == "MSG main alice 1 hello everyone"
    assert await a.until("OK ") == "OK SEND main 1 main/1"
    assert await b.until("MSG ") == "MSG main alice 1 hello everyone"


@pytest.mark.asyncio
async def test_seed_one_shot_connections_register_implicitly(
    line_server: LineProtocolServer,
) -> None:
    """The seed took one command per connection, with room:id on each: that still works."""
    listener = await LineClient.open(line_server.port)
    try:
        await listener.ask("HELLO main:watcher")
        shot = await LineClient.open(line_server.port)
        shot.send("SEND main:carol one shot")
        assert (await shot.until("OK ")).startswith("OK SEND main 1")
        await shot.close()
        assert await listener.until("MSG ") == "MSG main carol 1 one shot"
        # And the seed's HELLO with the auto-named id "client".
        auto = await LineClient.open(line_server.port)
        reply = await auto.ask("HELLO main:client")
        assert reply.startswith("OK HELLO client") and reply.endswith(" main")
        await auto.close()
    finally:
        await listener.close()


@pytest.mark.asyncio
async def test_new_join_list_who_topic_part(pair: tuple[LineClient, LineClient]) -> None:
    a, b = pair
    assert await a.ask("NEW dev:alice the dev room") == "OK NEW dev"
    assert await b.ask("JOIN dev") == "OK JOIN dev 2"
    assert await a.ask("LIST rooms", "LIST") == "LIST rooms dev main"
    assert await a.ask("LIST clients", "LIST") == "LIST clients alice bob"
    assert await a.ask("LIST members dev", "LIST") == "LIST members dev alice bob"
    a.send("WHO dev")
    assert await a.until("WHO dev alice") == "WHO dev alice CONNECTED line owner"
    assert await a.until("WHO dev bob") == "WHO dev bob CONNECTED line member"
    assert await a.until("OK WHO") == "OK WHO dev 2"
    assert await b.ask("TOPIC dev") == "OK TOPIC dev :the dev room"
    assert (await b.ask("TOPIC dev mine")).startswith("ERR TOPIC PERMISSION_DENIED")
    assert await a.ask("TOPIC dev new topic") == "OK TOPIC dev"
    assert await b.until("EVENT topic") == "EVENT topic dev alice :new topic"
    assert await b.ask("PART dev") == "OK PART dev"
    assert await a.until("EVENT part") == "EVENT part dev bob"
    assert (await b.ask("SEND dev hi")).startswith("ERR SEND NOT_IN_ROOM")


@pytest.mark.asyncio
async def test_direct_messages_and_dm_history(pair: tuple[LineClient, LineClient]) -> None:
    a, b = pair
    assert await a.ask("DM bob secret") == "OK DM bob 1 @alice:bob/1"
    assert await b.until("DM ") == "DM alice 1 secret"
    b.send("HISTORY @alice")
    assert (await b.until("HIST ")).endswith(" secret")
    assert await b.until("OK HISTORY") == "OK HISTORY @alice 1"
    assert (await a.ask("DM nobody hi")).startswith("ERR DM NO_SUCH_CLIENT")


@pytest.mark.asyncio
async def test_history_paging(pair: tuple[LineClient, LineClient]) -> None:
    a, _ = pair
    for i in range(1, 8):
        a.send(f"SEND main m{i}")
    for _ in range(7):
        await a.until("OK SEND")
    a.send("HISTORY main - 3")
    got = [await a.until("HIST") for _ in range(3)]
    assert [g.split(" ", 5)[-1] for g in got] == ["m5", "m6", "m7"]
    assert await a.until("OK HISTORY") == "OK HISTORY main 3"
    a.send("HISTORY main 5 2")
    got = [await a.until("HIST") for _ in range(2)]
    assert [g.split(" ")[3] for g in got] == ["3", "4"]


@pytest.mark.asyncio
async def test_list_replies_are_sent_and_status_is_json(
    pair: tuple[LineClient, LineClient],
) -> None:
    a, _ = pair
    status = json.loads((await a.ask("STATUS", "STATUS")).split(" ", 1)[1])
    assert status["clients"] == 2 and status["max_clients"] == 1000
    assert await a.ask("PING abc", "PONG") == "PONG abc"
    assert (await a.ask("HELP")).startswith("OK HELP ")


@pytest.mark.asyncio
async def test_errors_are_answered_and_the_connection_stays(
    pair: tuple[LineClient, LineClient],
) -> None:
    a, _ = pair
    assert (await a.ask("FROB x")).startswith("ERR FROB UNKNOWN_COMMAND")
    assert (await a.ask("JOIN nowhere")).startswith("ERR JOIN NO_SUCH_ROOM")
    assert (await a.ask("NEW main")).startswith("ERR NEW ROOM_EXISTS")
    assert (await a.ask("SEND main " + "x" * 256)).startswith("ERR SEND LIMIT_EXCEEDED")
    assert (await a.ask("SEND main:mallory spoof")).startswith(
        "ERR SEND ERROR this connection is alice"
    )
    assert (await a.ask("NEW bad/name")).startswith("ERR NEW INVALID_NAME")
    a.writer.write(b"\xff\xfe\n")
    assert (await a.until("ERR")).startswith("ERR ? ENCODING")
    assert (await a.ask("SEND main still here")).startswith("OK SEND")


@pytest.mark.asyncio
async def test_commands_before_hello_are_refused(line_server: LineProtocolServer) -> None:
    c = await LineClient.open(line_server.port)
    try:
        assert (await c.ask("SEND main hi")).startswith("ERR SEND ERROR say HELLO")
        assert (await c.ask("LIST rooms", "LIST")) == "LIST rooms main"
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_name_in_use(
    pair: tuple[LineClient, LineClient], line_server: LineProtocolServer
) -> None:
    c = await LineClient.open(line_server.port)
    try:
        assert (await c.ask("HELLO main:ALICE")).startswith("ERR HELLO NAME_IN_USE")
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_quit_closes_and_others_see_it(
    pair: tuple[LineClient, LineClient], chat: Chat
) -> None:
    a, b = pair
    assert await b.ask("QUIT bob") == "OK QUIT bob"
    assert await b.reader.read() == b""
    assert await a.until("EVENT quit") == "EVENT quit main bob :quit"
    assert "bob" not in chat.sessions


@pytest.mark.asyncio
async def test_pause_and_resume_replays_missed_messages(
    pair: tuple[LineClient, LineClient],
) -> None:
    a, b = pair
    assert await b.ask("PAUSE bob") == "OK PAUSE bob"
    assert (await a.ask("SEND main while you were away")).startswith("OK SEND")
    b.send("RESUME")
    assert await b.until("MSG") == "MSG main alice 1 while you were away"
    assert await b.until("OK RESUME") == "OK RESUME bob 1"
    assert (await a.ask("SEND main:alice back")).startswith("OK SEND")
    assert await b.until("MSG") == "MSG main alice 2 back"


@pytest.mark.asyncio
async def test_accounts_register_auth_and_reserved_nicks(line_server: LineProtocolServer) -> None:
    a = await LineClient.open(line_server.port)
    b = await LineClient.open(line_server.port)
    try:
        reply = await a.ask("REGISTER alice hunter22")
        assert reply.startswith("OK REGISTER alice ")
        token = reply.split()[-1]
        assert (await b.ask("HELLO main:alice")).startswith("ERR HELLO NAME_IN_USE")
        assert (await b.ask("AUTH alice wrong")).startswith("ERR AUTH AUTH_FAILED")
        assert (await b.ask(f"AUTH alice {token}")).startswith("OK AUTH alice ")
        assert await b.ask("HELLO main:alice") == "OK HELLO alice main"
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_kick_and_mode(pair: tuple[LineClient, LineClient]) -> None:
    a, b = pair
    await a.ask("NEW ops:alice")
    await b.ask("JOIN ops")
    assert (await b.ask("KICK ops alice")).startswith("ERR KICK PERMISSION_DENIED")
    assert await a.ask("MODE ops +b bob") == "OK MODE ops +b bob"
    assert await b.until("EVENT kick") == "EVENT kick ops alice bob :banned"
    assert (await b.ask("JOIN ops")).startswith("ERR JOIN BANNED")


@pytest.mark.asyncio
async def test_an_overlong_line_is_refused_and_closed(line_server: LineProtocolServer) -> None:
    c = await LineClient.open(line_server.port)
    try:
        c.writer.write(b"SEND main " + b"x" * 10_000)
        got = await c.until("ERR")
        assert "PROTOCOL line longer than 4096 bytes" in got
        assert await c.reader.read() == b""
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_a_burst_in_one_packet_is_answered_in_order(
    pair: tuple[LineClient, LineClient],
) -> None:
    a, b = pair
    a.send(*[f"SEND main n{i}" for i in range(200)], "LIST rooms")
    oks = []
    while len(oks) < 200:
        line = await a.line()
        if line.startswith("OK SEND"):
            oks.append(int(line.split()[3]))
        assert not line.startswith("LIST") or len(oks) == 200
    assert oks == list(range(1, 201))
    assert await a.until("LIST") == "LIST rooms main"
    got = [await b.until("MSG") for _ in range(200)]
    assert got[-1] == "MSG main alice 200 n199"


@pytest.mark.asyncio
async def test_a_client_that_does_not_read_is_dropped_not_the_room() -> None:
    limits = Limits(
        send_queue_bytes=64 * 1024, rate=0, max_message_length=4000, max_line_bytes=8192
    )
    async with Chat(limits=limits) as chat:
        srv = LineProtocolServer(chat)
        await srv.start("127.0.0.1", 0)
        received = {"sender": 0, "reader": 0}

        async def drain(c: LineClient, name: str) -> None:
            while True:
                line = await c.reader.readline()
                if not line:
                    return
                if line.startswith(b"MSG main sender"):
                    received[name] += 1

        try:
            sender = await LineClient.open(srv.port)
            await sender.ask("HELLO main:sender")
            stuck = socket.create_connection(("127.0.0.1", srv.port))
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(b"HELLO main:stuck\n")
            reader = await LineClient.open(srv.port)
            await reader.ask("HELLO main:reader")
            tasks = [
                asyncio.create_task(drain(c, n))
                for c, n in ((sender, "sender"), (reader, "reader"))
            ]
            text = "y" * 4000
            sent = 0
            while "stuck" in chat.sessions and sent < 10_000:  # 40 MB: beyond any socket buffer
                sender.send(*[f"SEND main {text}"] * 50)
                sent += 50
                await asyncio.sleep(0.005)
            stuck.close()
            assert "stuck" not in chat.sessions
            assert chat.counters["slow_consumers"] == 1  # only the one that never reads
            await chat.flush()
            await asyncio.sleep(0.2)
            assert received["reader"] > 0 and "reader" in chat.sessions
            await sender.close()
            await reader.close()
            await asyncio.gather(*tasks)
        finally:
            await srv.close()


@pytest.mark.asyncio
async def test_tls(chat: Chat) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    srv = LineProtocolServer(chat)
    await srv.start("127.0.0.1", 0, ssl_context=server_ctx)
    try:
        c = await LineClient.open(srv.port, ssl_context=client_ctx)
        assert await c.ask("HELLO main:secure") == "OK HELLO secure main"
        assert (await c.ask("SEND main over tls")).startswith("OK SEND")
        await c.close()
        # A plaintext client gets nowhere.
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"HELLO main:plain\n")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        await w.wait_closed()
    finally:
        await srv.close()
