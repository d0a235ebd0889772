"""Every error code of the spec table, with the offset it must point at, and what a connection
does after a ProtocolError (events before the bad frame, State.ERROR, goodbye_for)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from isthmus.wire import (
    HEADER_SIZE,
    Ack,
    Blob,
    Connection,
    Error,
    ErrorCode,
    FrameDecoder,
    Goodbye,
    Hello,
    LocalProtocolError,
    Ping,
    Pointer,
    ProtocolError,
    Role,
    State,
    VideoPacket,
    Welcome,
    WireError,
    default_streams,
)

P = HEADER_SIZE  # a frame's payload starts 32 bytes after the frame


def test_error_codes_are_the_spec_table() -> None:
    assert sorted(c.value for c in ErrorCode) == sorted(
        [
            "bad_magic",
            "bad_version",
            "unknown_type",
            "reserved_flags",
            "unknown_stream",
            "frame_too_large",
            "message_too_large",
            "bad_chunk",
            "sequence",
            "invalid_payload",
            "truncated",
            "credit_overrun",
            "unexpected_message",
        ]
    )


def test_protocol_error_fields_and_pickling() -> None:
    exc = ProtocolError(ErrorCode.SEQUENCE, "seq 5 on stream 0, expected 1", 1234)
    assert isinstance(exc, WireError) and issubclass(LocalProtocolError, WireError)
    assert (exc.code, exc.message, exc.offset) == (ErrorCode.SEQUENCE, exc.message, 1234)
    assert str(exc) == "sequence at offset 1234: seq 5 on stream 0, expected 1"
    back = pickle.loads(pickle.dumps(exc))
    assert (back.code, back.message, back.offset, str(back)) == (
        exc.code,
        exc.message,
        exc.offset,
        str(exc),
    )


# --------------------------------------------------------------------------------------------
# the frame decoder: one case per cause, after two good frames
# --------------------------------------------------------------------------------------------

# A case builds (bad bytes, code, offset of the offending byte from the start of the bad bytes,
# FrameDecoder keyword arguments). The bad bytes follow PREFIX: a ping (stream 0 seq 0) and a
# blob (stream 4 seq 0), so the next seq on streams 0 and 4 is 1.
Case = Callable[[Any], tuple[bytes, ErrorCode, int, dict[str, int]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


def ping(raw: Any, **kw: Any) -> bytes:
    return raw.control(Ping(nonce=2), seq=1, **kw)


def with_byte(frame: bytes, at: int, value: bytes) -> bytes:
    return frame[:at] + value + frame[at + len(value) :]


@case("bad_magic")
def _(raw: Any) -> Any:
    return with_byte(ping(raw), 0, b"HT"), ErrorCode.BAD_MAGIC, 0, {}


@case("bad_version")
def _(raw: Any) -> Any:
    return with_byte(ping(raw), 2, b"\x02"), ErrorCode.BAD_VERSION, 2, {}


@case("unknown_type")
def _(raw: Any) -> Any:
    return with_byte(ping(raw), 3, b"\x0e"), ErrorCode.UNKNOWN_TYPE, 3, {}


@case("reserved_flags")
def _(raw: Any) -> Any:
    return raw.frame(5, b"{}", seq=1, flags=0x8000), ErrorCode.RESERVED_FLAGS, 4, {}


@case("unknown_stream")
def _(raw: Any) -> Any:
    return raw.frame(5, b"{}", seq=0, stream=5), ErrorCode.UNKNOWN_STREAM, 6, {}


@case("frame_too_large")
def _(raw: Any) -> Any:
    frame = raw.frame(67, raw.blob_body(b"x" * 1000), seq=1)
    return frame, ErrorCode.FRAME_TOO_LARGE, 8, {"max_frame_size": 1000}


@case("frame_too_large-header-only")
def _(raw: Any) -> Any:
    """The limit is checked on the header: the payload need not arrive."""
    frame = raw.frame(67, b"", seq=1, length=2**32 - 1)
    return frame, ErrorCode.FRAME_TOO_LARGE, 8, {}


@case("message_too_large")
def _(raw: Any) -> Any:
    frame = raw.frame(67, b"x" * 100, seq=1, flags=raw.MORE, total=5001)
    return frame, ErrorCode.MESSAGE_TOO_LARGE, 12, {"max_message_size": 5000}


@case("bad_chunk-continuation-without-start")
def _(raw: Any) -> Any:
    frame = raw.frame(67, b"xx", seq=1, flags=raw.CONTINUATION, total=10)
    return frame, ErrorCode.BAD_CHUNK, 4, {}


def _first(raw: Any, **kw: Any) -> bytes:
    return raw.frame(67, raw.blob_body(b"0123456789")[:8], seq=1, flags=raw.MORE, total=18, **kw)


@case("bad_chunk-new-message-inside-chunked")
def _(raw: Any) -> Any:
    first = _first(raw)
    return first + raw.frame(67, raw.blob_body(), seq=2), ErrorCode.BAD_CHUNK, len(first) + 4, {}


@case("bad_chunk-new-message-inside-chunked-with-same-seq")
def _(raw: Any) -> Any:
    first = _first(raw)
    return first + raw.frame(67, raw.blob_body(), seq=1), ErrorCode.BAD_CHUNK, len(first) + 4, {}


def _cont(raw: Any, **kw: Any) -> Any:
    fields: dict[str, Any] = {"seq": 1, "total": 18, "flags": raw.CONTINUATION, "ts": 0}
    fields.update(kw)
    type_ = fields.pop("type", 67)
    body = fields.pop("body", b"0123456789")
    first = _first(raw)
    return first + raw.frame(type_, body, **fields), ErrorCode.BAD_CHUNK, len(first) + 4, {}


@case("bad_chunk-type-mismatch")
def _(raw: Any) -> Any:
    return _cont(raw, type=66)


@case("bad_chunk-seq-mismatch")
def _(raw: Any) -> Any:
    return _cont(raw, seq=2)


@case("bad_chunk-total-mismatch")
def _(raw: Any) -> Any:
    return _cont(raw, total=19, body=b"01234567890")


@case("bad_chunk-timestamp-mismatch")
def _(raw: Any) -> Any:
    return _cont(raw, ts=1)


@case("bad_chunk-last-chunk-short")
def _(raw: Any) -> Any:
    return _cont(raw, body=b"012345678")


@case("bad_chunk-chunks-past-total")
def _(raw: Any) -> Any:
    return _cont(raw, body=b"01234567890", flags=raw.CONTINUATION | raw.MORE)


@case("bad_chunk-unchunked-total-differs")
def _(raw: Any) -> Any:
    return raw.frame(67, raw.blob_body(b"x"), seq=1, total=100), ErrorCode.BAD_CHUNK, 4, {}


@case("bad_chunk-first-chunk-is-whole-message")
def _(raw: Any) -> Any:
    body = raw.blob_body(b"x")
    frame = raw.frame(67, body, seq=1, flags=raw.MORE, total=len(body))
    return frame, ErrorCode.BAD_CHUNK, 4, {}


@case("sequence-gap")
def _(raw: Any) -> Any:
    return raw.control(Ping(), seq=2), ErrorCode.SEQUENCE, 16, {}


@case("sequence-repeat")
def _(raw: Any) -> Any:
    return raw.frame(67, raw.blob_body(), seq=0), ErrorCode.SEQUENCE, 16, {}


@case("sequence-fresh-stream-starts-at-0")
def _(raw: Any) -> Any:
    return raw.frame(65, raw.audio_body(), seq=1), ErrorCode.SEQUENCE, 16, {}


@case("invalid_payload-bad-json")
def _(raw: Any) -> Any:
    return raw.frame(5, b'{"nonce": 1', seq=1), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-bad-msgpack")
def _(raw: Any) -> Any:
    return raw.frame(5, b"\x81\xc1", seq=1, flags=raw.MSGPACK), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-json-in-a-msgpack-frame")
def _(raw: Any) -> Any:
    body = msgspec.json.encode(Ping())
    return raw.frame(5, body, seq=1, flags=raw.MSGPACK), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-wrong-field-type-json")
def _(raw: Any) -> Any:
    return raw.frame(5, b'{"nonce": "one"}', seq=1), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-wrong-field-type-msgpack")
def _(raw: Any) -> Any:
    body = msgspec.msgpack.encode({"x": "left", "y": 1.0})
    return raw.frame(10, body, seq=1, flags=1), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-missing-required-field")
def _(raw: Any) -> Any:
    return raw.frame(7, b'{"stream": 2}', seq=1), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-empty-control-body")
def _(raw: Any) -> Any:
    return raw.frame(5, b"", seq=1), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-control-message-on-video-stream")
def _(raw: Any) -> Any:
    return raw.control(Ping(), seq=0, stream=2), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-binary-on-control-stream")
def _(raw: Any) -> Any:
    return raw.frame(67, raw.blob_body(b"x"), seq=1, stream=0), ErrorCode.INVALID_PAYLOAD, P, {}


@case("invalid_payload-binary-on-state-stream")
def _(raw: Any) -> Any:
    return raw.frame(64, raw.video_body(), seq=0, stream=1), ErrorCode.INVALID_PAYLOAD, P, {}


# Invalid packet fields point at the field.
@case("invalid_payload-video-codec")
def _(raw: Any) -> Any:
    return raw.frame(64, raw.video_body(codec=6)), ErrorCode.INVALID_PAYLOAD, P + 0, {}


@case("invalid_payload-video-flag-bits")
def _(raw: Any) -> Any:
    return raw.frame(64, raw.video_body(vflags=2)), ErrorCode.INVALID_PAYLOAD, P + 1, {}


@case("invalid_payload-video-reserved")
def _(raw: Any) -> Any:
    return raw.frame(64, raw.video_body(reserved=1)), ErrorCode.INVALID_PAYLOAD, P + 2, {}


@case("invalid_payload-audio-sample-format")
def _(raw: Any) -> Any:
    return raw.frame(65, raw.audio_body(fmt=6)), ErrorCode.INVALID_PAYLOAD, P + 6, {}


@case("invalid_payload-audio-codec")
def _(raw: Any) -> Any:
    return raw.frame(65, raw.audio_body(codec=3)), ErrorCode.INVALID_PAYLOAD, P + 7, {}


def _tensor(raw: Any, **kw: Any) -> bytes:
    fields: dict[str, Any] = {"dtype": "<f4", "shape": (2,), "strides": (4,)}
    fields.update(kw)
    return raw.frame(66, raw.tensor_body(b"\0" * 8, **fields), seq=1)


@case("invalid_payload-tensor-ndim")
def _(raw: Any) -> Any:
    return _tensor(raw, ndim=33), ErrorCode.INVALID_PAYLOAD, P + 0, {}


@case("invalid_payload-tensor-reserved")
def _(raw: Any) -> Any:
    return _tensor(raw, reserved=1), ErrorCode.INVALID_PAYLOAD, P + 2, {}


@case("invalid_payload-tensor-object-dtype")
def _(raw: Any) -> Any:
    return _tensor(raw, dtype="|O8"), ErrorCode.INVALID_PAYLOAD, P + 8, {}


@case("invalid_payload-tensor-negative-stride")
def _(raw: Any) -> Any:
    # dtype "<f4" pads to 8 bytes: shape at 16, strides at 32 (two dimensions), the second
    # stride at 40
    return _tensor(raw, shape=(1, 2), strides=(8, -4)), ErrorCode.INVALID_PAYLOAD, P + 40, {}


@case("invalid_payload-tensor-data-overlaps-header")
def _(raw: Any) -> Any:
    return _tensor(raw, data_offset=24), ErrorCode.INVALID_PAYLOAD, P + 4, {}


@case("invalid_payload-blob-mime-not-utf8")
def _(raw: Any) -> Any:
    return raw.frame(67, raw.blob_body(mime=b"\xff"), seq=1), ErrorCode.INVALID_PAYLOAD, P + 4, {}


@case("invalid_payload-blob-name-not-utf8")
def _(raw: Any) -> Any:
    body = raw.blob_body(mime=b"a/b", name=b"\xc3")
    return raw.frame(67, body, seq=1), ErrorCode.INVALID_PAYLOAD, P + 4 + 3, {}


# A field that claims more bytes than the body has: truncated, at the length field.
@case("truncated-video-header")
def _(raw: Any) -> Any:
    return raw.frame(64, raw.video_body()[:23]), ErrorCode.TRUNCATED, P, {}


@case("truncated-video-config_len")
def _(raw: Any) -> Any:
    body = raw.video_body(b"pic", config=b"cfg", config_len=7)
    return raw.frame(64, body), ErrorCode.TRUNCATED, P + 12, {}


@case("truncated-audio-header")
def _(raw: Any) -> Any:
    return raw.frame(65, raw.audio_body()[:15]), ErrorCode.TRUNCATED, P, {}


@case("truncated-tensor-header")
def _(raw: Any) -> Any:
    return raw.frame(66, b"\x01\x03\0\0", seq=1), ErrorCode.TRUNCATED, P, {}


@case("truncated-tensor-dtype_len")
def _(raw: Any) -> Any:
    return raw.frame(66, b"\x00\x09\0\0\x08\0\0\0<f4", seq=1), ErrorCode.TRUNCATED, P + 1, {}


@case("truncated-tensor-shape")
def _(raw: Any) -> Any:
    body = raw.tensor_body(b"", dtype="<f4", shape=(2,), strides=(4,))[:20]
    return raw.frame(66, body, seq=1), ErrorCode.TRUNCATED, P, {}


@case("truncated-tensor-data_offset")
def _(raw: Any) -> Any:
    body = raw.tensor_body(b"", dtype="<f4", shape=(0,), strides=(4,), data_offset=200)[:100]
    return raw.frame(66, body, seq=1), ErrorCode.TRUNCATED, P + 4, {}


@case("truncated-tensor-extent")
def _(raw: Any) -> Any:
    # three float32 need 12 bytes; the body carries 8. Points at the shape (byte 16).
    return _tensor(raw, shape=(3,)), ErrorCode.TRUNCATED, P + 16, {}


@case("truncated-tensor-extent-by-strides")
def _(raw: Any) -> Any:
    return _tensor(raw, shape=(2,), strides=(8,)), ErrorCode.TRUNCATED, P + 16, {}


@case("truncated-blob-header")
def _(raw: Any) -> Any:
    return raw.frame(67, b"\x01\x00\x00", seq=1), ErrorCode.TRUNCATED, P, {}


@case("truncated-blob-mime_len")
def _(raw: Any) -> Any:
    body = raw.blob_body(mime=b"text/plain", mime_len=200)
    return raw.frame(67, body, seq=1), ErrorCode.TRUNCATED, P + 0, {}


@case("truncated-blob-name_len")
def _(raw: Any) -> Any:
    body = raw.blob_body(mime=b"text/plain", name=b"n", name_len=2)
    return raw.frame(67, body, seq=1), ErrorCode.TRUNCATED, P + 2, {}


@case("truncated-field-in-a-later-chunk")
def _(raw: Any) -> Any:
    """config_len (body bytes 12-15) travels in the second 8-byte chunk: the offset points at
    its real byte in that chunk's payload."""
    body = raw.video_body(b"pic", config_len=99)
    frames = raw.chunked(64, body, chunk=8)
    return b"".join(frames), ErrorCode.TRUNCATED, len(frames[0]) + P + 4, {}


