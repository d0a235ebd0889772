from __future__ import annotations

import gc
import mmap
import weakref

import numpy as np
import pytest

from isthmus.buffer import (
    IMPLEMENTATION,
    Buffer,
    BufferInUseError,
    BufferReleasedError,
    ReadOnlyBufferError,
    SizeError,
)


def test_memoryview_shares_memory_with_owner() -> None:
    owner = bytearray(b"hello world")
    buf = Buffer(owner)
    with memoryview(buf) as mv:
        mv[0] = ord("J")
        assert mv.nbytes == 11 and mv.format == "B" and not mv.readonly
    assert owner == b"Jello world"
    assert buf.nbytes == len(buf) == 11 and not buf.readonly
    assert buf.device == (1, 0) and buf.__dlpack_device__() == (1, 0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: bytearray(64),
        lambda: np.arange(16, dtype=np.float32),
        lambda: np.zeros((4, 4), dtype=np.uint16),
        lambda: mmap.mmap(-1, 4096),
        lambda: memoryview(bytearray(32)),
    ],
    ids=["bytearray", "float32", "2d", "mmap", "memoryview"],
)
def test_wraps_any_contiguous_exporter_without_copy(make: object) -> None:
    owner = make()  # type: ignore[operator]
    buf = Buffer(owner)
    arr = np.asarray(buf)
    assert arr.dtype == np.uint8 and arr.nbytes == memoryview(owner).nbytes
    assert np.shares_memory(arr, np.frombuffer(owner, dtype=np.uint8))
    arr[:4] = 7
    assert bytes(memoryview(owner).cast("B")[:4]) == b"\x07" * 4
    del arr


def test_slicing_is_a_view_and_keeps_parent_alive() -> None:
    owner = np.zeros(100, dtype=np.uint8)
    buf = Buffer(owner)
    part = buf[10:20]
    assert isinstance(part, Buffer) and part.nbytes == 10
    assert part.address == buf.address + 10
    part[:] = b"x" * 10
    assert owner[10:20].tobytes() == b"x" * 10
    assert buf[5] == 0 and part[0] == ord("x")
    assert buf[-5:].nbytes == 5 and buf[200:].nbytes == 0
    with pytest.raises(SizeError):
        buf[::2]


def test_keeps_owner_alive() -> None:
    owner = np.ones(1000, dtype=np.uint8)
    ref = weakref.ref(owner)
    buf = Buffer(owner)
    del owner
    gc.collect()
    assert ref() is not None
    assert buf.tobytes() == b"\x01" * 1000
    buf.release()
    gc.collect()
    assert ref() is None  # released buffers let go of their owner


def test_use_after_release_raises_typed_error() -> None:
    buf = Buffer(bytearray(8))
    buf.release()
    buf.release()  # idempotent
    assert buf.released
    for op in (lambda: buf.nbytes, buf.tobytes, lambda: buf[0:2], lambda: buf.address):
        with pytest.raises(BufferReleasedError, match="released"):
            op()
    # memoryview() on a released buffer: the typed error with the native core or on 3.12+;
    # the 3.11 ctypes fallback can only make CPython raise SystemError (see _pure.py).
    expected = (
        (BufferReleasedError, SystemError) if IMPLEMENTATION == "python" else (BufferReleasedError,)
    )
    with pytest.raises(expected):
        memoryview(buf)


def test_release_refused_while_views_alive_and_nothing_changes() -> None:
    owner = bytearray(b"abcdef")
    buf = Buffer(owner)
    mv = memoryview(buf)
    with pytest.raises(BufferInUseError, match="still alive"):
        buf.release()
    assert not buf.released and mv[0] == ord("a")
    mv.release()
    part = buf[1:3]
    with pytest.raises(BufferInUseError, match="slice"):
        buf.release()
    part.release()
    buf.release()
    assert buf.released


def test_readonly_buffers_refuse_writes() -> None:
    buf = Buffer(b"constant")
    assert buf.readonly
    with pytest.raises(ReadOnlyBufferError):
        buf[0:1] = b"x"
    with pytest.raises(ReadOnlyBufferError):
        buf.copy_from(b"x")
    with pytest.raises(ReadOnlyBufferError):
        Buffer(b"constant", readonly=False)
    forced = Buffer(bytearray(4), readonly=True)
    assert forced.readonly
    with memoryview(forced) as mv:
        assert mv.readonly
        with pytest.raises(TypeError):
            mv[0] = 1


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(TypeError, match="buffer protocol"):
        Buffer(12)  # type: ignore[arg-type]
    with pytest.raises(SizeError, match="C-contiguous"):
        Buffer(np.zeros((4, 4))[:, 1])
    buf = Buffer(bytearray(4))
    with pytest.raises(SizeError, match="do not fit"):
        buf.copy_from(b"12345")
    with pytest.raises(SizeError):
        buf.copy_from(b"12", offset=3)


def test_copy_from(impl: str) -> None:
    src = np.random.default_rng(1).integers(0, 255, 1 << 20, dtype=np.uint8)
    dst = Buffer(bytearray(src.nbytes + 10))
    assert dst.copy_from(src, offset=10) == src.nbytes
    assert dst[10:].tobytes() == src.tobytes()
    assert dst[:10].tobytes() == b"\0" * 10
    other = Buffer(bytearray(16))
    other.copy_from(dst[10:26])
    assert other.tobytes() == src[:16].tobytes()


def test_asarray_typed_and_shaped() -> None:
    owner = np.arange(12, dtype=np.float32)
    buf = Buffer(owner)
    arr = buf.asarray(np.float32, (3, 4))
    assert arr.shape == (3, 4) and arr[2, 3] == 11.0
    assert np.shares_memory(arr, owner)


def test_dlpack_round_trip_without_copy() -> None:
    owner = np.arange(32, dtype=np.uint8)
    buf = Buffer(owner)
    arr = np.from_dlpack(buf)
    assert np.shares_memory(arr, owner)
    assert arr.tolist() == list(range(32))


def test_buffer_of_buffer_is_a_view() -> None:
    outer = Buffer(bytearray(b"0123456789"))
    inner = Buffer(outer, readonly=True)
    assert inner.readonly and inner.tobytes() == b"0123456789"
    with pytest.raises(BufferInUseError):
        outer.release()
    inner.release()
    outer.release()


def test_context_manager_releases() -> None:
    with Buffer(bytearray(4)) as buf:
        assert buf.nbytes == 4
    assert buf.released
