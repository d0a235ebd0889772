"""Typed errors: every failed operation completes its future with one of these."""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "BufferValidationError",
    "ConnectionLostError",
    "MessageTruncatedError",
    "ProtocolError",
    "TransportClosedError",
    "TransportError",
    "TransportTimeoutError",
]


class TransportError(Exception):
    """Base class of every error raised by isthmus.transport."""


class BufferValidationError(TransportError, ValueError):
    """A buffer cannot be used as given: not contiguous, read-only as a receive target, on a device
    the backend cannot reach, or not a buffer at all.  Nothing is copied to work around it."""


class MessageTruncatedError(TransportError):
    """The matched message is larger than the posted receive buffer.

    The message is not lost: it stays first in line for the next receive that matches its tag.
    """

    def __init__(self, tag: int, length: int, capacity: int) -> None:
        super().__init__(
            f"message with tag {tag:#x} is {length} bytes but the receive buffer holds {capacity}; "
            "it stays queued for a receive with a large enough buffer"
        )
        self.tag = tag
        self.length = length
        self.capacity = capacity


class ConnectionLostError(TransportError, ConnectionError):
    """The peer went away (closed, reset or killed) before the operation completed."""


class TransportClosedError(TransportError):
    """The Client or Server was closed while the operation was outstanding, or before it started."""


class TransportTimeoutError(TransportError, TimeoutError):
    """The operation did not complete within its ``timeout``; it was withdrawn."""


class BackendUnavailableError(TransportError, ImportError):
    """The requested backend cannot be used here (for ``"ucx"``: ucxx is not installed)."""


class ProtocolError(TransportError):
    """The peer sent bytes that are not isthmus.transport frames; the connection is closed."""