@case("invalid_payload-json-in-a-chunked-message")
def _(raw: Any) -> Any:
    frames = raw.chunked(13, b'{"path": "/a", "value": [1, 2', chunk=10)
    return b"".join(frames), ErrorCode.INVALID_PAYLOAD, P, {}


PREFIX_MESSAGES = [Ping(nonce=1), b"ok"]


def prefix(raw: Any) -> bytes:
    return raw.control(Ping(nonce=1), seq=0) + raw.frame(67, raw.blob_body(b"ok"), seq=0)


def feed(decoder: FrameDecoder, data: bytes, mode: str) -> None:
    if mode == "whole":
        decoder.feed(data)
    elif mode == "bytes":
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])
    else:  # 7-byte reads through get_buffer
        pos = 0
        while pos < len(data):
            view = decoder.get_buffer()
            n = min(7, len(view), len(data) - pos)
            view[:n] = data[pos : pos + n]
            decoder.buffer_updated(n)
            pos += n


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["whole", "bytes", "reads"])
def test_decoder_error(raw: Any, name: str, mode: str) -> None:
    bad, code, at, limits = CASES[name](raw)
    good = prefix(raw)
    decoder = FrameDecoder(**limits)
    feed(decoder, good + bad + raw.control(Ping(), seq=9), mode)
    _, first, off1 = decoder.next()
    _, second, off2 = decoder.next()
    assert first == Ping(nonce=1) and off1 == 0 and off2 == len(raw.control(Ping(nonce=1)))
    assert isinstance(second, Blob) and bytes(memoryview(second.data)) == b"ok"
    with pytest.raises(ProtocolError) as info:
        decoder.next()
    assert (info.value.code, info.value.offset) == (code, len(good) + at), info.value
    assert decoder.failed is info.value
    # The same error on every later call, and nothing more is parsed.
    offset = decoder.offset
    decoder.feed(raw.control(Ping(), seq=1))
    for _ in range(2):
        with pytest.raises(ProtocolError) as again:
            decoder.next()
        assert again.value is info.value
    assert decoder.offset == offset


