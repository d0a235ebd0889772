"""Strict buffer validation: a buffer is used as given or rejected, never copied or cast."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._errors import BufferValidationError

__all__ = ["address", "recv_view", "send_views"]


def _view(obj: Any, what: str) -> memoryview:
    try:
        mv = memoryview(obj)
    except TypeError:
        if hasattr(obj, "__cuda_array_interface__") or hasattr(obj, "__dlpack_device__"):
            raise BufferValidationError(
                f"{what} is device memory ({type(obj).__name__}); "
                "only backend='ucx' moves device buffers"
            ) from None
        raise BufferValidationError(
            f"{what} must support the buffer protocol, not {type(obj).__name__}"
        ) from None
    except Exception as exc:  # e.g. a released isthmus.buffer.Buffer refuses its export
        raise BufferValidationError(f"{what} cannot be used: {exc}") from exc
    if not mv.c_contiguous:
        strides = mv.strides
        mv.release()
        raise BufferValidationError(
            f"{what} is not C-contiguous (strides {strides}); pass a contiguous buffer "
            "(e.g. numpy.ascontiguousarray) rather than have it copied behind your back"
        )
    if mv.format != "B" or mv.ndim != 1:
        # Any dtype is moved as its bytes; the length reported is in bytes, never a cast count.
        mv = mv.cast("B")
    return mv


def send_views(obj: Any) -> list[memoryview]:
    """The byte views of a send: one buffer, or a list/tuple of buffers sent as one message."""
    if isinstance(obj, (list, tuple)):
        return [_view(part, f"send buffer #{i}") for i, part in enumerate(obj)]
    return [_view(obj, "send buffer")]


def recv_view(obj: Any) -> memoryview:
    """The writable byte view of a receive target."""
    mv = _view(obj, "receive buffer")
    if mv.readonly:
        mv.release()
        raise BufferValidationError("receive buffer is read-only; pass a writable buffer")
    return mv


def address(mv: memoryview) -> int:
    """The address of a contiguous view's first byte (read-only views included)."""
    if not mv.nbytes:
        return 0
    if not mv.readonly:
        return ctypes.addressof(ctypes.c_char.from_buffer(mv))  # the cheap way, ~0.5 us
    return int(np.frombuffer(mv, dtype=np.uint8).__array_interface__["data"][0])


def total(views: Sequence[memoryview]) -> int:
    return sum(v.nbytes for v in views)
