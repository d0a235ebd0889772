"""The IRC front end, against a real IrcServer on 127.0.0.1: raw clients, the PyPI ``irc`` and
``pydle`` libraries, Debian's ``ii`` and the line protocol in the same rooms."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from parser_tests import data as parser_tests  # irc-parser-tests: a test dependency

from _client import LineClient
from _irc_support import IrcClient
from isthmus.chat import Chat, Event, Limits, LineProtocolServer, Message, __version__
from isthmus.chat._irc import (
    IrcMessage,
    IrcServer,
    escape_tag_value,
    format_message,
    parse_message,
    unescape_tag_value,
)

SERVER = "irc.test"


@pytest_asyncio.fixture
async def server(chat: Chat) -> AsyncIterator[IrcServer]:
    srv = IrcServer(chat, server_name=SERVER)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close()


@pytest_asyncio.fixture
async def pair(server: IrcServer) -> AsyncIterator[tuple[IrcClient, IrcClient]]:
    """alice and bob, registered, both in #main."""
    a = await IrcClient.connect(server.port, "alice")
    b = await IrcClient.connect(server.port, "bob")
    try:
        a.send("JOIN #main")
        await a.until("366")
        b.send("JOIN #main")
        await b.until("366")
        await a.until("JOIN")  # bob's
        yield a, b
    finally:
        await a.close()
        await b.close()


@contextlib.asynccontextmanager
async def line_protocol(chat: Chat) -> AsyncIterator[LineProtocolServer]:
    srv = LineProtocolServer(chat)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close()


# ------------------------------------------------------------------------------ the parser


@pytest.mark.parametrize("case", parser_tests.msg_split["tests"], ids=lambda c: c["input"][:40])
def test_parser_splits_the_irc_parser_tests_vectors(case: dict[str, Any]) -> None:
    got = parse_message(case["input"])
    atoms = case["atoms"]
    assert got.verb == atoms["verb"]
    assert got.params == atoms.get("params", [])
    assert got.source == atoms.get("source")
    assert got.tags == atoms.get("tags", {})


@pytest.mark.parametrize("case", parser_tests.msg_join["tests"], ids=lambda c: c["desc"][:40])
def test_builder_joins_the_irc_parser_tests_vectors(case: dict[str, Any]) -> None:
    atoms = case["atoms"]
    line = format_message(
        atoms["verb"], *atoms.get("params", []), source=atoms.get("source"), tags=atoms.get("tags")
    )
    assert line in case["matches"]


def test_tag_values_round_trip() -> None:
    value = "a;b c\\d\r\ne"
    assert escape_tag_value(value) == "a\\:b\\sc\\\\d\\r\\ne"
    assert unescape_tag_value(escape_tag_value(value)) == value
    assert parse_message("@msgid=x\\sy;k :src CMD") == IrcMessage(
        "CMD", [], "src", {"msgid": "x y", "k": ""}
    )


@pytest.mark.asyncio
async def test_formatters_are_shared_escape_msgid_and_send_one_quit(chat: Chat) -> None:
    srv = IrcServer(chat, server_name=SERVER)
    try:
        fmt = srv.formatter_for(True, True, False)
        assert srv.formatter_for(True, True, False) is fmt  # one per capability combination
        assert srv.formatter is srv.formatter_for(False, False, False)
        msg = Message("odd id;x\\y", "main", 1, "alice", "hi there", 1_700_000_000.25)
        assert fmt.message(msg) == (
            b"@time=2023-11-14T22:13:20.250Z;msgid=odd\\sid\\:x\\\\y "
            b":alice!alice@irc.test PRIVMSG #main :hi there\r\n"
        )
        plain = srv.formatter_for(False, False, False)
        dm = Message("@a:b/1", "@alice:bob", 1, "alice", "psst", 0.0, "dm", "bob")
        assert plain.message(dm) == b":alice!alice@irc.test PRIVMSG bob :psst\r\n"
        first = plain.event(Event("quit", "one", "bob", None, "bye", 5.0))
        again = plain.event(Event("quit", "two", "bob", None, "bye", 5.0))
        assert first is again == b":bob!bob@irc.test QUIT :bye\r\n"
        assert plain.event(Event("room", "new", "bob")) is None
    finally:
        await srv.close()


# ------------------------------------------------------------------------------ registration