@pytest.mark.parametrize("mode", ["whole", "bytes"])
def test_end_of_stream_inside_a_frame(raw: Any, mode: str) -> None:
    good = prefix(raw)
    frame = raw.frame(67, raw.blob_body(b"payload"), seq=1)
    decoder = FrameDecoder()
    feed(decoder, good + frame[:-1], mode)
    decoder.feed(b"")
    assert decoder.next()[1] == Ping(nonce=1)
    assert isinstance(decoder.next()[1], Blob)
    with pytest.raises(ProtocolError) as info:
        decoder.next()
    assert (info.value.code, info.value.offset) == (ErrorCode.TRUNCATED, len(good))


def test_limits_are_inclusive(raw: Any) -> None:
    body = raw.blob_body(b"x" * 100)
    decoder = FrameDecoder(max_frame_size=len(body), max_message_size=len(body))
    decoder.feed(raw.frame(67, body))
    assert isinstance(decoder.next()[1], Blob)


def test_chunked_message_may_exceed_the_frame_limit(raw: Any) -> None:
    body = raw.blob_body(b"y" * 1000)
    decoder = FrameDecoder(max_frame_size=100, max_message_size=len(body))
    decoder.feed(b"".join(raw.chunked(67, body, chunk=100)))
    header, blob, offset = decoder.next()
    assert header.length == header.total == len(body) and offset == 0
    assert bytes(memoryview(blob.data)) == b"y" * 1000


