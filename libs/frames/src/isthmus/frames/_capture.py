"""The capture seam: a :class:`FrameSource` hands out frames, best available backend first."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from ._errors import FramesError
from ._types import Frame, PixelFormat, as_frame

__all__ = ["ArraySource", "FrameSource"]


@runtime_checkable
class FrameSource(Protocol):
    """Something that produces frames: arrays, an OpenGL texture or framebuffer, a canvas.

    ``backend`` names the capture path in use (e.g. ``"pbo"`` or ``"cuda-gl"``).  ``read()``
    returns the next frame; ``close()`` releases every resource and is idempotent.
    """

    backend: str

    def read(self) -> Frame:
        """Capture one frame."""
        ...

    def close(self) -> None:
        """Release the source's resources."""
        ...


class ArraySource:
    """Frames from numpy or CuPy arrays (anything :func:`as_frame` accepts), without copies.

    ``source`` is an iterable of arrays or a callable returning one per call.  Each array is
    validated and wrapped; the frame's ``data`` is the caller's memory.
    """

    def __init__(
        self,
        source: Iterable[Any] | Callable[[], Any],
        format: PixelFormat | str | None = None,
    ) -> None:
        self.format = None if format is None else PixelFormat(format)
        self._next: Callable[[], Any]
        if callable(source):
            self._next = source
        else:
            it: Iterator[Any] = iter(source)
            self._next = it.__next__
        self._pts = 0
        self._closed = False
        self.backend = "array"

    def read(self) -> Frame:
        """The next array as a :class:`Frame`; ``StopIteration`` at the end of an iterable."""
        if self._closed:
            raise FramesError("read() on a closed ArraySource")
        frame = as_frame(self._next(), self.format, pts=self._pts)
        if frame.on_device:
            self.backend = "cuda-array"
        self._pts += 1
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while True:
            try:
                yield self.read()
            except StopIteration:
                return

    def close(self) -> None:
        """Stop reading; the arrays stay the caller's."""
        self._closed = True

    def __enter__(self) -> ArraySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
