"""The chat state on its own: rooms, sessions, messages, presence, permissions, limits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from isthmus.chat import (
    AuthError,
    Banned,
    Chat,
    ChatError,
    Event,
    InvalidName,
    LimitExceeded,
    Limits,
    Message,
    NameInUse,
    NoSuchClient,
    NoSuchRoom,
    NotInRoom,
    PermissionDenied,
    RateLimited,
    RoomExists,
    SQLiteStore,
    Status,
    dm_key,
)
from isthmus.chat._auth import TokenSigner, hash_password, verify_password
from isthmus.chat._ratelimit import TokenBucket


class JsonFormatter:
    echo = True

    def message(self, msg: Message) -> bytes:
        return json.dumps({"m": msg.to_json()}).encode()

    def event(self, ev: Event) -> bytes | None:
        return json.dumps({"e": ev.to_json()}).encode()


class NoEcho(JsonFormatter):
    echo = False


class Inbox:
    """A sink that records what it is given."""

    def __init__(self, fmt: JsonFormatter | None = None) -> None:
        self.fmt = fmt or JSON
        self.items: list[dict[str, dict[str, object]]] = []
        self.closed: str | None = None

    def push(self, data: bytes) -> None:
        self.items.append(json.loads(data))

    def close(self, reason: str) -> None:
        self.closed = reason

    def messages(self) -> list[dict[str, object]]:
        return [i["m"] for i in self.items if "m" in i]

    def events(self, kind: str | None = None) -> list[dict[str, object]]:
        return [
            i["e"] for i in self.items if "e" in i and (kind is None or i["e"]["event"] == kind)
        ]


JSON = JsonFormatter()


async def _client(chat: Chat, nick: str, fmt: JsonFormatter | None = None) -> tuple[object, Inbox]:
    box = Inbox(fmt)
    s = await chat.connect(nick, front="test", sink=box)
    return s, box


@pytest.mark.asyncio
async def test_the_default_room_exists_and_a_message_reaches_every_member(chat: Chat) -> None:
    assert [r.name for r in chat.list_rooms()] == ["main"]
    a, abox = await _client(chat, "alice")
    b, bbox = await _client(chat, "bob")
    chat.join(a, "main")
    chat.join(b, "#Main")  # IRC spelling and case reach the same room
    msg = await chat.send(a, "main", "hello")
    assert (msg.room, msg.seq, msg.sender, msg.text, msg.id) == (
        "main",
        1,
        "alice",
        "hello",
        "main/1",
    )
    assert [m["text"] for m in bbox.messages()] == ["hello"]
    assert [m["text"] for m in abox.messages()] == ["hello"]  # echo formatter
    assert [e["actor"] for e in abox.events("join")] == ["alice", "bob"]


@pytest.mark.asyncio
async def test_a_no_echo_formatter_does_not_get_its_own_message_and_encoding_is_shared(
    chat: Chat,
) -> None:
    calls = []

    class Counting(NoEcho):
        def message(self, msg: Message) -> bytes:
            calls.append(msg.seq)
            return super().message(msg)

    fmt = Counting()
    a, abox = await _client(chat, "alice", fmt)
    boxes = []
    for i in range(5):
        s, box = await _client(chat, f"u{i}", fmt)
        chat.join(s, "main")
        boxes.append(box)
    chat.join(a, "main")
    await chat.send(a, "main", "one")
    assert abox.messages() == []
    assert all(len(b.messages()) == 1 for b in boxes)
    assert calls == [1]  # encoded once for five receivers


@pytest.mark.asyncio
async def test_sequence_numbers_are_per_room_and_gapless(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    chat.join(a, "main")
    chat.create_room(a, "dev")
    futs = [chat.post(a, "main", f"m{i}") for i in range(10)]
    futs += [chat.post(a, "dev", f"d{i}") for i in range(3)]
    msgs = await asyncio.gather(*futs)
    assert [m.seq for m in msgs if m.room == "main"] == list(range(1, 11))
    assert [m.seq for m in msgs if m.room == "dev"] == [1, 2, 3]
    assert chat.room("main").last_seq == 10


@pytest.mark.asyncio
async def test_history_pages_backwards_and_forwards(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    chat.join(a, "main")
    for i in range(1, 26):
        chat.post(a, "main", f"m{i}")
    last = await chat.history("main", limit=10)
    assert [m.seq for m in last] == list(range(16, 26))
    older = await chat.history("main", before=last[0].seq, limit=10)
    assert [m.seq for m in older] == list(range(6, 16))
    newer = await chat.history("main", after=20, limit=100)
    assert [m.seq for m in newer] == [21, 22, 23, 24, 25]
    with pytest.raises(NoSuchRoom):
        await chat.history("nope")


@pytest.mark.asyncio
async def test_direct_messages_reach_only_the_pair_and_have_their_own_history(chat: Chat) -> None:
    a, abox = await _client(chat, "alice")
    b, bbox = await _client(chat, "bob")
    c, cbox = await _client(chat, "carol")
    m = await chat.send_dm(a, "BOB", "psst")
    assert (m.kind, m.target, m.room, m.seq) == ("dm", "bob", dm_key("alice", "bob"), 1)
    assert [x["text"] for x in bbox.messages()] == ["psst"]
    assert [x["text"] for x in abox.messages()] == ["psst"]
    assert cbox.messages() == []
    assert [x.text for x in await chat.dm_history(b, "alice")] == ["psst"]
    with pytest.raises(PermissionDenied):
        await chat.history(dm_key("alice", "bob"), session=c)
    with pytest.raises(NoSuchClient):
        chat.post_dm(a, "nobody", "hi")


@pytest.mark.asyncio
async def test_join_part_quit_are_presence_events(chat: Chat) -> None:
    a, abox = await _client(chat, "alice")
    b, _ = await _client(chat, "bob")
    chat.join(a, "main")
    chat.join(b, "main")
    assert chat.room("main").nicks() == ["alice", "bob"]
    chat.part(b, "main", "bye")
    assert abox.events("part")[0]["actor"] == "bob"
    assert chat.room("main").nicks() == ["alice"]
    chat.join(b, "main")
    chat.disconnect(b, "gone")
    assert abox.events("quit")[0]["text"] == "gone"
    assert "bob" not in chat.sessions
    zed = await chat.connect("zed", front="t")
    with pytest.raises(NotInRoom):
        chat.part(zed, "main")


@pytest.mark.asyncio
async def test_sending_requires_membership(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    with pytest.raises(NotInRoom):
        chat.post(a, "main", "hi")
    with pytest.raises(NoSuchRoom):
        chat.post(a, "nowhere", "hi")


@pytest.mark.asyncio
async def test_room_creation_and_ownership(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    b, bbox = await _client(chat, "bob")
    room = chat.create_room(a, "#Dev", "topic one")
    assert (room.name, room.record.owner, room.topic) == ("dev", "alice", "topic one")
    assert "alice" in room.nicks()
    with pytest.raises(RoomExists):
        chat.create_room(b, "dev")
    chat.join(b, "dev")
    with pytest.raises(PermissionDenied):
        chat.set_topic(b, "dev", "mine now")  # topic-locked by default
    await chat.set_topic(a, "dev", "topic two")
    assert chat.room("dev").topic == "topic two"
    assert bbox.events("topic")[0]["text"] == "topic two"
    with pytest.raises(PermissionDenied):
        chat.kick(b, "dev", "alice")


@pytest.mark.asyncio
async def test_moderators_kick_ban_and_moderate(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    b, bbox = await _client(chat, "bob")
    c, _ = await _client(chat, "carol")
    chat.create_room(a, "dev")
    chat.join(b, "dev")
    chat.join(c, "dev")
    await chat.set_mode(a, "dev", "+o", "bob")
    assert chat.room("dev").is_moderator("Bob")
    chat.kick(b, "dev", "carol", "spam")
    assert bbox.events("kick")[0]["target"] == "carol"
    assert "carol" not in chat.room("dev").nicks()
    await chat.set_mode(a, "dev", "+b", "carol")
    with pytest.raises(Banned):
        chat.join(c, "dev")
    await chat.set_mode(a, "dev", "-b", "carol")
    chat.join(c, "dev")
    await chat.set_mode(a, "dev", "+m")
    with pytest.raises(PermissionDenied):
        chat.post(c, "dev", "can I speak?")
    await chat.send(b, "dev", "moderators can")
    with pytest.raises(ChatError):
        chat.set_mode(a, "dev", "+z")


@pytest.mark.asyncio
async def test_ban_kicks_a_present_member(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    b, _ = await _client(chat, "bob")
    chat.create_room(a, "dev")
    chat.join(b, "dev")
    await chat.set_mode(a, "dev", "+b", "bob")
    assert "bob" not in chat.room("dev").nicks()
    assert "dev" not in b.rooms  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_nicknames_are_unique_case_insensitively(chat: Chat) -> None:
    await chat.connect("alice", front="t")
    with pytest.raises(NameInUse):
        await chat.connect("ALICE", front="t")
    for bad in ("", "has space", "a:b", "@x", "#room", "x" * 33, "1abc"):
        with pytest.raises(InvalidName):
            await chat.connect(bad, front="t")


@pytest.mark.asyncio
async def test_rename_moves_room_membership(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    b, bbox = await _client(chat, "bob")
    chat.join(a, "main")
    chat.join(b, "main")
    chat.rename(a, "alicia")  # type: ignore[arg-type]
    assert chat.room("main").nicks() == ["alicia", "bob"]
    assert [(e["actor"], e["target"]) for e in bbox.events("nick")] == [("alice", "alicia")]
    assert chat.session("ALICIA") is a
    with pytest.raises(NameInUse):
        chat.rename(a, "BOB")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_seed_limits_are_the_defaults_and_configurable() -> None:
    assert (Limits().max_clients, Limits().max_message_length) == (100, 255)
    async with Chat(limits=Limits(max_clients=2, max_message_length=5, rate=0)) as chat:
        a = await chat.connect("a", front="t")
        await chat.connect("b", front="t")
        with pytest.raises(LimitExceeded):
            await chat.connect("c", front="t")
        chat.join(a, "main")
        await chat.send(a, "main", "12345")
        with pytest.raises(LimitExceeded):
            chat.post(a, "main", "123456")
        with pytest.raises(LimitExceeded):
            chat.post(a, "main", "")
        with pytest.raises(InvalidName):
            chat.post(a, "main", "a\nb")


@pytest.mark.asyncio
async def test_token_bucket_rate_limits_a_flood() -> None:
    async with Chat(limits=Limits(rate=1, burst=3)) as chat:
        a = await chat.connect("a", front="t")
        chat.join(a, "main")
        for i in range(3):
            chat.post(a, "main", f"m{i}")
        with pytest.raises(RateLimited):
            chat.post(a, "main", "one too many")
        await chat.flush()
        assert chat.room("main").last_seq == 3


def test_token_bucket_refills_with_time() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 2, clock=lambda: now[0])
    assert bucket.take() and bucket.take()
    assert not bucket.take()
    now[0] += 0.5
    assert bucket.take()
    assert not bucket.take()
    now[0] += 100
    assert bucket.tokens == 2.0


@pytest.mark.asyncio
async def test_pause_withholds_and_resume_replays_what_was_missed(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    b, bbox = await _client(chat, "bob")
    chat.join(a, "main")
    chat.join(b, "main")
    await chat.send(a, "main", "before")
    chat.pause(b)  # type: ignore[arg-type]
    assert b.status is Status.SUSPENDED  # type: ignore[attr-defined]
    await chat.send(a, "main", "while paused 1")
    await chat.send(a, "main", "while paused 2")
    assert [m["text"] for m in bbox.messages()] == ["before"]
    missed = await chat.resume(b)  # type: ignore[arg-type]
    assert [m.text for m in missed] == ["while paused 1", "while paused 2"]
    await chat.send(a, "main", "after")
    assert [m["text"] for m in bbox.messages()] == [
        "before",
        "while paused 1",
        "while paused 2",
        "after",
    ]


@pytest.mark.asyncio
async def test_client_statuses_follow_the_seed_lifecycle(chat: Chat) -> None:
    a, _ = await _client(chat, "alice")
    assert a.status is Status.CONNECTED  # type: ignore[attr-defined]
    chat.join(a, "main")
    await chat.send(a, "main", "hi")
    assert a.status is Status.ACTIVE  # type: ignore[attr-defined]
    chat.disconnect(a)  # type: ignore[arg-type]
    assert a.status is Status.CLOSED  # type: ignore[attr-defined]
    assert chat.status()["statuses"] == {}


@pytest.mark.asyncio
async def test_accounts_reserve_their_nick_and_tokens_authenticate(chat: Chat) -> None:
    token = await chat.register_account("alice", "s3cret!")
    assert chat.verify_token(token) == "alice"
    with pytest.raises(NameInUse):
        await chat.register_account("ALICE", "other")
    with pytest.raises(NameInUse):
        await chat.connect("alice", front="t")  # a guest may not take it
    assert await chat.authenticate("alice", "s3cret!") == "alice"
    assert await chat.authenticate("alice", token) == "alice"
    with pytest.raises(AuthError):
        await chat.authenticate("alice", "wrong")
    with pytest.raises(AuthError):
        await chat.authenticate("nobody", "x")
    s = await chat.connect("alice", front="t", account="alice")
    # The same account connecting again displaces its older session (a reconnect).
    box = Inbox()
    old_sink = Inbox()
    s.sink = old_sink
    s2 = await chat.connect("Alice", front="t", account="alice", sink=box)
    assert chat.session("alice") is s2 and s.status is Status.CLOSED
    assert old_sink.closed == "logged in elsewhere"
    with pytest.raises(AuthError):
        await chat.connect("bob", front="t", account="alice")


@pytest.mark.asyncio
async def test_require_account_refuses_guests() -> None:
    async with Chat(require_account=True) as chat:
        with pytest.raises(AuthError):
            await chat.connect("guest", front="t")


def test_password_hashes_and_tokens() -> None:
    h = hash_password("pw")
    assert h.startswith("scrypt$") and "pw" not in h
    assert verify_password("pw", h) and not verify_password("pW", h)
    assert not verify_password("pw", "garbage")
    signer = TokenSigner(b"k" * 32, ttl=10)
    tok = signer.issue("bob", now=1000)
    assert signer.verify(tok, now=1005) == "bob"
    with pytest.raises(AuthError):
        signer.verify(tok, now=1011)  # expired
    with pytest.raises(AuthError):
        TokenSigner(b"x" * 32).verify(tok, now=1005)  # other key
    name, exp, sig = tok.split(".")
    with pytest.raises(AuthError):
        signer.verify(f"{name}.{int(exp) + 100}.{sig}", now=1005)  # tampered expiry
    with pytest.raises(AuthError):
        signer.verify("not-a-token")


@pytest.mark.asyncio
async def test_the_token_secret_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    async with Chat(store=SQLiteStore(db)) as chat:
        token = await chat.register_account("alice", "pw12")
    async with Chat(store=SQLiteStore(db)) as chat:
        assert chat.verify_token(token) == "alice"


@pytest.mark.asyncio
async def test_rooms_topics_modes_and_history_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    async with Chat(store=SQLiteStore(db), limits=Limits(rate=0)) as chat:
        a = await chat.connect("alice", front="t")
        chat.create_room(a, "dev", "the topic")
        await chat.set_mode(a, "dev", "+o", "bob")
        for i in range(5):
            chat.post(a, "dev", f"m{i}")
    async with Chat(store=SQLiteStore(db), limits=Limits(rate=0)) as chat:
        room = chat.room("dev")
        assert (room.topic, room.record.owner, room.is_moderator("bob")) == (
            "the topic",
            "alice",
            True,
        )
        assert room.last_seq == 5
        a = await chat.connect("alice", front="t")
        chat.join(a, "dev")
        assert (await chat.send(a, "dev", "next")).seq == 6
        assert [m.text for m in await chat.history("dev")] == [f"m{i}" for i in range(5)] + ["next"]


@pytest.mark.asyncio
async def test_listeners_see_messages_and_events(chat: Chat) -> None:
    seen: list[tuple[str, object]] = []
    chat.subscribe(lambda kind, obj: seen.append((kind, obj)))
    a, _ = await _client(chat, "alice")
    chat.join(a, "main")
    await chat.send(a, "main", "x")
    assert [k for k, _ in seen] == ["event", "message"]
    assert chat.status()["messages"] == 1 and chat.status()["deliveries"] == 1


@pytest.mark.asyncio
async def test_a_closed_chat_refuses_work_and_closes_sinks() -> None:
    chat = Chat()
    await chat.start()
    s, box = await _client(chat, "alice")
    chat.join(s, "main")
    await chat.close()
    assert box.closed == "server shutting down"
    with pytest.raises(ChatError):
        chat.post(s, "main", "late")  # type: ignore[arg-type]


class _Bytes:
    def __init__(self, fmt: object) -> None:
        self.fmt = fmt
        self.pushes: list[bytes] = []

    def push(self, data: bytes) -> None:
        self.pushes.append(data)

    def close(self, reason: str) -> None:
        pass


@pytest.mark.asyncio
async def test_a_burst_to_one_room_goes_out_in_one_push_per_member(chat: Chat) -> None:
    from isthmus.chat import LineFormatter

    class NoEchoLines(LineFormatter):
        echo = False

    line = _Bytes(LineFormatter())
    quiet = _Bytes(NoEchoLines())
    frames = Inbox()  # not joinable: one push per message
    a = await chat.connect("alice", front="t", sink=line)  # type: ignore[arg-type]
    b = await chat.connect("bob", front="t", sink=quiet)  # type: ignore[arg-type]
    c = await chat.connect("carol", front="t", sink=frames)
    for s in (a, b, c):
        chat.join(s, "main")
    line.pushes.clear()
    quiet.pushes.clear()
    futs = [chat.post(a if i % 2 else b, "main", f"m{i}") for i in range(6)]
    await asyncio.gather(*futs)
    expected = b"".join(
        f"MSG main {'alice' if i % 2 else 'bob'} {i + 1} m{i}\n".encode() for i in range(6)
    )
    assert line.pushes == [expected]  # one push with every message, in order
    # bob does not get his own messages back, and still gets alice's in order.
    assert b"".join(quiet.pushes) == b"".join(
        f"MSG main alice {i + 1} m{i}\n".encode() for i in range(1, 6, 2)
    )
    assert [m["seq"] for m in frames.messages()] == [1, 2, 3, 4, 5, 6]
    assert chat.counters["deliveries"] == 6 + 3 + 6


@pytest.mark.asyncio
async def test_sqlite_checkpoints_run_off_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = SQLiteStore(db, checkpoint_every=50)
    async with Chat(store=store, limits=Limits(rate=0)) as chat:
        a = await chat.connect("alice", front="t")
        chat.join(a, "main")
        before = db.stat().st_size  # the automatic checkpoint is off: data stays in the WAL
        checkpoints = 0
        for burst in range(6):
            await asyncio.gather(
                *(chat.post(a, "main", f"{burst}.{i:04} " + "x" * 200) for i in range(100))
            )
            if store._checkpoint is not None:  # running in a worker thread, not on the loop
                checkpoints += 1
                await store._checkpoint
        assert checkpoints >= 1
        assert db.stat().st_size > before + 600 * 200 // 2  # the messages reached the database
    async with Chat(store=SQLiteStore(db)) as chat:
        assert chat.room("main").last_seq == 600
