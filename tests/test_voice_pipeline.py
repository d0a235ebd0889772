"""examples/voice-pipeline: the manifest and the code pipeline find the same speech."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "voice-pipeline" / "voice_pipeline.py"

pytest.importorskip("isthmus.pipeline", reason="isthmus-pipeline is not installed here")
pytest.importorskip("av", reason="PyAV is not installed here")


def test_demo_finds_speech_and_both_forms_agree() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--demo", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["manifest_and_code_agree"] is True
    assert report["segments"] and all(s["end"] > s["start"] for s in report["segments"])


def test_live_frames_give_segments_as_they_come() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--live", "--seconds", "4", "--code"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 segment(s)" in re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)  # rich may add colour


def test_help() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--input" in out and "--live" in out and "--demo" in out


def test_the_cli_tests_use_the_example_manifest() -> None:
    copy = ROOT / "libs" / "pipeline" / "tests" / "manifests" / "voice.yaml"
    assert copy.read_text() == (ROOT / "examples" / "voice-pipeline" / "voice.yaml").read_text()
