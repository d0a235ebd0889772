"""Every control message and binary packet survives the wire unchanged.

Hypothesis strategies cover all 13 control messages and the four packet types. Messages go
through encode_message/decode_message, Codec, a FrameDecoder and a pair of Connections after a
handshake, in both encodings (the handshake picks the first of ``hello.encodings`` the server
supports, so ``Hello(encodings=["json"])`` gives JSON).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from isthmus.buffer import Buffer
from isthmus.wire import (
    CONTROL_MESSAGES,
    Ack,
    AudioChunk,
    Blob,
    Codec,
    ConnectionClosed,
    Error,
    Flags,
    FrameDecoder,
    Goodbye,
    Hello,
    Key,
    LocalProtocolError,
    Ping,
    Pointer,
    Pong,
    RequestKeyframe,
    StatePatch,
    Stats,
    StreamSpec,
    Tensor,
    VideoPacket,
    Welcome,
    Wheel,
    decode_message,
    default_streams,
    encode_message,
)

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FAST = settings(SETTINGS, max_examples=200)

# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=24)
i64 = st.integers(-(2**63), 2**63 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
small = st.integers(-(2**31), 2**31)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_value = st.recursive(
    st.none() | st.booleans() | i64 | finite | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)

stream_specs = st.builds(
    StreamSpec,
    id=u16,
    name=text,
    kind=st.sampled_from(["control", "state", "video", "audio", "data"]),
    credits=st.integers(0, 64),
    priority=st.integers(0, 10),
    chunk_size=st.integers(0, 2**24),
)

STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    Hello: st.builds(
        Hello,
        protocol=small,
        role=text,
        name=text,
        encodings=st.lists(st.sampled_from(["msgpack", "json"]) | text, max_size=3),
        codecs=st.lists(text, max_size=4),
        max_frame_size=i64,
        max_message_size=i64,
        credits=small,
        token=st.none() | text,
    ),
    Welcome: st.builds(
        Welcome,
        protocol=small,
        role=text,
        name=text,
        session=text,
        encoding=st.sampled_from(["msgpack", "json"]),
        codecs=st.lists(text, max_size=4),
        max_frame_size=i64,
        max_message_size=i64,
        credits=small,
        streams=st.lists(stream_specs, max_size=6),
    ),
    Goodbye: st.builds(Goodbye, code=small, reason=text),
    Error: st.builds(Error, code=text, message=text, offset=st.none() | i64),
    Ping: st.builds(Ping, nonce=i64, time_ns=i64),
    Pong: st.builds(Pong, nonce=i64, time_ns=i64),
    Ack: st.builds(Ack, stream=u16, seq=i64),
    RequestKeyframe: st.builds(RequestKeyframe, stream=u16),
    Stats: st.builds(
        Stats,
        stream=st.none() | u16,
        fps=finite,
        kbps=finite,
        frames=i64,
        dropped=i64,
        rtt_ms=st.none() | finite,
        latency_ms=st.none() | finite,
        extra=st.dictionaries(text, finite, max_size=4),
    ),
    Pointer: st.builds(
        Pointer,
        kind=st.sampled_from(["down", "up", "move", "enter", "leave", "cancel"]),
        x=finite,
        y=finite,
        button=small,
        buttons=small,
        modifiers=st.integers(0, 15),
        pointer_id=small,
    ),
    Wheel: st.builds(
        Wheel,
        x=finite,
        y=finite,
        dx=finite,
        dy=finite,
        dz=finite,
        mode=st.sampled_from(["pixel", "line", "page"]),
        modifiers=st.integers(0, 15),
    ),
    Key: st.builds(
        Key,
        kind=st.sampled_from(["down", "up"]),
        key=text,
        code=text,
        modifiers=st.integers(0, 15),
        repeat=st.booleans(),
    ),
    StatePatch: st.builds(
        StatePatch,
        path=text,
        op=st.sampled_from(["set", "merge", "delete"]),
        value=json_value,
        rev=st.none() | i64,
    ),
}
any_control = st.one_of(*STRATEGIES.values())
encodings = st.sampled_from(["msgpack", "json"])


def same(a: Any, b: Any) -> bool:
    """Equal, and equal after JSON encoding (catches True -> 1 and 1.0 -> 1, which == hides)."""
    return bool(a == b) and msgspec.json.encode(a) == msgspec.json.encode(b)


def test_every_control_message_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(CONTROL_MESSAGES)
    assert len(CONTROL_MESSAGES) == 13


def test_type_codes_and_default_streams() -> None:
    assert {cls.__name__: (int(cls.TYPE), cls.STREAM) for cls in CONTROL_MESSAGES} == {
        "Hello": (1, 0),
        "Welcome": (2, 0),
        "Goodbye": (3, 0),
        "Error": (4, 0),
        "Ping": (5, 0),
        "Pong": (6, 0),
        "Ack": (7, 0),
        "RequestKeyframe": (8, 0),
        "Stats": (9, 0),
        "Pointer": (10, 0),
        "Wheel": (11, 0),
        "Key": (12, 0),
        "StatePatch": (13, 1),
    }
    packets = (VideoPacket, AudioChunk, Tensor, Blob)
    assert [(int(p.TYPE), p.STREAM) for p in packets] == [(64, 2), (65, 3), (66, 4), (67, 4)]


def test_default_stream_table() -> None:
    assert [(s.id, s.name, s.kind, s.credits > 0) for s in default_streams()] == [
        (0, "control", "control", False),
        (1, "state", "state", False),
        (2, "video", "video", True),
        (3, "audio", "audio", False),
        (4, "data", "data", False),
    ]
    by_priority = sorted(default_streams(), key=lambda s: s.priority)
    assert [s.name for s in by_priority] == ["control", "state", "audio", "video", "data"]


def test_ping_response() -> None:
    assert Ping(nonce=7, time_ns=99).response() == Pong(nonce=7, time_ns=99)


# --------------------------------------------------------------------------------------------
# bodies: encode_message / decode_message / Codec
# --------------------------------------------------------------------------------------------


@FAST
@given(message=any_control, encoding=encodings)
def test_encode_decode_message_round_trip(message: Any, encoding: str) -> None:
    body = encode_message(message, encoding)  # type: ignore[arg-type]
    assert isinstance(body, bytes)
    assert same(decode_message(type(message), body, encoding), message)  # type: ignore[arg-type]
    assert same(decode_message(type(message), memoryview(body), encoding), message)  # type: ignore[arg-type]


@FAST
@given(message=any_control)
def test_bodies_are_objects_keyed_by_field_name(message: Any) -> None:
    expected = msgspec.to_builtins(message)
    assert json.loads(encode_message(message, "json")) == expected
    assert msgspec.msgpack.decode(encode_message(message, "msgpack")) == expected
    assert set(expected) == set(message.__struct_fields__)


def test_encode_message_defaults_to_msgpack() -> None:
    message = Pointer(x=1.0, y=2.0)
    assert encode_message(message) == msgspec.msgpack.encode(message)


@FAST
@given(message=any_control, encoding=encodings)
def test_codec_round_trip(message: Any, encoding: str) -> None:
    codec = Codec(encoding)  # type: ignore[arg-type]
    assert codec.encoding == encoding
    body = codec.encode(message)
    assert body == encode_message(message, encoding)  # type: ignore[arg-type]
    cls = type(message)
    assert same(codec.decoder(cls).decode(body), message)
    assert same(codec.decode(cls, body), message)
    buf = bytearray(b"prefix")
    codec.encode_into(message, buf, 6)
    assert buf == b"prefix" + body


def test_codec_hands_out_msgspec_objects() -> None:
    codec = Codec("msgpack")
    assert codec.decoder(Pointer) is codec.decoder(Pointer)
    assert isinstance(codec.decoder(Pointer), msgspec.msgpack.Decoder)
    assert isinstance(Codec("json").decoder(Key), msgspec.json.Decoder)


def test_codec_rejects_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        Codec("cbor")  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
@pytest.mark.parametrize(
    "body",
    [
        {"x": "one", "y": 2.0},  # wrong field type
        {"y": 2.0},  # missing required field
        {"x": 1.0, "y": 2.0, "kind": "hover"},  # not one of the literals
        [1, 2],  # not an object
    ],
)
def test_decode_message_rejects_invalid_bodies(encoding: str, body: Any) -> None:
    data = msgspec.json.encode(body) if encoding == "json" else msgspec.msgpack.encode(body)
    with pytest.raises(msgspec.DecodeError):
        decode_message(Pointer, data, encoding)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Codec(encoding).decode(Pointer, data)  # type: ignore[arg-type]


def test_decode_message_rejects_garbage() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_message(Ping, b"{nope", "json")
    with pytest.raises(msgspec.DecodeError):
        decode_message(Ping, b"\xc1", "msgpack")


# --------------------------------------------------------------------------------------------
# control messages through connections and the frame decoder
# --------------------------------------------------------------------------------------------


def replay(log: bytes | bytearray) -> list[tuple[Any, Any]]:
    """Decode a recorded byte stream with a fresh FrameDecoder: (header, message) pairs."""
    decoder = FrameDecoder()
    decoder.feed(bytes(log))
    decoder.feed(b"")
    out = []
    while (item := decoder.next()) is not None:
        header, message, _ = item
        out.append((header, message))
    assert isinstance(out[-1][1], ConnectionClosed)
    return out[:-1]


ROUND_TRIP = [c for c in CONTROL_MESSAGES if c not in (Hello, Welcome, Ack)]


@pytest.mark.parametrize("cls", ROUND_TRIP, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data(), encoding=encodings, to_server=st.booleans())
def test_control_message_round_trip_through_connections(
    connect: Any, cls: type[Any], data: st.DataObject, encoding: str, to_server: bool
) -> None:
    message = data.draw(STRATEGIES[cls])
    pair = connect(Hello(encodings=[encoding]))
    assert pair.welcome.encoding == encoding
    sender, receiver = (pair.client, pair.server) if to_server else (pair.server, pair.client)
    log = pair.to_server_log if to_server else pair.to_client_log
    sender.queue(message)
    events = pair.to_server() if to_server else pair.to_client()
    assert len(events) == 1 and same(events[0], message)
    header = receiver.last_header
    assert header.type == cls.TYPE
    assert header.stream == cls.STREAM
    assert bool(header.flags & Flags.MSGPACK) == (encoding == "msgpack")
    # The same bytes decode identically without the connection.
    decoded = replay(log)
    assert same(decoded[-1][1], message)
    assert decoded[-1][0] == header


@SETTINGS
@given(
    hello=STRATEGIES[Hello].map(
        lambda h: msgspec.structs.replace(
            h,
            protocol=1,
            max_frame_size=max(h.max_frame_size, 1 << 16) % (1 << 32),
            max_message_size=max(h.max_message_size, 1 << 16) % (1 << 40),
        )
    ),
    session=text,
    name=text,
)
def test_hello_and_welcome_round_trip_through_the_handshake(
    connect: Any, hello: Hello, session: str, name: str
) -> None:
    assume(hello.max_frame_size >= 1 << 16 and hello.max_message_size >= 1 << 16)
    pair = connect(hello, accept={"session": session, "name": name})
    assert same(pair.server.peer_hello, hello)
    assert same(pair.welcome, pair.server.welcome)
    assert pair.welcome.session == session and pair.welcome.name == name
    # hello and welcome are always JSON, whatever encoding was chosen.
    (hello_header, got_hello), *_ = replay(pair.to_server_log)
    (welcome_header, got_welcome), *_ = replay(pair.to_client_log)
    assert not hello_header.flags & Flags.MSGPACK and not welcome_header.flags & Flags.MSGPACK
    assert same(got_hello, hello) and same(got_welcome, pair.welcome)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_ack_round_trip_through_connections(connect: Any, encoding: str) -> None:
    pair = connect(Hello(encodings=[encoding]))
    for i in range(3):
        pair.server.queue(VideoPacket(codec="jpeg", keyframe=True, data=bytes([i])))
    assert len(pair.to_client()) == 3
    assert pair.deliver_to_server(pair.client.ack(2)) == [Ack(stream=2, seq=2)]
    assert bool(pair.server.last_header.flags & Flags.MSGPACK) == (encoding == "msgpack")


def _keep_streams(message: Any) -> Any:
    """A decoded welcome replaces the decoder's stream table; keep it the default one here."""
    if isinstance(message, Welcome):
        return msgspec.structs.replace(message, streams=default_streams())
    return message


