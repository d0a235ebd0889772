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

from _tools import need_tool
from isthmus.pipeline._cli import main

HERE = Path(__file__).parent / "manifests"
VOICE = HERE / "voice.yaml"  # a copy of examples/voice-pipeline/voice.yaml
CLI = [sys.executable, "-m", "isthmus.pipeline._cli"]


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


# --- validate ----------------------------------------------------------------------------------
def test_validate_ok_and_failing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(HERE / "seed.yaml")]) == 0
    assert "valid (4 nodes, 3 connections)" in capsys.readouterr().out
    assert main(["validate", str(HERE / "broken.yaml")]) == 1
    out = capsys.readouterr().out
    assert (
        "broken.yaml:6, node 'rs': unknown node type 'resampel' (did you mean 'resample'?)" in out
    )
    assert "broken.yaml:10, node 'vad': unknown parameter 'agressiveness'" in out
    assert "broken.yaml:15, node 'out' port 'nope'" in out
    assert "3 problem(s)" in out


def test_validate_prints_negotiation_suggestions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(HERE / "mismatch.json")]) == 1
    out = capsys.readouterr().out
    assert "hint: insert a resampler between 'mic' and 'vad' to convert 44100 Hz to 48000 Hz" in out
    assert main(["validate", "--auto-convert", "-v", str(HERE / "mismatch.json")]) == 0
    out = capsys.readouterr().out
    assert "converters inserted: vad_resample" in out
    assert "vad_resample.out -> vad.in" in out and "sample_rate=48000" in out  # -v: the caps


def test_validate_several_manifests_and_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["validate", str(HERE / "seed.yaml"), str(HERE / "mismatch.json")]
    assert main(args) == 1  # one of them is invalid
    out = capsys.readouterr().out
    assert "seed.yaml: valid" in out and "mismatch.json: 1 problem(s)" in out
    monkeypatch.setenv("ISTHMUS_PIPELINE_AUTO_CONVERT", "1")
    assert main(args) == 0
    assert "mismatch.json: valid" in capsys.readouterr().out


