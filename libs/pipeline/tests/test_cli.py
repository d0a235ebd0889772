"""The isthmus-pipeline command line, in process and as a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from isthmus.pipeline._cli import main

HERE = Path(__file__).parent / "manifests"
VOICE = Path(__file__).resolve().parents[3] / "examples" / "voice-pipeline" / "voice.yaml"


def write_wav(path: Path, rate: int = 48000) -> None:
    """1 s silence, 0.6 s of a voice-like buzz, 1 s silence (s16 mono)."""
    t = np.arange(round(0.6 * rate)) / rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / rate) / k for k in range(1, 12))
    voice = 0.3 * voice / np.max(np.abs(voice))
    x = np.concatenate([np.zeros(rate), voice, np.zeros(rate)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype(np.int16).tobytes())


def test_validate_ok_and_failing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(HERE / "seed.yaml")]) == 0
    assert "valid (4 nodes, 3 connections)" in capsys.readouterr().out
    assert main(["validate", str(HERE / "broken.yaml")]) == 1
    out = capsys.readouterr().out
    assert "broken.yaml:5" in out and "did you mean 'resample'" in out and "3 problem(s)" in out
    assert main(["validate", str(HERE / "mismatch.json")]) == 1
    assert "hint: insert a resampler between 'mic' and 'vad'" in capsys.readouterr().out
    assert main(["validate", "--auto-convert", str(HERE / "mismatch.json")]) == 0
    assert "converters inserted: vad_resample" in capsys.readouterr().out


def test_graph_as_dot_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(HERE / "seed.yaml"), "--negotiate"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "seed-voice"') and '"vad" -> "segments"' in dot
    assert "audio(sample_rate=16000" in dot
    if shutil.which("dot") is None:
        pytest.skip("Graphviz is not installed")
    png = tmp_path / "g.png"
    assert main(["graph", str(HERE / "seed.yaml"), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_prints_speech_segments_as_json_lines(tmp_path: Path) -> None:
    wav = tmp_path / "in.wav"
    write_wav(wav)
    out = tmp_path / "out.jsonl"
    assert main(["-q", "run", str(VOICE), "--input", str(wav), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    segs = [r for r in rows if r["type"] == "speech"]
    assert len(segs) == 1 and abs(segs[0]["start"] - 1.0) < 0.15 and abs(segs[0]["end"] - 1.6) < 0.4
    levels = [r for r in rows if r["node"] == "levels"]
    assert levels and all("rms_dbfs" in r for r in levels)


def test_console_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    wav = tmp_path / "in.wav"
    write_wav(wav, 44100)  # not the manifest's 48 kHz: decoding converts it
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus.pipeline._cli", "run", str(VOICE), "-i", str(wav)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"type": "speech"' in proc.stdout and "done (levels:" in proc.stderr
    help_ = subprocess.run(
        [sys.executable, "-m", "isthmus.pipeline._cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--input" in help_.stdout and "--auto-convert" in help_.stdout


def test_node_types_lists_ports_caps_and_params(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node-types"]) == 0
    out = capsys.readouterr().out
    assert (
        "webrtcvad" in out and "frame_ms in 10/20/30" in out and "params: aggressiveness=2" in out
    )


def test_bad_input_gives_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(VOICE), "--input", str(tmp_path / "missing.wav")]) == 2
    assert "no such audio file" in capsys.readouterr().err
    assert main(["run", str(VOICE)]) == 2
    assert "give --input FILE" in capsys.readouterr().err
