"""Frames from a vispy (or napari) canvas, rendered without Qt through vispy's EGL app backend.

vispy's EGL backend asks for the *default* EGL display, which Mesa resolves through X11 unless
told otherwise; with no ``DISPLAY`` or ``WAYLAND_DISPLAY``, :func:`vispy_egl_app` therefore sets
``EGL_PLATFORM=surfaceless`` (``setdefault``) before the backend loads, so a canvas renders on
Mesa's surfaceless platform (llvmpipe on machines without a GPU).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import numpy as np

from ._errors import BackendUnavailableError, ContextLostError, FramesError
from ._types import Frame, PixelFormat, as_frame

__all__ = ["VispyCanvasSource", "vispy_egl_app"]

log = logging.getLogger(__name__)

_app_lock = threading.Lock()
_egl_app: Any = None


def vispy_egl_app() -> Any:
    """A vispy ``Application`` on the EGL backend (headless, Qt-free), created once.

    It is separate from vispy's default application, so this does not change what
    ``vispy.use()`` selected.  Raises :class:`BackendUnavailableError` with vispy's reason when
    vispy or its EGL backend cannot start.
    """
    global _egl_app
    with _app_lock:
        if _egl_app is not None:
            return _egl_app
        try:
            from vispy import app
        except ImportError as exc:
            raise BackendUnavailableError(
                f"vispy is not installed ({exc}); install isthmus-frames[vispy]",
                {"vispy-egl": str(exc)},
            ) from exc
        if (
            "vispy.app.backends._egl" not in sys.modules
            and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY")
        ):
            # Read by Mesa when vispy's backend calls eglGetDisplay(EGL_DEFAULT_DISPLAY).
            os.environ.setdefault("EGL_PLATFORM", "surfaceless")
        try:
            _egl_app = app.Application("egl")
        except Exception as exc:  # vispy raises RuntimeError with the backend's reason
            reason = " ".join(str(exc).split())
            log.info("vispy EGL backend unavailable: %s", reason)
            raise BackendUnavailableError(
                f"vispy's EGL backend cannot start: {reason}", {"vispy-egl": reason}
            ) from exc
        return _egl_app


def _scene_canvas(canvas: Any) -> Any:
    """The vispy canvas behind ``canvas`` (a vispy canvas itself, or a napari VispyCanvas)."""
    if hasattr(canvas, "render"):
        return canvas
    for name in ("scene_canvas", "_scene_canvas"):
        inner = getattr(canvas, name, None)
        if inner is not None and hasattr(inner, "render"):
            return inner
    raise FramesError(f"{type(canvas).__name__} is not a vispy canvas (it has no render())")


class VispyCanvasSource:
    """A :class:`~isthmus.frames.FrameSource` of what a vispy canvas renders.

    ``canvas`` is a ``vispy.scene.SceneCanvas`` (or ``vispy.app.Canvas``, or a napari canvas
    wrapping one).  Without one, a hidden ``SceneCanvas`` of ``size`` (width, height) is created
    on the headless EGL backend (:func:`vispy_egl_app`); ``canvas_kwargs`` are passed to it and
    the source closes it in :meth:`close`.  Each :meth:`read` renders the canvas offscreen
    (``canvas.render()``) and returns a fresh top-down array, so frames never alias each other.
    ``format`` is ``"rgba"``, ``"rgb"`` or ``"bgra"`` (the last two cost one copy).

    :attr:`backend` is ``"vispy-"`` plus the vispy app backend's name (``"vispy-egl"``
    headless).  Raises :class:`BackendUnavailableError` when vispy cannot render here.
    """

    def __init__(
        self,
        canvas: Any = None,
        *,
        size: tuple[int, int] = (640, 480),
        format: PixelFormat | str = "rgba",
        **canvas_kwargs: Any,
    ) -> None:
        fmt = PixelFormat(format)
        if fmt not in (PixelFormat.RGBA, PixelFormat.RGB, PixelFormat.BGRA):
            raise FramesError(f"VispyCanvasSource returns rgba, rgb or bgra, not {fmt.value!r}")
        self.format = fmt
        self._owns = canvas is None
        if canvas is None:
            app = vispy_egl_app()
            try:
                from vispy import scene

                canvas_kwargs.setdefault("show", False)
                canvas = scene.SceneCanvas(size=size, app=app, **canvas_kwargs)
            except Exception as exc:
                raise BackendUnavailableError(
                    f"vispy could not create an EGL canvas: {exc}", {"vispy-egl": str(exc)}
                ) from exc
        self.canvas: Any = _scene_canvas(canvas)
        backend_name = getattr(getattr(self.canvas, "app", None), "backend_name", "") or "unknown"
        self.backend = f"vispy-{str(backend_name).lower()}"
        self._pts = 0
        self._closed = False

    def read(self) -> Frame:
        """Render the canvas and return the image as a top-down frame."""
        if self._closed:
            raise FramesError("read() on a closed VispyCanvasSource")
        if getattr(self.canvas, "_closed", False):
            raise ContextLostError("the vispy canvas was closed")
        try:
            image = self.canvas.render(alpha=True)
        except Exception as exc:  # vispy surfaces GL failures as RuntimeError and friends
            raise FramesError(f"the vispy canvas failed to render: {exc}") from exc
        rgba = np.asarray(image, dtype=np.uint8)
        if self.format is PixelFormat.RGB:
            data = np.ascontiguousarray(rgba[..., :3])
        elif self.format is PixelFormat.BGRA:
            data = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
        else:
            data = rgba
        frame = as_frame(data, self.format, pts=self._pts)
        self._pts += 1
        return frame

    def close(self) -> None:
        """Stop reading; closes the canvas only if this source created it.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns:
            try:
                self.canvas.close()
            except Exception as exc:  # closing is best effort
                log.debug("closing the vispy canvas failed: %s", exc)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def __enter__(self) -> VispyCanvasSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