@pytest.mark.asyncio
async def test_registration_burst_and_motd(chat: Chat) -> None:
    srv = IrcServer(chat, server_name=SERVER, motd="Welcome aboard\nBe nice")
    await srv.start("127.0.0.1", 0)
    c = await IrcClient.open(srv.port)
    try:
        c.send("NICK alice", "USER al 0 * :Alice Liddell")
        got = await c.collect("376")
        verbs = [m.verb for m in got]
        assert verbs[:4] == ["001", "002", "003", "004"]
        assert got[0].raw == (
            f":{SERVER} 001 alice :Welcome to the {SERVER} IRC network, alice!al@{SERVER}"
        )
        assert got[3].params[:2] == ["alice", SERVER]
        isupport = " ".join(" ".join(m.params[1:-1]) for m in got if m.verb == "005")
        for token in ("CHANTYPES=#", "NICKLEN=32", "CHANNELLEN=65", "TOPICLEN=390", "PREFIX=(o)@"):
            assert token in isupport.split()
        assert all(m.params[-1] == "are supported by this server" for m in got if m.verb == "005")
        motd = [m.params[-1] for m in got if m.verb in ("375", "372", "376")]
        assert motd[1:3] == ["- Welcome aboard", "- Be nice"]
        assert chat.sessions["alice"].front == "irc"
        c.send("MOTD")
        assert (await c.until("372")).params[-1] == "- Welcome aboard"
    finally:
        await c.close()
        await srv.close()


@pytest.mark.asyncio
async def test_no_motd_is_422_and_numerics_address_the_nick(server: IrcServer) -> None:
    c = await IrcClient.open(server.port)
    try:
        c.send("USER u 0 * :x", "NICK Carol")
        got = await c.collect("422")
        assert got[-1].raw == f":{SERVER} 422 Carol :MOTD File is missing"
        assert all(m.params[0] == "Carol" for m in got)
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_registration_errors(server: IrcServer, chat: Chat) -> None:
    a = await IrcClient.connect(server.port, "alice")
    c = await IrcClient.open(server.port)
    try:
        c.send("JOIN #main")
        assert (await c.read()).raw == f":{SERVER} 451 * :You have not registered"
        c.send("NICK")
        assert (await c.read()).raw == f":{SERVER} 431 * :No nickname given"
        c.send("NICK 9lives")
        assert (await c.read()).raw == f":{SERVER} 432 * 9lives :Erroneous nickname"
        c.send("NICK ALICE")
        assert (await c.read()).raw == f":{SERVER} 433 * ALICE :Nickname is already in use"
        c.send("USER u")
        assert (await c.read()).raw == f":{SERVER} 461 * USER :Not enough parameters"
        c.send("FROBNICATE x")
        assert (await c.read()).raw == f":{SERVER} 421 * FROBNICATE :Unknown command"
        await c.register("carol")  # the connection is still usable
        assert "carol" in chat.sessions
        c.send("USER again 0 * :x")
        assert (await c.read()).raw == f":{SERVER} 462 carol :You may not reregister"
        c.send("PASS secret")
        assert (await c.read()).verb == "462"
        c.send("NICK alice")
        assert (await c.read()).verb == "433"
    finally:
        await a.close()
        await c.close()


# ------------------------------------------------------------------------------ channels


