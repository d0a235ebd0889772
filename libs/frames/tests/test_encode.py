"""Encoders: the probed chain, low-latency H.264 semantics, stills, and mid-stream fallback."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from conftest import scene
from isthmus.frames import (
    BACKENDS,
    BackendUnavailableError,
    ColorSpec,
    Encoder,
    EncoderBackend,
    EncoderError,
    FallbackEncoder,
    FrameFormatError,
    Packet,
    StreamConfig,
    is_keyframe,
    nal_types,
    open_decoder,
    open_encoder,
    probe_encoders,
)
from isthmus.frames._encode import X264Encoder

av = pytest.importorskip("av")
W, H = 320, 240


def encode_all(enc: Encoder, count: int, *, start: int = 0, w: int = W, h: int = H) -> list[Packet]:
    return [enc.encode(scene(w, h, start + i)) for i in range(count)]


def test_probes_find_the_cpu_chain_and_skip_the_gpu(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="isthmus.frames")
    results = {r.backend: r for r in probe_encoders(refresh=True)}
    assert list(results) == ["nvenc-device", "nvenc-host", "x264", "jpeg", "png"]
    assert results["x264"].ok and results["jpeg"].ok and results["png"].ok
    for name in ("nvenc-device", "nvenc-host"):
        if not results[name].ok:  # no GPU here: skipped with the reason logged
            assert results[name].reason
            assert any(
                name in rec.getMessage() and "skipped" in rec.getMessage() for rec in caplog.records
            )
    # Cached: asking again does not re-run the encode.
    assert probe_encoders()[2] is results["x264"]


def test_open_encoder_picks_the_best_backend_that_probes_well() -> None:
    enc = open_encoder("h264", W, H)
    expected = next(r.backend for r in probe_encoders() if r.ok)
    assert isinstance(enc, FallbackEncoder) and enc.backend == expected and enc.codec == "h264"
    enc.close()
    assert open_encoder("h264", W, H, backend="x264", fallback=False).backend == "x264"
    assert open_encoder("jpeg", W, H).backend == "jpeg"
    assert open_encoder("png", W, H).backend == "png"


def test_unknown_or_unavailable_backends_are_typed_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendUnavailableError, match="unknown encoder backend"):
        open_encoder("h264", W, H, backend="quicksync")
    with pytest.raises(BackendUnavailableError, match="unknown codec"):
        open_encoder("vp9", W, H)
    broken = EncoderBackend(
        "broken", "h264", X264Encoder, lambda: (_ for _ in ()).throw(OSError("no device")), ""
    )
    monkeypatch.setitem(BACKENDS, "broken", broken)
    with pytest.raises(BackendUnavailableError, match="no device") as info:
        open_encoder("h264", W, H, backend="broken")
    assert info.value.reasons == {"broken": "OSError: no device"}


def test_first_packet_is_an_idr_with_sps_and_pps_then_p_frames() -> None:
    enc = open_encoder("h264", W, H, backend="x264", fallback=False)
    packets = encode_all(enc, 5)
    first = nal_types(packets[0].payload)
    assert packets[0].keyframe and {7, 8, 5} <= set(first) and first.index(7) < first.index(5)
    assert packets[0].config == StreamConfig("h264", W, H, ColorSpec(), "x264", 60.0, None, None)
    for p in packets[1:]:
        assert not p.keyframe and p.config is None and 5 not in nal_types(p.payload)
        assert p.nbytes < packets[0].nbytes
    assert [p.pts for p in packets] == [0, 1, 2, 3, 4]


def test_zero_frames_of_delay_and_no_b_frames() -> None:
    enc = open_encoder("h264", W, H, backend="x264", fallback=False)
    dec = open_decoder("h264")
    for i in range(8):
        img = scene(W, H, i)
        packet = enc.encode(img)  # one packet out for each frame in, at once
        frames = dec.decode(packet)  # and one frame out of the decoder, at once
        assert len(frames) == 1 and frames[0].pts == i
        err = np.abs(frames[0].array.astype(int) - img.astype(int))
        assert np.median(err) <= 3  # the frame that came out is this frame, not a neighbour


def test_forced_keyframes_are_idrs_without_resetting_the_encoder() -> None:
    enc = open_encoder("h264", W, H, backend="x264", fallback=False)
    encode_all(enc, 3)
    forced = enc.encode(scene(W, H, 3), keyframe=True)
    assert forced.keyframe and {7, 8, 5} <= set(nal_types(forced.payload)) and forced.pts == 3
    enc.request_keyframe()
    requested = enc.encode(scene(W, H, 4))
    after = enc.encode(scene(W, H, 5))
    assert requested.keyframe and not after.keyframe and after.pts == 5
    # A decoder that joins at the forced keyframe decodes from there on.
    late = open_decoder("h264")
    assert (
        len(late.decode(forced)) == 1
        and len(late.decode(requested)) == 1
        and len(late.decode(after)) == 1
    )


def test_colour_description_is_in_the_stream() -> None:
    enc = open_encoder("h264", W, H, backend="x264", fallback=False)
    key = enc.encode(scene(W, H))
    ctx = av.CodecContext.create("h264", "r")
    (vf,) = ctx.decode(av.Packet(bytes(key)))
    assert vf.colorspace == 1 and vf.color_range == 1  # BT.709, limited ("MPEG") range
    full = open_encoder(
        "h264", W, H, backend="x264", fallback=False, color=ColorSpec("bt601", "full")
    )
    (vf,) = av.CodecContext.create("h264", "r").decode(av.Packet(bytes(full.encode(scene(W, H)))))
    assert vf.colorspace in (5, 6) and vf.color_range == 2
    dec = open_decoder("h264")
    frame = dec.decode(full.encode(scene(W, H, 1), keyframe=True))[0]
    assert frame.color == ColorSpec("bt601", "full")


@pytest.mark.parametrize(
    "color", [ColorSpec(), ColorSpec("bt601", "full"), ColorSpec(chroma="444")]
)
def test_colours_survive_encode_and_decode(color: ColorSpec) -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:32, :32] = (230, 30, 30)
    img[:32, 32:] = (30, 200, 60)
    img[32:, :32] = (40, 60, 220)
    img[32:, 32:] = (128, 128, 128)
    enc = open_encoder("h264", 64, 64, backend="x264", fallback=False, color=color, quality=10)
    out = open_decoder("h264").decode(enc.encode(img))[0].array.astype(int)
    for y, x in ((8, 8), (8, 56), (56, 8), (56, 56)):
        assert np.abs(out[y, x] - img[y, x]).max() <= 6, (color, (y, x), out[y, x], img[y, x])


def test_resolution_change_without_a_new_encoder() -> None:
    enc = open_encoder("h264", W, H)
    dec = open_decoder("h264")
    for p in encode_all(enc, 3):
        dec.decode(p)
    small = enc.encode(scene(W // 2, H // 2, 3))  # a smaller frame: e.g. while the user drags
    assert small.keyframe and (small.width, small.height) == (W // 2, H // 2)
    assert small.config is not None and (small.config.width, small.config.height) == (
        W // 2,
        H // 2,
    )
    assert small.pts == 3  # the stream goes on
    (frame,) = dec.decode(small)
    assert frame.array.shape == (H // 2, W // 2, 3)
    enc.reconfigure(width=W, height=H)
    back = enc.encode(scene(W, H, 4))
    assert back.keyframe and dec.decode(back)[0].array.shape == (H, W, 3)


def test_bitrate_and_quality_control_the_size() -> None:
    def p_frame_bytes(**opts: Any) -> int:
        enc = open_encoder("h264", W, H, backend="x264", fallback=False, **opts)
        return sum(p.nbytes for p in encode_all(enc, 12)[2:])

    assert p_frame_bytes(quality=35) < p_frame_bytes(quality=18)
    assert p_frame_bytes(bitrate=200_000) < p_frame_bytes(bitrate=4_000_000)
    enc = open_encoder("h264", W, H, backend="x264", quality=40)
    encode_all(enc, 3)
    low = enc.encode(scene(W, H, 3), keyframe=True).nbytes
    enc.reconfigure(quality=12)
    high = enc.encode(scene(W, H, 4))
    assert (
        high.keyframe
        and high.nbytes > low
        and high.config is not None
        and high.config.quality == 12
    )


def test_odd_sizes_and_bad_frames_are_refused() -> None:
    with pytest.raises(FrameFormatError, match="even"):
        open_encoder("h264", 321, 240)
    enc = open_encoder("h264", W, H)
    with pytest.raises(FrameFormatError):
        enc.encode(np.zeros((H, W, 3), np.float32))
    with pytest.raises(FrameFormatError, match="even"):
        enc.encode(np.zeros((241, 320, 3), np.uint8))
    assert enc.encode(scene(W, H)).keyframe  # still usable after refusing bad input
    enc.close()
    with pytest.raises(EncoderError, match="closed"):
        enc.encode(scene(W, H))


def test_yuv_input_skips_conversion() -> None:
    from isthmus.frames import Converter

    yuv = Converter(W, H).convert(scene(W, H))
    enc = open_encoder("h264", W, H, backend="x264", fallback=False)
    a = enc.encode(yuv, keyframe=True)
    b = open_encoder("h264", W, H, backend="x264", fallback=False).encode(
        scene(W, H), keyframe=True
    )
    assert bytes(a) == bytes(b)


def test_stills_are_all_keyframes() -> None:
    img = scene(W, H, 2)
    for codec in ("jpeg", "png"):
        enc = open_encoder(codec, W, H)
        packets = [enc.encode(img) for _ in range(3)]
        assert all(p.keyframe and p.codec == codec and p.config is not None for p in packets)
        out = open_decoder(codec).decode(packets[-1])[0].array
        err = np.abs(out.astype(int) - img.astype(int))
        assert err.max() == 0 if codec == "png" else np.median(err) <= 3
    assert bytes(open_encoder("jpeg", W, H).encode(img))[:2] == b"\xff\xd8"
    assert bytes(open_encoder("png", W, H).encode(img))[:8] == b"\x89PNG\r\n\x1a\n"
    assert open_encoder("png", 33, 17).encode(scene(33, 17)).width == 33  # stills take odd sizes


class FailingX264(X264Encoder):
    """libx264 that dies after a few frames, like a GPU encoder whose session was lost."""

    backend = "flaky"
    fail_after = 3

    def _encode(self, frame: Any, keyframe: bool) -> tuple[Any, bool]:
        if self.frames >= self.fail_after:
            raise RuntimeError("encode session lost")
        return super()._encode(frame, keyframe)


def test_mid_stream_failure_falls_back_and_forces_a_keyframe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flaky = EncoderBackend("flaky", "h264", FailingX264, lambda: None, "test double")
    chain = [flaky, BACKENDS["x264"], BACKENDS["jpeg"]]
    enc = FallbackEncoder(chain, W, H)
    dec = open_decoder("auto")
    packets = encode_all(enc, 6)
    assert [p.backend for p in packets] == ["flaky"] * 3 + ["x264"] * 3
    assert packets[3].keyframe and packets[3].pts == 0 and not packets[4].keyframe
    assert enc.backend == "x264" and enc.failures and "encode session lost" in enc.failures[0][1]
    assert enc.frames == 6 and enc.config.backend == "x264"
    assert all(len(dec.decode(p)) == 1 for p in packets)


def test_fallback_can_cross_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    class AlwaysFails(FailingX264):
        fail_after = 0

    chain = [EncoderBackend("flaky", "h264", AlwaysFails, lambda: None, ""), BACKENDS["jpeg"]]
    enc = FallbackEncoder(chain, W, H)
    packet = enc.encode(scene(W, H))
    assert packet.codec == "jpeg" and packet.keyframe and enc.codec == "jpeg"
    assert open_decoder("auto").decode(packet)[0].array.shape == (H, W, 3)


def test_exhausted_chain_is_a_typed_error() -> None:
    class AlwaysFails(FailingX264):
        fail_after = 0

    enc = FallbackEncoder([EncoderBackend("flaky", "h264", AlwaysFails, lambda: None, "")], W, H)
    with pytest.raises(BackendUnavailableError):
        enc.encode(scene(W, H))


def test_x264_keyframe_flag_matches_the_bitstream() -> None:
    enc = open_encoder("h264", W, H, backend="x264", fallback=False)
    for i, p in enumerate(encode_all(enc, 6)):
        assert p.keyframe == is_keyframe(p.payload) == (i == 0)


@pytest.mark.gpu
def test_nvenc_from_device_memory() -> None:
    cupy = pytest.importorskip("cupy")
    if not BACKENDS["nvenc-device"].probe().ok:
        pytest.skip(BACKENDS["nvenc-device"].probe().reason)
    enc = open_encoder("h264", 1920, 1080, backend="nvenc-device", fallback=False)
    packets = [enc.encode(cupy.asarray(scene(1920, 1080, i))) for i in range(4)]
    assert packets[0].keyframe and {7, 8, 5} <= set(nal_types(packets[0].payload))
    assert len(open_decoder("h264", backend="pyav").decode(packets[0])) == 1
