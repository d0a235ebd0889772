"""Functions run in child processes by the tests (spawned, so they must be importable)."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from typing import Any

from isthmus.buffer import Ring, SharedSegment, _backend


def payload(i: int, n: int) -> bytes:
    """Deterministic content for message ``i`` of ``n`` bytes (every byte depends on i)."""
    seed = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=32).digest()
    return (seed * (n // 32 + 1))[:n]


def sizes(count: int, seed: int, top: int) -> list[int]:
    out, x = [], seed
    for _ in range(count):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(x % top)
    return out


def produce(impl: str, name: str, count: int, seed: int, top: int, use_loan: bool) -> None:
    with _backend.use(impl):
        ring = Ring.open(name)
        try:
            for i, n in enumerate(sizes(count, seed, top)):
                data = payload(i, n)
                if use_loan:
                    buf = ring.loan(n, timeout=30)
                    buf[:] = data
                    ring.commit()
                else:
                    ring.send(data, timeout=30)
        finally:
            ring.close()


def consume(impl: str, name: str, count: int, seed: int, top: int, q: Any) -> None:
    with _backend.use(impl):
        ring = Ring.open(name)
        bad = 0
        try:
            for i, n in enumerate(sizes(count, seed, top)):
                msg = ring.recv(timeout=30)
                if msg.nbytes != n or msg.tobytes() != payload(i, n):
                    bad += 1
                msg.release()
            q.put(("ok", bad))
        except Exception as e:
            q.put((type(e).__name__, str(e)))
        finally:
            ring.close()


def open_and_hold(impl: str, name: str, ready: Any, kind: str) -> None:
    """Attach to a segment or ring, say so, then wait to be killed."""
    with _backend.use(impl):
        obj = SharedSegment.open(name) if kind == "segment" else Ring.open(name)
        if kind == "producer":
            obj.send(b"hello")  # type: ignore[union-attr]
        elif kind == "consumer":
            obj.recv(timeout=30).release()  # type: ignore[union-attr]
        ready.set()
        time.sleep(60)


def create_and_hold(impl: str, name: str, ready: Any, kind: str) -> None:
    with _backend.use(impl):
        if kind == "segment":
            _obj: Any = SharedSegment.create(name, 4096)
        else:
            _obj = Ring.create(name, 1 << 16)
            if kind == "producer":
                _obj.send(b"first")
        ready.set()
        time.sleep(60)


_KEEP: list[Any] = []


def create_and_exit(impl: str, name: str) -> None:
    """Create a segment and a ring and return without closing either: the interpreter exit
    (atexit) must clean them up."""
    with _backend.use(impl):
        _KEEP.append(SharedSegment.create(name + "-seg", 4096))
        _KEEP.append(Ring.create(name + "-ring", 4096))


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def produce_and_exit(impl: str, name: str) -> None:
    """Send one message and return with the ring still open in a module global."""
    with _backend.use(impl):
        ring = Ring.open(name, timeout=30)
        ring.send(b"bye")
        _KEEP.append(ring)
