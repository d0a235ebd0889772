from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import _children
from isthmus.buffer import (
    BufferInUseError,
    SegmentExistsError,
    SegmentNotFoundError,
    SharedSegment,
    SizeError,
    sweep_stale_segments,
)

SHM = "/dev/shm/isthmus."


def test_create_open_share_memory_and_unlink_on_last_close(impl: str, name: str) -> None:
    seg = SharedSegment.create(name, 10_000)
    assert seg.size == 10_000 and os.path.exists(SHM + name)
    seg.buffer[:5] = b"hello"
    other = SharedSegment.open(name)
    assert other.size == 10_000 and other.buffer[:5].tobytes() == b"hello"
    other.buffer[5:6] = b"!"
    assert seg.buffer[:6].tobytes() == b"hello!"
    assert os.getpid() in seg.attached_pids()
    seg.close()
    assert os.path.exists(SHM + name)  # still attached through `other`
    other.close()
    assert not os.path.exists(SHM + name)
    seg.close()  # idempotent


def test_name_errors(name: str) -> None:
    with pytest.raises(SegmentNotFoundError, match="create it first"):
        SharedSegment.open(name)
    seg = SharedSegment.create(name, 64)
    with pytest.raises(SegmentExistsError, match="already exists"):
        SharedSegment.create(name, 64)
    seg.close()
    for bad in ("a/b", "", "x" * 300, ".."):
        with pytest.raises(ValueError, match="invalid segment name"):
            SharedSegment.create(bad, 64)
    with pytest.raises(SizeError):
        SharedSegment.create(name, 0)
    with pytest.raises(TypeError, match="create"):
        SharedSegment()


def test_close_refused_while_views_alive(name: str) -> None:
    seg = SharedSegment.create(name, 64)
    mv = memoryview(seg.buffer)
    with pytest.raises(BufferInUseError, match="views"):
        seg.close()
    assert not seg.closed
    mv.release()
    seg.close()
    assert seg.closed


@pytest.mark.parametrize("killed", ["opener", "creator"])
def test_no_leak_after_sigkill(impl: str, name: str, ctx, killed: str) -> None:  # type: ignore[no-untyped-def]
    ready = ctx.Event()
    if killed == "opener":
        seg = SharedSegment.create(name, 4096)
        child = ctx.Process(target=_children.open_and_hold, args=(impl, name, ready, "segment"))
        child.start()
        assert ready.wait(30)
        assert child.pid in seg.attached_pids()
        _children.kill(child.pid)  # type: ignore[arg-type]
        child.join(10)
        assert seg.attached_pids() == [os.getpid()]
        seg.close()
    else:
        child = ctx.Process(target=_children.create_and_hold, args=(impl, name, ready, "segment"))
        child.start()
        assert ready.wait(30)
        seg = SharedSegment.open(name)
        _children.kill(child.pid)  # type: ignore[arg-type]
        child.join(10)
        seg.close()
    assert not os.path.exists(SHM + name)


def test_stale_segment_of_dead_creator_is_swept(impl: str, name: str, ctx) -> None:  # type: ignore[no-untyped-def]
    ready = ctx.Event()
    child = ctx.Process(target=_children.create_and_hold, args=(impl, name, ready, "segment"))
    child.start()
    assert ready.wait(30)
    _children.kill(child.pid)  # type: ignore[arg-type]
    child.join(10)
    assert os.path.exists(SHM + name)  # nobody was left to clean up ...
    assert name in sweep_stale_segments()  # ... until any isthmus process sweeps
    assert not os.path.exists(SHM + name)


def test_stale_name_is_reusable_and_not_openable(impl: str, name: str, ctx) -> None:  # type: ignore[no-untyped-def]
    for action in ("create", "open"):
        ready = ctx.Event()
        child = ctx.Process(target=_children.create_and_hold, args=(impl, name, ready, "segment"))
        child.start()
        assert ready.wait(30)
        _children.kill(child.pid)  # type: ignore[arg-type]
        child.join(10)
        if action == "create":
            SharedSegment.create(name, 128).close()
        else:
            with pytest.raises(SegmentNotFoundError, match="abandoned"):
                SharedSegment.open(name)
        assert not os.path.exists(SHM + name)


def test_interpreter_exit_cleans_up(impl: str, name: str) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import _children
        _children.create_and_exit({impl!r}, {name!r})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert not os.path.exists(SHM + name + "-seg")
    assert not os.path.exists(SHM + name + "-ring")


def test_open_waits_for_the_creator(impl: str, name: str) -> None:
    import threading
    import time

    from isthmus.buffer import Ring

    def create_later() -> None:
        time.sleep(0.1)
        ring = Ring.create(name, 4096)
        ring.send(b"late")
        done.wait(10)
        ring.close()

    done = threading.Event()
    t = threading.Thread(target=create_later)
    t.start()
    with pytest.raises(SegmentNotFoundError):
        Ring.open(name)  # no waiting by default
    ring = Ring.open(name, timeout=10)
    assert ring.recv(timeout=5).tobytes() == b"late"
    ring.close()
    done.set()
    t.join(10)
