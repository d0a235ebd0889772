"""The built-in nodes and their kernels, with real audio (and real video through PyAV)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from _tools import need_tool
from isthmus.pipeline import (
    AudioChunk,
    EndOfStream,
    Interrupt,
    Pipeline,
    SpeechSegment,
    VideoFrame,
    resolve,
    run,
)
from isthmus.pipeline.nodes import (
    Rechunker,
    SpeechTracker,
    StreamResampler,
    convert_format,
    level,
    mix_channels,
)


def tone(seconds: float, rate: int, hz: float = 440.0, amp: float = 0.5) -> np.ndarray[Any, Any]:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32).reshape(-1, 1)


def chunks(x: np.ndarray[Any, Any], rate: int, ms: float = 20) -> list[AudioChunk]:
    n = round(ms * rate / 1000)
    return [AudioChunk(x[i : i + n], rate, i / rate) for i in range(0, len(x), n)]


def test_streaming_resampler_matches_one_shot_and_has_no_edge_clicks() -> None:
    x = tone(1.0, 48000, 1000)
    rs = StreamResampler(48000, 16000, 1)
    parts = [rs.process(c.samples) for c in chunks(x, 48000)] + [rs.flush()]
    y = np.concatenate(parts)[:, 0]
    ref = soxr.resample(x[:, 0], 48000, 16000)
    assert abs(len(y) - len(ref)) <= 1
    n = min(len(y), len(ref))
    assert np.max(np.abs(y[100 : n - 100] - ref[100 : n - 100])) < 1e-3
    # No click: sample-to-sample steps stay those of a 1 kHz sine at 16 kHz.
    assert np.max(np.abs(np.diff(y[100:-100]))) < 2 * np.pi * 1000 / 16000 * 0.5 * 1.05


def test_resample_node_keeps_exact_chunk_sizes_pts_and_flushes_its_tail() -> None:
    node = resolve("resample").create(sample_rate=16000)
    out: list[AudioChunk] = []
    for c in chunks(tone(0.5, 48000), 48000):
        node.process(c, "in")
        out += [x for _, x in node.take_emitted()]
    node.on_control(EndOfStream())
    out += [x for _, x in node.take_emitted()]
    assert all(c.frames == 320 and c.sample_rate == 16000 for c in out)
    assert [round(c.pts, 3) for c in out[:3]] == [0.0, 0.02, 0.04]
    assert abs(sum(c.frames for c in out) - 8000) <= 320
    spectrum = np.abs(np.fft.rfft(np.concatenate([c.samples[:, 0] for c in out])))
    assert abs(np.argmax(spectrum) * 16000 / (2 * (len(spectrum) - 1)) - 440) < 5


def test_rechunker_cuts_exact_sizes_with_pts() -> None:
    r = Rechunker(160)
    got = []
    pts = 0.0
    for n in (100, 250, 37, 300):
        got += r.push(np.arange(n, dtype=np.float32).reshape(-1, 1), pts, 16000)
        pts += n / 16000
    assert [c.shape[0] for c, _ in got] == [160, 160, 160, 160]
    assert [round(p * 16000) for _, p in got] == [0, 160, 320, 480]
    left = r.flush(pad=True)
    assert left is not None and left[0].shape[0] == 160 and round(left[1] * 16000) == 640


def test_formats_and_channels_convert_with_scaling() -> None:
    x = np.array([[-1.0], [0.0], [0.5], [1.0]], np.float32)
    s16 = convert_format(x, "s16")
    assert s16.dtype == np.int16 and s16[:, 0].tolist() == [-32768, 0, 16384, 32767]
    assert np.allclose(convert_format(s16, "f32"), x, atol=1e-4)
    assert convert_format(x, "u8")[:, 0].tolist() == [0, 128, 192, 255]
    st = mix_channels(x, 2)
    assert st.shape == (4, 2) and np.array_equal(mix_channels(st, 1), x)
    rms, peak = level(np.full((100, 1), 0.5, np.float32))
    assert round(rms, 2) == -6.02 and round(peak, 2) == -6.02


def _speechy(rate: int) -> tuple[np.ndarray[Any, Any], list[tuple[float, float]]]:
    """Noise-modulated harmonic bursts (voice-like for webrtcvad) between silences."""
    rng = np.random.default_rng(1)
    parts, truth, t = [], [], 0.0
    for on, off in ((0.5, 0.6), (0.8, 0.7)):
        parts.append(np.zeros(round(off * rate), np.float32))
        t += off
        n = round(on * rate)
        tt = np.arange(n) / rate
        f0 = 140 + 20 * np.sin(2 * np.pi * 3 * tt)
        voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / rate) / k for k in range(1, 12))
        voice = voice * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * tt)) + 0.05 * rng.standard_normal(n)
        parts.append((0.3 * voice / np.max(np.abs(voice))).astype(np.float32))
        truth.append((t, t + on))
        t += on
    parts.append(np.zeros(round(0.6 * rate), np.float32))
    return np.concatenate(parts).reshape(-1, 1), truth


def _espeak(tmp: Path, rate: int) -> tuple[np.ndarray[Any, Any], list[tuple[float, float]]]:
    """Two spoken phrases (espeak-ng) with silence around them, and where they are."""
    import wave

    parts, truth, t = [], [], 0.0
    for i, text in enumerate(("Hello there, my friend.", "How are you today?")):
        wav = tmp / f"p{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
        with wave.open(str(wav)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
            speech = soxr.resample(pcm, w.getframerate(), rate).astype(np.float32)
        nz = np.nonzero(np.abs(speech) > 0.01)[0]
        speech = speech[nz[0] : nz[-1] + 1]
        parts.append(np.zeros(round(0.7 * rate), np.float32))
        t += 0.7
        parts.append(speech)
        truth.append((t, t + len(speech) / rate))
        t += len(speech) / rate
    parts.append(np.zeros(round(0.7 * rate), np.float32))
    return np.concatenate(parts).reshape(-1, 1), truth


@pytest.mark.parametrize(
    ("vad", "rate", "ms"), [("webrtcvad", 16000, 20), ("silero_vad", 16000, 32)]
)
def test_vad_nodes_find_the_speech_segments(vad: str, rate: int, ms: float, tmp_path: Path) -> None:
    if vad == "silero_vad":  # a neural model: it wants real speech
        need_tool("espeak-ng")
        x, truth = _espeak(tmp_path, rate)
    else:
        x, truth = _speechy(rate)
    n = round(ms * rate / 1000)
    x = np.concatenate([x, np.zeros((-len(x) % n, 1), np.float32)])  # whole frames only
    p = Pipeline()
    p.add("mic", "input", caps=f"audio(sample_rate={rate}, channels=1, format=f32, frame_ms={ms})")
    p.add("vad", vad, min_silence_ms=200, pad_ms=0)
    p.add("segments", "output")
    p.connect("mic", "vad")
    p.connect("vad.segments", "segments")
    got = run(p, {"mic": chunks(x, rate, ms)})["segments"]
    assert len(got) == len(truth), got
    for seg, (start, end) in zip(got, truth, strict=True):
        assert isinstance(seg, SpeechSegment)
        assert abs(seg.start - start) < 0.15 and abs(seg.end - end) < 0.25


def test_speech_tracker_hysteresis() -> None:
    tr = SpeechTracker(min_speech_ms=60, min_silence_ms=100, pad_ms=0)
    flags = [0] * 5 + [1] * 2 + [0] * 5 + [1] * 10 + [0] * 2 + [1] * 3 + [0] * 10
    segs = [s for i, f in enumerate(flags) if (s := tr.update(i * 0.02, 20, bool(f))) is not None]
    assert [(round(s.start, 2), round(s.end, 2)) for s in segs] == [(0.24, 0.54)]


def test_interrupt_resets_the_resampler_and_rechunker() -> None:
    rc = resolve("rechunk").create(frame_ms=20)
    rc.process(AudioChunk(np.zeros((100, 1), np.float32), 16000), "in")
    rc.on_control(Interrupt())
    rc.process(AudioChunk(np.ones((320, 1), np.float32), 16000, 1.0), "in")
    ((_port, c),) = rc.take_emitted()
    assert c.frames == 320 and float(c.samples[0, 0]) == 1.0 and c.pts == 1.0


def test_tee_and_merge() -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add("tee", "tee", outputs=3)
    p.add("merge", "merge", inputs=3)
    p.add("out", "output")
    p.connect("in", "tee")
    for i in range(3):
        p.connect(f"tee.out{i}", f"merge.in{i}")
    p.connect("merge", "out")
    assert run(p, {"in": [1, 2]}, negotiate=False) == {"out": [1, 1, 1, 2, 2, 2]}


def test_array_source_and_level_meter() -> None:
    p = Pipeline()
    p.add("src", "array_source", sample_rate=16000, seconds=0.2, tone_hz=1000, amplitude=0.5)
    p.add("meter", "level_meter")
    p.add("levels", "output")
    p.add("audio", "output")
    p.connect("src", "meter")
    p.connect("meter.levels", "levels")
    p.connect("meter.out", "audio")
    out = run(p)
    assert len(out["audio"]) == 10 and len(out["levels"]) == 10
    assert all(abs(lv.rms_dbfs - (-9.03)) < 0.1 for lv in out["levels"])


def test_audio_file_sink_and_source_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    x = tone(0.5, 44100, 440)
    p = Pipeline()
    p.add("in", "input")
    p.add("sink", "audio_file_sink", path=str(path))
    p.connect("in", "sink")
    run(p, {"in": chunks(x, 44100)}, negotiate=False)
    q = Pipeline()
    q.add("src", "audio_file_source", path=str(path), sample_rate=16000, frame_ms=10)
    q.add("out", "output")
    q.connect("src", "out")
    got = run(q)["out"]
    assert all(c.sample_rate == 16000 and c.frames == 160 for c in got)
    y = np.concatenate([c.samples[:, 0] for c in got])
    assert abs(len(y) - 8000) <= 160
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / (2 * (len(spectrum) - 1)) - 440) < 5


def test_audio_file_source_reports_its_caps_at_runtime(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    run_sink = Pipeline()
    run_sink.add("in", "input")
    run_sink.add("sink", "audio_file_sink", path=str(path))
    run_sink.connect("in", "sink")
    run(run_sink, {"in": chunks(tone(0.2, 22050), 22050)}, negotiate=False)
    src = resolve("audio_file_source").create(path=str(path))
    assert src.discovered_caps() is None
    src.initialize()  # type: ignore[unused-coroutine]
    try:
        assert str(src.discovered_caps()["out"]) == (  # type: ignore[index]
            "audio(sample_rate=22050, channels=1, format=f32, frame_ms=20)"
        )
    finally:
        src.close()  # type: ignore[unused-coroutine]


def test_video_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    frames = [VideoFrame(np.full((64, 96, 3), 40 * i, np.uint8), "rgb24", i / 30) for i in range(5)]
    p = Pipeline()
    p.add("in", "input")
    p.add("sink", "video_file_sink", path=str(path), fps=30)
    p.connect("in", "sink")
    run(p, {"in": frames}, negotiate=False)
    q = Pipeline()
    q.add("src", "video_file_source", path=str(path))
    q.add("out", "output")
    q.connect("src", "out")
    got = run(q)["out"]
    assert len(got) == 5 and got[0].data.shape == (64, 96, 3)
    assert [round(float(f.data.mean()) / 40) for f in got] == [0, 1, 2, 3, 4]


def test_real_speech_through_resampler_and_webrtcvad(tmp_path: Path) -> None:
    need_tool("espeak-ng")
    wav = tmp_path / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "Hello there. This is a pipeline test."], check=True
    )
    p = Pipeline()
    p.add("src", "audio_file_source", path=str(wav), sample_rate=48000)
    p.add("resample", "resample", sample_rate=16000)
    p.add("vad", "webrtcvad")
    p.add("segments", "output")
    p.chain("src", "resample", "vad")
    p.connect("vad.segments", "segments")
    segs = run(p)["segments"]
    assert segs and segs[0].start < 0.3 and segs[-1].end > 1.5
