"""The Connection state machine: handshake and negotiation, what this side may not send,
stream scheduling and priorities, and credits with latest-wins dropping."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.wire import (
    HANDSHAKE_MAX_FRAME_SIZE,
    Ack,
    AudioChunk,
    Blob,
    Connection,
    ConnectionClosed,
    Error,
    FramesDropped,
    Goodbye,
    Hello,
    LocalProtocolError,
    Ping,
    Pointer,
    Pong,
    Role,
    State,
    StatePatch,
    StreamSpec,
    StreamStats,
    Tensor,
    VersionMismatch,
    VideoPacket,
    Welcome,
    default_streams,
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def streams_with(**changes: dict[str, Any]) -> list[StreamSpec]:
    """The default table with some streams changed: ``streams_with(data={"credits": 2})``."""
    return [
        msgspec.structs.replace(s, **changes[s.name]) if s.name in changes else s
        for s in default_streams()
    ]


# --------------------------------------------------------------------------------------------
# handshake
# --------------------------------------------------------------------------------------------


def test_quick_start(raw: Any) -> None:
    """The example at the top of docs/libraries/wire.md."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    assert client.state is server.state is State.HANDSHAKE

    def pump(buffers: list[Any], dst: Connection) -> None:
        for buf in buffers:
            dst.receive_data(bytes(memoryview(buf)))

    pump(client.send(Hello(codecs=["h264"])), server)
    hello = server.next_event()
    assert isinstance(hello, Hello) and hello.codecs == ["h264"]
    pump(server.accept(hello), client)
    welcome = client.next_event()
    assert isinstance(welcome, Welcome) and welcome.codecs == ["h264"]
    assert client.state is server.state is State.OPEN
    assert client.encoding == server.encoding == "msgpack"
    pump(
        server.send(VideoPacket(codec="h264", width=1920, height=1080, keyframe=True, data=b"...")),
        client,
    )
    pump(client.send(Pointer(kind="down", x=10.0, y=20.0, buttons=1)), server)
    video = client.next_event()
    assert (video.width, video.height, video.keyframe, bytes(memoryview(video.data))) == (
        1920,
        1080,
        True,
        b"...",
    )
    assert server.next_event() == Pointer(kind="down", x=10.0, y=20.0, buttons=1)


enc = st.sampled_from(["msgpack", "json", "cbor"])
codec = st.sampled_from(["h264", "hevc", "av1", "vp9", "jpeg", "opus"])
size = st.integers(HANDSHAKE_MAX_FRAME_SIZE, 2**32 - 1)


@SETTINGS
@given(
    client_encodings=st.lists(enc, max_size=3),
    server_encodings=st.lists(enc, max_size=3),
    client_codecs=st.lists(codec, max_size=4, unique=True),
    server_codecs=st.lists(codec, max_size=4, unique=True),
    client_limits=st.tuples(size, size, st.integers(-2, 10)),
    server_limits=st.tuples(size, size, st.integers(-2, 10)),
    token=st.none() | st.text(max_size=10),
)
def test_negotiation(
    connect: Any,
    client_encodings: list[str],
    server_encodings: list[str],
    client_codecs: list[str],
    server_codecs: list[str],
    client_limits: tuple[int, int, int],
    server_limits: tuple[int, int, int],
    token: str | None,
) -> None:
    hello = Hello(
        encodings=client_encodings,
        codecs=client_codecs,
        max_frame_size=client_limits[0],
        max_message_size=client_limits[1],
        credits=client_limits[2],
        token=token,
    )
    pair = connect(
        hello,
        encodings=server_encodings,
        codecs=server_codecs,
        max_frame_size=server_limits[0],
        max_message_size=server_limits[1],
        credits=server_limits[2],
    )
    encoding = next((e for e in client_encodings if e in server_encodings), "json")
    credits = max(1, min(client_limits[2], server_limits[2]))
    welcome = pair.welcome
    assert welcome.encoding == encoding
    assert pair.client.encoding == pair.server.encoding == encoding
    assert welcome.codecs == [c for c in client_codecs if not server_codecs or c in server_codecs]
    assert welcome.max_frame_size == min(client_limits[0], server_limits[0])
    assert welcome.max_message_size == min(client_limits[1], server_limits[1])
    assert welcome.credits == credits
    video = next(s for s in welcome.streams if s.id == 2)
    assert video.credits == min(4, credits)
    assert all(s.chunk_size <= welcome.max_frame_size for s in welcome.streams)
    assert pair.server.peer_hello.token == token
    assert pair.client.state is pair.server.state is State.OPEN
    assert pair.client.welcome == pair.server.welcome == welcome
    # later control messages use the chosen encoding, both ways
    pair.client.queue(Ping(nonce=1))
    assert pair.to_server() == [Ping(nonce=1)]
    assert bool(pair.server.last_header.flags & 1) == (encoding == "msgpack")
    pair.server.queue(Pong(nonce=1))
    assert pair.to_client() == [Pong(nonce=1)]
    assert bool(pair.client.last_header.flags & 1) == (encoding == "msgpack")


