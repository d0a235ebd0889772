"""Fixtures shared by the isthmus-chat tests.

``chat`` is a started :class:`Chat` over a :class:`MemoryStore` (``sqlite_chat`` over a
SQLite file); ``line_server`` listens on 127.0.0.1 with the line protocol. Every test is
checked for leaked file descriptors, threads and child processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from _services import pg_dsn, postgres_server, redis_server, service_pids
from isthmus.chat import Chat, Limits, LineProtocolServer, SQLiteStore

__all__ = ["pg_dsn", "postgres_server", "redis_server"]  # session services, for every test file


@pytest_asyncio.fixture
async def chat() -> AsyncIterator[Chat]:
    async with Chat(limits=Limits(max_clients=1000, rate=0)) as c:
        yield c


@pytest_asyncio.fixture
async def sqlite_chat(tmp_path: Path) -> AsyncIterator[Chat]:
    async with Chat(store=SQLiteStore(tmp_path / "chat.db"), limits=Limits(rate=0)) as c:
        yield c


@pytest_asyncio.fixture
async def line_server(chat: Chat) -> AsyncIterator[LineProtocolServer]:
    srv = LineProtocolServer(chat)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close()


def _fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


def _threads() -> set[str]:
    # The default executor's workers (password hashing) are reused across tests by design.
    return {
        t.name
        for t in threading.enumerate()
        if t.is_alive() and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))
    }


def _children() -> set[int]:
    """Live descendants, except the session's servers (tests/_services.py) and their children."""
    out = set()
    services = service_pids()
    for child in psutil.Process().children():
        if child.pid in services:
            continue
        with contextlib.suppress(psutil.Error):
            for p in [child, *child.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    if p.status() != psutil.STATUS_ZOMBIE:
                        out.add(p.pid)
    return out


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail a test that leaves sockets, files, threads or child processes behind."""
    before_fds = _fds()
    before_threads = _threads()
    before_children = _children()
    yield
    deadline = time.monotonic() + 3.0
    while True:
        leaked_fds = {
            fd: target
            for fd, target in _fds().items()
            if fd not in before_fds
            and (target.startswith(("socket:", "/")) and not target.startswith(("/dev/", "/proc/")))
            and "pytest" not in target
        }
        leaked_threads = _threads() - before_threads
        children = _children() - before_children
        if not (leaked_fds or leaked_threads or children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked_fds, f"leaked file descriptors: {leaked_fds}"
    assert not leaked_threads, f"leaked threads: {leaked_threads}"
    assert not children, f"leaked child processes: {children}"
