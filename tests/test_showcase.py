"""The showcase runs end to end, moves data, reports a latency, and leaves no shared memory behind."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOWCASE = ROOT / "examples" / "showcase" / "showcase.py"
SHM = Path("/dev/shm")

pytest.importorskip("isthmus.buffer")
pytest.importorskip("rich")
pytest.importorskip("numpy")


def _isthmus_shm() -> set[str]:
    if not SHM.is_dir():
        return set()
    return {p.name for p in SHM.iterdir() if "isthmus" in p.name}


def _number(text: str, label: str) -> str:
    """The value cell of the summary row ``label`` (rich table, box-drawing separators)."""
    m = re.search(rf"^\W*{re.escape(label)}\s*[│|]\s*(.+?)\s*[│|]?\s*$", text, re.MULTILINE)
    assert m, f"no {label!r} row in the summary:\n{text}"
    return m.group(1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the ring needs Linux futexes")
def test_showcase_runs_and_cleans_up(tmp_path: Path) -> None:
    before = _isthmus_shm()
    summary_json = tmp_path / "summary.json"
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run(
        [
            sys.executable,
            str(SHOWCASE),
            "--duration",
            "1",
            "--no-live",
            "--json",
            str(summary_json),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"

    messages = int(_number(out, "messages").replace(",", ""))
    assert messages > 0, out
    p50 = _number(out, "latency p50")
    m = re.match(r"([\d,.]+)\s*µs", p50)
    assert m, f"latency p50 is not a number of µs: {p50!r}"
    assert (
        math.isfinite(float(m.group(1).replace(",", ""))) and float(m.group(1).replace(",", "")) > 0
    )
    assert "lost / out of order" in out and _number(out, "lost / out of order") == "0"

    summaries = json.loads(summary_json.read_text())
    metrics = summaries[0]["metrics"]
    assert metrics["messages"] == messages
    assert metrics["latency_p50_us"] is not None and math.isfinite(metrics["latency_p50_us"])

    # Entries that existed before belong to someone else (other isthmus processes may be running).
    left = _isthmus_shm() - before
    assert not left, f"shared memory left behind: {sorted(left)}"