def test_accept_options_and_stream_table(connect: Any) -> None:
    table = [
        *default_streams(),
        StreamSpec(id=9, name="thumbs", kind="video", credits=8, priority=5, chunk_size=2**30),
    ]
    pair = connect(
        Hello(credits=3, max_frame_size=1 << 20),
        accept={"session": "s-1", "name": "viewer"},
        streams=table,
    )
    assert (pair.welcome.session, pair.welcome.name) == ("s-1", "viewer")
    assert pair.welcome.role == "server" and pair.welcome.protocol == 1
    thumbs = next(s for s in pair.welcome.streams if s.id == 9)
    # credits capped by the negotiated credits, chunks by the negotiated frame size
    assert (thumbs.credits, thumbs.chunk_size) == (3, 1 << 20)
    assert [s.id for s in pair.welcome.streams] == [0, 1, 2, 3, 4, 9]
    # both sides may now use stream 9
    pair.client.queue(VideoPacket(codec="jpeg", keyframe=True, data=b"t"), stream=9)
    (got,) = pair.to_server()
    assert pair.server.last_header.stream == 9 and bytes(memoryview(got.data)) == b"t"


def test_accept_streams_argument_overrides_the_table(connect: Any) -> None:
    table = [*default_streams(), StreamSpec(id=12, name="logs", kind="state")]
    pair = connect(accept={"streams": table})
    assert [s.id for s in pair.welcome.streams] == [0, 1, 2, 3, 4, 12]
    pair.server.queue(StatePatch(path="/log", value="line"), stream=12)
    assert pair.to_client() == [StatePatch(path="/log", value="line")]


def test_client_connection_limits_take_part_in_the_handshake(connect: Any) -> None:
    """The Connection's own settings are this side's limits on a client too, not only the
    fields of the Hello it sends."""
    pair = connect(
        Hello(),
        client={"max_frame_size": 100_000, "max_message_size": 200_000, "credits": 1},
    )
    assert pair.welcome.max_frame_size == 100_000
    assert pair.welcome.max_message_size == 200_000
    assert pair.welcome.credits == 1
    assert next(s.credits for s in pair.welcome.streams if s.id == 2) == 1


def test_client_encodings_and_codecs_take_part_in_the_handshake(connect: Any) -> None:
    pair = connect(
        Hello(codecs=["av1", "h264"]), client={"encodings": ["json"], "codecs": ["h264"]}
    )
    assert pair.welcome.encoding == "json"
    assert pair.welcome.codecs == ["h264"]
    client = Connection(Role.CLIENT, encodings=["json"])
    with pytest.raises(LocalProtocolError):
        client.send(Hello(encodings=["msgpack"]))  # nothing this side can speak


def test_reject(raw: Any) -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(raw.join(client.send(Hello(token="wrong"))))
    hello = server.next_event()
    assert hello.token == "wrong"
    client.receive_data(raw.join(server.reject("bad token")))
    assert list(client.events()) == [
        Error(code="rejected", message="bad token"),
        Goodbye(code=1008, reason="bad token"),
    ]
    assert server.state is State.CLOSING
    assert client.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        server.accept(hello)
    with pytest.raises(LocalProtocolError):
        server.send(Ping())
    # the client says goodbye back and both are closed
    server.receive_data(raw.join(client.close()))
    assert list(server.events()) == [Goodbye()]
    assert client.state is server.state is State.CLOSED


def test_reject_with_a_code(raw: Any) -> None:
    server = Connection(Role.SERVER)
    server.receive_data(raw.control(Hello()))
    server.next_event()
    client = Connection(Role.CLIENT)
    client.send(Hello())
    client.receive_data(raw.join(server.reject("full", code="busy")))
    assert next(client.events()) == Error(code="busy", message="full")


