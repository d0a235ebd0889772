"""examples/bulk-transfer/bulk_transfer.py as a real program: numpy arrays from one process to
another over isthmus.transport, checked and timed, on every backend.

Every run is a subprocess (``sys.executable``) with a token in its environment; afterwards no
process carrying the token may be left, so the receiving process never outlives the example,
whether it ends normally, by Ctrl-C or by SIGKILL; and no shared-memory ring either process
created may be left in /dev/shm when it ends normally or by a signal it can handle.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from _proc_tokens import assert_none_left, tagged

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "bulk-transfer" / "bulk_transfer.py"
TOKEN_VAR = "ISTHMUS_BULK_TRANSFER_TEST"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="isthmus.transport is Linux only"
)

pytest.importorskip("isthmus.transport")
pytest.importorskip("numpy")
pytest.importorskip("rich")


def _tagged(token: str) -> list[int]:
    return tagged(TOKEN_VAR, token)


def _assert_none_left(token: str, grace: float = 10.0) -> None:
    assert_none_left(TOKEN_VAR, token, grace)


def _assert_no_rings(*pids: int | None) -> None:
    """No shared-memory ring created by these processes is left in /dev/shm (the library names
    its rings after the creating process; other processes' rings are none of our business)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return
    left = [p.name for pid in pids if pid for p in shm.glob(f"*isthmus-tr-{pid}-*")]
    assert not left, f"shared memory left behind: {left}"


def _env(token: str) -> dict[str, str]:
    env = {**os.environ, TOKEN_VAR: token, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("ISTHMUS_TRANSPORT_BACKEND", None)  # --backend says which, in every test
    return env


def run_example(*args: str, expect: int = 0) -> dict[str, Any]:
    """Run the example with ``--json``; returns the JSON it printed."""
    token = uuid.uuid4().hex
    with subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(token),
    ) as proc:
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    _assert_none_left(token)
    assert proc.returncode == expect, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    result: dict[str, Any] = json.loads(out)
    _assert_no_rings(proc.pid, result.get("receiver_pid"))
    return result


def _pairs(result: dict[str, Any], side: str = "receiver") -> set[tuple[str, str]]:
    return {(purpose, transport) for purpose, transport in result["transports"][side]}


def _assert_moved(result: dict[str, Any], size: int, count: int) -> None:
    assert result["ok"] and not result["interrupted"], result
    assert result["size"] == size
    assert result["messages"] == count
    assert result["bytes"] == size * count
    assert result["received"] == {"messages": count, "bytes": size * count, "in_order": True}
    checksum = result["checksum"]
    assert checksum["verified"] and checksum["ok"]
    assert checksum["sent"] == checksum["received"] != 0
    assert result["seconds"] > 0 and result["gb_per_s"] > 0 and result["messages_per_s"] > 0
    assert result["receiver_pid"] not in (None, os.getpid())


@pytest.mark.parametrize("backend", ["auto", "cma", "shm", "tcp"])
@pytest.mark.parametrize(
    ("size_arg", "size", "count"),
    [
        ("1000003", 1000003, 12),  # under the rendezvous threshold; not a multiple of 8
        ("5MiB", 5 << 20, 6),  # rendezvous (process_vm_readv, or the ring where it is refused)
    ],
)
def test_every_backend_moves_and_checks_the_arrays(
    backend: str, size_arg: str, size: int, count: int
) -> None:
    result = run_example("--backend", backend, "--size", size_arg, "--count", str(count))
    _assert_moved(result, size, count)
    assert result["backend"] == backend
    receiver, sender = _pairs(result), _pairs(result, "sender")
    assert receiver == sender  # both ends agree on what the connection uses
    if backend == "tcp":
        assert receiver == {("control", "tcp"), ("eager", "tcp")}
        return
    assert ("control", "unix") in receiver  # same host: the Unix socket
    rendezvous = {t for p, t in receiver if p == "rendezvous"}
    if backend == "shm":
        assert rendezvous == {"shm-ring"}
    elif backend == "cma":
        assert rendezvous <= {"cma"}  # empty where the kernel refuses process_vm_readv
    else:
        assert len(rendezvous) == 1 and rendezvous <= {"cma", "shm-ring"}


def test_pingpong_measures_round_trips() -> None:
    result = run_example("--size", "8", "--count", "200", "--pingpong")
    _assert_moved(result, 8, 200)
    rtt = result["rtt_us"]
    assert result["pingpong"] and rtt is not None
    assert 0 < rtt["min"] <= rtt["p50"] <= rtt["p99"]


def test_duration_stops_a_long_run() -> None:
    result = run_example(
        "--size", "64KiB", "--count", "100000000", "--duration", "0.5", "--backend", "shm"
    )
    assert result["ok"] and 0 < result["messages"] < 100000000
    assert result["received"]["messages"] == result["messages"]
    assert result["seconds"] < 30


def test_no_verify_still_counts_and_orders() -> None:
    result = run_example("--size", "64KiB", "--count", "50", "--no-verify")
    assert result["ok"] and result["messages"] == 50
    assert not result["checksum"]["verified"] and result["received"]["in_order"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("backend", ["auto", "tcp"])
def test_the_two_halves_run_as_separate_programs(backend: str) -> None:
    token, port = uuid.uuid4().hex, str(_free_port())
    common = ["--backend", backend, "--port", port]
    run_args = ["--size", "2MiB", "--count", "10", "--json"]
    # The receiver first: it retries until the sender listens.
    client = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--role", "client", *common],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(token),
    )
    try:
        time.sleep(0.5)
        server = subprocess.run(
            [sys.executable, str(EXAMPLE), "--role", "server", *common, *run_args],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(token),
            check=False,
        )
        _, client_err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    _assert_none_left(token)
    assert server.returncode == 0, server.stderr
    assert client.returncode == 0, client_err
    result = json.loads(server.stdout)
    _assert_moved(result, 2 << 20, 10)
    assert result["receiver_pid"] == client.pid
    assert "the sender closed the connection" in client_err


def test_the_report_names_the_transports() -> None:
    token = uuid.uuid4().hex
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--size", "64KiB", "--count", "20", "--backend", "tcp"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(token),
        check=False,
    )
    _assert_none_left(token)
    assert proc.returncode == 0, proc.stderr
    for label in ("throughput", "GB/s", "messages/s", "checksum", "(ok)", "control tcp"):
        assert label in proc.stdout, proc.stdout


