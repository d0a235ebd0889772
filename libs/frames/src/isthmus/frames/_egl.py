"""Headless OpenGL contexts through EGL: render real frames without a display or a GPU.

:class:`EGLContext` opens an OpenGL context on Mesa's surfaceless platform (no window system,
no pbuffer; llvmpipe renders on the CPU when there is no GPU), falling back to the default
display with a small pbuffer surface, and renders into an offscreen framebuffer object of the
requested size.

PyOpenGL picks its platform (GLX, EGL, ...) once, when ``OpenGL`` is first imported, from the
``PYOPENGL_PLATFORM`` environment variable.  Only the EGL platform resolves the EGL entry points
this module needs, so :func:`load_gl` sets ``PYOPENGL_PLATFORM=egl`` (``setdefault``: an explicit
choice wins) when, and only when, ``OpenGL`` has not been imported yet.  An application that
imports PyOpenGL itself before using this module should set ``PYOPENGL_PLATFORM=egl`` first.
PyOpenGL is imported lazily, so ``import isthmus.frames`` works without it installed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from types import ModuleType
from typing import Any, Literal

from ._errors import BackendUnavailableError, ContextLostError, FramesError

__all__ = ["EGLContext", "load_gl"]

log = logging.getLogger(__name__)

_EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
_EGL_CONTEXT_LOST = 0x300E
_EGL_BAD_CONTEXT = 0x3006

Profile = Literal["core", "compat"]
Color = Literal["texture", "renderbuffer"]


def load_gl() -> tuple[ModuleType, ModuleType]:
    """Import PyOpenGL's ``EGL`` and ``GL`` modules, selecting its EGL platform if still possible.

    Raises :class:`BackendUnavailableError` when PyOpenGL or libEGL is missing.
    """
    if "OpenGL" not in sys.modules:
        # Must happen before the first ``import OpenGL``: PyOpenGL reads it exactly once.
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        from OpenGL import EGL, GL
    except ImportError as exc:
        raise BackendUnavailableError(
            f"PyOpenGL with EGL is not available ({exc}); install isthmus-frames[gl] and "
            "Mesa's libEGL (e.g. libegl1 + libegl-mesa0)",
            {"egl": str(exc)},
        ) from exc
    except Exception as exc:  # PyOpenGL raises assorted errors when a platform library is absent
        raise BackendUnavailableError(
            f"PyOpenGL could not load its platform libraries: {exc}", {"egl": str(exc)}
        ) from exc
    return EGL, GL


def pointer_value(ptr: Any) -> int:
    """The address behind a PyOpenGL opaque handle (0 for a null handle)."""
    if ptr is None:
        return 0
    if isinstance(ptr, int):
        return ptr
    return int(ctypes.cast(ptr, ctypes.c_void_p).value or 0)


def current_context() -> int:
    """Address of the EGL context current on this thread (0 if none or EGL is unusable)."""
    try:
        egl, _ = load_gl()
        return pointer_value(egl.eglGetCurrentContext())
    except Exception:  # no EGL at all: nothing can be current through it
        return 0


def egl_error_is_context_loss(exc: BaseException) -> bool:
    """Whether a PyOpenGL ``EGLError`` reports a lost or invalid context."""
    return getattr(exc, "err", None) in (_EGL_CONTEXT_LOST, _EGL_BAD_CONTEXT)


# One EGLDisplay is shared by everything in the process that asks for the same platform (vispy's
# EGL app backend included), and eglTerminate() is not reference counted: count our users and
# terminate only a display that we initialised and nobody else is known to use.
_displays_lock = threading.Lock()
_displays: dict[int, list[int]] = {}  # address -> [our users, 1 if we initialised it]


def _acquire_display(egl: ModuleType, dpy: Any) -> None:
    key = pointer_value(dpy)
    with _displays_lock:
        entry = _displays.get(key)
        if entry is None:
            try:
                egl.eglQueryString(dpy, egl.EGL_VERSION)
                initialised_by_us = 0  # someone else initialised it already
            except Exception:
                initialised_by_us = 1
            major, minor = egl.EGLint(), egl.EGLint()
            if not egl.eglInitialize(dpy, ctypes.pointer(major), ctypes.pointer(minor)):
                raise FramesError("eglInitialize failed")
            entry = _displays[key] = [0, initialised_by_us]
        entry[0] += 1


def _vispy_display() -> int:
    mod = sys.modules.get("vispy.app.backends._egl")
    return pointer_value(getattr(mod, "_EGL_DISPLAY", None)) if mod is not None else 0


def _release_display(egl: ModuleType, dpy: Any) -> None:
    key = pointer_value(dpy)
    with _displays_lock:
        entry = _displays.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] > 0:
            return
        del _displays[key]
        if not entry[1] or key == _vispy_display():
            return
    try:
        egl.eglTerminate(dpy)
    except Exception as exc:  # terminating is best effort; the process may be exiting
        log.debug("eglTerminate failed: %s", exc)


class EGLContext:
    """A headless OpenGL context with an offscreen framebuffer of ``width`` x ``height``.

    The context is made current on the calling thread (``make_current=True``), with :attr:`fbo`
    bound as the draw and read framebuffer and the viewport covering it, so GL calls that follow
    render into it; with ``make_current=False`` whatever context was current stays current.
    The colour attachment is an RGBA8 texture (:attr:`color_texture`) or, with
    ``color="renderbuffer"``, a renderbuffer (:attr:`color_renderbuffer`); a 24-bit depth /
    8-bit stencil renderbuffer is attached too (``depth=False`` leaves it out).

    The display is shared with everything else in the process that uses the same EGL platform
    (vispy's EGL backend included); it is terminated on :meth:`close` only if this module
    initialised it and no other :class:`EGLContext` or vispy still uses it.

    ``gl_version`` and ``profile`` pick the context (Mesa's llvmpipe offers 4.5 core and
    compatibility); if the driver refuses them, the driver's default context is used and the
    reason logged.  ``platform`` is ``"auto"`` (surfaceless, then the default display with a
    pbuffer), ``"surfaceless"`` or ``"pbuffer"``.

    EGL contexts are current per thread: use the context (and sources reading from it) on one
    thread, or call :meth:`make_current` on the thread that renders.  :meth:`close` releases the
    framebuffer, the context and the display and is idempotent; the object is a context manager.
    Missing PyOpenGL or EGL raises :class:`BackendUnavailableError` with the reasons.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        gl_version: tuple[int, int] = (3, 3),
        profile: Profile = "core",
        color: Color = "texture",
        depth: bool = True,
        platform: Literal["auto", "surfaceless", "pbuffer"] = "auto",
        make_current: bool = True,
    ) -> None:
        if width <= 0 or height <= 0:
            raise FramesError(f"an EGLContext needs a positive size, got {width}x{height}")
        if color not in ("texture", "renderbuffer"):
            raise FramesError(f"color must be 'texture' or 'renderbuffer', got {color!r}")
        self._egl, self._gl = load_gl()
        self.width = int(width)
        self.height = int(height)
        self.platform = ""
        self.fbo = 0
        self.color_texture: int | None = None
        self.color_renderbuffer: int | None = None
        self.depth_renderbuffer: int | None = None
        self._color = color
        self._depth = depth
        self._closed = False
        self._dpy: Any = None
        self._surface: Any = None
        self._ctx: Any = None
        self._lock = threading.Lock()
        previous = _current_binding(self._egl)
        reasons: dict[str, str] = {}
        order = ("surfaceless", "pbuffer") if platform == "auto" else (platform,)
        for name in order:
            try:
                self._open(name, gl_version, profile)
                self.platform = name
                break
            except Exception as exc:
                reasons[name] = str(exc) or type(exc).__name__
                log.info("EGL %s context unavailable: %s", name, reasons[name])
                self._teardown_egl()
        else:
            hint = ""
            if "OpenGL" in sys.modules and not _pyopengl_uses_egl():
                hint = (
                    "; PyOpenGL was imported before isthmus.frames without "
                    "PYOPENGL_PLATFORM=egl, set it before importing OpenGL"
                )
            raise BackendUnavailableError(
                "no headless EGL context could be created: "
                + "; ".join(f"{k}: {v}" for k, v in reasons.items())
                + hint,
                reasons,
            )
        try:
            self._make_current_raw()
            self._create_fbo()
        except Exception:
            self.close()
            raise
        if not make_current:
            self.release_current()
            if previous is not None:  # leave the caller's context as it was
                self._egl.eglMakeCurrent(*previous)

    # --- EGL ---------------------------------------------------------------------------------
    def _open(self, platform: str, gl_version: tuple[int, int], profile: Profile) -> None:
        egl = self._egl
        if platform == "surfaceless":
            client_ext = egl.eglQueryString(egl.EGL_NO_DISPLAY, egl.EGL_EXTENSIONS) or b""
            if b"EGL_MESA_platform_surfaceless" not in client_ext:
                raise FramesError("EGL_MESA_platform_surfaceless is not offered")
            dpy = egl.eglGetPlatformDisplay(_EGL_PLATFORM_SURFACELESS_MESA, None, None)
            if not pointer_value(dpy) and not _pyopengl_uses_egl():
                raise FramesError(
                    "no surfaceless display: PyOpenGL was imported with a non-EGL platform "
                    "(set PYOPENGL_PLATFORM=egl before importing OpenGL)"
                )
        else:
            if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
                # Mesa would otherwise try X11 for the default display and fail.
                os.environ.setdefault("EGL_PLATFORM", "surfaceless")
            dpy = egl.eglGetDisplay(egl.EGL_DEFAULT_DISPLAY)
        if not pointer_value(dpy):
            raise FramesError("no EGL display")
        _acquire_display(egl, dpy)
        self._dpy = dpy
        if platform == "surfaceless":
            ext = egl.eglQueryString(dpy, egl.EGL_EXTENSIONS) or b""
            if b"EGL_KHR_surfaceless_context" not in ext:
                raise FramesError("EGL_KHR_surfaceless_context is not offered")
        attrs = [
            egl.EGL_SURFACE_TYPE, egl.EGL_PBUFFER_BIT,
            egl.EGL_RENDERABLE_TYPE, egl.EGL_OPENGL_BIT,
            egl.EGL_RED_SIZE, 8, egl.EGL_GREEN_SIZE, 8, egl.EGL_BLUE_SIZE, 8,
            egl.EGL_ALPHA_SIZE, 8,
            egl.EGL_NONE,
        ]  # fmt: skip
        config = egl.EGLConfig()
        count = egl.EGLint()
        ok = egl.eglChooseConfig(
            dpy, (egl.EGLint * len(attrs))(*attrs), ctypes.pointer(config), 1, ctypes.pointer(count)
        )
        if not ok or count.value < 1:
            raise FramesError("no EGL config with desktop OpenGL and RGBA8")
        if not egl.eglBindAPI(egl.EGL_OPENGL_API):
            raise FramesError("eglBindAPI(EGL_OPENGL_API) failed")
        mask = (
            egl.EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT
            if profile == "core"
            else egl.EGL_CONTEXT_OPENGL_COMPATIBILITY_PROFILE_BIT
        )
        wanted = [
            egl.EGL_CONTEXT_MAJOR_VERSION, gl_version[0],
            egl.EGL_CONTEXT_MINOR_VERSION, gl_version[1],
            egl.EGL_CONTEXT_OPENGL_PROFILE_MASK, mask,
            egl.EGL_NONE,
        ]  # fmt: skip
        ctx: Any = None
        try:
            ctx = egl.eglCreateContext(
                dpy, config, egl.EGL_NO_CONTEXT, (egl.EGLint * len(wanted))(*wanted)
            )
        except Exception as exc:  # PyOpenGL raises EGLError on failure
            log.info(
                "OpenGL %s %s context refused (%s); using the default", gl_version, profile, exc
            )
        if not pointer_value(ctx):
            ctx = egl.eglCreateContext(dpy, config, egl.EGL_NO_CONTEXT, None)
        if not pointer_value(ctx):
            raise FramesError("eglCreateContext failed")
        self._ctx = ctx
        if platform == "pbuffer":
            # The framebuffer object is the render target; the pbuffer only makes the context
            # current where surfaceless contexts are not supported.
            pattrs = [egl.EGL_WIDTH, 1, egl.EGL_HEIGHT, 1, egl.EGL_NONE]
            surface = egl.eglCreatePbufferSurface(dpy, config, (egl.EGLint * len(pattrs))(*pattrs))
            if not pointer_value(surface):
                raise FramesError("eglCreatePbufferSurface failed")
            self._surface = surface
        else:
            self._surface = egl.EGL_NO_SURFACE

    def _teardown_egl(self) -> None:
        egl = self._egl
        dpy, self._dpy = self._dpy, None
        ctx, self._ctx = self._ctx, None
        surface, self._surface = self._surface, None
        if dpy is None:
            return
        try:
            if pointer_value(ctx) and pointer_value(egl.eglGetCurrentContext()) == pointer_value(
                ctx
            ):
                egl.eglMakeCurrent(dpy, egl.EGL_NO_SURFACE, egl.EGL_NO_SURFACE, egl.EGL_NO_CONTEXT)
            if pointer_value(surface):
                egl.eglDestroySurface(dpy, surface)
            if pointer_value(ctx):
                egl.eglDestroyContext(dpy, ctx)
        except Exception as exc:  # best effort: the display may already be gone
            log.debug("EGL teardown: %s", exc)
        _release_display(egl, dpy)

    # --- framebuffer -------------------------------------------------------------------------
    def _create_fbo(self) -> None:
        gl = self._gl
        self.fbo = int(gl.glGenFramebuffers(1))
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self.fbo)
        if self._color == "texture":
            self.color_texture = int(gl.glGenTextures(1))
        else:
            self.color_renderbuffer = int(gl.glGenRenderbuffers(1))
        if self._depth:
            self.depth_renderbuffer = int(gl.glGenRenderbuffers(1))
        self._allocate()

    def _allocate(self) -> None:
        gl = self._gl
        w, h = self.width, self.height
        if self.color_texture is not None:
            gl.glBindTexture(gl.GL_TEXTURE_2D, self.color_texture)
            gl.glTexImage2D(
                gl.GL_TEXTURE_2D, 0, gl.GL_RGBA8, w, h, 0, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, None
            )
            gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, gl.GL_LINEAR)
            gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, gl.GL_LINEAR)
            gl.glBindTexture(gl.GL_TEXTURE_2D, 0)
            gl.glFramebufferTexture2D(
                gl.GL_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0, gl.GL_TEXTURE_2D, self.color_texture, 0
            )
        else:
            gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, self.color_renderbuffer)
            gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, gl.GL_RGBA8, w, h)
            gl.glFramebufferRenderbuffer(
                gl.GL_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0, gl.GL_RENDERBUFFER,
                self.color_renderbuffer,
            )  # fmt: skip
        if self.depth_renderbuffer is not None:
            gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, self.depth_renderbuffer)
            gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, gl.GL_DEPTH24_STENCIL8, w, h)
            gl.glFramebufferRenderbuffer(
                gl.GL_FRAMEBUFFER, gl.GL_DEPTH_STENCIL_ATTACHMENT, gl.GL_RENDERBUFFER,
                self.depth_renderbuffer,
            )  # fmt: skip
        gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, 0)
        status = gl.glCheckFramebufferStatus(gl.GL_FRAMEBUFFER)
        if status != gl.GL_FRAMEBUFFER_COMPLETE:
            raise FramesError(f"offscreen framebuffer incomplete (status 0x{int(status):x})")
        gl.glViewport(0, 0, w, h)

    # --- public API --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def handle(self) -> int:
        """Address of the ``EGLContext`` (0 once closed)."""
        return pointer_value(self._ctx)

    @property
    def is_current(self) -> bool:
        """Whether this context is current on the calling thread."""
        return not self._closed and current_context() == pointer_value(self._ctx)

    def _make_current_raw(self) -> None:
        egl = self._egl
        try:
            ok = egl.eglMakeCurrent(self._dpy, self._surface, self._surface, self._ctx)
        except Exception as exc:
            if egl_error_is_context_loss(exc):
                raise ContextLostError(f"the EGL context was lost: {exc}") from exc
            raise FramesError(f"eglMakeCurrent failed: {exc}") from exc
        if not ok:
            raise FramesError("eglMakeCurrent failed")

    def make_current(self) -> None:
        """Make the context current on this thread, bind :attr:`fbo` and set the viewport."""
        if self._closed:
            raise ContextLostError("the EGLContext is closed")
        self._make_current_raw()
        gl = self._gl
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self.fbo)
        gl.glViewport(0, 0, self.width, self.height)

    def release_current(self) -> None:
        """Detach the context from this thread (so another thread can make it current)."""
        if self._closed or not self.is_current:
            return
        egl = self._egl
        egl.eglMakeCurrent(self._dpy, egl.EGL_NO_SURFACE, egl.EGL_NO_SURFACE, egl.EGL_NO_CONTEXT)

    def resize(self, width: int, height: int) -> None:
        """Reallocate the framebuffer's attachments at ``width`` x ``height`` (contents lost).

        The context is made current.  :class:`~isthmus.frames.GLSource` objects reading this
        context follow the new size on their next read.
        """
        if width <= 0 or height <= 0:
            raise FramesError(f"an EGLContext needs a positive size, got {width}x{height}")
        self.make_current()
        self.width, self.height = int(width), int(height)
        self._gl.glBindFramebuffer(self._gl.GL_FRAMEBUFFER, self.fbo)
        self._allocate()

    def close(self) -> None:
        """Delete the framebuffer, destroy the context and release the display; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        gl, egl = self._gl, self._egl
        previous = _current_binding(egl)
        if pointer_value(self._ctx):
            try:
                self._make_current_raw()
                if self.fbo:
                    gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
                    gl.glDeleteFramebuffers(1, [self.fbo])
                rbs = [r for r in (self.color_renderbuffer, self.depth_renderbuffer) if r]
                if rbs:
                    gl.glDeleteRenderbuffers(len(rbs), rbs)
                if self.color_texture:
                    gl.glDeleteTextures([self.color_texture])
            except Exception as exc:  # a lost context frees its objects with it
                log.debug("deleting the offscreen framebuffer failed: %s", exc)
        self.fbo = 0
        self.color_texture = self.color_renderbuffer = self.depth_renderbuffer = None
        ours = pointer_value(self._ctx)
        self._teardown_egl()
        if previous is not None and pointer_value(previous[3]) != ours:
            # Closing from a thread that had another context current leaves that one current.
            try:
                egl.eglMakeCurrent(*previous)
            except Exception as exc:
                log.debug("could not restore the previous EGL context: %s", exc)

    def __enter__(self) -> EGLContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.platform
        return f"<EGLContext {self.width}x{self.height} {state}>"


def _pyopengl_uses_egl() -> bool:
    platform = getattr(sys.modules.get("OpenGL.platform"), "PLATFORM", None)
    return type(platform).__name__ == "EGLPlatform"


def _current_binding(egl: ModuleType) -> tuple[Any, Any, Any, Any] | None:
    """(display, draw, read, context) current on this thread, or None if no context is."""
    ctx = egl.eglGetCurrentContext()
    if not pointer_value(ctx):
        return None
    return (
        egl.eglGetCurrentDisplay(),
        egl.eglGetCurrentSurface(egl.EGL_DRAW),
        egl.eglGetCurrentSurface(egl.EGL_READ),
        ctx,
    )