def test_version_mismatch(raw: Any) -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(raw.join(client.send(Hello(protocol=2))))
    event = server.next_event()
    assert isinstance(event, VersionMismatch)
    assert (event.offered, event.supported) == (2, (1,))
    assert "2" in event.reason and "1" in event.reason
    assert server.peer_hello == Hello(protocol=2)
    assert server.has_data_to_send
    assert server.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        server.accept()
    client.receive_data(raw.join(server.data_to_send()))
    error, goodbye = client.events()
    assert error == Error(code="version_mismatch", message=event.reason)
    assert isinstance(goodbye, Goodbye) and goodbye.reason == event.reason
    assert goodbye.code == 1002
    assert client.state is State.CLOSING


def test_server_speaking_several_versions_accepts_them(connect: Any) -> None:
    pair = connect(Hello(protocol=2), versions=(1, 2))
    assert pair.server.peer_hello.protocol == 2
    assert pair.client.state is State.OPEN


def test_accept_uses_the_received_hello_by_default(raw: Any) -> None:
    server = Connection(Role.SERVER)
    server.receive_data(raw.control(Hello(encodings=["json"])))
    server.next_event()
    server.accept()
    assert server.welcome.encoding == "json" and server.state is State.OPEN


def test_early_messages_are_allowed_during_the_handshake(raw: Any) -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(raw.join(client.send(Hello())))
    server.next_event()
    # ping / pong / error / goodbye may travel before the welcome
    client.receive_data(raw.join(server.send(Ping(nonce=5))))
    assert client.next_event() == Ping(nonce=5)
    server.receive_data(raw.join(client.send(Pong(nonce=5))))
    assert server.next_event() == Pong(nonce=5)
    client.receive_data(raw.join(server.accept()))
    assert isinstance(client.next_event(), Welcome)


# --------------------------------------------------------------------------------------------
# what this side may not send
# --------------------------------------------------------------------------------------------


def test_nothing_but_early_messages_before_the_handshake() -> None:
    client = Connection(Role.CLIENT)
    for first in (Ping(), Pong(), Error(code="x")):
        with pytest.raises(LocalProtocolError):
            client.send(first)  # a client's first message is its hello
    with pytest.raises(LocalProtocolError):
        client.send(Pointer(x=1, y=1))
    with pytest.raises(LocalProtocolError):
        client.send(VideoPacket(data=b""))
    client.send(Hello())
    with pytest.raises(LocalProtocolError):
        client.send(StatePatch(path="/x"))
    with pytest.raises(LocalProtocolError):
        client.send(Blob(data=b""))
    assert client.send(Ping())  # allowed
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.send(Tensor.from_array(np.zeros(2)))


def test_hello_rules() -> None:
    client = Connection(Role.CLIENT)
    client.send(Hello())
    with pytest.raises(LocalProtocolError):
        client.send(Hello())
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.send(Hello())
    with pytest.raises(LocalProtocolError):
        server.send(Welcome())
    with pytest.raises(LocalProtocolError):
        client.accept(Hello())
    with pytest.raises(LocalProtocolError):
        server.accept()  # no hello received


def test_accept_twice(connect: Any) -> None:
    pair = connect()
    with pytest.raises(LocalProtocolError):
        pair.server.accept(pair.hello)


def test_nothing_after_goodbye(connect: Any) -> None:
    pair = connect()
    out = pair.client.close("leaving", code=1001)
    assert pair.deliver_to_server(out) == [Goodbye(code=1001, reason="leaving")]
    assert pair.client.state is State.CLOSING
    for message in (Ping(), Pointer(x=0, y=0), VideoPacket(data=b""), Goodbye()):
        with pytest.raises(LocalProtocolError):
            pair.client.send(message)
    assert pair.client.close() == []  # idempotent
    # the server may still send until it says goodbye too
    pair.server.queue(Ping(nonce=2))
    pair.server.queue(Goodbye())
    assert pair.to_client() == [Ping(nonce=2), Goodbye()]
    assert pair.client.state is pair.server.state is State.CLOSED
    pair.client.receive_data(b"")
    assert list(pair.client.events()) == [ConnectionClosed()]
    assert pair.client.state is State.CLOSED


def test_goodbye_never_overtakes_what_was_queued_before_it(connect: Any, raw: Any) -> None:
    pair = connect()
    s = pair.server
    s.queue(Blob(data=bytes(600_000)))  # three chunks on the lowest-priority stream
    s.queue(VideoPacket(codec="h264", keyframe=True, data=bytes(40_000)))
    first = s.data_to_send(max_bytes=1)
    assert s.has_data_to_send
    rest = s.close("done")
    assert s.goodbye_sent and s.state is State.CLOSING
    frames = raw.frames(raw.join(first) + raw.join(rest))
    assert [h.type for h, _ in frames][-1] == 3  # the goodbye is last
    assert sum(1 for h, _ in frames if h.type == 67) == 3
    assert not s.has_data_to_send
    events = pair.deliver_to_client(first + rest)
    assert [type(e).__name__ for e in events] == ["VideoPacket", "Blob", "Goodbye"]
    assert pair.client.goodbye_received and not pair.client.goodbye_sent
    assert pair.client.state is State.CLOSING