# --------------------------------------------------------------------------------------------
# connection-level errors
# --------------------------------------------------------------------------------------------


def raise_after(conn: Connection) -> tuple[list[Any], ProtocolError]:
    events = []
    while True:
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            return events, exc
        assert event is not None, f"no ProtocolError after {events}"
        events.append(event)


def credit_frames(raw: Any, seqs: range) -> bytes:
    return b"".join(
        raw.frame(64, raw.video_body(bytes([s]), codec=5, vflags=1), seq=s, flags=raw.KEYFRAME)
        for s in seqs
    )


def test_credit_overrun(connect: Any, raw: Any) -> None:
    """A sender built by hand ignores the window of 2: the third unacknowledged packet."""
    pair = connect(Hello(credits=2))
    assert pair.welcome.credits == 2
    assert next(s.credits for s in pair.welcome.streams if s.id == 2) == 2
    base = pair.client_offset
    data = credit_frames(raw, range(3))
    pair.client.receive_data(data)
    events, error = raise_after(pair.client)
    assert [bytes(memoryview(e.data)) for e in events] == [b"\0", b"\1"]
    third = base + 2 * (len(data) // 3)
    assert (error.code, error.offset) == (ErrorCode.CREDIT_OVERRUN, third)


def test_acknowledged_packets_free_credits(connect: Any, raw: Any) -> None:
    pair = connect(Hello(credits=2))
    first = credit_frames(raw, range(2))
    pair.client.receive_data(first)
    assert len(list(pair.client.events())) == 2
    assert raw.frames(raw.join(pair.client.ack(2)))[0][1] == msgspec.msgpack.encode(
        Ack(stream=2, seq=1)
    )  # the frames were built by hand, so the server is not told
    second = credit_frames(raw, range(2, 4))
    pair.client.receive_data(second)
    assert len(list(pair.client.events())) == 2
    at = pair.client_offset + len(first) + len(second)
    pair.client.receive_data(credit_frames(raw, range(4, 5)))
    events, error = raise_after(pair.client)
    assert events == []
    assert (error.code, error.offset) == (ErrorCode.CREDIT_OVERRUN, at)


def test_ack_of_a_packet_never_sent_is_invalid(connect: Any, raw: Any) -> None:
    pair = connect(Hello(encodings=["json"]))
    pair.server.send(VideoPacket(codec="jpeg", keyframe=True, data=b"x"))
    base = pair.server_offset
    # seq 1 was never sent; the body is the offending part
    pair.server.receive_data(raw.control(Ack(stream=2, seq=1), seq=1))
    _, error = raise_after(pair.server)
    assert (error.code, error.offset) == (ErrorCode.INVALID_PAYLOAD, base + P)


@pytest.mark.parametrize("stream", [0, 4, 77])
def test_ack_of_a_stream_without_credits_is_invalid(connect: Any, raw: Any, stream: int) -> None:
    pair = connect(Hello(encodings=["json"]))
    base = pair.server_offset
    pair.server.receive_data(raw.control(Ack(stream=stream, seq=0), seq=1))
    _, error = raise_after(pair.server)
    assert (error.code, error.offset) == (ErrorCode.INVALID_PAYLOAD, base + P)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(lambda raw: raw.control(Ping()), id="ping"),
        pytest.param(lambda raw: raw.control(Pointer(x=1, y=2)), id="pointer"),
        pytest.param(lambda raw: raw.control(Welcome()), id="welcome"),
        pytest.param(lambda raw: raw.frame(67, raw.blob_body(b"x")), id="blob"),
        pytest.param(lambda raw: raw.frame(64, raw.video_body(b"x"), flags=8), id="video"),
    ],
)
def test_anything_before_hello_is_unexpected(raw: Any, frame: Any) -> None:
    server = Connection(Role.SERVER)
    server.receive_data(frame(raw))
    events, error = raise_after(server)
    assert events == []
    assert (error.code, error.offset) == (ErrorCode.UNEXPECTED_MESSAGE, 3)
    assert server.state is State.ERROR


