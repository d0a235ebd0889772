"""Typed exceptions raised by :mod:`isthmus.buffer`.

Each error subclasses :class:`IsthmusBufferError` and the closest builtin, so callers can
catch either.
"""

from __future__ import annotations

__all__ = [
    "BufferInUseError",
    "BufferReleasedError",
    "DeviceError",
    "IsthmusBufferError",
    "MessageTooLargeError",
    "PeerDiedError",
    "PoolClosedError",
    "PoolExhaustedError",
    "ReadOnlyBufferError",
    "RingClosedError",
    "RingUsageError",
    "SegmentExistsError",
    "SegmentNotFoundError",
    "SizeError",
    "WaitTimeoutError",
]


class IsthmusBufferError(Exception):
    """Base class of every error raised by isthmus.buffer."""


class BufferReleasedError(IsthmusBufferError, ValueError):
    """The buffer was released: it no longer refers to valid memory."""


class BufferInUseError(IsthmusBufferError, BufferError):
    """The memory cannot be released or reused while views of it are alive."""


class ReadOnlyBufferError(IsthmusBufferError, TypeError):
    """A write was attempted through a read-only buffer."""


class SizeError(IsthmusBufferError, ValueError):
    """A size, offset or alignment is out of range."""


class MessageTooLargeError(SizeError):
    """A message does not fit in the ring even when it is empty."""


class PoolExhaustedError(IsthmusBufferError):
    """Every slot of a pool is in use and the exhaustion policy is ``"raise"``."""


class PoolClosedError(IsthmusBufferError):
    """The pool was closed."""


class SegmentExistsError(IsthmusBufferError, FileExistsError):
    """A shared segment of that name already exists and is in use."""


class SegmentNotFoundError(IsthmusBufferError, FileNotFoundError):
    """No shared segment of that name exists."""


class WaitTimeoutError(IsthmusBufferError, TimeoutError):
    """A blocking wait reached its timeout."""


class RingClosedError(IsthmusBufferError, EOFError):
    """The peer closed the ring (and, for a consumer, every message was received)."""


class PeerDiedError(IsthmusBufferError, ConnectionError):
    """The process on the other side of a ring died without closing it."""


class RingUsageError(IsthmusBufferError, RuntimeError):
    """A ring operation was called out of order (e.g. commit without a loan)."""


class DeviceError(IsthmusBufferError, RuntimeError):
    """A device (GPU) operation is impossible here, e.g. CuPy is not installed."""