def test_goodbye_with_max_bytes_comes_after_the_rest(connect: Any, raw: Any) -> None:
    pair = connect()
    s = pair.server
    s.queue(Blob(data=bytes(300_000)))
    s.queue(Goodbye(reason="bye"))
    types = []
    while s.has_data_to_send:
        types += [h.type for h, _ in raw.frames(raw.join(s.data_to_send(max_bytes=1)))]
    assert types == [67, 67, 3]
    with pytest.raises(LocalProtocolError):
        s.queue(Ping())


def test_end_of_stream_closes(connect: Any) -> None:
    pair = connect()
    pair.client.queue(Ping(nonce=3))
    assert pair.to_server() == [Ping(nonce=3)]
    header = pair.server.last_header
    pair.server.receive_data(b"")
    assert pair.server.next_event() == ConnectionClosed()
    assert pair.server.state is State.CLOSED
    assert pair.server.last_header == header  # still the last message's
    with pytest.raises(LocalProtocolError):
        pair.server.send(Ping())


def test_packet_larger_than_the_peers_message_size(connect: Any) -> None:
    pair = connect(Hello(max_message_size=100_000))
    assert pair.welcome.max_message_size == 100_000
    with pytest.raises(LocalProtocolError, match="100000"):
        pair.server.send(Blob(data=bytes(100_000)))
    with pytest.raises(LocalProtocolError):
        pair.server.send(StatePatch(path="/", value="x" * 100_000))
    stats = pair.server.stream_stats(4)
    assert (stats.sent, stats.queued) == (0, 0)
    # exactly the limit goes (the blob body adds 4 + len(mime) bytes)
    pair.server.queue(Blob(data=bytes(100_000 - 4 - len("application/octet-stream"))))
    (blob,) = pair.to_client()
    assert blob.data.nbytes == 100_000 - 28


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (VideoPacket(codec="h264", keyframe=True, data=bytes(200_000)), LocalProtocolError),
        (VideoPacket(codec="mpeg2", keyframe=True, data=b"x"), ValueError),
    ],
    ids=["too-large", "unknown-codec"],
)
def test_a_packet_held_for_credits_is_checked_when_queued(
    connect: Any, bad: VideoPacket, error: type[Exception]
) -> None:
    """A packet that would wait for credit is refused by queue() itself, so that an ack
    releasing it later inside receive_data() cannot fail."""
    pair = connect(Hello(max_message_size=100_000, credits=1))
    pair.server.queue(VideoPacket(codec="h264", keyframe=True, data=b"k"))  # fills the window
    with pytest.raises(error):
        pair.server.queue(bad)
    assert pair.server.stream_stats(2) == StreamStats(1, 0, 1, False, 1)
    assert len(pair.to_client()) == 1
    pair.client.queue(Ack(stream=2, seq=0))
    pair.client.queue(Ping(nonce=9))
    assert pair.to_server() == [Ack(stream=2, seq=0), Ping(nonce=9)]
    assert pair.to_client() == []


def test_ack_rules(connect: Any) -> None:
    pair = connect()
    with pytest.raises(LocalProtocolError):
        pair.client.ack(2)  # nothing received yet
    with pytest.raises(LocalProtocolError):
        pair.client.send(Ack(stream=2, seq=0))
    pair.server.queue(VideoPacket(codec="jpeg", keyframe=True, data=b"0"))
    pair.server.queue(VideoPacket(codec="jpeg", keyframe=True, data=b"1"))
    assert len(pair.to_client()) == 2
    with pytest.raises(LocalProtocolError):
        pair.client.send(Ack(stream=2, seq=2))  # not received
    assert pair.deliver_to_server(pair.client.send(Ack(stream=2, seq=0))) == [Ack(stream=2, seq=0)]
    assert pair.deliver_to_server(pair.client.ack()) == [Ack(stream=2, seq=1)]
    assert pair.server.stream_stats(2).in_flight == 0