# --- graph -------------------------------------------------------------------------------------
def test_graph_prints_dot_with_negotiated_caps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(HERE / "seed.yaml"), "--negotiate"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "seed-voice" {') and dot.rstrip().endswith("}")
    assert '"vad" [label="vad\\n(webrtcvad)"]' in dot
    assert '"vad" -> "segments" [label="segments\\nspeech", style=dashed]' in dot  # drop_oldest
    assert '"resample" -> "vad" [label="audio(sample_rate=16000' in dot
    assert main(["graph", str(HERE / "mismatch.json"), "--negotiate", "--auto-convert"]) == 0
    dot = capsys.readouterr().out
    assert '"vad_resample" [label="vad_resample\\n(resample)"' in dot and "dashed" in dot
    assert main(["graph", str(HERE / "mismatch.json"), "--negotiate"]) == 1
    assert "hint: insert a resampler" in capsys.readouterr().err


def test_graph_writes_dot_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.dot"
    assert main(["graph", str(HERE / "seed.yaml"), "-o", str(out)]) == 0
    assert out.read_text().startswith('digraph "seed-voice"')
    assert f"wrote {out}" in capsys.readouterr().err


def test_graph_renders_png_and_svg(tmp_path: Path) -> None:
    need_tool("dot")
    png, svg = tmp_path / "g.png", tmp_path / "g.svg"
    assert main(["-q", "graph", str(HERE / "seed.yaml"), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["-q", "graph", str(HERE / "seed.yaml"), "--negotiate", "-o", str(svg)]) == 0
    text = svg.read_text()
    assert "<svg" in text and "webrtcvad" in text


def test_graph_without_graphviz_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["graph", str(HERE / "seed.yaml"), "-o", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install graphviz" in err and "-o graph.dot" in err
    assert not (tmp_path / "g.png").exists()


# --- node-types --------------------------------------------------------------------------------
def test_node_types_lists_ports_caps_and_params(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node-types"]) == 0
    out = capsys.readouterr().out
    for name in ("input", "output", "resample", "rechunk", "webrtcvad", "tee", "merge"):
        assert f"\n{name}  (" in out or out.startswith(f"{name}  (")
    assert main(["node-types", "webrtcvad"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("webrtcvad  (isthmus.pipeline.nodes.")
    assert "frame_ms in 10/20/30" in out and "out segments: speech" in out
    assert "params: aggressiveness=2" in out and "resample" not in out
    assert main(["node-types", "vadd"]) == 1
    assert "unknown node type(s): vadd" in capsys.readouterr().err


# --- run ---------------------------------------------------------------------------------------
def test_run_prints_speech_segments_as_json_lines(tmp_path: Path) -> None:
    wav = tmp_path / "in.wav"
    write_wav(wav)
    out = tmp_path / "out.jsonl"
    assert main(["-q", "run", str(VOICE), "--input", str(wav), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    segs = [r for r in rows if r["type"] == "speech"]
    assert len(segs) == 1 and abs(segs[0]["start"] - 1.0) < 0.15 and abs(segs[0]["end"] - 1.6) < 0.4
    assert set(segs[0]) == {"node", "type", "start", "end"} and segs[0]["node"] == "segments"
    levels = [r for r in rows if r["node"] == "levels"]
    assert levels and all("rms_dbfs" in r for r in levels)


def test_run_summarises_audio_chunks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "down.yaml"
    manifest.write_text(
        "metadata: {name: down}\n"
        "nodes:\n"
        "  - {id: mic, node_type: input, params: {caps: 'audio(channels=1, format=f32)'}}\n"
        "  - {id: rs, node_type: resample, params: {sample_rate: 16000}}\n"
        "  - {id: out, node_type: output}\n"
        "connections:\n  - {from: mic, to: rs}\n  - {from: rs, to: out}\n"
    )
    wav = tmp_path / "in.wav"
    write_wav(wav, 44100)
    assert main(["run", str(manifest), "-i", str(wav), "--frame-ms", "10"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert rows and all(r["type"] == "audio" and r["node"] == "out" for r in rows)
    assert {(r["sample_rate"], r["channels"], r["format"]) for r in rows} == {(16000, 1, "f32")}
    assert abs(sum(r["frames"] for r in rows) - 2.6 * 16000) < 0.02 * 16000
    assert [r["pts"] for r in rows] == sorted(r["pts"] for r in rows)
    assert f"done (out: {len(rows)})" in captured.err


def test_run_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(VOICE), "--input", str(tmp_path / "missing.wav")]) == 2
    assert "no such audio file" in capsys.readouterr().err
    assert main(["run", str(VOICE)]) == 2
    assert "give --input FILE" in capsys.readouterr().err
    wav = tmp_path / "in.wav"
    write_wav(wav, 16000)
    assert main(["run", str(VOICE), "-i", str(wav), "--input-node", "vad"]) == 2
    assert "'vad' is not an input node (inputs: mic)" in capsys.readouterr().err
    assert main(["run", str(HERE / "broken.yaml"), "-i", str(wav)]) == 1
    assert "broken.yaml:6, node 'rs'" in capsys.readouterr().err


def test_console_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    wav = tmp_path / "in.wav"
    write_wav(wav, 44100)  # not the manifest's 48 kHz: decoding converts it
    proc = subprocess.run(
        [*CLI, "run", str(VOICE), "-i", str(wav)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    segs = [json.loads(x) for x in proc.stdout.splitlines() if '"speech"' in x]
    assert len(segs) == 1 and abs(segs[0]["start"] - 1.0) < 0.15
    assert "done (levels:" in proc.stderr and "segments: 1" in proc.stderr
    bad = subprocess.run(
        [*CLI, "validate", str(HERE / "mismatch.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1 and "hint: insert a resampler" in bad.stdout


@pytest.mark.parametrize("command", ["run", "validate", "graph", "node-types"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main([command, "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: isthmus-pipeline {command}")
    if command != "node-types":
        assert "manifest" in out
    if command in ("run", "validate", "graph"):
        assert "--auto-convert" in out
