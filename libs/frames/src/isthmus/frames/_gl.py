"""Frames from an OpenGL framebuffer or texture, best readback path first.

:class:`GLSource` probes three readback strategies behind one seam (:class:`_Readback`):

* ``"cuda-gl"`` - CUDA-GL interop: the colour image is registered with CUDA once and copied
  device-to-device into a CuPy array per frame (``Frame.on_device``).  Needs CuPy, an NVIDIA GL
  context and cuda-python (or pycuda) for the interop calls.
* ``"pbo"`` - ``glReadPixels`` into one of two pixel-pack buffers, then one ``memmove`` from the
  mapped buffer into a pooled :class:`isthmus.buffer.BufferPool` slot.  With ``latency=1`` the
  readback is double-buffered: each read queues the current image and returns the previous one.
* ``"readpixels"`` - plain ``glReadPixels`` straight into a pooled slot.

Lifetime of host frames: every frame owns its pool slot until the frame's array (and every view
of it) is garbage collected; nothing handed out is ever overwritten.  The pool starts with
``pool_slots`` slots; what happens when the caller holds all of them is the ``exhaustion``
policy of :class:`~isthmus.buffer.BufferPool` (``"grow"`` by default, or ``"raise"`` /
``"wait"``).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import time
from types import ModuleType
from typing import Any, Literal, Protocol

from isthmus.buffer import IsthmusBufferError

from ._egl import EGLContext, egl_error_is_context_loss, load_gl, pointer_value
from ._errors import BackendUnavailableError, ContextLostError, FramesError
from ._types import Frame, PixelFormat, as_frame

__all__ = ["GL_BACKENDS", "GLSource"]

log = logging.getLogger(__name__)

#: Readback strategies in probing order.
GL_BACKENDS = ("cuda-gl", "pbo", "readpixels")

_GL_CONTEXT_LOST = 0x0507
_GL_BGRA = 0x80E1
_CHANNELS = {PixelFormat.RGBA: 4, PixelFormat.BGRA: 4, PixelFormat.RGB: 3}

Exhaustion = Literal["wait", "raise", "grow"]


class _Geometry:
    """What every strategy needs to know about the image it reads."""

    __slots__ = ("channels", "format", "gl_format", "height", "nbytes", "width")

    def __init__(self, gl: ModuleType, width: int, height: int, fmt: PixelFormat) -> None:
        self.width = width
        self.height = height
        self.format = fmt
        self.channels = _CHANNELS[fmt]
        self.gl_format = {
            PixelFormat.RGBA: gl.GL_RGBA,
            PixelFormat.BGRA: _GL_BGRA,
            PixelFormat.RGB: gl.GL_RGB,
        }[fmt]
        # GL_PACK_ALIGNMENT is set to 1 while reading, so rows are tightly packed.
        self.nbytes = width * height * self.channels


class _Readback(Protocol):
    """One readback strategy.  ``read`` returns the bottom-up image and its capture time."""

    name: str
    latency: int

    def read(self) -> tuple[Any, int]: ...

    def close(self) -> None: ...


def _slot_array(pool: Any, geom: _Geometry, fill: Any) -> Any:
    """A fresh pool slot filled by ``fill(address)``, as an (H, W, C) array that owns the slot."""
    slot = pool.acquire()
    fill(slot.address)
    # The array keeps the slot exported, so the slot returns to the pool only when the array
    # and every view of it are gone.
    return slot.asarray("uint8", (geom.height, geom.width, geom.channels))


class _ReadPixelsReadback:
    """Synchronous ``glReadPixels`` into a pooled slot."""

    name = "readpixels"
    latency = 0

    def __init__(self, gl: ModuleType, geom: _Geometry, pool: Any) -> None:
        from OpenGL.raw.GL.VERSION.GL_1_0 import glReadPixels

        self._gl, self._geom, self._pool = gl, geom, pool
        self._read_pixels = glReadPixels

    def read(self) -> tuple[Any, int]:
        gl, g = self._gl, self._geom
        gl.glBindBuffer(gl.GL_PIXEL_PACK_BUFFER, 0)
        ts = time.monotonic_ns()

        def fill(address: int) -> None:
            self._read_pixels(
                0, 0, g.width, g.height, g.gl_format, gl.GL_UNSIGNED_BYTE, ctypes.c_void_p(address)
            )

        return _slot_array(self._pool, g, fill), ts

    def close(self) -> None:
        pass


class _PboReadback:
    """``glReadPixels`` into pixel-pack buffers, mapped and copied into pooled slots.

    ``latency=0`` maps the buffer it just filled.  ``latency=1`` double-buffers: each read queues
    the current image into one buffer and returns the image queued by the previous read from
    the other, so the transfer overlaps the caller's next frame.  The first read has nothing
    queued; it returns the current image synchronously and leaves it queued, so the second read
    returns that same image again (then every read is exactly one read behind).
    """

    name = "pbo"

    def __init__(self, gl: ModuleType, geom: _Geometry, pool: Any, latency: int) -> None:
        from OpenGL.raw.GL.VERSION.GL_1_0 import glReadPixels

        self._gl, self._geom, self._pool = gl, geom, pool
        self._read_pixels = glReadPixels
        self.latency = latency
        self._pbos = [int(b) for b in gl.glGenBuffers(2)]
        for pbo in self._pbos:
            gl.glBindBuffer(gl.GL_PIXEL_PACK_BUFFER, pbo)
            gl.glBufferData(gl.GL_PIXEL_PACK_BUFFER, geom.nbytes, None, gl.GL_STREAM_READ)
        gl.glBindBuffer(gl.GL_PIXEL_PACK_BUFFER, 0)
        self._next = 0
        self._queued: tuple[int, int] | None = None  # (buffer index, capture time)

    @property
    def buffers(self) -> list[int]:
        """The GL names of the pixel-pack buffers (empty once closed)."""
        return list(self._pbos)

    def _queue(self, index: int) -> int:
        gl, g = self._gl, self._geom
        gl.glBindBuffer(gl.GL_PIXEL_PACK_BUFFER, self._pbos[index])
        ts = time.monotonic_ns()
        # With a pack buffer bound the last argument is an offset into it, not a pointer.
        self._read_pixels(
            0, 0, g.width, g.height, g.gl_format, gl.GL_UNSIGNED_BYTE, ctypes.c_void_p(0)
        )
        return ts

    def _copy_out(self, index: int) -> Any:
        gl, g = self._gl, self._geom
        gl.glBindBuffer(gl.GL_PIXEL_PACK_BUFFER, self._pbos[index])
        # Mapping waits for the queued transfer into this buffer (and only that one).
        ptr = pointer_value(
            gl.glMapBufferRange(gl.GL_PIXEL_PACK_BUFFER, 0, g.nbytes, gl.GL_MAP_READ_BIT)
        )
        if not ptr:
            raise FramesError("glMapBufferRange returned NULL for the pixel-pack buffer")
        try:
            # ctypes.memmove releases the GIL for the copy.
            return _slot_array(self._pool, g, lambda a: ctypes.memmove(a, ptr, g.nbytes))
        finally:
            gl.glUnmapBuffer(gl.GL_PIXEL_PACK_BUFFER)

    def read(self) -> tuple[Any, int]:
        index = self._next
        ts = self._queue(index)
        if self.latency == 0:
            return self._copy_out(index), ts
        self._next ^= 1
        queued, self._queued = self._queued, (index, ts)
        if queued is None:  # priming: nothing in flight yet
            return self._copy_out(index), ts
        self._gl.glFlush()  # start the transfer just queued before we wait on the older one
        return self._copy_out(queued[0]), queued[1]

    def close(self) -> None:
        pbos, self._pbos = self._pbos, []
        self._queued = None
        if pbos:
            self._gl.glDeleteBuffers(len(pbos), pbos)


# --- CUDA-GL interop ---------------------------------------------------------------------------
class _Interop(Protocol):
    def copy_to(self, dst: int, pitch: int, width_bytes: int, height: int, stream: int) -> None: ...

    def close(self) -> None: ...


class _CudaPythonInterop:
    """Registration and copies through cuda-python's runtime bindings."""

    def __init__(self, rt: Any, image: int, target: int) -> None:
        self._rt = rt
        flags = rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsReadOnly
        err, self._res = rt.cudaGraphicsGLRegisterImage(image, target, flags)
        self._check(err, "cudaGraphicsGLRegisterImage")

    def _check(self, err: Any, what: str) -> None:
        if int(err) != 0:
            raise FramesError(f"{what} failed: {err!r}")

    def copy_to(self, dst: int, pitch: int, width_bytes: int, height: int, stream: int) -> None:
        rt = self._rt
        stream = rt.cudaStream_t(stream)
        # Mapping orders every GL command issued before it ahead of the copy on ``stream``.
        (err,) = rt.cudaGraphicsMapResources(1, self._res, stream)
        self._check(err, "cudaGraphicsMapResources")
        try:
            err, array = rt.cudaGraphicsSubResourceGetMappedArray(self._res, 0, 0)
            self._check(err, "cudaGraphicsSubResourceGetMappedArray")
            kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            (err,) = rt.cudaMemcpy2DFromArrayAsync(
                dst, pitch, array, 0, 0, width_bytes, height, kind, stream
            )
            self._check(err, "cudaMemcpy2DFromArrayAsync")
        finally:
            rt.cudaGraphicsUnmapResources(1, self._res, stream)

    def close(self) -> None:
        res, self._res = self._res, None
        if res is not None:
            self._rt.cudaGraphicsUnregisterResource(res)