def test_stream_and_kind_rules(connect: Any) -> None:
    pair = connect()
    with pytest.raises(LocalProtocolError):
        pair.server.send(Ping(), stream=42)
    with pytest.raises(LocalProtocolError):
        pair.server.send(Ping(), stream=2)  # control message on the video stream
    with pytest.raises(LocalProtocolError):
        pair.server.send(Blob(data=b""), stream=0)  # packet on the control stream
    with pytest.raises(TypeError):
        pair.server.send("hello")
    with pytest.raises(TypeError):
        pair.server.send({"type": "ping"})
    # state patches may travel on the control stream, control messages on the state stream
    pair.server.queue(StatePatch(path="/a"), stream=0)
    pair.server.queue(Ping(), stream=1)
    assert pair.to_client() == [StatePatch(path="/a"), Ping()]


# --------------------------------------------------------------------------------------------
# scheduling
# --------------------------------------------------------------------------------------------


def test_send_is_queue_then_data_to_send(connect: Any, raw: Any) -> None:
    a, b = connect(), connect()
    out = a.server.send(Ping(nonce=4))
    b.server.queue(Ping(nonce=4))
    assert not a.server.has_data_to_send and b.server.has_data_to_send
    assert raw.join(out) == raw.join(b.server.data_to_send())
    assert not b.server.has_data_to_send and b.server.data_to_send() == []


def test_priority_order(connect: Any, raw: Any) -> None:
    """control < state < audio < video < data, whatever the order of queueing."""
    pair = connect()
    s = pair.server
    s.queue(Blob(data=b"d"))
    s.queue(VideoPacket(codec="h264", keyframe=True, data=b"v"))
    s.queue(AudioChunk(data=b"a"))
    s.queue(StatePatch(path="/s"))
    s.queue(Ping())
    s.queue(Blob(data=b"d2"))
    s.queue(Pong())
    frames = raw.frames(raw.join(s.data_to_send()))
    assert [(h.type, h.stream) for h, _ in frames] == [
        (5, 0),
        (6, 0),
        (13, 1),
        (65, 3),
        (64, 2),
        (67, 4),
        (67, 4),
    ]


def test_custom_priorities_are_honoured_by_both_sides(connect: Any, raw: Any) -> None:
    pair = connect(streams=streams_with(data={"priority": 0}, control={"priority": 9}))
    for side in (pair.server, pair.client):
        side.queue(Ping())
        side.queue(Blob(data=b"first"))
        frames = raw.frames(raw.join(side.data_to_send()))
        assert [h.type for h, _ in frames] == [67, 5]


def test_control_overtakes_a_half_sent_keyframe(connect: Any, raw: Any) -> None:
    pair = connect()
    s = pair.server
    rng = np.random.default_rng(1)
    keyframe = rng.bytes(400_000)
    s.queue(VideoPacket(codec="h264", keyframe=True, config=b"avcC", data=keyframe))
    first = s.data_to_send(max_bytes=200_000)
    assert s.has_data_to_send
    s.queue(Pointer(kind="move", x=1, y=2))
    s.queue(StatePatch(path="/zoom", value=2.0))
    rest = s.data_to_send()
    frames = raw.frames(raw.join(first) + raw.join(rest))
    n_first = len(raw.frames(raw.join(first)))
    types = [h.type for h, _ in frames]
    # the control and state messages come right after the frames already handed out
    assert types[n_first : n_first + 2] == [10, 13]
    assert set(types[:n_first]) == {64} and set(types[n_first + 2 :]) == {64}
    video = [h for h, _ in frames if h.type == 64]
    assert all(h.length <= 16 * 1024 for h in video)  # the video stream's chunk size
    assert video[0].flags & 2 and not video[0].flags & 4  # MORE
    assert all(h.flags & 4 for h in video[1:])  # CONTINUATION
    assert not video[-1].flags & 2
    assert all(h.flags & 8 for h in video)  # KEYFRAME on every chunk
    assert {(h.seq, h.total, h.timestamp_ns) for h in video} == {
        (0, video[0].total, video[0].timestamp_ns)
    }
    assert sum(h.length for h in video) == video[0].total == 24 + 4 + 400_000
    events = pair.deliver_to_client(first + rest)
    assert [type(e).__name__ for e in events] == ["Pointer", "StatePatch", "VideoPacket"]
    packet = events[2]
    assert bytes(memoryview(packet.data)) == keyframe
    assert bytes(memoryview(packet.config)) == b"avcC" and packet.keyframe


def test_max_bytes_stops_after_the_frame_that_reaches_it(connect: Any, raw: Any) -> None:
    pair = connect()
    s = pair.server
    s.queue(Blob(data=bytes(600_000)))  # 256 KiB chunks on the data stream
    sizes = []
    while s.has_data_to_send:
        out = s.data_to_send(max_bytes=1)
        sizes.append([h.length for h, _ in raw.frames(raw.join(out))])
    assert sizes == [[256 * 1024], [256 * 1024], [600_028 - 512 * 1024]]
    s.queue(Ping())
    s.queue(Ping())
    s.queue(Ping())
    frame = len(raw.control(Ping(), encoding="msgpack"))
    assert len(raw.frames(raw.join(s.data_to_send(max_bytes=frame + 1)))) == 2


