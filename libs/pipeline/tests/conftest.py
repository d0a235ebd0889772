"""Fixtures shared by the isthmus-pipeline tests.

Every test is checked for leaked file descriptors, threads, child processes and shared-memory
segments (the process executor's rings live in /dev/shm).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import psutil
import pytest


def _fds() -> dict[int, str]:
    out = {}
    # multiprocessing's resource tracker (started once, for the life of the process) keeps a pipe.
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker._resource_tracker, "_fd", None)
    for name in os.listdir("/proc/self/fd"):
        if tracker is not None and int(name) == tracker:
            continue
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


def _threads() -> set[str]:
    # asyncio's default executor keeps its workers between tests by design.
    return {
        f"{t.name}:{t.ident}"
        for t in threading.enumerate()
        if t.is_alive() and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))
    }


def _children() -> set[int]:
    from multiprocessing import resource_tracker

    out = set()
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    for child in psutil.Process().children(recursive=True):
        if child.pid == tracker:
            continue  # started once for the life of the process
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                out.add(child.pid)
    return out


def _shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail a test that leaves sockets, files, threads, processes or shm segments behind."""
    before_fds = _fds()
    before_threads = _threads()
    before_children = _children()
    before_shm = _shm()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked_fds = {
            fd: target
            for fd, target in _fds().items()
            if fd not in before_fds
            and target.startswith(("socket:", "/", "pipe:", "anon_inode:"))
            and not target.startswith(("/proc/", "/dev/pts", "/dev/null", "/dev/urandom"))
            and "pytest" not in target
        }
        leaked_threads = _threads() - before_threads
        children = _children() - before_children
        shm = {n for n in _shm() - before_shm if n.startswith("isthmus.")}
        if not (leaked_fds or leaked_threads or children or shm) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked_fds, f"leaked file descriptors: {leaked_fds}"
    assert not leaked_threads, f"leaked threads: {leaked_threads}"
    assert not children, f"leaked child processes: {children}"
    assert not shm, f"leaked shared memory segments: {shm}"