def test_ping_before_hello_is_unexpected_even_after_good_bytes(raw: Any) -> None:
    """Offsets count from the first byte given to receive_data."""
    server = Connection(Role.SERVER)
    server.receive_data(b"IW")
    server.receive_data(raw.control(Ping())[2:])
    _, error = raise_after(server)
    assert (error.code, error.offset) == (ErrorCode.UNEXPECTED_MESSAGE, 3)


def test_hello_after_the_handshake_is_unexpected(connect: Any, raw: Any) -> None:
    pair = connect(Hello(encodings=["json"]))
    pair.client.send(Ping())
    base = pair.server_offset
    data = raw.control(Ping(nonce=3), seq=1) + raw.control(Hello(), seq=2)
    pair.server.receive_data(data)
    events, error = raise_after(pair.server)
    assert events == [Ping(nonce=3)]
    assert (error.code, error.offset) == (
        ErrorCode.UNEXPECTED_MESSAGE,
        base + len(raw.control(Ping(nonce=3), seq=1)) + 3,
    )


def test_second_hello_before_accept_is_unexpected(raw: Any) -> None:
    server = Connection(Role.SERVER)
    first = raw.control(Hello())
    server.receive_data(first + raw.control(Hello(), seq=1))
    events, error = raise_after(server)
    assert events == [Hello()]
    assert (error.code, error.offset) == (ErrorCode.UNEXPECTED_MESSAGE, len(first) + 3)


