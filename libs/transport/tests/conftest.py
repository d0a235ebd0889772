"""Fixtures shared by the isthmus-transport tests.

``backend`` runs a test once per backend ("cma", "shm", "tcp"); ``pair`` connects a Server and a
Client of that backend in this process; ``peer`` starts ``_peer.py`` in a child process (a real
second process: CMA, the shared-memory ring and process death only mean something across
processes).  Every test is checked for leaked file descriptors, threads, child processes and
``/dev/shm`` entries of the shared-memory ring.  nox also runs the suite with
ISTHMUS_PUREPYTHON=1 (the pure-Python core of isthmus.buffer, which the ring path uses).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

import _support
from _support import BACKENDS, Peer, connected

SHM = "/dev/shm"


def pytest_report_header() -> str:
    from isthmus.buffer import IMPLEMENTATION

    return f"isthmus.buffer implementation: {IMPLEMENTATION}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair(backend: str) -> Callable[..., Any]:
    """``async with pair() as (server, client, endpoint):`` — connected with the test's backend."""
    return lambda **kw: connected(backend, **kw)


@pytest.fixture
def peer() -> type[Peer]:
    """``peer("scenario", *args)`` starts ``_peer.py`` as a child; it is killed after the test."""
    return Peer


# ------------------------------------------------------------------------------------------
# leak checks
# ------------------------------------------------------------------------------------------


def _fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


_RING = re.compile(r"isthmus-tr-(\d+)-")


def _rings(pids: set[int]) -> set[str]:
    """/dev/shm entries of transport rings created by ``pids`` (other test runs may share it)."""
    out = set()
    for n in os.listdir(SHM):
        m = _RING.search(n)
        if m and int(m.group(1)) in pids:
            out.add(n)
    return out


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if "real-starway" in request.node.name:
        # The real Starway (ISTHMUS_TEST_REAL_STARWAY=1): UCX keeps workers, fds and threads.
        yield
        return
    _support.started.clear()
    fds = _fds()
    threads = set(threading.enumerate())
    yield
    pids = {os.getpid()} | {c.pid for c in _support.started}
    for c in _support.started:
        c.close()
    _support.started.clear()
    stray = psutil.Process().children(recursive=True)
    for p in stray:
        with contextlib.suppress(psutil.Error):
            p.kill()
            p.wait(10)
    # An fd may close a moment later (a child reaped, a thread ending): look again briefly.
    deadline = time.monotonic() + 2.0
    while True:
        now = _fds()
        leaked_fds = {fd: path for fd, path in now.items() if fds.get(fd) != path}
        leaked_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        rings = _rings(pids)
        if not (leaked_fds or leaked_threads or rings) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not stray, f"test left child processes running: {stray}"
    assert not leaked_fds, f"test left file descriptors open: {leaked_fds}"
    assert not leaked_threads, f"test left threads running: {leaked_threads}"
    assert not rings, f"test left shared-memory rings behind: {sorted(rings)}"
