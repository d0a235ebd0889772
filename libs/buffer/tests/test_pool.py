from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

from isthmus.buffer import (
    BufferPool,
    PoolClosedError,
    PoolExhaustedError,
    SizeError,
    WaitTimeoutError,
)


def test_acquire_gives_aligned_writable_slots(impl: str) -> None:
    pool = BufferPool(1000, 4, alignment=64)
    bufs = [pool.acquire() for _ in range(4)]
    addrs = {b.address for b in bufs}
    assert len(addrs) == 4 and all(a % 64 == 0 for a in addrs)
    assert all(b.nbytes == 1000 and not b.readonly for b in bufs)
    for i, b in enumerate(bufs):
        b[:] = bytes([i]) * 1000
    assert [b.tobytes()[0] for b in bufs] == [0, 1, 2, 3]  # slots do not overlap
    assert pool.available == 0 and pool.in_use == 4
    for b in bufs:
        b.release()
    assert pool.available == 4 and pool.in_use == 0
    pool.close()


def test_page_alignment(impl: str) -> None:
    import mmap

    pool = BufferPool(100, 3, alignment="page")
    bufs = [pool.acquire() for _ in range(3)]
    assert all(b.address % mmap.PAGESIZE == 0 for b in bufs)
    del bufs
    pool.close()


def test_slot_returns_when_last_view_dies(impl: str) -> None:
    pool = BufferPool(256, 1, exhaustion="raise")
    buf = pool.acquire()
    arr = np.asarray(buf)
    part = buf[10:20]
    del buf
    gc.collect()
    assert pool.available == 0  # the numpy view and the slice still use the slot
    del part
    gc.collect()
    assert pool.available == 0
    arr[0] = 1
    del arr
    gc.collect()
    assert pool.available == 1
    again = pool.acquire()
    assert again.nbytes == 256
    again.release()
    pool.close()


def test_exhaustion_raise(impl: str) -> None:
    pool = BufferPool(64, 2, exhaustion="raise")
    a, b = pool.acquire(), pool.acquire()
    with pytest.raises(PoolExhaustedError, match="all 2 slots"):
        pool.acquire()
    addr = a.address
    a.release()
    c = pool.acquire()
    assert c.address == addr  # the released slot is the one handed out again
    b.release()
    c.release()
    pool.close()


def test_exhaustion_wait_times_out_then_wakes_on_release(impl: str) -> None:
    pool = BufferPool(64, 1, exhaustion="wait")
    held = pool.acquire()
    with pytest.raises(WaitTimeoutError):
        pool.acquire(timeout=0.05)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(pool.acquire(timeout=10)))
    t.start()
    time.sleep(0.05)
    assert not got
    held.release()
    t.join(10)
    assert len(got) == 1
    got[0].release()  # type: ignore[attr-defined]
    pool.close()


def test_exhaustion_grow(impl: str) -> None:
    pool = BufferPool(128, 2, exhaustion="grow")
    bufs = [pool.acquire() for _ in range(5)]
    assert pool.capacity == 6
    assert len({b.address for b in bufs}) == 5
    for b in bufs:
        b.release()
    assert pool.available == 6
    pool.close()


def test_close_wakes_waiters_and_frees_after_last_return(impl: str) -> None:
    pool = BufferPool(64, 1)
    held = pool.acquire()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.acquire(timeout=10)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    pool.close()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], PoolClosedError)
    assert pool._arenas  # still backing the buffer we hold
    held[:4] = b"safe"
    held.release()
    assert not pool._arenas
    with pytest.raises(PoolClosedError):
        pool.acquire()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"slot_size": 0, "slots": 1},
        {"slot_size": 10, "slots": 0},
        {"slot_size": 10, "slots": 1, "alignment": 48},
        {"slot_size": 10, "slots": 1, "alignment": 4},
    ],
)
def test_bad_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(SizeError):
        BufferPool(**kwargs)  # type: ignore[arg-type]


def test_bad_policy() -> None:
    with pytest.raises(ValueError, match="exhaustion"):
        BufferPool(8, 1, exhaustion="drop")  # type: ignore[arg-type]


def test_threads_share_a_pool_without_losing_slots(impl: str) -> None:
    pool = BufferPool(32, 8, exhaustion="wait")

    def work() -> None:
        for _ in range(2000):
            b = pool.acquire(timeout=10)
            b[:4] = b"abcd"
            b.release()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert pool.available == 8 and pool.in_use == 0
    pool.close()