@FAST
@given(messages=st.lists(any_control.map(_keep_streams), min_size=1, max_size=8), data=st.data())
def test_control_messages_through_the_frame_decoder(
    raw: Any, messages: list[Any], data: st.DataObject
) -> None:
    """Hand-built frames (any encoding per frame, per-stream seq) decode to the messages."""
    seqs: dict[int, int] = {}
    wire = b""
    for message in messages:
        seq = seqs.get(message.STREAM, 0)
        seqs[message.STREAM] = seq + 1
        encoding = data.draw(encodings)
        wire += raw.control(message, seq=seq, encoding=encoding, ts=2**64 - 1 - seq)
    decoder = FrameDecoder(streams=default_streams())
    decoder.feed(wire)
    got = [decoder.next() for _ in messages]
    assert decoder.next() is None
    for message, (header, decoded, _) in zip(messages, got, strict=True):
        assert same(decoded, message)
        assert header.type == message.TYPE
    assert [h.seq for h, _, _ in got] == [
        sum(1 for m in messages[:i] if m.STREAM == messages[i].STREAM) for i in range(len(got))
    ]


# --------------------------------------------------------------------------------------------
# binary packets
# --------------------------------------------------------------------------------------------

payload = st.binary(max_size=300)
as_buffer = st.sampled_from(
    [bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8), Buffer]
)