@pytest.mark.asyncio
async def test_join_creates_a_room_with_names_and_topic(server: IrcServer, chat: Chat) -> None:
    a = await IrcClient.connect(server.port, "alice")
    b = await IrcClient.connect(server.port, "bob")
    try:
        a.send("JOIN #Lobby,#main")
        got = await a.sync()
        assert [m.raw for m in got] == [
            f":alice!u@{SERVER} JOIN #lobby",
            f":{SERVER} 353 alice = #lobby :@alice",  # the creator owns the room
            f":{SERVER} 366 alice #lobby :End of /NAMES list.",
            f":alice!u@{SERVER} JOIN #main",
            f":{SERVER} 353 alice = #main :alice",
            f":{SERVER} 366 alice #main :End of /NAMES list.",
        ]
        assert chat.rooms["lobby"].record.owner == "alice"
        a.send("TOPIC #lobby", "TOPIC #lobby :all about lobbies")
        got = await a.sync()
        assert [m.raw for m in got] == [
            f":{SERVER} 331 alice #lobby :No topic is set",
            f":alice!u@{SERVER} TOPIC #lobby :all about lobbies",
        ]
        assert chat.rooms["lobby"].topic == "all about lobbies"
        b.send("JOIN #lobby")
        got = await b.collect("366")
        assert [m.verb for m in got] == ["JOIN", "332", "353", "366"]
        assert got[1].params == ["bob", "#lobby", "all about lobbies"]
        assert got[2].params[-1] == "@alice bob"
        assert (await a.read()).raw == f":bob!u@{SERVER} JOIN #lobby"
        b.send("JOIN #lobby")  # joining twice is a no-op
        assert await b.sync() == []
        b.send("NAMES #lobby,#nowhere")
        got = await b.sync()
        assert [(m.verb, m.params[-1]) for m in got] == [
            ("353", "@alice bob"),
            ("366", "End of /NAMES list."),
            ("366", "End of /NAMES list."),
        ]
        b.send("PART #lobby :see you")
        assert (await b.read()).raw == f":bob!u@{SERVER} PART #lobby :see you"
        assert (await a.read()).raw == f":bob!u@{SERVER} PART #lobby :see you"
        assert "bob" not in chat.rooms["lobby"].members
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_channel_errors(pair: tuple[IrcClient, IrcClient], chat: Chat) -> None:
    a, b = pair
    a.send("JOIN nohash", "JOIN #bad/name", "PART #nowhere", "PRIVMSG #nowhere :hi")
    got = await a.sync()
    assert [(m.verb, m.params[1]) for m in got] == [
        ("403", "nohash"),
        ("403", "#bad/name"),
        ("403", "#nowhere"),
        ("403", "#nowhere"),
    ]
    a.send("JOIN #side")
    await a.until("366")
    b.send("PART #side", "TOPIC #side :mine", "PRIVMSG #side :hello?", "PRIVMSG nobody :hi")
    got = await b.sync()
    assert [(m.verb, m.params[1]) for m in got] == [
        ("442", "#side"),
        ("442", "#side"),
        ("404", "#side"),
        ("401", "nobody"),
    ]
    b.send("JOIN #side", "TOPIC #side :mine", "KICK #side alice", "MODE #side +m")
    got = [m for m in await b.sync() if m.verb.isdigit() and m.verb not in ("353", "366")]
    assert [(m.verb, m.params[1]) for m in got] == [
        ("482", "#side"),  # +t: only operators set the topic
        ("482", "#side"),
        ("482", "#side"),
    ]
    assert got[0].params[-1] == "You're not channel operator"
    b.send("KICK #main alice", "KICK #nowhere alice", "PART")
    got = await b.sync()
    assert [m.verb for m in got] == ["482", "403", "461"]
    b.send("JOIN 0")  # leaves every channel
    got = await b.sync()
    assert [m.raw for m in got] == [f":bob!u@{SERVER} PART #main", f":bob!u@{SERVER} PART #side"]
    assert chat.sessions["bob"].rooms == set()


@pytest.mark.asyncio
async def test_list_who_whois(pair: tuple[IrcClient, IrcClient], chat: Chat) -> None:
    a, b = pair
    a.send("JOIN #side", "TOPIC #side :side talk")
    await a.sync()
    b.send("LIST")
    got = await b.sync()
    assert [m.raw for m in got] == [
        f":{SERVER} 321 bob Channel :Users  Name",
        f":{SERVER} 322 bob #main 2 :",
        f":{SERVER} 322 bob #side 1 :side talk",
        f":{SERVER} 323 bob :End of /LIST",
    ]
    b.send("WHO #main", "WHO alice", "WHO #nowhere")
    got = await b.sync()
    assert [m.raw for m in got] == [
        f":{SERVER} 352 bob #main u {SERVER} {SERVER} alice H :0 Real Name",
        f":{SERVER} 352 bob #main u {SERVER} {SERVER} bob H :0 Real Name",
        f":{SERVER} 315 bob #main :End of WHO list",
        f":{SERVER} 352 bob * u {SERVER} {SERVER} alice H :0 Real Name",
        f":{SERVER} 315 bob alice :End of WHO list",
        f":{SERVER} 315 bob #nowhere :End of WHO list",
    ]
    b.send("WHOIS alice", "WHOIS ghost")
    got = await b.sync()
    assert [m.verb for m in got] == ["311", "319", "312", "318", "401", "318"]
    assert got[0].params == ["bob", "alice", "u", SERVER, "*", "Real Name"]
    assert got[1].params[-1] == "#main @#side"
    b.send("AWAY :lunch", "ISON alice ghost bob", "USERHOST alice")
    got = await b.sync()
    assert [(m.verb, m.params[-1]) for m in got] == [
        ("306", "You have been marked as being away"),
        ("303", "alice bob"),
        ("302", f"alice=+u@{SERVER}"),
    ]
    a.send("WHO bob")
    assert (await a.until("352")).params[6] == "G"
    b.send("AWAY", "VERSION", "LUSERS")
    got = await b.sync()
    assert [m.verb for m in got] == ["305", "351", "251", "254", "255"]
    assert got[1].params[1:3] == [f"isthmus-chat-{__version__}", SERVER]
    assert got[2].params[-1] == "There are 2 users and 0 invisible on 1 servers"


# ------------------------------------------------------------------------------ messages