def test_timestamps_come_from_the_clock_at_queue_time(raw: Any) -> None:
    ticks = iter(range(100, 200))
    client = Connection(Role.CLIENT, clock=lambda: next(ticks))
    out = raw.join(client.send(Hello()))
    client.queue(Ping())
    (header, _), (ping, _) = raw.frames(out + raw.join(client.data_to_send()))
    assert (header.timestamp_ns, ping.timestamp_ns) == (100, 101)


def test_sequence_numbers_per_stream(connect: Any, raw: Any) -> None:
    pair = connect()
    s = pair.server
    for _ in range(3):
        s.queue(Ping())
        s.queue(Blob(data=b""))
    s.queue(StatePatch(path="/"))
    frames = raw.frames(raw.join(s.data_to_send()))
    assert [(h.stream, h.seq) for h, _ in frames] == [
        (0, 1),  # the welcome was seq 0
        (0, 2),
        (0, 3),
        (1, 0),
        (4, 0),
        (4, 1),
        (4, 2),
    ]


def test_chunk_size_is_capped_by_the_negotiated_frame_size(connect: Any, raw: Any) -> None:
    pair = connect(Hello(max_frame_size=70_000))
    data_stream = next(s for s in pair.welcome.streams if s.id == 4)
    assert data_stream.chunk_size == 70_000
    pair.server.queue(Blob(data=bytes(150_000)))
    out = pair.server.data_to_send()
    assert [h.length for h, _ in raw.frames(raw.join(out))] == [70_000, 70_000, 10_028]
    # and a stream without a chunk size sends frames up to the negotiated maximum
    pair.server.queue(Ping(), stream=0)
    pair.server.queue(StatePatch(path="/", value="v" * 100_000), stream=0)
    lengths = [h.length for h, _ in raw.frames(raw.join(pair.server.data_to_send()))]
    assert max(lengths) == 70_000 and len(lengths) == 3
    events = pair.deliver_to_client(out)
    assert events[0].data.nbytes == 150_000


def test_large_control_messages_are_chunked(connect: Any, raw: Any) -> None:
    pair = connect(Hello(encodings=["json"]))
    patch = StatePatch(path="/volume", value=list(range(30_000)))
    pair.server.queue(patch)
    frames = raw.frames(raw.join(pair.server.data_to_send()))
    assert len(frames) > 1 and all(h.length <= 64 * 1024 for h, _ in frames)
    assert not any(h.flags & 1 for h, _ in frames)  # JSON
    assert pair.deliver_to_client([b"".join(h_bytes(h) + p for h, p in frames)]) == [patch]


def h_bytes(header: Any) -> bytes:
    from isthmus.wire import pack_header

    return pack_header(*header)


# --------------------------------------------------------------------------------------------
# credits
# --------------------------------------------------------------------------------------------


def jpeg(i: int, keyframe: bool = True) -> VideoPacket:
    return VideoPacket(codec="jpeg", keyframe=keyframe, data=i.to_bytes(4, "little"))


def h264(i: int, keyframe: bool) -> VideoPacket:
    return VideoPacket(codec="h264", keyframe=keyframe, data=i.to_bytes(4, "little"))


def index(packet: Any) -> int:
    return int.from_bytes(bytes(memoryview(packet.data)), "little")


@pytest.mark.parametrize("window", [1, 2, 4])
def test_window_and_ack(connect: Any, window: int) -> None:
    pair = connect(Hello(credits=window))
    s = pair.server
    for i in range(window + 1):
        s.queue(jpeg(i))
    assert s.stream_stats(2) == StreamStats(
        sent=window, dropped=0, in_flight=window, pending=True, queued=window
    )
    assert [index(p) for p in pair.to_client()] == list(range(window))
    assert not s.has_data_to_send  # the last one waits for credit
    assert s.stream_stats(2).queued == 0
    assert pair.deliver_to_server(pair.client.ack(2)) == [Ack(stream=2, seq=window - 1)]
    assert s.stream_stats(2) == StreamStats(window + 1, 0, 1, False, 1)
    assert [index(p) for p in pair.to_client()] == [window]