video_packets = st.builds(
    VideoPacket,
    data=payload,
    codec=st.sampled_from(["raw", "h264", "hevc", "av1", "vp9", "jpeg"]),
    width=u32,
    height=u32,
    keyframe=st.booleans(),
    pts=i64,
    config=st.binary(max_size=40),
)
audio_chunks = st.builds(
    AudioChunk,
    data=payload,
    rate=u32,
    channels=u16,
    sample_format=st.sampled_from(["s16", "s32", "f32", "u8", "f64"]),
    planar=st.booleans(),
    codec=st.sampled_from(["pcm", "opus", "aac"]),
    pts=i64,
)
blobs = st.builds(Blob, data=payload, mime=text, name=text)

DTYPES = [
    "|u1",
    "|i1",
    "<i2",
    ">u2",
    "<i4",
    ">i8",
    "<u8",
    "<f2",
    "<f4",
    ">f8",
    "<c8",
    ">c16",
    "|b1",
]


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    arr = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["C", "F", "T", "step", "reverse"]))
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "T":
        arr = arr.T
    elif layout == "step" and arr.ndim:
        arr = arr[::2]
    elif layout == "reverse" and arr.ndim:
        arr = arr[::-1]
    return arr


tensors = arrays().map(Tensor.from_array)
packets = st.one_of(video_packets, audio_chunks, tensors, blobs)