@pytest.mark.asyncio
async def test_privmsg_notice_and_direct_messages(
    pair: tuple[IrcClient, IrcClient], chat: Chat
) -> None:
    a, b = pair
    a.send("PRIVMSG #main :hello :) everyone", "NOTICE #main :a notice", "PRIVMSG Bob :psst")
    assert await a.sync() == []  # no echo without echo-message
    got = await b.sync()
    assert [m.raw for m in got] == [
        f":alice!u@{SERVER} PRIVMSG #main :hello :) everyone",
        f":alice!u@{SERVER} NOTICE #main :a notice",
        f":alice!u@{SERVER} PRIVMSG bob :psst",
    ]
    history = await chat.history("main")
    assert [(m.sender, m.text, m.kind) for m in history] == [
        ("alice", "hello :) everyone", "msg"),
        ("alice", "a notice", "notice"),
    ]
    b.send("PRIVMSG alice,#main :to both", "NOTICE alice :quiet")
    await b.sync()  # b's messages are delivered once b's PING is answered
    got = await a.sync()
    assert [(m.verb, m.params) for m in got] == [
        ("PRIVMSG", ["alice", "to both"]),
        ("PRIVMSG", ["#main", "to both"]),
        ("NOTICE", ["alice", "quiet"]),  # a notice to a nick stays a notice
    ]
    a.send("PRIVMSG #main", "PRIVMSG", "PRIVMSG #main :")
    got = await a.sync()
    assert [m.verb for m in got] == ["412", "411", "412"]


@pytest.mark.asyncio
async def test_message_length_line_length_and_rate_limits() -> None:
    limits = Limits(rate=1, burst=2, max_message_length=100)
    async with Chat(limits=limits) as chat:
        srv = IrcServer(chat, server_name=SERVER)
        await srv.start("127.0.0.1", 0)
        a = await IrcClient.connect(srv.port, "alice")
        try:
            a.send("JOIN #main")
            await a.until("366")
            a.send("PRIVMSG #main :" + "x" * 101)
            got = await a.read()
            assert got.verb == "NOTICE"
            assert got.params[-1].startswith("*** Message to #main not sent: message of 101")
            a.send("PRIVMSG #main :" + "y" * 500)  # 515 bytes with CR LF
            assert (await a.read()).raw == f":{SERVER} 417 alice :Input line was too long"
            a.send("@+client=" + "z" * 300 + " PRIVMSG #main :tagged")  # tags do not count
            a.send("PRIVMSG #main :two", "PRIVMSG #main :three")  # the burst of 2 is spent
            got = await a.sync()
            assert len(got) == 1 and got[0].verb == "NOTICE"
            assert "slow down" in got[0].params[-1]
            assert [m.text for m in await chat.history("main")] == ["tagged", "two"]
            a.writer.write(b"PRIVMSG #main :" + b"w" * 10_000)  # past max_line_bytes: refused
            got = await a.until("ERROR")
            assert "line longer than" in got.params[-1]
            assert await a.reader.read() == b""
        finally:
            await a.close()
            await srv.close()


@pytest.mark.asyncio
async def test_irc_and_line_protocol_share_rooms(
    pair: tuple[IrcClient, IrcClient], chat: Chat
) -> None:
    a, b = pair
    async with line_protocol(chat) as lp:
        lc = await LineClient.open(lp.port)
        try:
            assert await lc.ask("HELLO main:carol") == "OK HELLO carol main"
            assert (await a.read()).raw == f":carol!carol@{SERVER} JOIN #main"
            a.send("PRIVMSG #main :from irc")
            assert await lc.until("MSG") == "MSG main alice 1 from irc"
            assert (await lc.ask("SEND main from the line protocol")).startswith("OK SEND main 2")
            assert (await lc.ask("DM alice private")).startswith("OK DM alice")
            assert [m.raw for m in await a.sync()] == [
                f":carol!carol@{SERVER} PRIVMSG #main :from the line protocol",
                f":carol!carol@{SERVER} PRIVMSG alice :private",
            ]
            b.send("PRIVMSG carol :back at you")
            assert await lc.until("DM") == "DM bob 1 back at you"
            b.send("QUIT :gone fishing")
            assert await lc.until("EVENT") == "EVENT quit main bob :Quit: gone fishing"
        finally:
            await lc.close()


@pytest.mark.asyncio
async def test_a_quit_is_seen_once_however_many_channels_are_shared(
    pair: tuple[IrcClient, IrcClient], chat: Chat
) -> None:
    a, b = pair
    for chan in ("#one", "#two"):
        a.send(f"JOIN {chan}")
        await a.until("366")
        b.send(f"JOIN {chan}")
        await b.until("366")
    await a.sync()
    b.send("PRIVMSG #two :last words", "QUIT :bye")
    got = await b.collect("ERROR")
    assert got[-1].params[-1].endswith("(Quit: bye)")
    assert await b.reader.read() == b""
    got = await a.sync()
    assert [m.raw for m in got] == [
        f":bob!u@{SERVER} PRIVMSG #two :last words",  # before the QUIT, not after
        f":bob!u@{SERVER} QUIT :Quit: bye",
    ]
    assert "bob" not in chat.sessions