def test_partial_ack_frees_part_of_the_window(connect: Any) -> None:
    pair = connect(Hello(credits=3))
    s = pair.server
    for i in range(3):
        s.queue(jpeg(i))
    pair.to_client()
    pair.deliver_to_server(pair.client.send(Ack(stream=2, seq=0)))
    assert s.stream_stats(2).in_flight == 2
    s.queue(jpeg(3))
    s.queue(jpeg(4))
    assert s.stream_stats(2).pending
    assert [index(p) for p in pair.to_client()] == [3]


def test_latest_wins_for_jpeg_keyframes(connect: Any) -> None:
    pair = connect(Hello(credits=1))
    s = pair.server
    for i in range(4):
        s.queue(jpeg(i))
    assert list(s.events()) == [FramesDropped(2, 1, False), FramesDropped(2, 1, False)]
    assert s.stream_stats(2) == StreamStats(1, 2, 1, True, 1)
    assert [index(p) for p in pair.to_client()] == [0]
    pair.deliver_to_server(pair.client.ack(2))
    assert [index(p) for p in pair.to_client()] == [3]


def test_latest_wins_for_jpeg_frames_not_marked_keyframe(connect: Any) -> None:
    pair = connect(Hello(credits=1))
    s = pair.server
    for i in range(3):
        s.queue(jpeg(i, keyframe=False))
    assert list(s.events()) == [FramesDropped(2, 1, False)]
    pair.to_client()
    pair.deliver_to_server(pair.client.ack(2))
    assert [index(p) for p in pair.to_client()] == [2]


def test_latest_wins_for_tensors_on_a_credit_stream(connect: Any) -> None:
    pair = connect(streams=streams_with(data={"credits": 2}))
    s = pair.server
    for i in range(5):
        s.queue(Tensor.from_array(np.full(3, i, dtype="<i8")))
    assert list(s.events()) == [FramesDropped(4, 1, False), FramesDropped(4, 1, False)]
    assert s.stream_stats(4) == StreamStats(2, 2, 2, True, 2)
    got = [int(t.to_numpy()[0]) for t in pair.to_client()]
    assert got == [0, 1]
    pair.deliver_to_server(pair.client.ack(4))
    assert [int(t.to_numpy()[0]) for t in pair.to_client()] == [4]


def test_h264_pending_keyframe_is_kept(connect: Any) -> None:
    pair = connect(Hello(credits=1))
    s = pair.server
    s.queue(h264(0, True))  # sent
    s.queue(h264(1, False))  # pending
    s.queue(h264(2, True))  # a keyframe replaces the pending frame
    assert list(s.events()) == [FramesDropped(2, 1, False)]
    s.queue(h264(3, False))  # cannot replace the pending keyframe; the chain breaks
    assert list(s.events()) == [FramesDropped(2, 1, True)]
    s.queue(h264(4, False))  # dropped silently until the next keyframe
    s.queue(h264(5, False))
    assert list(s.events()) == []
    assert s.stream_stats(2) == StreamStats(1, 4, 1, True, 1)
    assert [index(p) for p in pair.to_client()] == [0]
    pair.deliver_to_server(pair.client.ack(2))
    assert [index(p) for p in pair.to_client()] == [2]
    s.queue(h264(6, False))  # still waiting for a keyframe: the chain after 2 is broken
    assert s.stream_stats(2).dropped == 5
    pair.deliver_to_server(pair.client.ack(2))
    s.queue(h264(7, True))
    s.queue(h264(8, False))
    assert [index(p) for p in pair.to_client()] == [7]
    pair.deliver_to_server(pair.client.ack(2))
    assert [index(p) for p in pair.to_client()] == [8]


def test_h264_two_pending_non_key_frames_both_go(connect: Any) -> None:
    pair = connect(Hello(credits=1))
    s = pair.server
    s.queue(h264(0, True))
    s.queue(h264(1, False))
    s.queue(h264(2, False))
    assert list(s.events()) == [FramesDropped(2, 2, True)]
    assert s.stream_stats(2) == StreamStats(1, 2, 1, False, 1)
    pair.to_client()
    pair.deliver_to_server(pair.client.ack(2))
    assert pair.to_client() == []  # nothing decodable waits


