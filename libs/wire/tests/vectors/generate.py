#!/usr/bin/env python3
"""Generate the golden test vectors shared by the Python and JavaScript decoders.

Each vector is ``<name>.bin`` (the bytes on the wire) and ``<name>.json`` (what a decoder must
produce: the messages, then the error if any). The expected values are built from the
messages that were encoded, not from a decoder, so decoding them tests the decoders::

    python libs/wire/tests/vectors/generate.py          # rewrite the vectors
    python libs/wire/tests/vectors/generate.py --check  # exit 1 if they are out of date

``tests/test_vectors.py`` runs the check and decodes every vector; ``js/test`` decodes them
with the JavaScript decoder.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from isthmus.wire import (
    HEADER_SIZE,
    Ack,
    AudioChunk,
    Blob,
    ControlMessage,
    Error,
    Flags,
    Goodbye,
    Hello,
    Key,
    MessageType,
    Ping,
    Pointer,
    Pong,
    RequestKeyframe,
    StatePatch,
    Stats,
    Tensor,
    VideoPacket,
    Welcome,
    Wheel,
    pack_header,
)
from isthmus.wire._codec import Outgoing, encode_message
from isthmus.wire._packets import encode_packet

HERE = Path(__file__).resolve().parent
TS = 1_700_000_000_123_456_789  # a timestamp above 2**53, so readers must keep 64 bits
LIMITS = {"max_frame_size": 1 << 20, "max_message_size": 1 << 24}


@dataclass
class Vector:
    name: str
    description: str
    data: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    feed: str = "whole"
    limits: dict[str, int] = field(default_factory=lambda: dict(LIMITS))
    decoders: tuple[str, ...] = ("python", "js")
    seqs: dict[int, int] = field(default_factory=dict)

    def add(
        self,
        message: Any,
        *,
        stream: int | None = None,
        encoding: str = "json",
        chunk: int = 0,
        ts: int = TS,
        expect: bool = True,
    ) -> None:
        """Append the frames of ``message`` and, with ``expect``, its expected decoding."""
        sid = message.STREAM if stream is None else stream
        seq = self.seqs.get(sid, 0)
        self.seqs[sid] = seq + 1
        if isinstance(message, ControlMessage):
            body = encode_message(message, "msgpack" if encoding == "msgpack" else "json")
            flags = Flags.MSGPACK if encoding == "msgpack" else 0
            parts: list[Any] = [body]
            total = len(body)
            expected_body: dict[str, Any] = msgspec.to_builtins(message)
        else:
            prefix, payload = encode_packet(message)
            flags = Flags.KEYFRAME if getattr(message, "keyframe", False) else 0
            parts = [prefix, payload]
            total = len(prefix) + payload.nbytes
            expected_body = packet_json(message)
            encoding = "binary"
        out: list[Any] = []
        item = Outgoing(int(message.TYPE), int(flags), sid, seq, ts, parts, total, chunk)
        while not item.done:
            item.next_frame(out)
        for buf in out:
            self.data += bytes(buf)
        if expect:
            self.messages.append(
                {
                    "type": MessageType(message.TYPE).name.lower(),
                    "stream": sid,
                    "seq": seq,
                    "timestamp_ns": str(ts),
                    "encoding": encoding,
                    "body": expected_body,
                }
            )

    def raw(self, data: bytes) -> None:
        self.data += data

    def fail(self, code: str, offset: int) -> None:
        self.error = {"code": code, "offset": offset}

    def write(self, folder: Path) -> dict[str, bytes]:
        meta = {
            "name": self.name,
            "description": self.description,
            "decoders": list(self.decoders),
            "limits": self.limits,
            "feed": self.feed,
            "messages": self.messages,
            "error": self.error,
        }
        return {
            f"{self.name}.bin": bytes(self.data),
            f"{self.name}.json": (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
        }


def packet_json(p: Any) -> dict[str, Any]:
    """The expected form of a binary packet in a vector."""
    data = bytes(memoryview(p.data).cast("B")) if not isinstance(p.data, bytes) else p.data
    if isinstance(p, VideoPacket):
        return {
            "codec": p.codec,
            "keyframe": p.keyframe,
            "width": p.width,
            "height": p.height,
            "pts": str(p.pts),
            "config_hex": bytes(p.config).hex(),
            "data_hex": data.hex(),
        }
    if isinstance(p, AudioChunk):
        return {
            "rate": p.rate,
            "channels": p.channels,
            "sample_format": p.sample_format,
            "planar": p.planar,
            "codec": p.codec,
            "pts": str(p.pts),
            "data_hex": data.hex(),
        }
    if isinstance(p, Tensor):
        itemsize = int("".join(c for c in p.dtype if c.isdigit()) or 1)
        strides = p.strides
        if strides is None:
            strides = tuple(int(s) for s in np.empty(p.shape, dtype=p.dtype).strides)
            assert itemsize
        return {
            "dtype": p.dtype,
            "shape": list(p.shape),
            "strides": list(strides),
            "data_hex": data.hex(),
        }
    assert isinstance(p, Blob)
    return {"mime": p.mime, "name": p.name, "data_hex": data.hex()}


def header(type_: int, flags: int, stream: int, length: int, total: int, seq: int) -> bytes:
    return pack_header(type_, flags, stream, length, total, seq, TS)


def vectors() -> list[Vector]:
    out: list[Vector] = []

    def vector(name: str, description: str, **kw: Any) -> Vector:
        v = Vector(name, description, **kw)
        out.append(v)
        return v

    # ---------------------------------------------------------------- valid messages
    v = vector("handshake", "hello then welcome with the default stream table, JSON bodies")
    v.add(Hello(name="viewer", codecs=["h264", "jpeg"], token="s3cret"))
    v.add(Welcome(session="abc123", codecs=["h264"], max_frame_size=1 << 20, credits=3))

    for enc in ("json", "msgpack"):
        v = vector(f"control-{enc}", f"every control message but hello/welcome, {enc} bodies")
        v.add(Goodbye(code=1001, reason="going away"), encoding=enc)
        v.add(Error(code="invalid_payload", message="bad field", offset=4096), encoding=enc)
        v.add(Ping(nonce=7, time_ns=TS), encoding=enc)
        v.add(Pong(nonce=7, time_ns=TS), encoding=enc)
        v.add(Ack(stream=2, seq=41), encoding=enc)
        v.add(RequestKeyframe(stream=2), encoding=enc)
        v.add(
            Stats(
                stream=2,
                fps=59.94,
                kbps=8000.5,
                frames=600,
                dropped=3,
                rtt_ms=1.25,
                extra={"queue": 2.0},
            ),
            encoding=enc,
        )
        v.add(Pointer(kind="down", x=10.5, y=-3.25, button=0, buttons=1, modifiers=3), encoding=enc)
        v.add(Wheel(x=1.0, y=2.0, dx=0.0, dy=-120.0, mode="pixel", modifiers=0), encoding=enc)
        v.add(Key(kind="up", key="é", code="KeyE", modifiers=8, repeat=True), encoding=enc)
        v.add(
            StatePatch(
                path="/camera/zoom", value={"level": 2.5, "center": [1.0, 2.0, None]}, rev=12
            ),
            encoding=enc,
        )
        v.add(StatePatch(path="/layers/0", op="delete"), encoding=enc)

    v = vector("packets", "video (key with inline config, then P), audio, tensors, blob")
    v.add(
        VideoPacket(
            codec="h264",
            width=1920,
            height=1080,
            keyframe=True,
            pts=0,
            config=bytes.fromhex("0000000167640028"),
            data=bytes(range(40)),
        )
    )
    v.add(
        VideoPacket(
            codec="h264",
            width=1920,
            height=1080,
            keyframe=False,
            pts=16_666_667,
            data=b"\x00\x00\x00\x01\x41\x9a",
        )
    )
    v.add(
        VideoPacket(
            codec="jpeg", width=4, height=2, keyframe=True, pts=-5, data=b"\xff\xd8\xff\xd9"
        ),
        stream=2,
    )
    v.add(
        AudioChunk(
            rate=48000,
            channels=2,
            sample_format="s16",
            pts=1000,
            data=np.arange(8, dtype="<i2").tobytes(),
        )
    )
    v.add(
        AudioChunk(
            rate=16000,
            channels=1,
            sample_format="f32",
            planar=True,
            codec="pcm",
            data=np.linspace(-1, 1, 4, dtype="<f4").tobytes(),
        )
    )
    v.add(Tensor.from_array(np.arange(6, dtype="<f4").reshape(2, 3)))
    v.add(Tensor.from_array(np.asfortranarray(np.arange(6, dtype="<u2").reshape(3, 2))))
    v.add(Tensor.from_array(np.zeros((0, 5), dtype="|u1")))
    v.add(Blob(mime="application/json", name="état.json", data=b'{"a": 1}'))
    v.add(Blob(data=b""))

    v = vector(
        "chunked",
        "a keyframe cut into 100-byte chunks, interleaved with control "
        "messages and a chunked state patch",
    )
    key = VideoPacket(
        codec="h264",
        width=640,
        height=360,
        keyframe=True,
        pts=1,
        config=b"\x01\x64\x00\x1f",
        data=bytes(i % 251 for i in range(1000)),
    )
    # Build the chunk frames by hand so that other streams can be interleaved between them.
    prefix, payload = encode_packet(key)
    total = len(prefix) + payload.nbytes
    item = Outgoing(
        int(MessageType.VIDEO), int(Flags.KEYFRAME), 2, 0, TS, [prefix, payload], total, 100
    )
    v.seqs[2] = 1
    i = 0
    while not item.done:
        frame: list[Any] = []
        item.next_frame(frame)
        for buf in frame:
            v.data += bytes(buf)
        if i in (0, 4):
            v.add(Pointer(kind="move", x=float(i), y=1.0), encoding="msgpack")
        if i == 2:
            v.add(StatePatch(path="/big", value="x" * 300), encoding="json", chunk=128)
        i += 1
    v.messages.append(
        {
            "type": "video",
            "stream": 2,
            "seq": 0,
            "timestamp_ns": str(TS),
            "encoding": "binary",
            "body": packet_json(key),
        }
    )
    # The keyframe completes last: move its entry after the interleaved messages.

    v = vector("bytewise", "several messages fed one byte at a time", feed="bytewise")
    v.add(Pointer(kind="move", x=1.0, y=2.0), encoding="msgpack")
    v.add(VideoPacket(codec="vp9", width=2, height=2, keyframe=True, data=b"abc"))
    v.add(StatePatch(path="/dims/step", value=[0, 5, 10]), encoding="msgpack", chunk=16)

    v = vector("empty", "no bytes at all: no messages, no error")

    # ---------------------------------------------------------------- errors
    def after_ping(name: str, description: str, **kw: Any) -> Vector:
        vec = vector(name, description, **kw)
        vec.add(Ping(nonce=1))
        return vec

    v = after_ping("error-bad-magic", "a good ping, then a frame with the wrong magic")
    at = len(v.data)
    v.raw(b"XW" + header(5, 0, 0, 2, 2, 1)[2:] + b"{}")
    v.fail("bad_magic", at)

    v = after_ping("error-bad-version", "framing version 2")
    at = len(v.data)
    h = bytearray(header(5, 0, 0, 2, 2, 1))
    h[2] = 2
    v.raw(bytes(h) + b"{}")
    v.fail("bad_version", at + 2)

    v = after_ping("error-unknown-type", "message type 99")
    at = len(v.data)
    v.raw(header(99, 0, 0, 2, 2, 1) + b"{}")
    v.fail("unknown_type", at + 3)

    v = after_ping("error-reserved-flags", "flag bit 15 set")
    at = len(v.data)
    v.raw(header(5, 0x8000, 0, 2, 2, 1) + b"{}")
    v.fail("reserved_flags", at + 4)

    v = after_ping("error-unknown-stream", "stream 9 is not in the table")
    at = len(v.data)
    v.raw(header(5, 0, 9, 2, 2, 0) + b"{}")
    v.fail("unknown_stream", at + 6)

    v = after_ping("error-frame-too-large", "a frame longer than max_frame_size (4096 here)")
    v.limits = {"max_frame_size": 4096, "max_message_size": 1 << 20}
    at = len(v.data)
    v.raw(header(67, 0, 4, 5000, 5000, 0))
    v.fail("frame_too_large", at + 8)

    v = after_ping("error-message-too-large", "a chunked message whose total is over the limit")
    v.limits = {"max_frame_size": 4096, "max_message_size": 8192}
    at = len(v.data)
    v.raw(header(67, int(Flags.MORE), 4, 100, 10000, 0))
    v.fail("message_too_large", at + 12)

    v = after_ping("error-continuation-without-start", "a CONTINUATION frame on an idle stream")
    at = len(v.data)
    v.raw(header(67, int(Flags.CONTINUATION), 4, 4, 8, 0) + b"abcd")
    v.fail("bad_chunk", at + 4)

    v = after_ping("error-chunk-interrupted", "a new message starts inside a chunked one")
    first = header(67, int(Flags.MORE), 4, 4, 12, 0) + struct.pack("<HH", 0, 0)
    v.raw(first)
    at = len(v.data)
    v.raw(header(67, 0, 4, 4, 4, 1) + struct.pack("<HH", 0, 0))
    v.fail("bad_chunk", at + 4)

    v = after_ping("error-chunk-overflow", "chunks add up to more than their total")
    v.raw(header(67, int(Flags.MORE), 4, 4, 8, 0) + struct.pack("<HH", 0, 0))
    at = len(v.data)
    v.raw(header(67, int(Flags.CONTINUATION), 4, 6, 8, 0) + b"abcdef")
    v.fail("bad_chunk", at + 4)

    v = after_ping("error-sequence", "a ping with seq 5 where 1 was due")
    at = len(v.data)
    v.raw(header(5, 0, 0, 2, 2, 5) + b"{}")
    v.fail("sequence", at + 16)

    v = after_ping("error-invalid-json", "a ping whose JSON body is cut short")
    at = len(v.data)
    v.raw(header(5, 0, 0, 9, 9, 1) + b'{"nonce":')
    v.fail("invalid_payload", at + HEADER_SIZE)

    v = after_ping("error-invalid-msgpack", "a msgpack body that is not a map (an ext type)")
    at = len(v.data)
    v.raw(header(5, int(Flags.MSGPACK), 0, 3, 3, 1) + b"\xd4\x01\x00")
    v.fail("invalid_payload", at + HEADER_SIZE)

    v = after_ping("error-not-an-object", "a JSON body that is an array", decoders=("python", "js"))
    at = len(v.data)
    v.raw(header(5, 0, 0, 2, 2, 1) + b"[]")
    v.fail("invalid_payload", at + HEADER_SIZE)

    v = after_ping(
        "error-wrong-field-type",
        "a pointer whose x is a string (python: typed)",
        decoders=("python",),
    )
    at = len(v.data)
    body = b'{"kind":"move","x":"left","y":1}'
    v.raw(header(10, 0, 0, len(body), len(body), 1) + body)
    v.fail("invalid_payload", at + HEADER_SIZE)

    v = after_ping("error-control-on-video", "a pointer on the video stream")
    at = len(v.data)
    body = b'{"x":1,"y":2}'
    v.raw(header(10, 0, 2, len(body), len(body), 0) + body)
    v.fail("invalid_payload", at + HEADER_SIZE)

    v = after_ping("error-binary-on-control", "a blob on the control stream")
    at = len(v.data)
    v.raw(header(67, 0, 0, 4, 4, 1) + struct.pack("<HH", 0, 0))
    v.fail("invalid_payload", at + HEADER_SIZE)

    v = after_ping("error-video-config-overrun", "a video packet whose config_len is past its end")
    at = len(v.data)
    body = struct.pack("<BBHIIIq", 1, 1, 0, 16, 16, 1000, 0) + b"short"
    v.raw(header(64, 0, 2, len(body), len(body), 0) + body)
    v.fail("truncated", at + HEADER_SIZE + 12)

    v = after_ping("error-blob-name-overrun", "a blob whose name_len is past its end")
    at = len(v.data)
    body = struct.pack("<HH", 3, 50) + b"a/b" + b"xy"
    v.raw(header(67, 0, 4, len(body), len(body), 0) + body)
    v.fail("truncated", at + HEADER_SIZE + 2)

    v = after_ping(
        "error-chunked-field", "a chunked blob whose name, in the second chunk, is not UTF-8"
    )
    v.raw(header(67, int(Flags.MORE), 4, 7, 11, 0) + struct.pack("<HH", 3, 4) + b"a/b")
    at = len(v.data)
    v.raw(header(67, int(Flags.CONTINUATION), 4, 4, 11, 0) + b"\xff\xfeab")
    v.fail("invalid_payload", at + HEADER_SIZE)

    v = after_ping("error-tensor-extent", "a tensor whose shape needs more bytes than it has")
    at = len(v.data)
    t = bytearray(64)
    struct.pack_into("<BBHI", t, 0, 1, 3, 0, 64)
    t[8:11] = b"<f4"
    struct.pack_into("<Qq", t, 16, 100, 4)
    body = bytes(t) + b"\x00" * 8
    v.raw(header(66, 0, 4, len(body), len(body), 0) + body)
    v.fail("truncated", at + HEADER_SIZE + 16)

    v = after_ping("error-eof-in-frame", "the stream ends in the middle of a frame")
    at = len(v.data)
    v.raw(header(5, 0, 0, 20, 20, 1) + b'{"nonce"')
    v.fail("truncated", at)

    return out


def render() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for v in vectors():
        files.update(v.write(HERE))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    files = render()
    stale = [
        name
        for name, data in files.items()
        if not (HERE / name).is_file() or (HERE / name).read_bytes() != data
    ]
    extra = [
        p.name for p in HERE.iterdir() if p.suffix in (".bin", ".json") and p.name not in files
    ]
    if args.check:
        for name in stale + extra:
            print(f"stale vector file: {name}", file=sys.stderr)
        return 1 if stale or extra else 0
    for name in extra:
        (HERE / name).unlink()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files) // 2} vectors to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
