"""Decoders: round trips, corrupt packets (typed, then recovery at the next keyframe), PNG."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from conftest import scene
from isthmus.frames import (
    BackendUnavailableError,
    CorruptPacketError,
    DecoderError,
    FrameFormatError,
    FramesError,
    Packet,
    PixelFormat,
    _png,
    open_decoder,
    open_encoder,
    probe_decoders,
)

pytest.importorskip("av")
W, H = 320, 240


def stream(count: int, *, key_at: tuple[int, ...] = ()) -> list[Packet]:
    enc = open_encoder("h264", W, H, backend="x264", fallback=False)
    return [enc.encode(scene(W, H, i), keyframe=i in key_at) for i in range(count)]


def corrupt(packet: Packet) -> Packet:
    data = bytearray(bytes(packet))
    for i in range(12, len(data), 5):
        data[i] ^= 0xA5
    return Packet(
        bytes(data), packet.pts, packet.keyframe, packet.codec, packet.width, packet.height
    )


def test_probe_reports_every_decoder() -> None:
    found = probe_decoders()
    assert found["pyav"] == "" and found["jpeg"] == "" and found["png"] == ""
    assert "nvdec" in found  # skipped here (no GPU), with a reason
    with pytest.raises(BackendUnavailableError):
        open_decoder("h264", backend="nvdec") if found["nvdec"] else open_decoder(
            "h264", backend="cuvid"
        )
    with pytest.raises(BackendUnavailableError, match="unknown codec"):
        open_decoder("vp8")


def test_decoded_frames_are_rgb_views_of_the_decoder_output() -> None:
    dec = open_decoder("h264", backend="pyav")
    frames = [dec.decode(p)[0] for p in stream(3)]
    assert all(f.format is PixelFormat.RGB and f.array.shape == (H, W, 3) for f in frames)
    assert [f.pts for f in frames] == [0, 1, 2] and dec.frames == 3
    assert dec.config is not None and dec.config.width == W


def test_yuv_output_keeps_the_planes() -> None:
    dec = open_decoder("h264", backend="pyav", output="yuv")
    (frame,) = dec.decode(stream(1)[0])
    assert frame.format is PixelFormat.I420 and frame.array.shape == (H * 3 // 2, W)
    from isthmus.frames import yuv_to_rgb

    rgb = yuv_to_rgb(frame).array
    assert np.median(np.abs(rgb.astype(int) - scene(W, H, 0).astype(int))) <= 3


def test_corrupt_packet_is_typed_and_the_decoder_recovers_at_the_next_keyframe() -> None:
    packets = stream(8, key_at=(5,))
    dec = open_decoder("h264")
    assert len(dec.decode(packets[0])) == 1
    with pytest.raises(CorruptPacketError):
        dec.decode(corrupt(packets[1]))
    assert dec.waiting_for_keyframe
    # P-frames that depend on the damaged one are dropped, not shown smeared.
    assert (
        dec.decode(packets[2]) == []
        and dec.decode(packets[3]) == []
        and dec.decode(packets[4]) == []
    )
    assert dec.dropped == 3
    (frame,) = dec.decode(packets[5])  # the keyframe: back in sync
    assert not dec.waiting_for_keyframe
    assert np.median(np.abs(frame.array.astype(int) - scene(W, H, 5).astype(int))) <= 3
    assert len(dec.decode(packets[6])) == 1 and len(dec.decode(packets[7])) == 1


def test_garbage_and_raw_bytes() -> None:
    dec = open_decoder("h264")
    with pytest.raises(CorruptPacketError):
        dec.decode(b"\x00\x00\x01\x65" + bytes(range(256)) * 4)
    packets = stream(2)
    # Raw bytes (no Packet): keyframes are recognised from the NAL units.
    assert (
        len(dec.decode(bytes(packets[0]))) == 1
        and len(dec.decode(memoryview(bytes(packets[1])))) == 1
    )


def test_corrupt_stills_are_typed() -> None:
    img = scene(64, 48)
    for codec in ("jpeg", "png"):
        packet = open_encoder(codec, 64, 48).encode(img)
        dec = open_decoder(codec)
        with pytest.raises(CorruptPacketError):
            dec.decode(corrupt(packet) if codec == "jpeg" else bytes(packet)[:40])
        assert dec.decode(packet)[0].array.shape == (48, 64, 3)  # the next good one decodes


def test_auto_decoder_follows_the_codec() -> None:
    dec = open_decoder("auto")
    h264 = stream(1)[0]
    jpeg = open_encoder("jpeg", W, H).encode(scene(W, H))
    assert dec.decode(h264)[0].array.shape == dec.decode(jpeg)[0].array.shape == (H, W, 3)
    with pytest.raises(DecoderError):
        dec.decode(bytes(jpeg))
    dec.close()


def test_closed_decoder_refuses() -> None:
    dec = open_decoder("h264")
    dec.close()
    with pytest.raises(FramesError):
        dec.decode(stream(1)[0])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_pure_png_round_trip(monkeypatch: pytest.MonkeyPatch, channels: int) -> None:
    monkeypatch.setattr(_png, "_cv2", lambda: None)
    img = scene(37, 21, 1)
    if channels == 1:
        img = img[:, :, 1].copy()
    elif channels == 4:
        img = np.concatenate([img, np.full((21, 37, 1), 200, np.uint8)], axis=2)
    order = {1: "gray", 3: "rgb", 4: "rgba"}[channels]
    data = _png.encode_png(img, order)
    assert np.array_equal(_png.decode_png(data), img)


def test_pure_png_reads_every_filter_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written with the five PNG filters by hand, read back by the pure reader."""
    monkeypatch.setattr(_png, "_cv2", lambda: None)
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    rows, prev = [], np.zeros(18, np.int32)
    for y in range(5):
        cur = img[y].reshape(-1).astype(np.int32)
        left = np.concatenate([np.zeros(3, np.int32), cur[:-3]])
        upleft = np.concatenate([np.zeros(3, np.int32), prev[:-3]])
        kind = y % 5
        if kind == 0:
            f = cur
        elif kind == 1:
            f = cur - left
        elif kind == 2:
            f = cur - prev
        elif kind == 3:
            f = cur - (left + prev) // 2
        else:
            pred = [
                _png._paeth(int(a), int(b), int(c))
                for a, b, c in zip(left, prev, upleft, strict=True)
            ]
            f = cur - np.array(pred)
        rows.append(bytes([kind]) + bytes((f % 256).astype(np.uint8)))
        prev = cur
    import struct

    ihdr = struct.pack(">IIBBBBB", 6, 5, 8, 2, 0, 0, 0)
    data = (
        _png._SIGNATURE
        + _png._chunk(b"IHDR", ihdr)
        + _png._chunk(b"IDAT", zlib.compress(b"".join(rows)))
    )
    data += _png._chunk(b"IEND", b"")
    assert np.array_equal(_png.decode_png(data), img)


def test_pure_png_refuses_damage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_png, "_cv2", lambda: None)
    good = _png.encode_png(scene(8, 8))
    with pytest.raises(CorruptPacketError, match="signature"):
        _png.decode_png(b"GIF89a" + good[6:])
    damaged = bytearray(good)
    damaged[40] ^= 0xFF
    with pytest.raises(CorruptPacketError):
        _png.decode_png(bytes(damaged))
    with pytest.raises(CorruptPacketError, match="truncated"):
        _png.decode_png(good[:30])
    with pytest.raises(FrameFormatError):
        _png.encode_png(np.zeros((4, 4, 2), np.uint8))
