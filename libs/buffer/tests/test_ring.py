from __future__ import annotations

import os
import resource
import threading
import time

import numpy as np
import pytest

import _children
from isthmus.buffer import (
    Buffer,
    BufferInUseError,
    MessageTooLargeError,
    PeerDiedError,
    ReadOnlyBufferError,
    Ring,
    RingClosedError,
    RingUsageError,
    SegmentNotFoundError,
    SizeError,
    WaitTimeoutError,
)

SHM = "/dev/shm/isthmus."


def _recv_in_thread(ring: Ring) -> tuple[threading.Thread, list[BaseException]]:
    """Start a thread blocked in ``ring.recv()``; it records what recv raised."""
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            ring.recv(timeout=30)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=wait)
    t.start()
    return t, errors


def test_send_recv_in_one_process(impl: str, name: str) -> None:
    prod = Ring.create(name, 4096)
    cons = Ring.open(name)
    prod.send(b"hello")
    prod.send(bytearray(b"world!"))
    prod.send(np.arange(4, dtype=np.int32))
    a = cons.recv(timeout=1)
    assert a.readonly and a.tobytes() == b"hello"
    b = cons.recv(timeout=1)
    assert b.tobytes() == b"world!"
    c = cons.recv(timeout=1)
    assert c.asarray(np.int32).tolist() == [0, 1, 2, 3]
    assert prod.role == "producer" and cons.role == "consumer"
    with pytest.raises(ReadOnlyBufferError):
        a[0:1] = b"x"
    cons.release()
    cons.release()
    cons.release()
    assert prod.pending == 0
    with pytest.raises(RingUsageError):
        cons.release()
    cons.close()
    prod.close()
    assert not os.path.exists(SHM + name)


def test_unlink_keeps_both_sides_working(impl: str, name: str) -> None:
    prod = Ring.create(name, 4096)
    cons = Ring.open(name)
    prod.unlink()
    assert not os.path.exists(SHM + name)  # gone from /dev/shm while both are attached
    prod.send(b"still here")
    msg = cons.recv(timeout=1)
    assert msg.tobytes() == b"still here"
    msg.release()
    with pytest.raises(SegmentNotFoundError):
        Ring.open(name)
    cons.close()
    prod.close()
    with pytest.raises(RingClosedError):
        prod.unlink()


def test_loan_writes_in_place_and_recv_views_in_place(impl: str, name: str) -> None:
    prod = Ring.create(name, 1 << 16)
    cons = Ring.open(name)
    buf = prod.loan(1000)
    arr = np.asarray(buf)
    arr[:] = 42
    with pytest.raises(BufferInUseError, match="still alive"):
        prod.commit()  # a live view could still write into the published message
    del arr
    prod.commit(10)  # publish only the first 10 bytes
    assert buf.released
    msg = cons.recv(timeout=1)
    assert msg.tobytes() == bytes([42]) * 10
    # the consumer's view is the producer's bytes: same shared segment, no copy on receive
    assert msg.address % 64 == 0
    msg.release()
    cons.close()
    prod.close()


def test_usage_errors(impl: str, name: str) -> None:
    prod = Ring.create(name, 1024)
    cons = Ring.open(name)
    with pytest.raises(RingUsageError, match="without a loan"):
        prod.commit()
    prod.loan(8)
    with pytest.raises(RingUsageError, match="previous loan"):
        prod.loan(8)
    with pytest.raises(SizeError):
        prod.commit(9)
    prod.abort()
    with pytest.raises(MessageTooLargeError, match="at most 960 bytes"):
        prod.send(bytes(961))
    prod.send(bytes(960))  # max_message fits in an empty ring
    assert prod.max_message == 960
    with pytest.raises(RingUsageError, match="producer"):
        prod.recv(timeout=0)
    cons.recv(timeout=1).release()
    with pytest.raises(WaitTimeoutError):
        cons.recv(timeout=0.01)
    cons.close()
    prod.close()
    with pytest.raises(RingClosedError):
        prod.send(b"x")
    with pytest.raises(TypeError, match=r"Ring\.create"):
        Ring()
    with pytest.raises(SizeError):
        Ring.create(name, 10)


def test_full_ring_blocks_producer_until_release(impl: str, name: str) -> None:
    prod = Ring.create(name, 1024)
    cons = Ring.open(name)
    for _ in range(4):
        prod.send(bytes(100))  # 4 x (64 + 128) = 768 of 1024
    with pytest.raises(WaitTimeoutError):
        prod.send(bytes(200), timeout=0.05)
    held = [cons.recv(timeout=1) for _ in range(4)]
    done = threading.Event()

    def send() -> None:
        prod.send(bytes(200), timeout=10)
        done.set()

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.05)
    assert not done.is_set()  # received but unreleased messages still occupy the ring
    held[1].release()  # out of order: frees nothing until the oldest goes
    time.sleep(0.05)
    assert not done.is_set()
    held[0].release()
    t.join(10)
    assert done.is_set()
    for h in held[2:]:
        h.release()
    assert cons.recv(timeout=1).nbytes == 200
    cons.close()
    prod.close()