def same_bytes(a: Any, b: Any) -> bool:
    return bytes(memoryview(a)) == bytes(memoryview(b))


def check_packet(got: Any, sent: Any) -> None:
    assert type(got) is type(sent)
    assert isinstance(got.data, Buffer)
    if isinstance(sent, Tensor):
        assert (got.dtype, got.shape) == (sent.dtype, sent.shape)
        a, b = got.to_numpy(), sent.to_numpy()
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
        if sent.strides is not None and b.size > 1:
            assert got.strides == sent.strides
        return
    assert same_bytes(got.data, sent.data)
    if isinstance(sent, VideoPacket):
        assert isinstance(got.config, Buffer)
        assert same_bytes(got.config, sent.config)
        fields = ("codec", "width", "height", "keyframe", "pts")
    elif isinstance(sent, AudioChunk):
        fields = ("rate", "channels", "sample_format", "planar", "codec", "pts")
    else:
        fields = ("mime", "name")
    assert [getattr(got, f) for f in fields] == [getattr(sent, f) for f in fields]


@SETTINGS
@given(
    packet=packets,
    encoding=encodings,
    to_server=st.booleans(),
    chunk=st.sampled_from([0, 1, 7, 64, 1000]),
)
def test_packet_round_trip_through_connections(
    connect: Any, packet: Any, encoding: str, to_server: bool, chunk: int
) -> None:
    """Packets of every kind arrive intact, whole or chunked (``chunk_size`` of the streams)."""
    streams = [msgspec.structs.replace(s, chunk_size=chunk) for s in default_streams()]
    pair = connect(Hello(encodings=[encoding]), streams=streams)
    sender = pair.client if to_server else pair.server
    sender.queue(packet)
    events = pair.to_server() if to_server else pair.to_client()
    assert len(events) == 1
    check_packet(events[0], packet)
    receiver = pair.server if to_server else pair.client
    header = receiver.last_header
    assert (header.type, header.stream) == (packet.TYPE, packet.STREAM)
    keyframe = isinstance(packet, VideoPacket) and packet.keyframe
    assert bool(header.flags & Flags.KEYFRAME) == keyframe
    # The recorded bytes decode the same with a bare FrameDecoder.
    log = pair.to_server_log if to_server else pair.to_client_log
    replayed = replay(log)
    check_packet(replayed[-1][1], packet)