@SETTINGS
@given(
    credits=st.integers(1, 4),
    codec=st.sampled_from(["h264", "hevc", "av1", "vp9"]),
    script=st.lists(
        st.sampled_from(["key", "delta", "delta", "delta", "ack", "deliver"]), max_size=60
    ),
)
def test_inter_codec_chain_is_never_broken(
    connect: Any, credits: int, codec: str, script: list[str]
) -> None:
    """Whatever is dropped, every non-key frame the client gets directly follows the frame it
    got before; every packet is sent, dropped or pending; the window is respected."""
    pair = connect(Hello(credits=credits))
    s = pair.server
    queued = 0
    received: list[tuple[int, bool]] = []
    reported = 0
    for step in script:
        if step in ("key", "delta"):
            s.queue(
                VideoPacket(codec=codec, keyframe=step == "key", data=queued.to_bytes(4, "little"))
            )
            queued += 1
        elif step == "deliver":
            received += [(index(p), p.keyframe) for p in pair.to_client()]
        elif received:
            pair.deliver_to_server(pair.client.ack(2))
        events = list(s.events())
        assert all(isinstance(e, FramesDropped) and e.stream == 2 for e in events)
        reported += sum(e.count for e in events)
        stats = s.stream_stats(2)
        assert stats.in_flight <= credits
        assert stats.sent + stats.dropped + stats.pending == queued
        assert reported <= stats.dropped
    received += [(index(p), p.keyframe) for p in pair.to_client()]
    previous = -1  # nothing was dropped before the first frame
    for i, key in received:
        if not key:
            assert previous == i - 1, f"frame {i} arrived after {previous}: {received}"
        previous = i
    assert [i for i, _ in received] == sorted(i for i, _ in received)


def test_stream_stats_of_a_reliable_stream(connect: Any) -> None:
    pair = connect()
    s = pair.server
    s.queue(Blob(data=bytes(300_000)))  # two chunks
    s.queue(Blob(data=b""))
    stats = s.stream_stats(4)
    assert (stats.sent, stats.dropped, stats.pending, stats.queued) == (2, 0, False, 2)
    s.data_to_send(max_bytes=1)
    assert s.stream_stats(4).queued == 2  # the first blob is half sent
    s.data_to_send()
    assert s.stream_stats(4).queued == 0
    with pytest.raises(KeyError):
        s.stream_stats(99)


def noise(n: int) -> bytes:
    """``n`` bytes that differ from one size to the next (cheap for hypothesis to draw)."""
    return np.random.default_rng(n).bytes(n)


traffic_item = st.one_of(
    st.builds(Ping, nonce=st.integers(0, 2**32)),
    st.builds(StatePatch, path=st.just("/p"), value=st.text(max_size=3000)),
    st.builds(Pointer, x=st.floats(-1e3, 1e3), y=st.floats(-1e3, 1e3)),
    st.builds(Blob, data=st.integers(0, 300_000).map(noise), name=st.text(max_size=5)),
    st.builds(AudioChunk, data=st.integers(0, 40_000).map(noise)),
    st.integers(1, 200_000),  # a writer turn: data_to_send(max_bytes=n)
)


@settings(SETTINGS, max_examples=60)
@given(script=st.lists(traffic_item, max_size=25), encoding=st.sampled_from(["msgpack", "json"]))
def test_random_traffic_arrives_complete_and_in_order_per_stream(
    connect: Any, raw: Any, script: list[Any], encoding: str
) -> None:
    """Whatever mix of messages and partial writes: every message arrives once, intact, and
    each stream's messages in the order they were queued; every frame is well formed."""
    pair = connect(Hello(encodings=[encoding]))
    s = pair.server
    sent: dict[int, list[Any]] = {}
    received = []
    wire = bytearray()
    for step in script:
        if isinstance(step, int):
            out = raw.join(s.data_to_send(max_bytes=step))
            wire += out
            received += pair.deliver_to_client([out])
            continue
        s.queue(step)
        sent.setdefault(step.STREAM, []).append(step)
    out = raw.join(s.close())
    wire += out
    received += pair.deliver_to_client([out])
    assert isinstance(received.pop(), Goodbye)
    got: dict[int, list[Any]] = {}
    for event in received:
        got.setdefault(event.STREAM, []).append(event)

    def key(m: Any) -> Any:
        if isinstance(m, (Blob, AudioChunk)):
            return (type(m).__name__, bytes(memoryview(m.data)))
        return m

    assert {k: [key(m) for m in v] for k, v in got.items()} == {
        k: [key(m) for m in v] for k, v in sent.items()
    }
    frames = raw.frames(wire)
    assert all(h.length <= 256 * 1024 for h, _ in frames)
    assert frames[-1][0].type == 3


@pytest.mark.parametrize("message", [Ping(nonce=1), Pong(nonce=1), Error(code="x")])
def test_a_clients_first_message_must_be_its_hello(message: Any) -> None:
    """A server answers anything but a hello with unexpected_message, so a client refuses to
    send it (even the messages allowed while a hello is waiting for its welcome)."""
    client = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.queue(message)
    assert client.send(Hello())  # the hello still goes out first