def test_dropping_a_message_releases_it(impl: str, name: str) -> None:
    prod = Ring.create(name, 1024)
    cons = Ring.open(name)
    prod.send(bytes(500))
    cons.recv(timeout=1)  # dropped at once
    assert prod.pending == 0
    cons.close()
    prod.close()


@pytest.mark.parametrize("use_loan", [False, True], ids=["send", "loan"])
def test_many_variable_messages_across_processes_wrap_intact(
    impl: str,
    name: str,
    ctx,
    use_loan: bool,  # type: ignore[no-untyped-def]
) -> None:
    count, top = 3000, 5000
    ring = Ring.create(name, 64 * 1024)  # small: forces many wrap-arounds and full waits
    q = ctx.Queue()
    cons = ctx.Process(target=_children.consume, args=(impl, name, count, 7, top, q))
    prod = ctx.Process(target=_children.produce, args=(impl, name, count, 7, top, use_loan))
    cons.start()
    prod.start()
    result = q.get(timeout=120)
    prod.join(30)
    cons.join(30)
    ring.close()
    assert result == ("ok", 0), result  # every message arrived whole and in order
    assert prod.exitcode == 0 and cons.exitcode == 0


def test_large_message_in_place(impl: str, name: str) -> None:
    frame = 1920 * 1080 * 3
    prod = Ring.create(name, frame + 4096)
    cons = Ring.open(name)
    for value in (1, 2, 3):  # three frames: each one wraps to the start
        buf = prod.loan(frame)
        buf.asarray()[:] = value
        prod.commit()
        msg = cons.recv(timeout=1)
        arr = msg.asarray(np.uint8, (1080, 1920, 3))
        assert arr.shape == (1080, 1920, 3) and int(arr.min()) == int(arr.max()) == value
        del arr
        msg.release()
    cons.close()
    prod.close()


def test_producer_close_drains_then_raises(impl: str, name: str) -> None:
    prod = Ring.create(name, 4096)
    cons = Ring.open(name)
    prod.send(b"last words")
    prod.close()
    msg = cons.recv(timeout=1)
    assert msg.tobytes() == b"last words"
    msg.release()
    with pytest.raises(RingClosedError, match="producer closed"):
        cons.recv(timeout=1)
    cons.close()


def test_consumer_close_stops_producer(impl: str, name: str) -> None:
    prod = Ring.create(name, 4096)
    cons = Ring.open(name)
    prod.send(b"x")
    cons.recv(timeout=1).release()
    cons.close()
    with pytest.raises(RingClosedError, match="consumer closed"):
        prod.send(b"y")
    prod.close()


def test_blocked_consumer_wakes_on_close(impl: str, name: str) -> None:
    prod = Ring.create(name, 4096)
    cons = Ring.open(name)
    prod.send(b"a")
    cons.recv(timeout=1).release()
    t, errors = _recv_in_thread(cons)
    time.sleep(0.05)
    prod.close()
    t.join(5)
    assert not t.is_alive() and isinstance(errors[0], RingClosedError)
    cons.close()


def test_close_refused_while_a_received_view_is_alive(impl: str, name: str) -> None:
    prod = Ring.create(name, 4096)
    cons = Ring.open(name)
    prod.send(b"data")
    msg = cons.recv(timeout=1)
    mv = memoryview(msg)
    with pytest.raises(BufferInUseError):
        cons.close()
    mv.release()
    cons.close()
    assert msg.released
    prod.close()


def test_consumer_detects_dead_producer(impl: str, name: str, ctx) -> None:  # type: ignore[no-untyped-def]
    ring = Ring.create(name, 1 << 16)
    ready = ctx.Event()
    child = ctx.Process(target=_children.open_and_hold, args=(impl, name, ready, "producer"))
    child.start()
    assert ready.wait(30)
    assert ring.recv(timeout=5).tobytes() == b"hello"
    _children.kill(child.pid)  # type: ignore[arg-type]
    child.join(10)
    t0 = time.monotonic()
    with pytest.raises(PeerDiedError, match="died"):
        ring.recv(timeout=30)
    assert time.monotonic() - t0 < 25  # detected, not waited out
    ring.close()
    assert not os.path.exists(SHM + name)