class _PycudaInterop:
    """The same through pycuda's GL module (the ``pycuda`` extra)."""

    def __init__(self, image: int, target: int) -> None:
        # Optional extras without type stubs: imported by name so type checkers need neither.
        importlib.import_module("pycuda.autoprimaryctx")  # CuPy uses the primary context too
        self._drv: Any = importlib.import_module("pycuda.driver")
        cgl: Any = importlib.import_module("pycuda.gl")

        self._reg: Any = cgl.RegisteredImage(image, target, cgl.graphics_map_flags.READ_ONLY)

    def copy_to(self, dst: int, pitch: int, width_bytes: int, height: int, stream: int) -> None:
        mapping = self._reg.map()
        try:
            copy = self._drv.Memcpy2D()
            copy.set_src_array(mapping.array(0, 0))
            copy.set_dst_device(dst)
            copy.dst_pitch = pitch
            copy.width_in_bytes = width_bytes
            copy.height = height
            copy(aligned=False)
        finally:
            mapping.unmap()

    def close(self) -> None:
        reg, self._reg = self._reg, None
        if reg is not None:
            reg.unregister()


def _cuda_runtime() -> Any | None:
    """cuda-python's runtime module under its current or its older name, or None."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):  # the latter before cuda-python 12.6
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _probe_cuda_gl(gl: ModuleType) -> str | None:
    """Why CUDA-GL interop cannot work here, or None if it may."""
    try:
        import cupy
    except ImportError:
        return "cupy is not installed (pip install isthmus-frames[cuda])"
    except Exception as exc:  # a broken CUDA install fails in assorted ways
        return f"cupy failed to import: {exc}"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return f"no usable CUDA device: {exc}"
    if count < 1:
        return "no CUDA device"
    vendor = gl.glGetString(gl.GL_VENDOR) or b""
    if b"NVIDIA" not in vendor:
        name = vendor.decode(errors="replace")
        return f"the GL context is not on an NVIDIA GPU (GL_VENDOR {name})"
    if _cuda_runtime() is None:
        try:
            importlib.import_module("pycuda.gl")
        except ImportError:
            return "neither cuda-python nor pycuda is installed for the GL interop calls"
    return None


class _CudaGLReadback:
    """Device-to-device copy of the registered colour image into a CuPy array."""

    name = "cuda-gl"
    latency = 0

    def __init__(self, gl: ModuleType, geom: _Geometry, image: int, target: int) -> None:
        import cupy

        self._cupy, self._geom = cupy, geom
        rt = _cuda_runtime()
        self._interop: _Interop
        if rt is not None:
            self._interop = _CudaPythonInterop(rt, image, target)
        else:
            self._interop = _PycudaInterop(image, target)

    def read(self) -> tuple[Any, int]:
        cp, g = self._cupy, self._geom
        ts = time.monotonic_ns()
        rgba = cp.empty((g.height, g.width, 4), dtype=cp.uint8)
        stream = cp.cuda.get_current_stream()
        self._interop.copy_to(rgba.data.ptr, g.width * 4, g.width * 4, g.height, stream.ptr)
        if g.format is PixelFormat.BGRA:
            return cp.ascontiguousarray(rgba[..., [2, 1, 0, 3]]), ts
        if g.format is PixelFormat.RGB:
            return cp.ascontiguousarray(rgba[..., :3]), ts
        return rgba, ts

    def close(self) -> None:
        self._interop.close()


# --- the source --------------------------------------------------------------------------------
class GLSource:
    """A :class:`~isthmus.frames.FrameSource` reading an OpenGL framebuffer or texture.

    ``framebuffer`` is a framebuffer object name, or an :class:`EGLContext` (its offscreen
    framebuffer, size and context; the source then follows :meth:`EGLContext.resize`).  With
    ``texture`` (and ``texture_target``, ``GL_TEXTURE_2D`` by default) a level-0 texture is read
    instead; with neither, whatever framebuffer is bound for reading at each :meth:`read`.
    ``width`` and ``height`` are required unless an :class:`EGLContext` provides them.

    ``format`` is ``"rgba"``, ``"bgra"`` or ``"rgb"``.  GL images are stored bottom-up;
    ``flip=True`` returns a top-down negative-stride view (no copy) of the pooled memory.
    ``backend`` names one of :data:`GL_BACKENDS`; by default they are probed in that order and
    :attr:`backend` tells which is in use.  A named backend that cannot run raises
    :class:`BackendUnavailableError` with the reason.

    Latency: with ``latency=0`` (the default) every backend returns what the framebuffer holds
    when :meth:`read` is called.  ``latency=1`` lets the ``"pbo"`` backend pipeline: a read
    returns the image queued by the previous read (the first read primes the pipeline by
    reading synchronously, so its image is returned twice); the other backends always read
    synchronously, and :attr:`latency` tells the effective value.

    Frame memory: a host frame's array views its own slot of :attr:`pool` until the array is
    garbage collected, so frames stay valid for as long as they are held (see the module docs
    for the exhaustion policy).  Device frames (``"cuda-gl"``) are fresh CuPy arrays.

    The GL context must be current on the calling thread (an :class:`EGLContext` given as
    ``framebuffer`` is made current if it is not).  :meth:`read` raises
    :class:`ContextLostError` when that context was closed, lost or is no longer current.
    :meth:`close` releases the buffers, the pool and any CUDA registration; it is idempotent.
    """

    def __init__(
        self,
        framebuffer: int | EGLContext | None = None,
        texture: int | None = None,
        width: int | None = None,
        height: int | None = None,
        *,
        format: PixelFormat | str = "rgba",
        backend: str | None = None,
        flip: bool = True,
        pool_slots: int = 3,
        latency: int = 0,
        exhaustion: Exhaustion = "grow",
        texture_target: int | None = None,
    ) -> None:
        self._egl, self._gl = load_gl()
        gl = self._gl
        fmt = PixelFormat(format)
        if fmt not in _CHANNELS:
            raise FramesError(f"GLSource reads rgba, bgra or rgb, not {fmt.value!r}")
        if latency not in (0, 1):
            raise FramesError(f"latency must be 0 or 1, got {latency!r}")
        if backend is not None and backend not in GL_BACKENDS:
            raise BackendUnavailableError(
                f"unknown GL backend {backend!r}; choose one of {', '.join(GL_BACKENDS)}",
                {backend: "unknown backend"},
            )
        if framebuffer is not None and texture is not None:
            raise FramesError("pass a framebuffer or a texture, not both")
        self._owner: EGLContext | None = None
        self._fbo: int | None = None
        if isinstance(framebuffer, EGLContext):
            self._owner = framebuffer
            if framebuffer.closed:
                raise ContextLostError("the EGLContext is closed")
            if not framebuffer.is_current:
                framebuffer.make_current()
            self._fbo = framebuffer.fbo
        elif framebuffer is not None:
            self._fbo = int(framebuffer)
        self._follow = self._owner is not None and width is None and height is None
        if self._owner is not None:
            width = self._owner.width if width is None else width
            height = self._owner.height if height is None else height
        if width is None or height is None or width <= 0 or height <= 0:
            raise FramesError(f"GLSource needs a positive width and height, got {width}x{height}")
        self._texture = None if texture is None else int(texture)
        self._texture_target = gl.GL_TEXTURE_2D if texture_target is None else texture_target
        self._egl_context = pointer_value(self._egl.eglGetCurrentContext())
        if not self._egl_context:
            log.debug("no EGL context is current; context checks rely on GL errors only")
        self.format = fmt
        self.flip = flip
        self._requested_backend = backend
        self._requested_latency = latency
        self._pool_slots = pool_slots
        self._exhaustion: Exhaustion = exhaustion
        self._reset_status = self._reset_status_function()
        self._closed = False
        self._pts = 0
        self._read_fbo = 0  # our FBO wrapping ``texture``
        self.reasons: dict[str, str] = {}
        self.pool: Any = None
        self._reader: _Readback | None = None
        self.backend = ""
        self.latency = 0
        try:
            if self._texture is not None:
                self._read_fbo = self._wrap_texture()
            self._open(int(width), int(height))
        except BaseException:
            self.close()
            raise

    # --- setup -------------------------------------------------------------------------------
    def _reset_status_function(self) -> Any:
        gl = self._gl
        fn = getattr(gl, "glGetGraphicsResetStatus", None)
        try:
            return fn if fn is not None and bool(fn) else None
        except Exception:  # PyOpenGL's null-function check may itself need a context
            return None

    def _wrap_texture(self) -> int:
        gl = self._gl
        fbo = int(gl.glGenFramebuffers(1))
        previous = int(gl.glGetIntegerv(gl.GL_READ_FRAMEBUFFER_BINDING))
        try:
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, fbo)
            gl.glFramebufferTexture2D(
                gl.GL_READ_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0, self._texture_target,
                self._texture, 0,
            )  # fmt: skip
            status = gl.glCheckFramebufferStatus(gl.GL_READ_FRAMEBUFFER)
        finally:
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, previous)
        if status != gl.GL_FRAMEBUFFER_COMPLETE:
            gl.glDeleteFramebuffers(1, [fbo])
            raise FramesError(f"texture {self._texture} cannot be read (status 0x{int(status):x})")
        return fbo

    def _color_image(self) -> tuple[int, int]:
        """(GL name, target) of the colour image CUDA should register."""
        gl = self._gl
        if self._texture is not None:
            return self._texture, self._texture_target
        if not self._fbo:
            raise FramesError("the default framebuffer cannot be registered with CUDA")
        previous = int(gl.glGetIntegerv(gl.GL_READ_FRAMEBUFFER_BINDING))
        try:
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, self._fbo)
            read, color0 = gl.GL_READ_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0
            query = gl.glGetFramebufferAttachmentParameteriv
            kind = int(query(read, color0, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_TYPE))
            name = int(query(read, color0, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_NAME))
        finally:
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, previous)
        if kind == gl.GL_RENDERBUFFER:
            return name, gl.GL_RENDERBUFFER
        if kind == gl.GL_TEXTURE:
            return name, gl.GL_TEXTURE_2D
        raise FramesError("the framebuffer has no colour attachment 0")

    def _open(self, width: int, height: int) -> None:
        from isthmus.buffer import BufferPool

        gl = self._gl
        geom = _Geometry(gl, width, height, self.format)
        order = GL_BACKENDS if self._requested_backend is None else (self._requested_backend,)
        reasons: dict[str, str] = {}
        for name in order:
            try:
                if name == "cuda-gl":
                    why = _probe_cuda_gl(gl)
                    if why is not None:
                        raise BackendUnavailableError(why)
                    image, target = self._color_image()
                    reader: _Readback = _CudaGLReadback(gl, geom, image, target)
                else:
                    if self.pool is None:
                        self.pool = BufferPool(
                            geom.nbytes, self._pool_slots, exhaustion=self._exhaustion
                        )
                    if name == "pbo":
                        reader = _PboReadback(gl, geom, self.pool, self._requested_latency)
                    else:
                        reader = _ReadPixelsReadback(gl, geom, self.pool)
            except Exception as exc:
                reasons[name] = str(exc) or type(exc).__name__
                log.info("GL readback %r unavailable: %s", name, reasons[name])
                continue
            self._reader, self._geom = reader, geom
            self.backend, self.latency = reader.name, reader.latency
            self.reasons = reasons
            log.debug("GL readback uses %r", reader.name)
            return
        detail = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        if self._requested_backend is not None:
            raise BackendUnavailableError(
                f"GL backend {self._requested_backend!r} is unavailable: {detail}", reasons
            )
        raise BackendUnavailableError(f"no GL readback backend works: {detail}", reasons)

    def _reconfigure(self, width: int, height: int) -> None:
        """Follow a resized EGLContext: new buffers and pool at the new size."""
        self._close_reader()
        self._open(width, height)

    # --- reading -----------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """Width of the frames read."""
        return self._geom.width

    @property
    def height(self) -> int:
        """Height of the frames read."""
        return self._geom.height

    def _check_context(self) -> None:
        owner = self._owner
        if owner is not None:
            if owner.closed:
                raise ContextLostError("the EGLContext this source reads from was closed")
            if not owner.is_current:
                owner.make_current()
            if self._follow and (owner.width, owner.height) != (self.width, self.height):
                self._reconfigure(owner.width, owner.height)
        elif self._egl_context:
            try:
                current = pointer_value(self._egl.eglGetCurrentContext())
            except Exception as exc:
                raise ContextLostError(f"EGL is no longer usable: {exc}") from exc
            if not current:
                raise ContextLostError(
                    "no EGL context is current on this thread (it was destroyed or released)"
                )
            if current != self._egl_context:
                raise ContextLostError("a different GL context is current than at creation")
        if self._reset_status is not None:
            status = int(self._reset_status())
            if status != self._gl.GL_NO_ERROR:
                raise ContextLostError(f"the GL context was reset (status 0x{status:x})")

    def read(self) -> Frame:
        """Capture one frame (see the class docs for latency and memory lifetime)."""
        if self._closed:
            raise FramesError("read() on a closed GLSource")
        self._check_context()
        assert self._reader is not None
        try:
            restore = self._bind()
            try:
                data, ts = self._reader.read()
            finally:
                self._unbind(restore)
        except (FramesError, IsthmusBufferError):  # typed already (e.g. PoolExhaustedError)
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        if self.flip:
            data = data[::-1]
        frame = as_frame(data, self.format, pts=self._pts, timestamp_ns=ts)
        self._pts += 1
        return frame

    def _bind(self) -> tuple[int, int, int]:
        gl = self._gl
        restore = (
            int(gl.glGetIntegerv(gl.GL_READ_FRAMEBUFFER_BINDING)),
            int(gl.glGetIntegerv(gl.GL_PIXEL_PACK_BUFFER_BINDING)),
            int(gl.glGetIntegerv(gl.GL_PACK_ALIGNMENT)),
        )
        fbo = self._read_fbo or self._fbo
        if fbo is not None:
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, fbo)
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
        return restore

    def _unbind(self, restore: tuple[int, int, int]) -> None:
        gl = self._gl
        gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, restore[0])
        gl.glBindBuffer(gl.GL_PIXEL_PACK_BUFFER, restore[1])
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, restore[2])

    def _translate(self, exc: Exception) -> FramesError:
        err = getattr(exc, "err", None)
        if err == _GL_CONTEXT_LOST or egl_error_is_context_loss(exc):
            return ContextLostError(f"the GL context was lost: {exc}")
        if type(exc).__name__ == "NullFunctionError":
            return ContextLostError(f"no GL context is usable: {exc}")
        return FramesError(f"GL readback ({self.backend}) failed: {exc}")

    # --- teardown ----------------------------------------------------------------------------
    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        pool, self.pool = self.pool, None
        if reader is not None:
            try:
                reader.close()
            except Exception as exc:  # a lost context took its buffers with it
                log.debug("releasing the %s readback failed: %s", reader.name, exc)
        if pool is not None:
            pool.close()  # frames still held keep their slots until collected

    def close(self) -> None:
        """Release the pixel buffers, the pool and any CUDA registration; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owner is not None:
            usable = not self._owner.closed
        else:
            # Without a current context the GL objects died with it (or are not reachable).
            usable = not self._egl_context or self._egl_context == pointer_value(
                self._egl.eglGetCurrentContext()
            )
        if usable and self._owner is not None and not self._owner.is_current:
            try:
                self._owner.make_current()
            except FramesError:
                usable = False
        if usable:
            self._close_reader()
            if self._read_fbo:
                try:
                    self._gl.glDeleteFramebuffers(1, [self._read_fbo])
                except Exception as exc:
                    log.debug("deleting the texture framebuffer failed: %s", exc)
        else:
            # The context is gone and with it every GL object; only host memory is left.
            reader, self._reader = self._reader, None
            if isinstance(reader, _PboReadback):
                reader._pbos = []
            elif reader is not None:
                reader.close()
            if self.pool is not None:
                self.pool.close()
                self.pool = None
        self._read_fbo = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def __enter__(self) -> GLSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.backend
        return f"<GLSource {self.format.value} {state}>"
