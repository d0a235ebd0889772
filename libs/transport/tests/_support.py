"""Helpers of the isthmus-transport tests: payloads, a connected pair, child processes.

Kept free of pytest so that ``_peer.py`` (run as a script in a child process) can use them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np

from isthmus.transport import Client, Server, ServerEndpoint, _core

BACKENDS = ("cma", "shm", "tcp")
#: What ``Client.transports()`` says carries rendezvous (large) messages, per backend.
RNDV_TRANSPORT = {"cma": "cma", "shm": "shm-ring", "tcp": None}
ANY = (1 << 64) - 1  # tag mask: every bit must match
#: Same-host messages from this size on go by rendezvous (CMA, or the ring in chunks).
RNDV: int = _core.DEFAULT_RNDV_THRESHOLD
#: Same-host messages from this size up to RNDV go whole through the shared-memory ring.
EAGER_SHM: int = getattr(_core, "EAGER_SHM_MIN", 8 * 1024)
PEER = str(Path(__file__).with_name("_peer.py"))
SHM = "/dev/shm"


def payload(n: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """``n`` pseudo-random bytes, the same for the same seed (so shifted, repeated or mixed-up
    data is caught byte for byte)."""
    return np.frombuffer(bytearray(np.random.default_rng(seed).bytes(n)), dtype=np.uint8)


def wake(fut: asyncio.Future[None]) -> None:
    """A reader callback: resolve ``fut`` (once)."""
    if not fut.done():
        fut.set_result(None)


def sentinel(n: int, value: int = 0xA5) -> np.ndarray[Any, Any]:
    return np.full(n, value, dtype=np.uint8)


@contextlib.asynccontextmanager
async def connected(
    backend: str, **client_kw: Any
) -> AsyncIterator[tuple[Server, Client, ServerEndpoint]]:
    """A listening Server, a Client connected to it, and the Server's endpoint for that Client."""
    loop = asyncio.get_running_loop()
    server = Server(backend=backend)
    server.listen("127.0.0.1", 0)
    accepted: asyncio.Future[ServerEndpoint] = loop.create_future()
    server.set_accept_cb(lambda ep: None if accepted.done() else accepted.set_result(ep))
    client = Client(backend=backend, **client_kw)
    ok = False
    try:
        await client.aconnect("127.0.0.1", server.port)
        ep = await accepted
        yield server, client, ep
        ok = True
    finally:
        # A failing test may leave sends in flight: do not wait for them to drain then.
        await client.aclose(drain=ok, timeout=10)
        await server.aclose(drain=ok, timeout=10)


async def until(cond: Callable[[], bool], what: str = "condition", limit: float = 30.0) -> None:
    """Let the loop run until ``cond()`` holds (``limit`` only turns a hang into a message)."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not become true")
        await asyncio.sleep(0.002)


# ------------------------------------------------------------------------------------------
# child processes
# ------------------------------------------------------------------------------------------

#: Every Peer started (the leak check closes them after each test).
started: list[Peer] = []


class Peer:
    """``python _peer.py <scenario> <args>``: lines on its stdout, commands on its stdin."""

    def __init__(self, *args: object, env: dict[str, str] | None = None) -> None:
        full = dict(os.environ)
        full.update(env or {})
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(
            [sys.executable, PEER, *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full,
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        fl = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self._buf = b""
        self._err = b""
        started.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _take_line(self) -> str | None:
        i = self._buf.find(b"\n")
        if i < 0:
            return None
        line, self._buf = self._buf[:i], self._buf[i + 1 :]
        return line.decode()

    def _read_some(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.proc.wait(10)
            raise AssertionError(
                f"peer {self.args} exited ({self.proc.returncode}) without a line:\n"
                + self.stderr()
            )
        self._buf += chunk

    async def aline(self) -> str:
        """The next line the child prints; the loop keeps running meanwhile."""
        loop = asyncio.get_running_loop()
        while (line := self._take_line()) is None:
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self._fd, wake, fut)
            try:
                await fut
            finally:
                loop.remove_reader(self._fd)
            self._read_some()
        return line

    def line(self, timeout: float = 30.0) -> str:
        """The next line, outside an event loop."""
        deadline = time.monotonic() + timeout
        while (line := self._take_line()) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                raise AssertionError(f"peer {self.args} printed nothing:\n" + self.stderr())
            self._read_some()
        return line

    async def aexpect(self, prefix: str) -> str:
        line = await self.aline()
        assert line.startswith(prefix), (line, prefix)
        return line[len(prefix) :].strip()

    def expect(self, prefix: str) -> str:
        line = self.line()
        assert line.startswith(prefix), (line, prefix)
        return line[len(prefix) :].strip()

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL and reap: when this returns the process is gone."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Close its stdin, wait for it to exit: (returncode, rest of stdout, stderr)."""
        with contextlib.suppress(BrokenPipeError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.wait(timeout)
        out = self._buf
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._fd, 65536):
                out += chunk
        self._buf = b""
        return self.proc.returncode, out.decode(errors="replace"), self.stderr()

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        if self.proc.poll() is not None:
            self._err += self.proc.stderr.read()
        return self._err.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