def test_help_lists_the_options() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--size", "--count", "--backend", "--host", "--port", "--role", "--json"):
        assert flag in proc.stdout
    for backend in ("auto", "cma", "shm", "tcp"):
        assert backend in proc.stdout


@pytest.mark.parametrize("args", [["--size", "4"], ["--size", "lots"], ["--count", "0"]])
def test_bad_options_are_usage_errors(args: list[str]) -> None:
    token = uuid.uuid4().hex
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(token),
        check=False,
    )
    _assert_none_left(token)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr


def _start_sending(token: str, *extra: str) -> subprocess.Popen[str]:
    """The example, sending (the receiver is connected) far longer than the test lasts."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--size", "1MiB", "--count", "100000000", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(token),
    )
    assert proc.stderr is not None
    fd = proc.stderr.fileno()  # read raw: a buffered readline could sit on a second line
    deadline = time.monotonic() + 60
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        seen += chunk
        if b"sending" in seen:
            time.sleep(0.5)
            return proc
        if not chunk and proc.poll() is not None:
            break
    proc.kill()
    proc.communicate()
    pytest.fail("the example did not start sending:\n" + seen.decode(errors="replace"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_both_processes_and_still_reports(sig: signal.Signals) -> None:
    token = uuid.uuid4().hex
    proc = _start_sending(token, "--json")
    try:
        proc.send_signal(sig)  # to the sender only: it must stop the receiver
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _assert_none_left(token)
    assert proc.returncode == 130, err
    result = json.loads(out)
    _assert_no_rings(proc.pid, result["receiver_pid"])
    assert result["interrupted"] and result["messages"] > 0
    assert ("control", "unix") in _pairs(result)  # READY came back before the interruption


def test_receiver_does_not_outlive_a_killed_sender() -> None:
    token = uuid.uuid4().hex
    proc = _start_sending(token)
    children = [pid for pid in _tagged(token) if pid != proc.pid]
    assert children, "no receiving process was found"
    proc.kill()  # SIGKILL: no finally block runs in the sender
    proc.communicate(timeout=30)
    _assert_none_left(token)


def test_sender_fails_fast_when_the_receiver_is_killed() -> None:
    token = uuid.uuid4().hex
    proc = _start_sending(token, "--json")
    try:
        receivers = [
            pid
            for pid in _tagged(token)
            if pid != proc.pid
            and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(receivers) == 1, receivers
        os.kill(receivers[0], signal.SIGKILL)
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _assert_none_left(token)
    assert proc.returncode == 1, err
    result = json.loads(out)
    assert not result["ok"] and "ConnectionLostError" in result["error"]
    assert took < 10, f"the sender took {took:.1f} s to notice"