@pytest.mark.asyncio
async def test_nick_change_is_seen_in_shared_channels(
    pair: tuple[IrcClient, IrcClient], chat: Chat
) -> None:
    a, b = pair
    b.send("NICK robert")
    assert (await b.read()).raw == f":bob!u@{SERVER} NICK :robert"
    assert (await a.read()).raw == f":bob!u@{SERVER} NICK :robert"
    assert "robert" in chat.rooms["main"].members and "bob" not in chat.sessions
    a.send("PRIVMSG robert :found you")
    assert (await b.read()).params == ["robert", "found you"]
    b.send("NICK alice", "NICK b@d")
    got = await b.sync()
    assert [m.verb for m in got] == ["433", "432"]


# ------------------------------------------------------------------------------ modes and kicks


@pytest.mark.asyncio
async def test_modes_and_kick(pair: tuple[IrcClient, IrcClient], chat: Chat) -> None:
    a, b = pair
    async with line_protocol(chat) as lp:
        lc = await LineClient.open(lp.port)
        try:
            await lc.ask("HELLO main:carol")
            a.send("JOIN #ops")
            await a.until("366")
            b.send("JOIN #ops")
            await b.until("366")
            await lc.ask("JOIN ops")
            a.send("MODE #ops", "MODE #ops +m-t", "MODE #ops +o bob")
            got = await a.sync()
            assert [m.raw for m in got if m.verb != "JOIN"] == [
                f":{SERVER} 324 alice #ops +t",
                f":{SERVER} 329 alice #ops {int(chat.rooms['ops'].record.created)}",
                f":alice!u@{SERVER} MODE #ops +m",
                f":alice!u@{SERVER} MODE #ops -t",
                f":alice!u@{SERVER} MODE #ops +o bob",
            ]
            assert await lc.until("EVENT mode") == "EVENT mode ops alice :+m"
            rec = chat.rooms["ops"].record
            assert rec.moderated and not rec.topic_locked and "bob" in rec.moderators
            assert (await lc.ask("SEND ops can I speak")).startswith("ERR SEND PERMISSION_DENIED")
            b.send("PRIVMSG #ops :ops may speak", "NAMES #ops")
            assert (await b.until("353")).params[-1] == "@alice @bob carol"
            await b.sync()
            assert await lc.until("MSG") == "MSG ops bob 1 ops may speak"
            b.send("MODE #ops +b carol!*@*", "MODE #ops +b")
            got = await b.sync()
            assert [m.raw for m in got] == [
                f":bob!u@{SERVER} MODE #ops +b carol!*@*",
                f":bob!u@{SERVER} KICK #ops carol :banned",
                f":{SERVER} 367 bob #ops carol!*@*",
                f":{SERVER} 368 bob #ops :End of channel ban list",
            ]
            assert (await lc.ask("JOIN ops")).startswith("ERR JOIN BANNED")
            await a.sync()
            a.send("KICK #ops bob :behave", "KICK #ops ghost", "MODE #ops +x", "MODE #ops +o")
            got = await a.sync()
            assert [m.raw for m in got] == [
                f":alice!u@{SERVER} KICK #ops bob :behave",
                f":{SERVER} 441 alice ghost #ops :They aren't on that channel",
                f":{SERVER} 472 alice x :is unknown mode char to me",
                f":{SERVER} 461 alice MODE :Not enough parameters",
            ]
            assert (await b.until("KICK")).params == ["#ops", "bob", "behave"]
            a.send("MODE alice", "MODE alice +i", "MODE alice", "MODE bob +i", "MODE ghost")
            got = await a.sync()
            assert [m.raw for m in got] == [
                f":{SERVER} 221 alice +",
                f":alice!u@{SERVER} MODE alice :+i",
                f":{SERVER} 221 alice +i",
                f":{SERVER} 502 alice :Can't change mode for other users",
                f":{SERVER} 401 alice ghost :No such nick/channel",
            ]
        finally:
            await lc.close()


# ------------------------------------------------------------------------------ IRCv3


