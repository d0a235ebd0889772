"""isthmus.buffer: zero-copy memory for moving bytes between threads, processes and devices.

* :class:`Buffer` — a sliceable, zero-copy view over memory owned by something else.
* :class:`BufferPool` — fixed-size aligned slots, O(1) acquire and release.
* :class:`SharedSegment` — named shared memory that never leaks in ``/dev/shm``.
* :class:`Ring` / :class:`AsyncRing` — a cross-process SPSC ring of variable-size messages.
* :class:`DeviceBuffer` / :func:`as_buffer` — CUDA memory via CuPy, CAI and DLPack.

``IMPLEMENTATION`` is ``"native"`` when the optional ``isthmus-buffer-accel`` core is in use and
``"python"`` otherwise (``ISTHMUS_PUREPYTHON=1`` forces the latter).
"""

from ._aio import AsyncRing
from ._backend import IMPLEMENTATION
from ._buffer import Buffer
from ._device import DeviceBuffer, as_buffer, cuda_available
from ._errors import (
    BufferInUseError,
    BufferReleasedError,
    DeviceError,
    IsthmusBufferError,
    MessageTooLargeError,
    PeerDiedError,
    PoolClosedError,
    PoolExhaustedError,
    ReadOnlyBufferError,
    RingClosedError,
    RingUsageError,
    SegmentExistsError,
    SegmentNotFoundError,
    SizeError,
    WaitTimeoutError,
)
from ._pool import BufferPool
from ._ring import Ring
from ._segment import SharedSegment, sweep_stale_segments
from ._version import __version__

__all__ = [
    "IMPLEMENTATION",
    "AsyncRing",
    "Buffer",
    "BufferInUseError",
    "BufferPool",
    "BufferReleasedError",
    "DeviceBuffer",
    "DeviceError",
    "IsthmusBufferError",
    "MessageTooLargeError",
    "PeerDiedError",
    "PoolClosedError",
    "PoolExhaustedError",
    "ReadOnlyBufferError",
    "Ring",
    "RingClosedError",
    "RingUsageError",
    "SegmentExistsError",
    "SegmentNotFoundError",
    "SharedSegment",
    "SizeError",
    "WaitTimeoutError",
    "__version__",
    "as_buffer",
    "cuda_available",
    "sweep_stale_segments",
]