def test_welcome_after_the_handshake_is_unexpected(connect: Any, raw: Any) -> None:
    pair = connect()
    base = pair.client_offset
    pair.client.receive_data(raw.control(Welcome(), seq=1))
    _, error = raise_after(pair.client)
    assert (error.code, error.offset) == (ErrorCode.UNEXPECTED_MESSAGE, base + 3)


def test_welcome_without_hello_is_unexpected(raw: Any) -> None:
    client = Connection(Role.CLIENT)
    client.receive_data(raw.control(Welcome()))
    _, error = raise_after(client)
    assert (error.code, error.offset) == (ErrorCode.UNEXPECTED_MESSAGE, 3)


def test_client_gets_a_message_before_the_welcome(raw: Any) -> None:
    client = Connection(Role.CLIENT)
    client.send(Hello())
    client.receive_data(raw.control(Ping()) + raw.control(Pointer(x=0, y=0), seq=1))
    events, error = raise_after(client)
    assert events == [Ping()]  # ping, pong, error and goodbye may come before the welcome
    assert (error.code, error.offset) == (
        ErrorCode.UNEXPECTED_MESSAGE,
        len(raw.control(Ping())) + 3,
    )


def test_message_after_goodbye_is_unexpected(connect: Any, raw: Any) -> None:
    pair = connect(Hello(encodings=["json"]))
    base = pair.client_offset
    bye = raw.control(Goodbye(reason="bye"), seq=1)
    pair.client.receive_data(bye + raw.control(Ping(), seq=2))
    events, error = raise_after(pair.client)
    assert events == [Goodbye(reason="bye")]
    assert (error.code, error.offset) == (ErrorCode.UNEXPECTED_MESSAGE, base + len(bye) + 3)


def test_handshake_frames_are_limited_before_the_welcome(raw: Any) -> None:
    """Until the handshake agrees on limits, frames are at most 64 KiB."""
    server = Connection(Role.SERVER)
    server.receive_data(raw.frame(1, b"{}", length=64 * 1024 + 1))
    _, error = raise_after(server)
    assert (error.code, error.offset) == (ErrorCode.FRAME_TOO_LARGE, 8)


def test_connection_enforces_the_negotiated_frame_size(connect: Any, raw: Any) -> None:
    pair = connect(Hello(max_frame_size=100_000, encodings=["json"]))
    assert pair.welcome.max_frame_size == 100_000
    base = pair.server_offset
    pair.server.receive_data(raw.frame(67, raw.blob_body(b"z" * 100_000)))
    _, error = raise_after(pair.server)
    assert (error.code, error.offset) == (ErrorCode.FRAME_TOO_LARGE, base + 8)


def test_connection_sees_the_welcomes_stream_table(connect: Any, raw: Any) -> None:
    pair = connect()
    base = pair.client_offset
    pair.client.receive_data(raw.frame(67, raw.blob_body(), stream=5))
    _, error = raise_after(pair.client)
    assert (error.code, error.offset) == (ErrorCode.UNKNOWN_STREAM, base + 6)