@pytest.mark.asyncio
async def test_cap_negotiation_server_time_message_tags_echo(
    pair: tuple[IrcClient, IrcClient], server: IrcServer, chat: Chat
) -> None:
    a, b = pair
    c = await IrcClient.open(server.port)
    try:
        c.send("CAP LS 302", "NICK carol", "USER c 0 * :Carol")
        got = await c.sync("before-end")  # registration waits for CAP END
        assert [m.raw for m in got] == [
            f":{SERVER} CAP * LS :echo-message message-tags sasl=PLAIN server-time"
        ]
        assert "carol" not in chat.sessions
        c.send("CAP REQ :server-time bogus", "CAP REQ :server-time message-tags echo-message")
        got = await c.sync()
        assert [m.raw for m in got] == [
            f":{SERVER} CAP * NAK :server-time bogus",
            f":{SERVER} CAP * ACK :server-time message-tags echo-message",
        ]
        c.send("CAP END")
        assert (await c.read()).verb == "001"
        await c.until("422")
        c.send("CAP LIST", "CAP FROB")
        got = await c.sync()
        assert [m.raw for m in got] == [
            f":{SERVER} CAP carol LIST :echo-message message-tags server-time",
            f":{SERVER} 410 carol FROB :Invalid CAP command",
        ]
        c.send("JOIN #main")
        assert (await c.read()).tags.keys() == {"time"}  # events carry server-time too
        await c.until("366")
        c.send("PRIVMSG #main :tagged; with spaces")
        echo = await c.until("PRIVMSG")  # echo-message: the sender gets its own message
        [stored] = await chat.history("main")
        assert echo.tags == {"time": echo.tags["time"], "msgid": stored.id}
        assert echo.raw.startswith(f"@time={echo.tags['time']};msgid={stored.id} :carol!c@")
        assert echo.tags["time"].endswith("Z") and len(echo.tags["time"]) == 24
        assert echo.params == ["#main", "tagged; with spaces"]
        plain = await a.until("PRIVMSG")  # a client without capabilities gets no tags
        assert plain.raw == f":carol!c@{SERVER} PRIVMSG #main :tagged; with spaces"
        c.send("PRIVMSG bob :dm")
        assert (await c.until("PRIVMSG")).params == ["bob", "dm"]
        await c.sync()
        assert [m.params for m in await b.sync() if m.verb == "PRIVMSG"] == [
            ["#main", "tagged; with spaces"],
            ["bob", "dm"],
        ]
        c.send("CAP REQ -echo-message", "PRIVMSG #main :no echo now")
        got = await c.sync()
        assert [m.raw for m in got] == [f":{SERVER} CAP carol ACK :-echo-message"]
        assert (await a.until("PRIVMSG")).params[-1] == "no echo now"
        c.send("@+typing=active TAGMSG #main")  # client-only tags: accepted quietly
        assert await c.sync() == []
    finally:
        await c.close()


def _plain(authcid: str, password: str) -> str:
    return base64.b64encode(f"\0{authcid}\0{password}".encode()).decode()


@pytest.mark.asyncio
async def test_sasl_plain(server: IrcServer, chat: Chat) -> None:
    await chat.register_account("alice", "hunter22")
    c = await IrcClient.open(server.port)
    try:
        c.send("AUTHENTICATE PLAIN")
        assert (await c.read()).raw == (
            f":{SERVER} 904 * :SASL authentication failed (request the sasl capability)"
        )
        c.send("CAP LS 302", "NICK guest", "USER a 0 * :A")
        await c.until("CAP")
        c.send("CAP REQ sasl", "AUTHENTICATE SCRAM-SHA-256")
        got = await c.collect("904")
        assert [m.verb for m in got] == ["CAP", "908", "904"]
        assert got[1].params[1:] == ["PLAIN", "are available SASL mechanisms"]
        c.send("AUTHENTICATE PLAIN")
        assert (await c.read()).raw == "AUTHENTICATE +"
        c.send("AUTHENTICATE " + _plain("alice", "wrong"))
        assert (await c.read()).raw == f":{SERVER} 904 guest :SASL authentication failed"
        c.send("AUTHENTICATE PLAIN", "AUTHENTICATE *")
        got = await c.collect("906")
        assert got[-1].params[-1] == "SASL authentication aborted"
        c.send("AUTHENTICATE PLAIN")
        await c.until("AUTHENTICATE")
        c.send("AUTHENTICATE " + _plain("alice", "hunter22"))
        got = await c.collect("903")
        assert [m.raw for m in got] == [
            f":{SERVER} 900 guest guest!a@{SERVER} alice :You are now logged in as alice",
            f":{SERVER} 903 guest :SASL authentication successful",
        ]
        c.send("CAP END")
        welcome = await c.until("001")
        assert welcome.params[0] == "alice"  # an account's nickname is its name
        assert chat.sessions["alice"].account == "alice"
        await c.until("422")
        c.send("WHOIS alice")
        got = await c.collect("318")
        assert ("330", ["alice", "alice", "alice", "is logged in as"]) in [
            (m.verb, m.params) for m in got
        ]
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_pass_authenticates_accounts(server: IrcServer, chat: Chat) -> None:
    await chat.register_account("alice", "hunter22")
    token = chat.issue_token("alice")
    guest = await IrcClient.open(server.port)
    wrong = await IrcClient.open(server.port)
    good = await IrcClient.open(server.port)
    try:
        guest.send("NICK alice", "USER a 0 * :A")
        got = await guest.read()
        assert got.verb == "433" and "registered account" in got.params[-1]
        wrong.send("PASS nope", "NICK alice", "USER a 0 * :A")
        assert (await wrong.read()).raw == f":{SERVER} 464 alice :Password incorrect"
        assert (await wrong.read()).verb == "ERROR"
        assert await wrong.reader.read() == b""
        good.send(f"PASS {token}", "NICK alice", "USER a 0 * :A")
        assert (await good.read()).raw.startswith(f":{SERVER} 001 alice :Welcome")
        assert chat.sessions["alice"].account == "alice"
        guest.send("NICK someone")  # any other nick is free for guests
        assert (await guest.until("001")).params[0] == "someone"
    finally:
        for c in (guest, wrong, good):
            await c.close()


