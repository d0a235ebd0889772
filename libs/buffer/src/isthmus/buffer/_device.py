"""Device (GPU) memory: wrap CuPy arrays, ``__cuda_array_interface__`` and DLPack without copying.

CuPy is imported lazily and only here; without it (or without a GPU) host code keeps working and
device operations raise :class:`DeviceError`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from ._buffer import KDL_CPU, Buffer
from ._errors import BufferReleasedError, DeviceError, SizeError

__all__ = ["KDL_CUDA", "DeviceBuffer", "as_buffer", "cuda_available", "pinned_host_memory"]

KDL_CUDA = 2
KDL_CUDA_HOST = 3
KDL_CUDA_MANAGED = 13


def _cupy() -> Any:
    try:
        import cupy
    except ImportError:
        raise DeviceError("device buffers need CuPy: pip install 'isthmus-buffer[cuda]'") from None
    return cupy


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True if CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


def pinned_host_memory(nbytes: int) -> object:
    """Page-locked host memory of ``nbytes`` bytes (a buffer-protocol object), via CuPy."""
    cupy = _cupy()
    if not cuda_available():
        raise DeviceError("pinned host memory needs a CUDA device; none is usable here")
    import numpy as np

    mem = cupy.cuda.alloc_pinned_memory(nbytes)
    return np.frombuffer(mem, dtype=np.uint8, count=nbytes)


def _nbytes_of(shape: tuple[int, ...], typestr: str) -> int:
    return math.prod(shape) * int(typestr[2:])


class DeviceBuffer:
    """A zero-copy view of device memory (CUDA), from CuPy, CAI or DLPack producers.

    It does not export the host buffer protocol (the memory is not addressable by the CPU); use
    :meth:`to_host` / :meth:`from_host` to move data through (pinned) host buffers.
    """

    __slots__ = ("_device", "_nbytes", "_owner", "_ptr", "_readonly", "_released")

    def __init__(self, obj: object) -> None:
        cai = getattr(obj, "__cuda_array_interface__", None)
        if cai is not None:
            strides = cai.get("strides")
            shape = tuple(cai["shape"])
            itemsize = int(cai["typestr"][2:])
            if strides is not None and strides != _c_strides(shape, itemsize):
                raise SizeError("DeviceBuffer needs C-contiguous device memory")
            ptr, ro = cai["data"]
            self._ptr = int(ptr)
            self._readonly = bool(ro)
            self._nbytes = _nbytes_of(shape, cai["typestr"])
            self._device = (KDL_CUDA, _device_of_pointer(self._ptr))
        elif hasattr(obj, "__dlpack_device__"):
            dev = tuple(obj.__dlpack_device__())
            if dev[0] == KDL_CPU:
                raise TypeError("host memory: wrap it with Buffer(obj)")
            # Go through CuPy to read the pointer of a DLPack producer.
            arr = _cupy().from_dlpack(obj)
            self.__init__(arr)  # type: ignore[misc]
            self._owner = arr
            return
        else:
            raise TypeError(
                f"{type(obj).__name__} exposes neither __cuda_array_interface__ nor __dlpack__"
            )
        self._owner = obj
        self._released = False

    def _check(self) -> None:
        if self._released:
            raise BufferReleasedError("device buffer has been released")

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return self._nbytes

    @property
    def readonly(self) -> bool:
        """True if the producer marked the memory read-only."""
        return self._readonly

    @property
    def device(self) -> tuple[int, int]:
        """``(DLPack device type, device id)``, e.g. ``(2, 0)`` for CUDA device 0."""
        return self._device

    @property
    def address(self) -> int:
        """The device pointer."""
        self._check()
        return self._ptr

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        self._check()
        return {
            "shape": (self._nbytes,),
            "typestr": "|u1",
            "data": (self._ptr, self._readonly),
            "version": 3,
            "strides": None,
        }

    def __dlpack__(self, **kwargs: Any) -> Any:
        """Export as a DLPack capsule through CuPy (zero copy)."""
        self._check()
        arr = _cupy().asarray(self)  # wraps our CAI without copying
        return arr.__dlpack__(**{k: v for k, v in kwargs.items() if v is not None})

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._device

    def cupy(self) -> Any:
        """A CuPy uint8 array over the same device memory."""
        self._check()
        return _cupy().asarray(self)

    def to_host(self, out: Buffer | None = None) -> Buffer:
        """Copy to host memory (``out``, e.g. a pinned pool slot, or a new buffer)."""
        self._check()
        cupy = _cupy()
        import numpy as np

        if out is None:
            out = Buffer(bytearray(self._nbytes))
        if out.nbytes < self._nbytes:
            raise SizeError(f"out holds {out.nbytes} bytes, need {self._nbytes}")
        host = np.frombuffer(out, dtype=np.uint8, count=self._nbytes)
        cupy.asarray(self).get(out=host)
        return out

    @classmethod
    def from_host(cls, src: object, out: DeviceBuffer | None = None) -> DeviceBuffer:
        """Copy host memory (any buffer) to the device (into ``out`` if given)."""
        cupy = _cupy()
        import numpy as np

        host = np.frombuffer(memoryview(src).cast("B"), dtype=np.uint8)  # type: ignore[arg-type]
        if out is None:
            return cls(cupy.asarray(host))
        if out.nbytes < host.nbytes:
            raise SizeError(f"out holds {out.nbytes} bytes, need {host.nbytes}")
        cupy.asarray(out)[: host.nbytes].set(host)
        return out

    def release(self) -> None:
        """Make this wrapper unusable; further use raises.

        The device memory lives as long as its producer does: arrays made from this buffer
        (``cupy()``, ``__dlpack__``) may still use it, so the producer is not dropped here.
        """
        self._released = True

    def __repr__(self) -> str:
        return f"<DeviceBuffer {self._nbytes} bytes on device {self._device}>"


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    out = []
    acc = itemsize
    for dim in reversed(shape):
        out.append(acc)
        acc *= dim
    return tuple(reversed(out))


def _device_of_pointer(ptr: int) -> int:
    try:
        import cupy

        attrs = cupy.cuda.runtime.pointerGetAttributes(ptr)
        return int(attrs.device)
    except Exception:
        return 0


def as_buffer(obj: object) -> Buffer | DeviceBuffer:
    """Wrap ``obj`` without copying: a :class:`Buffer` for host memory, a
    :class:`DeviceBuffer` for CUDA memory (CuPy arrays, CAI or DLPack device producers)."""
    if isinstance(obj, (Buffer, DeviceBuffer)):
        return obj
    if hasattr(obj, "__cuda_array_interface__"):
        return DeviceBuffer(obj)
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is not None and next(iter(dev())) not in (KDL_CPU, KDL_CUDA_HOST):
        return DeviceBuffer(obj)
    return Buffer(obj)