def test_producer_detects_dead_consumer(impl: str, name: str, ctx) -> None:  # type: ignore[no-untyped-def]
    ring = Ring.create(name, 1024)
    ready = ctx.Event()
    ring.send(b"first")
    child = ctx.Process(target=_children.open_and_hold, args=(impl, name, ready, "consumer"))
    child.start()
    assert ready.wait(30)
    while True:  # fill the ring
        try:
            ring.send(bytes(100), timeout=0.05)
        except WaitTimeoutError:
            break
    _children.kill(child.pid)  # type: ignore[arg-type]
    child.join(10)
    with pytest.raises(PeerDiedError, match="consumer"):
        ring.send(bytes(100), timeout=30)
    ring.close()
    assert not os.path.exists(SHM + name)


def test_second_producer_is_refused(impl: str, name: str) -> None:
    a = Ring.create(name, 1024)
    b = Ring.open(name)
    a.send(b"x")
    with pytest.raises(RingUsageError, match="already has a producer"):
        b.send(b"y")
    b.close()
    a.close()


def test_idle_consumer_sleeps(impl: str, name: str) -> None:
    """A consumer blocked in recv() sleeps in the kernel instead of polling."""
    ring = Ring.create(name, 4096)
    cons = Ring.open(name)
    ring.send(b"x")
    cons.recv(timeout=1).release()
    before = (
        resource.getrusage(resource.RUSAGE_THREAD) if hasattr(resource, "RUSAGE_THREAD") else None
    )
    t0 = time.thread_time()
    with pytest.raises(WaitTimeoutError):
        cons.recv(timeout=1.0)
    used = time.thread_time() - t0
    del before
    # A busy-polling wait would burn ~1 s of CPU here; sleeping costs a few wake-ups.
    assert used < 0.1, f"recv used {used:.3f} s of CPU while idle for 1 s"
    cons.close()
    ring.close()


def test_spin_then_sleep_option(impl: str, name: str) -> None:
    prod = Ring.create(name, 4096)
    cons = Ring.open(name, spin=0.001)
    t0 = time.thread_time()
    with pytest.raises(WaitTimeoutError):
        cons.recv(timeout=0.5)
    assert time.thread_time() - t0 < 0.1  # spins 1 ms, then sleeps
    prod.send(b"ok")
    assert cons.recv(timeout=1).tobytes() == b"ok"
    cons.close()
    prod.close()


def test_send_from_buffer_and_numpy(impl: str, name: str) -> None:
    prod = Ring.create(name, 4096)
    cons = Ring.open(name)
    prod.send(Buffer(bytearray(b"from a Buffer")))
    prod.send(np.frombuffer(b"numpy bytes", dtype=np.uint8))
    assert cons.recv(timeout=1).tobytes() == b"from a Buffer"
    assert cons.recv(timeout=1).tobytes() == b"numpy bytes"
    cons.close()
    prod.close()


def test_consumer_sees_close_of_a_side_that_never_sent(impl: str, name: str) -> None:
    creator = Ring.create(name, 4096)  # creates, then closes without ever sending
    cons = Ring.open(name)
    t, errors = _recv_in_thread(cons)
    time.sleep(0.05)
    creator.close()
    t.join(10)
    assert not t.is_alive() and isinstance(errors[0], RingClosedError)
    cons.close()


def test_a_waiting_consumer_alone_keeps_waiting(impl: str, name: str) -> None:
    # Nobody else attached yet: that is not a close, the producer may still come.
    cons = Ring.create(name, 4096)
    with pytest.raises(WaitTimeoutError):
        cons.recv(timeout=0.3)
    cons.close()


def test_open_refuses_a_segment_that_is_not_a_ring(name: str) -> None:
    from isthmus.buffer import IsthmusBufferError, SharedSegment

    seg = SharedSegment.create(name, 4096)
    with pytest.raises(IsthmusBufferError, match="does not hold a Ring"):
        Ring.open(name)
    seg.close()