# ------------------------------------------------------------------------------ liveness


@pytest.mark.asyncio
async def test_ping_pong_and_idle_clients_are_dropped(chat: Chat) -> None:
    srv = IrcServer(chat, server_name=SERVER, ping_interval=0.2)
    await srv.start("127.0.0.1", 0)
    quiet = await IrcClient.connect(srv.port, "quiet")
    lively = await IrcClient.connect(srv.port, "lively")
    try:
        lively.send("PING :are you there", "PING")
        assert (await lively.read()).raw == f":{SERVER} PONG {SERVER} :are you there"
        assert (await lively.read()).verb == "409"
        for _ in range(3):  # answers every server PING and stays
            ping = await lively.until("PING")
            assert ping.params == [SERVER]
            lively.send(f"PONG :{ping.params[0]}")
        assert (await quiet.until("PING")).params == [SERVER]
        got = await quiet.until("ERROR")  # never answers: dropped
        assert got.params[-1].endswith("(Ping timeout: 0.2 seconds)")
        assert await quiet.reader.read() == b""
        assert "quiet" not in chat.sessions
        assert [m.verb for m in await lively.sync()] in ([], ["PING"])
        assert "lively" in chat.sessions
    finally:
        await quiet.close()
        await lively.close()
        await srv.close()