# --------------------------------------------------------------------------------------------
# after the error
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_after_an_error(connect: Any, raw: Any, encoding: str) -> None:
    pair = connect(Hello(encodings=[encoding]))
    pair.server.queue(Ping(nonce=1))
    pair.server.queue(VideoPacket(codec="h264", keyframe=True, data=b"key"))
    good = pair.server.data_to_send()
    base = pair.client_offset + len(raw.join(good))
    bad = raw.control(Ping(), seq=7)  # stream 0 expects seq 2
    pair.client.receive_data(raw.join(good) + bad + raw.control(Ping(), seq=2))
    # events before the bad frame are delivered first
    first = pair.client.next_event()
    second = pair.client.next_event()
    assert first == Ping(nonce=1)
    assert isinstance(second, VideoPacket) and bytes(memoryview(second.data)) == b"key"
    assert pair.client.state is State.OPEN
    with pytest.raises(ProtocolError) as info:
        pair.client.next_event()
    error = info.value
    assert (error.code, error.offset) == (ErrorCode.SEQUENCE, base + 16)
    assert pair.client.state is State.ERROR
    assert pair.client.error is error
    # every later call raises the same error; new bytes produce nothing
    pair.client.receive_data(raw.control(Ping(), seq=2))
    pair.client.receive_data(b"")
    for _ in range(3):
        with pytest.raises(ProtocolError) as again:
            pair.client.next_event()
        assert again.value is error
    with pytest.raises(ProtocolError):
        list(pair.client.events())
    # sending is refused...
    with pytest.raises(LocalProtocolError):
        pair.client.send(Ping())
    # ...but goodbye_for tells the peer why
    out = pair.client.goodbye_for(error)
    assert pair.deliver_to_server(out) == [
        Error(code="sequence", message=error.message, offset=error.offset),
        Goodbye(code=1002, reason=str(error)),
    ]
    assert bool(pair.server.last_header.flags & 1) == (encoding == "msgpack")
    assert pair.server.state is State.CLOSING
    assert pair.client.goodbye_for(error) == []  # said once


def test_goodbye_for_aborts_and_the_state_stays_error(connect: Any, raw: Any) -> None:
    """goodbye_for drops what is queued on other streams; control messages already queued go
    first (their sequence numbers stay continuous); the connection stays in State.ERROR."""
    pair = connect()
    pair.client.queue(Blob(data=bytes(1_000_000)))
    pair.client.data_to_send(max_bytes=1)  # a chunk of the blob is out
    pair.client.queue(Pointer(x=1, y=2))
    pair.client.receive_data(raw.control(Ping(), seq=5))
    _, error = raise_after(pair.client)
    out = pair.client.goodbye_for(error)
    assert pair.client.state is State.ERROR
    assert pair.client.goodbye_sent and not pair.client.goodbye_received
    frames = raw.frames(raw.join(out))
    assert [(h.type, h.stream, h.seq) for h, _ in frames] == [(10, 0, 1), (4, 0, 2), (3, 0, 3)]
    assert not pair.client.has_data_to_send
    assert pair.client.goodbye_for(error) == []
    with pytest.raises(ProtocolError):
        pair.client.next_event()
    assert pair.client.state is State.ERROR


def test_goodbye_for_an_error_during_the_handshake(raw: Any) -> None:
    """The server answers a bad first frame in JSON, which a client in the handshake reads."""
    server = Connection(Role.SERVER)
    client = Connection(Role.CLIENT)
    client.send(Hello())
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n12345")
    _, error = raise_after(server)
    assert (error.code, error.offset) == (ErrorCode.BAD_MAGIC, 0)
    client.receive_data(raw.join(server.goodbye_for(error)))
    assert list(client.events()) == [
        Error(code="bad_magic", message=error.message, offset=0),
        Goodbye(code=1002, reason=str(error)),
    ]
    assert client.state is State.CLOSING


# --------------------------------------------------------------------------------------------
# bodies msgspec can parse but the protocol cannot carry
# --------------------------------------------------------------------------------------------

NOT_UTF8 = {
    "json": (b'{"key": "\xff"}', 0),
    "msgpack": (b"\x81\xa3key\xa1\xff", 1),  # {"key": <str of one byte 0xff>}
}


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_invalid_utf8_in_a_control_body_is_invalid_payload(raw: Any, encoding: str) -> None:
    body, flags = NOT_UTF8[encoding]
    good = raw.control(Ping(), seq=0)
    decoder = FrameDecoder()
    decoder.feed(good + raw.frame(12, body, seq=1, flags=flags) + raw.control(Ping(), seq=2))
    assert decoder.next()[1] == Ping()
    with pytest.raises(ProtocolError) as info:
        decoder.next()
    assert (info.value.code, info.value.offset) == (ErrorCode.INVALID_PAYLOAD, len(good) + P)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_invalid_utf8_from_a_peer_does_not_crash_receive_data(
    connect: Any, raw: Any, encoding: str
) -> None:
    pair = connect()
    body, flags = NOT_UTF8[encoding]
    base = pair.client_offset
    pair.client.receive_data(raw.frame(12, body, seq=1, flags=flags))
    _, error = raise_after(pair.client)
    assert (error.code, error.offset) == (ErrorCode.INVALID_PAYLOAD, base + P)


