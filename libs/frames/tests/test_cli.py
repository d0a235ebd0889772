"""The ``isthmus-frames`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from isthmus.frames.__main__ import main


def test_probe_json_lists_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    encoders = {row["backend"]: row for row in report["encoders"]}
    assert list(encoders) == ["nvenc-device", "nvenc-host", "x264", "jpeg", "png"]
    assert encoders["png"]["ok"]  # the pure-Python still encoder always works
    assert all(row["ok"] or row["reason"] for row in report["encoders"] + report["decoders"])
    assert "numpy" in report["converters"]


def test_probe_tables_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "isthmus.frames", "probe"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "x264" in out.stdout and "png" in out.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "isthmus.frames", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0 and "probe" in helped.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "isthmus.frames", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
