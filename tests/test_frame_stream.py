"""examples/frame-stream/frame_stream.py as a real program: render with EGL, encode, decode in a
second process, and report per-stage latency.

Every run is a subprocess (``sys.executable``) with a token in its environment; afterwards no
process carrying the token may be left, so the receiving process never outlives the example,
whether it ends normally, by Ctrl-C or by SIGKILL.  The tests skip when PyAV, PyOpenGL or a
headless EGL context is missing, unless ``ISTHMUS_REQUIRE_GL=1`` (CI with Mesa), where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from _proc_tokens import assert_none_left, tagged

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "frame-stream" / "frame_stream.py"
TOKEN_VAR = "ISTHMUS_FRAME_STREAM_TEST"
REQUIRE_GL = os.environ.get("ISTHMUS_REQUIRE_GL", "") == "1"
SMALL = ["--width", "320", "--height", "240"]
TIMED_STAGES = ("render", "capture", "encode", "transfer", "decode", "end-to-end")


def _missing_module() -> str | None:
    for name in ("isthmus.frames", "av", "OpenGL", "simplejpeg", "rich"):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:  # the parent package is missing
            return name
    return None


def _why_unavailable() -> str | None:
    """Why the example cannot run here, or None."""
    missing = _missing_module()
    if missing:
        return f"{missing} is not installed (pip install -r examples/frame-stream/requirements.txt)"
    # In a subprocess: PyOpenGL picks its platform once per process.
    probe = "from isthmus.frames import EGLContext, load_gl; load_gl(); EGLContext(16, 16).close()"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode:
        # The exception's line, not the traceback (PyOpenGL's errors span several lines).
        lines = [ln for ln in proc.stderr.splitlines() if ln[:1].isalpha()] or ["(no output)"]
        return f"no headless EGL context here: {lines[-1][:300]}"
    return None


@pytest.fixture(scope="module", autouse=True)
def _needs_gl() -> None:
    reason = _why_unavailable()
    if reason is None:
        return
    if REQUIRE_GL:
        pytest.fail(f"ISTHMUS_REQUIRE_GL=1 but {reason}")
    pytest.skip(reason)


def _tagged(token: str) -> list[int]:
    return tagged(TOKEN_VAR, token)


def _assert_none_left(token: str, grace: float = 10.0) -> None:
    assert_none_left(TOKEN_VAR, token, grace)


def _env(token: str) -> dict[str, str]:
    return {**os.environ, TOKEN_VAR: token, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


def run_example(tmp_path: Path, *args: str, expect: int = 0) -> tuple[dict[str, Any], str]:
    """Run the example with ``--json``; returns the JSON result and the printed report."""
    token = uuid.uuid4().hex
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(token),
        cwd=tmp_path,
        check=False,
    )
    _assert_none_left(token)
    if proc.returncode == 3 and not REQUIRE_GL:
        pytest.skip(f"a backend is unavailable here: {proc.stderr.strip().splitlines()[-1:]}")
    assert proc.returncode == expect, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return json.loads(out.read_text()), proc.stdout


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid was reused by someone else's process
        return True
    return True


@pytest.mark.parametrize("codec", ["h264", "jpeg"])
def test_every_frame_arrives_decoded_with_stage_timings(tmp_path: Path, codec: str) -> None:
    result, report = run_example(
        tmp_path, *SMALL, "--frames", "30", "--fps", "60", "--codec", codec, "--wait"
    )
    assert result["ok"] and not result["errors"] and not result["interrupted"]
    assert result["codec"] == codec
    frames, rx = result["frames"], result["receiver"]
    # --wait: the sender waits for the window instead of dropping, so all 30 go through.
    assert frames["rendered"] == frames["sent"] == frames["acked"] == frames["ok"] == 30
    assert frames["dropped"] == 0
    assert frames["wrong_size"] == frames["wrong_picture"] == frames["corrupt"] == 0
    # The receiver's own count: every packet decoded, at the size asked for, right picture.
    assert rx["received"] == rx["decoded"] == rx["ok"] == 30
    assert rx["sizes"] == [[320, 240]]
    assert rx["codecs"] == [codec]
    if codec == "jpeg":
        assert frames["keyframes"] == 30  # stills: every packet stands alone
    else:
        assert frames["keyframes"] >= 1  # the join keyframe; P-frames after it

    stages = result["stages"]
    for name in TIMED_STAGES:
        st = stages[name]
        assert st["count"] == 30, (name, st)
        assert 0 < st["p50_ms"] <= st["p95_ms"] <= st["p99_ms"] <= st["max_ms"], (name, st)
    # x264 is fed I420 converted here; JPEG converts inside its encoder.
    assert stages["convert"]["count"] == (30 if result["encoder"] == "x264" else 0)
    assert stages["end-to-end"]["p50_ms"] >= stages["decode"]["p50_ms"]
    assert result["fps"] > 0 and result["bitrate_bps"] > 0 and result["bytes"] > 0

    child = result["child"]
    assert child["exitcode"] == 0 and child["pid"] == rx["pid"] != os.getpid()
    assert not _pid_exists(child["pid"])
    for label in ("stage", "capture", "end-to-end", "fps", "Mbit/s"):
        assert label in report


def test_latest_frame_wins_accounts_for_every_frame(tmp_path: Path) -> None:
    # As fast as possible into a one-frame window: frames the receiver cannot take yet are
    # replaced by newer ones before they are encoded.
    result, _ = run_example(tmp_path, *SMALL, "--frames", "60", "--fps", "0", "--window", "1")
    frames, rx = result["frames"], result["receiver"]
    assert frames["rendered"] == 60
    assert frames["sent"] + frames["dropped"] == 60
    assert frames["sent"] == frames["acked"] == frames["ok"] == rx["decoded"] >= 1
    assert result["ok"]


def test_help_lists_the_options() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--width", "--height", "--fps", "--frames", "--codec", "--backend", "--bitrate"):
        assert flag in proc.stdout
    assert "--quality" in proc.stdout and "--json" in proc.stdout


def test_bad_size_is_a_usage_error(tmp_path: Path) -> None:
    # 4:2:0 H.264 needs even dimensions: refused with exit 2, the receiver stopped all the same.
    token = uuid.uuid4().hex
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--width", "321", "--height", "240", "--codec", "h264"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(token),
        cwd=tmp_path,
        check=False,
    )
    _assert_none_left(token)
    assert proc.returncode == 2, proc.stderr
    assert "even" in proc.stderr


def _start_streaming(tmp_path: Path, token: str) -> subprocess.Popen[str]:
    """The example, streaming (the receiver is up) far longer than the test lasts."""
    proc = subprocess.Popen(
        [
            *(sys.executable, str(EXAMPLE), *SMALL, "--frames", "100000", "--fps", "30"),
            *("--json", str(tmp_path / "result.json")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(token),
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], deadline - time.monotonic())
        line = proc.stderr.readline() if ready else ""
        seen.append(line)
        if "streaming" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.communicate()
    pytest.fail("the example did not start streaming:\n" + "".join(seen))


def test_ctrl_c_stops_both_processes_and_still_reports(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    proc = _start_streaming(tmp_path, token)
    try:
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # to the sender only: it must stop the receiver
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _assert_none_left(token)
    assert proc.returncode == 130, err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["interrupted"] and not result["errors"]
    assert result["frames"]["acked"] == result["frames"]["sent"] > 0
    assert result["receiver"]["decoded"] == result["frames"]["sent"]
    assert result["child"]["exitcode"] == 0
    assert "end-to-end" in out


def test_receiver_does_not_outlive_a_killed_sender(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    proc = _start_streaming(tmp_path, token)
    children = [pid for pid in _tagged(token) if pid != proc.pid]
    assert children, "no receiving process was found"
    proc.kill()  # SIGKILL: no finally block runs in the sender
    proc.communicate(timeout=30)
    _assert_none_left(token)