def test_producer_exiting_with_ring_open_counts_as_close(impl: str, name: str) -> None:
    import subprocess
    import sys
    import textwrap

    cons = Ring.create(name, 4096)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import _children
        _children.produce_and_exit({impl!r}, {name!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 0  # no crash at interpreter exit
    assert cons.recv(timeout=5).tobytes() == b"bye"
    with pytest.raises(RingClosedError):  # closed at exit, not a death
        cons.recv(timeout=5)
    cons.close()


@pytest.mark.parametrize("offset_records", [1, 5, 14])
def test_max_message_fits_an_empty_ring_at_any_offset(
    impl: str, name: str, offset_records: int
) -> None:
    prod = Ring.create(name, 1024)
    cons = Ring.open(name)
    for _ in range(offset_records):  # move head off the lap start, then drain
        prod.send(b"")
        cons.recv(timeout=1).release()
    for size in (prod.max_message, 700, 1, prod.max_message):
        data = bytes([size % 251]) * size
        prod.send(data, timeout=1)  # an empty ring must take it, wrapping or not
        msg = cons.recv(timeout=1)
        assert msg.tobytes() == data
        msg.release()
    cons.close()
    prod.close()


def test_wrapping_record_waits_for_unreleased_data(impl: str, name: str) -> None:
    prod = Ring.create(name, 1024)
    cons = Ring.open(name)
    prod.send(bytes(100))  # record 192 bytes at offset 0
    prod.send(bytes(500))  # record 576 bytes at offset 192 -> head at 768
    first = cons.recv(timeout=1)
    second = cons.recv(timeout=1)
    first.release()  # [0, 192) free; [192, 768) still held
    # 400 bytes (record 512) must wrap to offset 0 and would overlap the held message
    with pytest.raises(WaitTimeoutError):
        prod.send(bytes(400), timeout=0.1)
    assert second.tobytes() == bytes(500)  # untouched
    prod.send(bytes(100), timeout=1)  # record 192 wraps to [0, 192): fits beside it
    second.release()
    prod.send(b"\x07" * 400, timeout=1)
    assert cons.recv(timeout=1).nbytes == 100
    assert cons.recv(timeout=1).tobytes() == b"\x07" * 400
    cons.close()
    prod.close()


def test_blocked_producer_sees_consumer_close(impl: str, name: str) -> None:
    prod = Ring.create(name, 1024)
    cons = Ring.open(name)
    prod.send(bytes(900))
    cons.recv(timeout=1).release()
    prod.send(bytes(900))  # the ring is full now
    errors: list[BaseException] = []

    def send() -> None:
        try:
            prod.send(bytes(900), timeout=30)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.3)  # past the first liveness slice: the producer sleeps on the futex
    cons.close()  # rings the doorbell, so the sleeper looks at once rather than after its slice
    t.join(30)
    assert not t.is_alive() and isinstance(errors[0], RingClosedError)
    prod.close()


def test_aborted_wrapping_loan_leaves_the_stream_intact(impl: str, name: str) -> None:
    prod = Ring.create(name, 1024)
    cons = Ring.open(name)
    prod.send(b"OLD-at-offset-0")
    for _ in range(6):  # head to offset 448 (7 records of 64), all drained
        cons.recv(timeout=1).release()
        prod.send(b"")
    cons.recv(timeout=1).release()
    prod.loan(600)  # would wrap to offset 0 ...
    prod.abort()  # ... but is given back
    prod.send(b"NEW")  # fits at offset 448 without wrapping
    assert cons.recv(timeout=1).tobytes() == b"NEW"
    cons.close()
    prod.close()


def test_forked_child_dropping_a_message_does_not_free_it(impl: str, name: str) -> None:
    prod = Ring.create(name, 1024)
    cons = Ring.open(name)
    prod.send(b"A" * 900)
    msg = cons.recv(timeout=1)
    pid = os.fork()
    if pid == 0:  # a worker that inherits the message and drops it
        del msg
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(WaitTimeoutError):  # still held by us: no room for another
        prod.send(b"B" * 900, timeout=0.1)
    assert msg.tobytes() == b"A" * 900
    msg.release()
    prod.send(b"B" * 900, timeout=1)
    cons.close()
    prod.close()


def test_concurrent_releases_never_lose_space(impl: str, name: str) -> None:
    prod = Ring.create(name, 1 << 16)
    cons = Ring.open(name)
    for _ in range(200):
        held = []
        for _ in range(8):
            prod.send(bytes(64))
            held.append(cons.recv(timeout=1))
        threads = [threading.Thread(target=m.release) for m in held]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert prod.pending == 0
    cons.close()
    prod.close()


def test_close_from_another_thread_while_messages_flow(impl: str, name: str) -> None:
    prod = Ring.create(name, 1 << 16)
    cons = Ring.open(name)
    outcome: list[BaseException] = []

    def pump() -> None:
        try:
            while True:
                prod.send(bytes(256), timeout=5)
                cons.recv(timeout=5).release()
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=pump)
    t.start()
    time.sleep(0.2)
    cons.close()  # from this thread, while the pump is mid-send or mid-recv
    t.join(10)
    assert not t.is_alive()
    assert isinstance(outcome[0], RingClosedError)  # a clean error, never a crash
    prod.close()