@FAST
@given(data=payload, wrap=as_buffer, config=st.binary(max_size=20), conf_wrap=as_buffer)
def test_packet_payload_may_be_any_buffer(
    connect: Any, data: bytes, wrap: Any, config: bytes, conf_wrap: Any
) -> None:
    pair = connect()
    packet = VideoPacket(codec="h264", keyframe=True, data=wrap(data), config=conf_wrap(config))
    pair.server.queue(packet)
    pair.server.queue(Blob(data=wrap(data)))
    video, blob = pair.to_client()
    assert bytes(memoryview(video.data)) == data and bytes(memoryview(video.config)) == config
    assert bytes(memoryview(blob.data)) == data


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.arange(24, dtype="<f4").reshape(2, 3, 4), id="C"),
        pytest.param(np.asfortranarray(np.arange(24, dtype=">i8").reshape(2, 3, 4)), id="F"),
        pytest.param(np.arange(60, dtype="<u2").reshape(3, 4, 5).transpose(1, 0, 2), id="perm"),
        pytest.param(np.arange(100, dtype="<c16").reshape(10, 10)[::3, 1::2], id="strided"),
        pytest.param(np.float64(3.5), id="0-d"),
        pytest.param(np.zeros((0, 4), "<f8"), id="empty"),
        pytest.param(np.ones((1,) * 32, "|u1"), id="32-dims"),
        pytest.param(np.array([True, False, True]), id="bool"),
    ],
)
def test_tensor_layouts_round_trip(connect: Any, array: Any) -> None:
    tensor = Tensor.from_array(array)
    pair = connect()
    pair.server.queue(tensor)
    (got,) = pair.to_client()
    out = got.to_numpy()
    assert out.dtype == np.asarray(array).dtype and out.shape == np.shape(array)
    np.testing.assert_array_equal(out, array)
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert out.flags.f_contiguous and tensor.strides == array.strides


def test_tensor_from_array_copies_only_non_contiguous_arrays() -> None:
    c = np.arange(12, dtype="<i4").reshape(3, 4)
    f = np.asfortranarray(c)
    assert np.shares_memory(Tensor.from_array(c).to_numpy(), c)
    assert np.shares_memory(Tensor.from_array(f).to_numpy(), f)
    assert Tensor.from_array(f).strides == f.strides
    strided = c[:, ::2]
    t = Tensor.from_array(strided)
    assert not np.shares_memory(t.to_numpy(), c)
    np.testing.assert_array_equal(t.to_numpy(), strided)