@pytest.mark.asyncio
async def test_tls(chat: Chat, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    srv = IrcServer(chat, server_name=SERVER)
    await srv.start("127.0.0.1", 0, ssl_context=server_ctx)
    try:
        a = await IrcClient.connect(srv.port, "alice", ssl_context=client_ctx)
        b = await IrcClient.connect(srv.port, "bob", ssl_context=client_ctx)
        try:
            for c in (a, b):
                c.send("JOIN #secure")
                await c.until("366")
            a.send("PRIVMSG #secure :over TLS")
            assert (await b.until("PRIVMSG")).params == ["#secure", "over TLS"]
        finally:
            await a.close()
            await b.close()
    finally:
        await srv.close()


# ------------------------------------------------------------------------------ real clients


async def _next(queue: asyncio.Queue[Any], kind: str, **match: Any) -> Any:
    """The next item of ``kind`` whose attributes (or tuple fields) match."""
    while True:
        item = await asyncio.wait_for(queue.get(), 5)
        if item[0] == kind and all(item[1].get(k) == v for k, v in match.items()):
            return item[1]


class _PydleBot:
    """A pydle client whose callbacks land in a queue."""

    @staticmethod
    def make(nick: str) -> Any:
        pydle = pytest.importorskip("pydle")

        class Bot(pydle.Client):  # type: ignore[misc,name-defined]
            RECONNECT_ON_ERROR = False

            def __init__(self) -> None:
                super().__init__(nick, realname="Pydle Bot")
                self.events: asyncio.Queue[Any] = asyncio.Queue()

            async def on_connect(self) -> None:
                await super().on_connect()
                self.events.put_nowait(("connect", {}))

            async def on_join(self, channel: str, user: str) -> None:
                self.events.put_nowait(("join", {"channel": channel, "user": user}))

            async def on_channel_message(self, target: str, by: str, message: str) -> None:
                self.events.put_nowait(("msg", {"target": target, "by": by, "text": message}))

            async def on_topic_change(self, channel: str, message: str, by: str) -> None:
                self.events.put_nowait(("topic", {"channel": channel, "topic": message}))

        return Bot()


@pytest.mark.asyncio
async def test_irc_library_and_pydle_clients_talk(server: IrcServer, chat: Chat) -> None:
    irc_client = pytest.importorskip("irc.client_aio")
    loop = asyncio.get_running_loop()
    reactor = irc_client.AioReactor(loop=loop)
    lib_events: asyncio.Queue[Any] = asyncio.Queue()

    def on_event(_conn: Any, ev: Any) -> None:
        nick = ev.source.nick if ev.source and "!" in ev.source else ev.source
        lib_events.put_nowait(
            (ev.type, {"nick": nick, "target": ev.target, "args": list(ev.arguments)})
        )

    reactor.add_global_handler("all_events", on_event)
    conn = reactor.server()
    bot = _PydleBot.make("carol")
    try:
        await conn.connect("127.0.0.1", server.port, "bob", username="bobby", ircname="Bob")
        await _next(lib_events, "welcome")
        conn.join("#interop")
        await _next(lib_events, "join", nick="bob")
        names = await _next(lib_events, "namreply")
        assert names["args"] == ["=", "#interop", "@bob"]

        await bot.connect("127.0.0.1", server.port, tls=False)
        await _next(bot.events, "connect")
        assert chat.sessions["carol"].front == "irc"
        await bot.join("#interop")
        await bot.join("#second")
        await _next(bot.events, "join", channel="#second", user="carol")
        await _next(lib_events, "join", nick="carol", target="#interop")

        await bot.message("#interop", "hello from pydle")
        got = await _next(lib_events, "pubmsg", nick="carol")
        assert got["args"] == ["hello from pydle"] and got["target"] == "#interop"
        conn.privmsg("#interop", "hello from irc")
        got = await _next(bot.events, "msg", by="bob")
        assert got == {"target": "#interop", "by": "bob", "text": "hello from irc"}

        conn.topic("#interop", "interop works")
        assert (await _next(bot.events, "topic"))["topic"] == "interop works"
        conn.names(["#interop"])
        names = await _next(lib_events, "namreply")
        assert names["args"] == ["=", "#interop", "@bob carol"]

        await bot.part("#interop", "bye for now")
        got = await _next(lib_events, "part", nick="carol")
        assert got["target"] == "#interop" and got["args"] == ["bye for now"]
        conn.join("#second")
        await _next(lib_events, "join", nick="bob", target="#second")
        await bot.quit("done")
        got = await _next(lib_events, "quit", nick="carol")
        assert got["args"] == ["Quit: done"]
        assert "carol" not in chat.sessions
    finally:
        if bot.connected:
            await bot.disconnect()
        if conn.is_connected():
            conn.disconnect("bye")
        for _ in range(3):  # let both libraries see their sockets close
            await asyncio.sleep(0)


async def _eventually(predicate: Any, what: str) -> None:
    """Poll ``predicate`` (the only way to watch an external program's files) for 5 s."""
    for _ in range(250):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _write_fifo(path: Path, text: str) -> bool:
    """Write to ii's FIFO if ii has it open (False otherwise)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return True


@pytest.mark.asyncio
async def test_ii_client(server: IrcServer, chat: Chat, tmp_path: Path) -> None:
    ii = shutil.which("ii")
    if ii is None:
        pytest.skip("Debian's ii is not installed")
    joined = asyncio.Event()

    def on_event(kind: str, obj: object) -> None:
        if isinstance(obj, Event) and obj.kind == "join" and obj.actor == "iiuser":
            joined.set()

    chat.subscribe(on_event)
    root = tmp_path / "irc"
    base = root / "127.0.0.1"
    async with line_protocol(chat) as lp:
        lc = await LineClient.open(lp.port)
        proc = await asyncio.create_subprocess_exec(
            ii, "-s", "127.0.0.1", "-p", str(server.port), "-n", "iiuser", "-i", str(root),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert await lc.ask("HELLO main:carol") == "OK HELLO carol main"
            await _eventually(lambda: "iiuser" in chat.sessions, "ii to register")
            await _eventually(lambda: _write_fifo(base / "in", "/j #main\n"), "ii's FIFO")
            await asyncio.wait_for(joined.wait(), 5)
            assert await lc.until("EVENT join") == "EVENT join main iiuser"
            chan = base / "#main"
            await _eventually(lambda: _write_fifo(chan / "in", "hello from ii\n"), "#main/in")
            assert await lc.until("MSG") == "MSG main iiuser 1 hello from ii"
            assert (await lc.ask("SEND main hello ii")).startswith("OK SEND main 2")
            out = chan / "out"
            await _eventually(
                lambda: out.exists() and "<carol> hello ii" in out.read_text(), "ii's out file"
            )
            proc.kill()
            await proc.wait()
            assert await lc.until("EVENT quit") == "EVENT quit main iiuser :connection closed"
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            await lc.close()