@pytest.mark.parametrize(
    ("encoding", "nonce"),
    [
        ("json", 2**63),
        ("json", 2**64),
        ("json", -(2**63) - 1),
        ("msgpack", 2**63),  # a uint64 MessagePack can spell
        ("msgpack", 2**64 - 1),
    ],
)
def test_integers_beyond_64_bits_are_invalid(
    connect: Any, raw: Any, encoding: str, nonce: int
) -> None:
    """JSON can spell any integer, MessagePack up to 2**64 - 1, JavaScript peers 64-bit: a
    control-message integer outside the signed 64-bit range is refused, so that whatever is
    accepted can be sent on (ping.response() on a msgpack connection used to raise
    OverflowError)."""
    pair = connect()
    if encoding == "json":
        body, flags = b'{"nonce": %d}' % nonce, 0
    else:
        body, flags = b"\x81\xa5nonce\xcf" + nonce.to_bytes(8, "big"), 1
    base = pair.server_offset
    pair.server.receive_data(raw.frame(5, body, seq=1, flags=flags))
    _, error = raise_after(pair.server)
    assert (error.code, error.offset) == (ErrorCode.INVALID_PAYLOAD, base + P)


def test_integers_at_the_64_bit_limits_round_trip(connect: Any) -> None:
    pair = connect()
    for nonce in (2**63 - 1, -(2**63)):
        pair.client.queue(Ping(nonce=nonce, time_ns=nonce))
    events = pair.to_server()
    assert events == [
        Ping(nonce=2**63 - 1, time_ns=2**63 - 1),
        Ping(nonce=-(2**63), time_ns=-(2**63)),
    ]
    for ping in events:
        pair.server.queue(ping.response())
    assert len(pair.to_client()) == 2


@pytest.mark.parametrize("shape", [(2**62,), (2**64 - 1,), (2**40, 2**40)], ids=str)
def test_tensor_shapes_no_array_can_have_are_invalid(raw: Any, shape: tuple[int, ...]) -> None:
    """Zero strides need no memory, so the extent check passes whatever the shape; numpy
    still cannot make such an array, so the decoder refuses it at the shape field."""
    body = raw.tensor_body(b"\0" * 8, dtype="<f8", shape=shape, strides=(0,) * len(shape))
    decoder = FrameDecoder()
    decoder.feed(raw.frame(66, body))
    with pytest.raises(ProtocolError) as info:
        decoder.next()
    assert (info.value.code, info.value.offset) == (ErrorCode.INVALID_PAYLOAD, P + 16)


def test_broadcast_tensor_with_zero_strides_is_viewed(raw: Any) -> None:
    body = raw.tensor_body(b"\x07" + b"\0" * 7, dtype="<i8", shape=(3, 4), strides=(0, 0))
    decoder = FrameDecoder()
    decoder.feed(raw.frame(66, body))
    _, tensor, _ = decoder.next()
    assert tensor.to_numpy().tolist() == [[7] * 4] * 3


def _table(**change: Any) -> list[Any]:
    return [msgspec.structs.replace(s, **change) if s.id == 0 else s for s in default_streams()]


@pytest.mark.parametrize(
    "streams",
    [
        pytest.param(_table(id=8), id="no-stream-0"),
        pytest.param(_table(kind="data"), id="stream-0-not-control"),
        pytest.param([*default_streams(), default_streams()[4]], id="duplicate-id"),
        pytest.param(_table(credits=-1), id="negative-credits"),
        pytest.param(_table(chunk_size=-1), id="negative-chunk-size"),
    ],
)
def test_a_welcome_with_a_bad_stream_table_is_invalid(raw: Any, streams: list[Any]) -> None:
    """Found by fuzz_wire.py: a welcome without control stream 0 used to be accepted, and
    goodbye_for() then raised KeyError. It is an invalid payload; the client can still say why."""
    client = Connection(Role.CLIENT)
    client.send(Hello())
    client.receive_data(raw.control(Welcome(streams=streams)) + raw.control(Ping(), seq=1))
    events, error = raise_after(client)
    assert events == []
    assert (error.code, error.offset) == (ErrorCode.INVALID_PAYLOAD, P)
    out = client.goodbye_for(error)
    frames = raw.frames(raw.join(out))
    assert [(h.type, h.stream) for h, _ in frames] == [(4, 0), (3, 0)]  # error, goodbye


def test_a_welcome_with_a_stream_id_over_u16_is_invalid(raw: Any) -> None:
    client = Connection(Role.CLIENT)
    client.send(Hello())
    table = msgspec.to_builtins(Welcome())
    table["streams"].append({"id": 70_000, "name": "x", "kind": "data"})
    client.receive_data(raw.frame(2, msgspec.json.encode(table)))
    _, error = raise_after(client)
    assert (error.code, error.offset) == (ErrorCode.INVALID_PAYLOAD, P)