@pytest.mark.parametrize(
    "array",
    [np.zeros((3, 1))[:, ::-1], np.arange(1.0)[::-1]],
    ids=["(3,1)[:, ::-1]", "(1,)[::-1]"],
)
def test_tensor_from_array_with_negative_stride_on_a_length_one_axis(
    connect: Any, array: Any
) -> None:
    """numpy calls such an array contiguous although it has a negative stride."""
    assert array.flags.c_contiguous and min(array.strides) < 0
    pair = connect()
    pair.server.queue(Tensor.from_array(array))
    (got,) = pair.to_client()
    np.testing.assert_array_equal(got.to_numpy(), array)


def test_tensor_with_default_strides_is_c_order(connect: Any) -> None:
    values = np.arange(6, dtype="<i2")
    pair = connect()
    pair.server.queue(Tensor(data=values.tobytes(), dtype="<i2", shape=(2, 3)))
    (got,) = pair.to_client()
    assert got.strides == (6, 2)
    np.testing.assert_array_equal(got.to_numpy(), values.reshape(2, 3))


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (Tensor(data=b"\0" * 8, dtype="O", shape=(1,)), "dtype"),
        (Tensor(data=b"\0" * 8, dtype="<M8", shape=(1,)), "dtype"),
        (Tensor(data=b"\0" * 8, dtype="<f8", shape=(2,)), "past its data"),
        (Tensor(data=b"\0" * 8, dtype="<f8", shape=(1,), strides=(-8,)), "non-negative"),
        (Tensor(data=b"\0" * 8, dtype="<f8", shape=(1,), strides=(8, 8)), "one per dimension"),
        (Tensor(data=b"\0", dtype="|u1", shape=(1,) * 33), "at most 32"),
    ],
)
def test_invalid_tensors_are_refused_when_sent(connect: Any, tensor: Tensor, match: str) -> None:
    pair = connect()
    with pytest.raises(ValueError, match=match):
        pair.server.queue(tensor)
    # Nothing was queued and the stream's numbering did not move.
    pair.server.queue(Tensor.from_array(np.arange(3)))
    (got,) = pair.to_client()
    assert pair.client.last_header.seq == 0
    np.testing.assert_array_equal(got.to_numpy(), np.arange(3))


@pytest.mark.parametrize(
    "packet",
    [
        VideoPacket(codec="mpeg2", data=b""),
        AudioChunk(sample_format="s24", data=b""),
        AudioChunk(codec="mp3", data=b""),
        Blob(data=b"", mime="x" * 70_000),
    ],
)
def test_invalid_packets_are_refused_when_sent(connect: Any, packet: Any) -> None:
    pair = connect()
    with pytest.raises(ValueError):
        pair.server.queue(packet)


# --------------------------------------------------------------------------------------------
# the documented body layouts, built by hand
# --------------------------------------------------------------------------------------------


@pytest.fixture
def sent_payload(connect: Any, raw: Any) -> Any:
    """``sent_payload(packet)``: the payload of the one frame a server sends for ``packet``."""
    pair = connect()

    def payload(packet: Any) -> bytes:
        pair.server.queue(packet)
        frames = raw.frames(raw.join(pair.server.data_to_send()))
        assert len(frames) == 1
        return bytes(frames[0][1])

    return payload


def test_video_body_layout(sent_payload: Any, raw: Any) -> None:
    packet = VideoPacket(
        codec="hevc", width=1920, height=1080, keyframe=True, pts=-5, config=b"SPS", data=b"pic"
    )
    assert sent_payload(packet) == raw.video_body(
        b"pic", codec=2, vflags=1, width=1920, height=1080, config=b"SPS", pts=-5
    )


def test_audio_body_layout(sent_payload: Any, raw: Any) -> None:
    chunk = AudioChunk(
        rate=44100,
        channels=6,
        sample_format="f32",
        planar=True,
        codec="opus",
        pts=123,
        data=b"samples",
    )
    assert sent_payload(chunk) == raw.audio_body(
        b"samples", rate=44100, channels=6, fmt=3 + 128, codec=1, pts=123
    )


