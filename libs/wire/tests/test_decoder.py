"""How bytes may arrive: whole, coalesced, byte by byte, split anywhere, read through
get_buffer/buffer_updated, and ending at or inside a frame. The FrameDecoder and a Connection
must decode the same messages at the same offsets whatever the split."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.wire import (
    HEADER_SIZE,
    AudioChunk,
    Blob,
    Connection,
    ConnectionClosed,
    ErrorCode,
    FrameDecoder,
    Goodbye,
    Hello,
    Key,
    Ping,
    Pointer,
    ProtocolError,
    Role,
    State,
    StatePatch,
    Tensor,
    VideoPacket,
    Welcome,
    default_streams,
)

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def norm(event: Any) -> Any:
    """A comparable form of an event: control messages as builtins, packets with bytes."""
    if isinstance(event, msgspec.Struct):
        return (type(event).__name__, msgspec.to_builtins(event))
    if isinstance(event, Tensor):
        return ("Tensor", event.dtype, event.shape, event.strides, bytes(memoryview(event.data)))
    if isinstance(event, (VideoPacket, AudioChunk, Blob)):
        fields = {}
        for name in event.__dataclass_fields__:
            value = getattr(event, name)
            fields[name] = bytes(memoryview(value)) if name in ("data", "config") else value
        return (type(event).__name__, fields)
    return (type(event).__name__,)


def _recording() -> tuple[bytes, list[Any]]:
    """A server-to-client byte stream: welcome, control messages in msgpack, state patches,
    chunked video, audio, tensor and blob messages interleaved on their streams, some
    an empty blob. Returns the bytes and the messages in the order they were sent."""
    streams = default_streams()
    chunks = {0: 0, 1: 300, 2: 500, 3: 200, 4: 1000}
    streams = [msgspec.structs.replace(s, chunk_size=chunks[s.id]) for s in streams]
    client = Connection(Role.CLIENT, clock=itertools.count(1).__next__)
    server = Connection(Role.SERVER, streams=streams, clock=itertools.count(2**40).__next__)
    hello = Hello()
    data = bytearray()
    for buf in client.send(hello):
        server.receive_data(bytes(buf))
    assert server.next_event() == hello
    for buf in server.accept(hello):
        data += memoryview(buf)
    sent: list[Any] = [server.welcome]
    rng = np.random.default_rng(7)

    def queue(message: Any) -> None:
        server.queue(message)
        sent.append(message)

    queue(VideoPacket(codec="h264", keyframe=True, config=b"SPSPPS", data=rng.bytes(3000)))
    queue(Tensor.from_array(rng.standard_normal((25, 25)).astype("<f4")))
    queue(Blob(data=rng.bytes(2500), mime="application/x-test", name="b.bin"))
    queue(Blob(data=b""))  # a packet with an empty payload
    queue(AudioChunk(data=rng.bytes(700)))
    extra = [
        Ping(nonce=1, time_ns=2),
        StatePatch(path="/big", value="x" * 1000),  # chunked on the state stream
        Pointer(kind="down", x=1.5, y=-2.0, buttons=1),
        Key(key="a", code="KeyA"),
        StatePatch(path="/small", op="delete"),
    ]
    while server.has_data_to_send:
        for buf in server.data_to_send(max_bytes=450):
            data += memoryview(buf)
        if extra:
            queue(extra.pop(0))
    assert not extra
    queue(Goodbye(reason="done"))
    for buf in server.data_to_send():
        data += memoryview(buf)
    # Control messages overtook the chunked packets, so the order received differs from the
    # order sent; the reference decode below gives the received order.
    return bytes(data), sent


RECORDING, SENT = _recording()


def frame_spans(data: bytes) -> list[tuple[int, int, Any]]:
    """(start, end, header) of every frame, read with parse_header."""
    from isthmus.wire import parse_header

    out = []
    pos = 0
    while pos < len(data):
        header = parse_header(data, pos)
        end = pos + HEADER_SIZE + header.length
        out.append((pos, end, header))
        pos = end
    assert pos == len(data)
    return out


SPANS = frame_spans(RECORDING)


def decode_whole() -> list[tuple[Any, Any, int]]:
    decoder = FrameDecoder()
    decoder.feed(RECORDING)
    items = []
    while (item := decoder.next()) is not None:
        items.append(item)
    return items


REFERENCE = decode_whole()


def test_the_recording_exercises_chunking_interleaving_and_every_packet() -> None:
    headers = [h for _, _, h in SPANS]
    assert any(h.flags & 2 for h in headers), "no chunked message"
    chunked_streams = {h.stream for h in headers if h.flags & 2}
    assert {1, 2, 3, 4} <= chunked_streams
    # frames of different streams interleave: some chunk follows a frame of another stream
    # while its own message is unfinished
    open_streams: set[int] = set()
    interleaved = False
    for h in headers:
        if open_streams - {h.stream}:
            interleaved = True
        if h.flags & 2:
            open_streams.add(h.stream)
        else:
            open_streams.discard(h.stream)
    assert interleaved
    # The reference decode delivers every message that was sent, each once.
    assert sorted(map(repr, map(norm, SENT))) == sorted(repr(norm(m)) for _, m, _ in REFERENCE)


def test_offsets_are_the_first_frame_of_each_message() -> None:
    starts = {}
    for start, _, h in SPANS:
        starts.setdefault((h.stream, h.seq), start)
    assert [off for _, _, off in REFERENCE] == [starts[(h.stream, h.seq)] for h, _, _ in REFERENCE]


def test_reassembled_header_describes_the_whole_message() -> None:
    for header, _, _ in REFERENCE:
        assert header.length == header.total
        assert not header.flags & (2 | 4)  # MORE / CONTINUATION are frame matters


# --------------------------------------------------------------------------------------------
# feeding modes
# --------------------------------------------------------------------------------------------


def drain(decoder: FrameDecoder) -> list[tuple[Any, Any, int]]:
    items = []
    while (item := decoder.next()) is not None:
        items.append(item)
    return items


def feed_pieces(decoder: FrameDecoder, pieces: list[Any]) -> list[tuple[Any, Any, int]]:
    items = []
    for piece in pieces:
        decoder.feed(piece)
        items += drain(decoder)
    return items


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *cuts})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def expected() -> list[Any]:
    return [(h, norm(m), off) for h, m, off in REFERENCE]


def normalised(items: list[tuple[Any, Any, int]]) -> list[Any]:
    return [(h, norm(m), off) for h, m, off in items]


def test_byte_by_byte() -> None:
    decoder = FrameDecoder()
    pieces = [RECORDING[i : i + 1] for i in range(len(RECORDING))]
    assert normalised(feed_pieces(decoder, pieces)) == expected()
    assert decoder.offset == len(RECORDING)
    assert decoder.idle


def test_one_frame_per_call() -> None:
    pieces = [RECORDING[a:b] for a, b, _ in SPANS]
    assert normalised(feed_pieces(FrameDecoder(), pieces)) == expected()


def test_coalesced_frames_are_all_decoded_from_one_call() -> None:
    decoder = FrameDecoder()
    decoder.feed(RECORDING)
    assert len(decoder) == len(REFERENCE)
    assert normalised(drain(decoder)) == expected()


def test_header_split_in_the_middle() -> None:
    start, _, _ = SPANS[3]
    pieces = [RECORDING[: start + 5], RECORDING[start + 5 : start + 31], RECORDING[start + 31 :]]
    assert normalised(feed_pieces(FrameDecoder(), pieces)) == expected()


@SETTINGS
@given(cuts=st.lists(st.integers(0, len(RECORDING)), max_size=60))
def test_random_split_points(cuts: list[int]) -> None:
    assert normalised(feed_pieces(FrameDecoder(), split(RECORDING, cuts))) == expected()


@SETTINGS
@given(cuts=st.lists(st.integers(0, len(RECORDING)), max_size=40), kinds=st.data())
def test_random_split_points_as_bytes_bytearray_or_memoryview(
    cuts: list[int], kinds: st.DataObject
) -> None:
    decoder = FrameDecoder()
    pieces: list[Any] = []
    for piece in split(RECORDING, cuts):
        wrap = kinds.draw(st.sampled_from([bytes, bytearray, memoryview]))
        pieces.append(wrap(piece))
    assert normalised(feed_pieces(decoder, pieces)) == expected()


def read_via_get_buffer(target: Any, data: bytes, sizes: list[int]) -> list[Any]:
    """Deliver ``data`` the asyncio.BufferedProtocol way: get_buffer, write, buffer_updated.
    ``sizes`` bounds each read (cycled)."""
    events = []
    pos = 0
    i = 0
    while pos < len(data):
        view = target.get_buffer(-1)
        assert len(view) > 0
        n = min(len(view), sizes[i % len(sizes)], len(data) - pos)
        i += 1
        view[:n] = data[pos : pos + n]
        target.buffer_updated(n)
        pos += n
        if isinstance(target, FrameDecoder):
            while (item := target.next()) is not None:
                events.append(item)
        else:
            events.extend(target.events())
    return events


@SETTINGS
@given(sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=20))
def test_random_reads_through_get_buffer(sizes: list[int]) -> None:
    decoder = FrameDecoder()
    assert normalised(read_via_get_buffer(decoder, RECORDING, sizes)) == expected()
    assert decoder.idle


def test_get_buffer_after_an_error_and_a_zero_byte_update() -> None:
    decoder = FrameDecoder()
    view = decoder.get_buffer()
    decoder.buffer_updated(0)  # a read that returned nothing changes nothing
    view[:4] = b"XXXX"
    decoder.buffer_updated(0)
    assert decoder.offset == 0 and decoder.next() is None
    decoder.feed(RECORDING[:10])
    assert decoder.offset == 10


# --------------------------------------------------------------------------------------------
# the same through a Connection (a client that receives the server's recording)
# --------------------------------------------------------------------------------------------


def client_that_sent_hello() -> Connection:
    client = Connection(Role.CLIENT)
    client.send(Hello())
    return client


def connection_events(pieces: list[bytes]) -> list[Any]:
    client = client_that_sent_hello()
    events = []
    for piece in pieces:
        client.receive_data(piece)
        events.extend(client.events())
    assert client.state is State.CLOSING  # the recording ends with the server's goodbye
    return events


def test_connection_whole_and_byte_by_byte() -> None:
    want = [norm(m) for _, m, _ in REFERENCE]
    assert [norm(e) for e in connection_events([RECORDING])] == want
    one_by_one = [RECORDING[i : i + 1] for i in range(len(RECORDING))]
    assert [norm(e) for e in connection_events(one_by_one)] == want


@SETTINGS
@given(cuts=st.lists(st.integers(0, len(RECORDING)), max_size=60))
def test_connection_random_split_points(cuts: list[int]) -> None:
    want = [norm(m) for _, m, _ in REFERENCE]
    assert [norm(e) for e in connection_events(split(RECORDING, cuts))] == want


@SETTINGS
@given(sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=20))
def test_connection_random_reads_through_get_buffer(sizes: list[int]) -> None:
    client = client_that_sent_hello()
    events = read_via_get_buffer(client, RECORDING, sizes)
    assert [norm(e) for e in events] == [norm(m) for _, m, _ in REFERENCE]


def test_connection_last_header_follows_the_events() -> None:
    client = client_that_sent_hello()
    client.receive_data(RECORDING)
    for header, message, _ in REFERENCE:
        assert norm(client.next_event()) == norm(message)
        assert client.last_header == header
    assert client.next_event() is None


# --------------------------------------------------------------------------------------------
# end of stream
# --------------------------------------------------------------------------------------------


def test_end_at_a_frame_boundary_is_connection_closed() -> None:
    decoder = FrameDecoder()
    decoder.feed(RECORDING)
    decoder.feed(b"")
    items = drain(decoder)
    assert normalised(items[:-1]) == expected()
    _, closed, offset = items[-1]
    assert isinstance(closed, ConnectionClosed) and offset == len(RECORDING)
    assert decoder.next() is None
    decoder.feed(RECORDING[:40])  # bytes after the end are ignored
    assert decoder.next() is None and decoder.offset == len(RECORDING)


def test_connection_end_at_a_boundary() -> None:
    client = client_that_sent_hello()
    client.receive_data(RECORDING)
    client.receive_data(b"")
    events = list(client.events())
    assert isinstance(events[-1], ConnectionClosed)
    assert client.state is State.CLOSED
    assert [norm(e) for e in events[:-1]] == [norm(m) for _, m, _ in REFERENCE]


def truncation_expectation(cut: int) -> tuple[int, int | None]:
    """For the recording cut at ``cut``: how many messages are complete, and the offset of
    the truncated error (None: the end is at a clean boundary)."""
    open_messages: dict[int, int] = {}  # stream -> offset of its first frame
    inside = None
    for start, end, h in SPANS:
        if end > cut:
            if start < cut:
                inside = start
            break
        if h.flags & 2 and not h.flags & 4:
            open_messages[h.stream] = start
        elif not h.flags & 2:
            open_messages.pop(h.stream, None)
    complete = sum(1 for _, _, off in REFERENCE if _last_frame_end(off) <= cut)
    if inside is not None:
        return complete, inside
    if open_messages:
        return complete, min(open_messages.values())
    return complete, None


def _last_frame_end(first: int) -> int:
    header = next(h for start, _, h in SPANS if start == first)
    end = 0
    for _, e, h in SPANS:
        if (h.stream, h.seq) == (header.stream, header.seq):
            end = e
    return end


@SETTINGS
@given(cut=st.integers(1, len(RECORDING) - 1), by_bytes=st.booleans())
def test_end_anywhere(cut: int, by_bytes: bool) -> None:
    complete, error_at = truncation_expectation(cut)
    decoder = FrameDecoder()
    data = RECORDING[:cut]
    pieces = [data[i : i + 1] for i in range(len(data))] if by_bytes else [data]
    for piece in pieces:
        decoder.feed(piece)
    decoder.feed(b"")
    items = []
    try:
        while (item := decoder.next()) is not None:
            items.append(item)
        raised = None
    except ProtocolError as exc:
        raised = exc
    if error_at is None:
        assert raised is None
        assert isinstance(items[-1][1], ConnectionClosed)
        items = items[:-1]
    else:
        assert raised is not None
        assert raised.code is ErrorCode.TRUNCATED
        assert raised.offset == error_at
    assert normalised(items) == expected()[:complete]


def _cut_inside_chunked_message() -> tuple[int, int]:
    """A cut between two frames of a chunked message: (cut, first frame of the message)."""
    for i, (start, end, h) in enumerate(SPANS):
        if h.flags & 2 and not h.flags & 4:
            nxt = SPANS[i + 1]
            if nxt[2].stream == h.stream:
                return end, start
    raise AssertionError("no chunked message")


@pytest.mark.parametrize("where", ["header", "payload", "chunked"])
def test_connection_end_inside_is_truncated(where: str) -> None:
    if where == "chunked":
        cut, at = _cut_inside_chunked_message()
    else:
        start, end, _ = next(s for s in SPANS if s[2].length > 10)
        cut, at = (start + 10, start) if where == "header" else (end - 1, start)
    client = client_that_sent_hello()
    client.receive_data(RECORDING[:cut])
    client.receive_data(b"")
    complete, error_at = truncation_expectation(cut)
    assert error_at == at
    events = []
    with pytest.raises(ProtocolError) as info:
        while True:
            events.append(client.next_event())
    assert (info.value.code, info.value.offset) == (ErrorCode.TRUNCATED, at)
    assert [norm(e) for e in events] == [norm(m) for _, m, _ in REFERENCE[:complete]]
    assert client.state is State.ERROR


def test_end_inside_the_first_header() -> None:
    decoder = FrameDecoder()
    decoder.feed(RECORDING[:5])
    assert not decoder.idle
    decoder.feed(b"")
    with pytest.raises(ProtocolError) as info:
        decoder.next()
    assert (info.value.code, info.value.offset) == (ErrorCode.TRUNCATED, 0)


def test_empty_stream_is_closed() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"")
    _, message, offset = decoder.next()
    assert isinstance(message, ConnectionClosed) and offset == 0


def test_idle_tracks_frame_boundaries() -> None:
    decoder = FrameDecoder()
    assert decoder.idle
    cut, _ = _cut_inside_chunked_message()
    decoder.feed(RECORDING[:cut])
    assert not decoder.idle  # a chunked message is open
    decoder.feed(RECORDING[cut:])
    assert decoder.idle


# --------------------------------------------------------------------------------------------
# payload memory ownership
# --------------------------------------------------------------------------------------------


def test_volatile_input_is_copied(raw: Any) -> None:
    """``feed(data, volatile=True)`` promises to reuse ``data``: packets must not view it."""
    frame = raw.frame(67, raw.blob_body(b"payload!"))
    buf = bytearray(frame)
    decoder = FrameDecoder()
    decoder.feed(buf, volatile=True)
    buf[:] = b"\0" * len(buf)
    _, blob, _ = decoder.next()
    assert bytes(memoryview(blob.data)) == b"payload!"


def test_whole_frames_are_views_of_the_fed_object(raw: Any) -> None:
    frame = raw.frame(67, raw.blob_body(b"payload!"))
    buf = bytearray(frame)
    decoder = FrameDecoder()
    decoder.feed(buf)
    _, blob, _ = decoder.next()
    assert bytes(memoryview(blob.data)) == b"payload!"
    buf[-8:] = b"CHANGED!"  # documented: do not modify what you fed; the view shows it
    assert bytes(memoryview(blob.data)) == b"CHANGED!"


def test_small_frames_split_across_reads_are_copied(raw: Any) -> None:
    frame = raw.frame(67, raw.blob_body(b"payload!"))
    first, second = bytearray(frame[:40]), bytearray(frame[40:])
    decoder = FrameDecoder()
    decoder.feed(first)
    decoder.feed(second)
    first[:] = b"\0" * len(first)
    second[:] = b"\0" * len(second)
    _, blob, _ = decoder.next()
    assert bytes(memoryview(blob.data)) == b"payload!"


def test_welcome_switches_the_frame_decoder_stream_table(raw: Any) -> None:
    """A FrameDecoder in a relay follows the stream table a welcome announces."""
    streams = [*default_streams(), msgspec.structs.replace(default_streams()[4], id=9)]
    decoder = FrameDecoder()
    decoder.feed(raw.control(Welcome(streams=streams)))
    decoder.feed(raw.frame(67, raw.blob_body(b"x"), stream=9))
    assert isinstance(decoder.next()[1], Welcome)
    header, blob, _ = decoder.next()
    assert header.stream == 9 and bytes(memoryview(blob.data)) == b"x"


@pytest.mark.parametrize(
    "same_read",
    [
        pytest.param(False, id="separate-reads"),
        pytest.param(True, id="same-read"),
    ],
)
@pytest.mark.parametrize(
    ("change", "code", "at"),
    [
        ({"id": 9}, ErrorCode.UNKNOWN_STREAM, 6),  # stream 1 is gone
        ({"kind": "data"}, ErrorCode.INVALID_PAYLOAD, HEADER_SIZE),  # now a binary stream
    ],
    ids=["removed", "rekinded"],
)
def test_a_welcome_applies_to_the_very_next_frame(
    raw: Any, same_read: bool, change: dict[str, Any], code: ErrorCode, at: int
) -> None:
    streams = [msgspec.structs.replace(s, **change) if s.id == 1 else s for s in default_streams()]
    welcome = raw.control(Welcome(streams=streams))
    patch = raw.control(StatePatch(path="/a"))  # on stream 1
    decoder = FrameDecoder()
    if same_read:
        decoder.feed(welcome + patch)
    else:
        decoder.feed(welcome)
        decoder.feed(patch)
    assert isinstance(decoder.next()[1], Welcome)
    with pytest.raises(ProtocolError) as info:
        decoder.next()
    assert (info.value.code, info.value.offset) == (code, len(welcome) + at)
