from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from isthmus.buffer import Buffer, DeviceBuffer, DeviceError, SizeError, as_buffer, cuda_available


class FakeDeviceArray:
    """Test double for a CUDA array: exposes only __cuda_array_interface__ (no host memory)."""

    def __init__(self, ptr: int, shape: tuple[int, ...], typestr: str = "<f4", strides: Any = None):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (ptr, False),
            "version": 3,
            "strides": strides,
        }


def test_wraps_cuda_array_interface_without_copy() -> None:
    dev = FakeDeviceArray(0xDEAD0000, (2, 3))
    buf = as_buffer(dev)
    assert isinstance(buf, DeviceBuffer)
    assert buf.nbytes == 24 and buf.address == 0xDEAD0000 and buf.device[0] == 2
    cai = buf.__cuda_array_interface__
    assert cai["data"] == (0xDEAD0000, False) and cai["shape"] == (24,)
    with pytest.raises(TypeError):
        memoryview(buf)  # type: ignore[arg-type]  # device memory is not host-addressable


def test_non_contiguous_device_memory_is_refused() -> None:
    with pytest.raises(SizeError, match="C-contiguous"):
        DeviceBuffer(FakeDeviceArray(0x1000, (4, 4), "<f4", strides=(32, 8)))


def test_host_objects_become_host_buffers() -> None:
    arr = np.zeros(8, dtype=np.uint8)
    assert isinstance(as_buffer(arr), Buffer)
    b = Buffer(arr)
    assert as_buffer(b) is b


@pytest.mark.skipif(cuda_available(), reason="checks the no-CUDA error path")
def test_device_copy_without_cupy_says_what_to_install() -> None:
    buf = DeviceBuffer(FakeDeviceArray(0x1000, (4,)))
    with pytest.raises(DeviceError, match=r"isthmus-buffer\[cuda\]|CUDA"):
        buf.to_host()


@pytest.mark.gpu
def test_cupy_round_trip_through_pinned_pool() -> None:
    cp = pytest.importorskip("cupy")
    if not cuda_available():
        pytest.skip("no CUDA device")
    from isthmus.buffer import BufferPool

    pool = BufferPool(1 << 20, 2, pinned=True)
    slot = pool.acquire()
    slot.asarray()[:] = 7
    dev = DeviceBuffer.from_host(slot)
    assert int(cp.asarray(dev).sum()) == 7 * (1 << 20)
    back = pool.acquire()
    dev.to_host(back)
    assert back.tobytes() == slot.tobytes()
    arr = cp.arange(10, dtype=cp.float32)
    wrapped = as_buffer(arr)
    assert wrapped.address == arr.data.ptr  # zero copy
    assert cp.from_dlpack(wrapped).nbytes == 40