def test_tensor_body_layout(sent_payload: Any, raw: Any) -> None:
    array = np.arange(6, dtype="<f4").reshape(2, 3)
    body = sent_payload(Tensor.from_array(array))
    assert body == raw.tensor_body(array.tobytes(), dtype="<f4", shape=(2, 3), strides=(12, 4))
    assert int.from_bytes(body[4:8], "little") == 64  # data aligned to 64 bytes


def test_blob_body_layout(sent_payload: Any, raw: Any) -> None:
    blob = Blob(data=b"\x00\x01", mime="image/png", name="été.png")
    assert sent_payload(blob) == raw.blob_body(
        b"\x00\x01", mime=b"image/png", name="été.png".encode()
    )


@pytest.mark.parametrize(
    ("type_", "body", "expected"),
    [
        (
            64,
            "video",
            VideoPacket(codec="av1", width=7, height=9, pts=2**62, config=b"c", data=b"d"),
        ),
        (65, "audio", AudioChunk(rate=8000, channels=1, sample_format="u8", data=b"pcm")),
        (66, "tensor", Tensor(data=b"\x01\x02\x03\x04", dtype="|u1", shape=(2, 2))),
        (67, "blob", Blob(data=b"zz", mime="text/plain", name="")),
    ],
)
def test_hand_built_bodies_decode(raw: Any, type_: int, body: str, expected: Any) -> None:
    if body == "video":
        data = raw.video_body(b"d", codec=3, width=7, height=9, config=b"c", pts=2**62)
    elif body == "audio":
        data = raw.audio_body(b"pcm", rate=8000, channels=1, fmt=4)
    elif body == "tensor":
        data = raw.tensor_body(b"\x01\x02\x03\x04", dtype="|u1", shape=(2, 2), strides=(2, 1))
    else:
        data = raw.blob_body(b"zz", mime=b"text/plain")
    decoder = FrameDecoder()
    decoder.feed(raw.frame(type_, data))
    header, got, offset = decoder.next()
    assert offset == 0 and header.type == type_
    if isinstance(expected, Tensor):
        np.testing.assert_array_equal(got.to_numpy(), [[1, 2], [3, 4]])
        assert got.strides == (2, 1)
    else:
        check_packet(got, expected)


NAN, INF = float("nan"), float("inf")
NON_FINITE = {
    "pointer-nan": Pointer(x=NAN, y=0.0),
    "wheel-inf": Wheel(dy=-INF),
    "stats-inf-nan": Stats(fps=INF, rtt_ms=NAN),
    "patch-value-nan": StatePatch(path="/v", value=[NAN, INF]),
}


@pytest.mark.parametrize(
    ("encoding", "name"),
    [
        pytest.param(
            encoding,
            name,
            id=f"{name}-{encoding}",
        )
        for encoding in ("msgpack", "json")
        for name in NON_FINITE
    ],
)
def test_what_send_accepts_the_peer_accepts(connect: Any, encoding: str, name: str) -> None:
    """A message send() takes must not make the peer's decoder fail: either it is refused
    here, or it arrives (in JSON a NaN inside a free-form value arrives as null)."""
    message = NON_FINITE[name]
    pair = connect(Hello(encodings=[encoding]))
    try:
        pair.client.queue(message)
    except (ValueError, LocalProtocolError):
        return  # refusing to send it is fine
    (got,) = pair.to_server()
    assert type(got) is type(message)
    if encoding == "msgpack":  # carried exactly (compared as bytes: NaN != NaN)
        assert msgspec.msgpack.encode(got) == msgspec.msgpack.encode(message)


@pytest.mark.parametrize("dtype", ["<f1", "|b8", "<b4", "|O", "<U4", "<M8"])
def test_tensor_dtypes_numpy_cannot_view_are_refused(connect: Any, dtype: str) -> None:
    """Only plain numeric dtypes numpy knows travel: anything else is refused when sent (and
    is invalid_payload when received, see test_errors), so to_numpy() can never fail."""
    pair = connect(Hello())
    with pytest.raises(ValueError, match="dtype"):
        pair.server.queue(Tensor(data=b"\0" * 16, dtype=dtype, shape=(2,)))
    assert not pair.server.has_data_to_send
