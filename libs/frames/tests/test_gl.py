"""OpenGL capture: headless EGL contexts, PBO and glReadPixels readback, vispy canvases.

These render real frames (Mesa's surfaceless EGL platform renders with llvmpipe without a GPU
or display) and check the exact pixels that come back.  They skip when PyOpenGL or EGL is
missing, unless ISTHMUS_REQUIRE_GL=1 (CI sets it), which makes a missing GL a failure; the
CUDA-GL test needs a GPU.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from isthmus.frames._capture import FrameSource
from isthmus.frames._egl import EGLContext, load_gl
from isthmus.frames._errors import BackendUnavailableError, ContextLostError, FramesError
from isthmus.frames._gl import GL_BACKENDS, GLSource, _probe_cuda_gl
from isthmus.frames._types import PixelFormat

W, H = 64, 48
# Quadrant colours (RGBA), named by where they appear on screen.
TL, TR = (255, 0, 0, 255), (0, 255, 0, 255)
BL, BR = (0, 0, 255, 128), (10, 200, 30, 255)
CPU_BACKENDS = ("pbo", "readpixels")


def _skip(reason: str) -> None:
    if os.environ.get("ISTHMUS_REQUIRE_GL") == "1":
        pytest.fail(f"ISTHMUS_REQUIRE_GL=1 but {reason}")
    pytest.skip(reason)


def _load() -> tuple[Any, Any]:
    try:
        return load_gl()  # before anything imports OpenGL, so PyOpenGL picks its EGL platform
    except BackendUnavailableError as exc:
        _skip(f"PyOpenGL/EGL unavailable: {exc}")


@pytest.fixture(scope="module")
def gl() -> Any:
    module = _load()[1]
    try:
        EGLContext(4, 4).close()  # PyOpenGL without a usable libEGL/Mesa: skip, don't fail
    except BackendUnavailableError as exc:
        _skip(f"no headless EGL context here: {exc}")
    return module


@pytest.fixture
def ctx(gl: Any) -> Iterator[EGLContext]:
    try:
        context = EGLContext(W, H)
    except BackendUnavailableError as exc:
        _skip(f"no headless EGL context here: {exc}")
    with context:
        yield context


def _clear(gl: Any, colour: tuple[int, ...], x: int, y: int, w: int, h: int) -> None:
    gl.glScissor(x, y, w, h)
    gl.glClearColor(*(c / 255.0 for c in colour))
    gl.glClear(gl.GL_COLOR_BUFFER_BIT)


def paint_quadrants(gl: Any, w: int = W, h: int = H) -> np.ndarray:
    """Clear four quadrants to distinct colours; return the expected top-down RGBA image."""
    gl.glEnable(gl.GL_SCISSOR_TEST)
    # GL's origin is the bottom-left corner.
    _clear(gl, BL, 0, 0, w // 2, h // 2)
    _clear(gl, BR, w // 2, 0, w - w // 2, h // 2)
    _clear(gl, TL, 0, h // 2, w // 2, h - h // 2)
    _clear(gl, TR, w // 2, h // 2, w - w // 2, h - h // 2)
    gl.glDisable(gl.GL_SCISSOR_TEST)
    expected = np.empty((h, w, 4), np.uint8)
    expected[: h - h // 2, : w // 2] = TL
    expected[: h - h // 2, w // 2 :] = TR
    expected[h - h // 2 :, : w // 2] = BL
    expected[h - h // 2 :, w // 2 :] = BR
    return expected


def paint_solid(gl: Any, colour: tuple[int, ...]) -> None:
    gl.glClearColor(*(c / 255.0 for c in colour))
    gl.glClear(gl.GL_COLOR_BUFFER_BIT)


def in_format(rgba: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "bgra":
        return rgba[..., [2, 1, 0, 3]]
    if fmt == "rgb":
        return rgba[..., :3]
    return rgba


def pool_buffer(arr: np.ndarray) -> Any:
    """The isthmus.buffer Buffer at the root of an array's base chain (None if there is none)."""
    from isthmus.buffer import Buffer

    obj: Any = arr
    while obj is not None:
        if isinstance(obj, Buffer):
            return obj
        if isinstance(obj, memoryview):
            obj = obj.obj
            continue
        obj = getattr(obj, "base", None)
    return None


def lowest_address(arr: np.ndarray) -> int:
    start = arr.__array_interface__["data"][0]
    return int(start + min(0, (arr.shape[0] - 1) * arr.strides[0]))


# --- the readback backends -------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["rgba", "bgra", "rgb"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_returns_exact_pixels_top_down(
    gl: Any, ctx: EGLContext, backend: str, fmt: str
) -> None:
    expected = paint_quadrants(gl)
    with GLSource(ctx, backend=backend, format=fmt) as src:
        assert src.backend == backend
        assert isinstance(src, FrameSource)
        frame = src.read()
    assert frame.format is PixelFormat(fmt)
    assert (frame.width, frame.height) == (W, H)
    assert frame.data.shape == (H, W, 4 if fmt != "rgb" else 3)
    assert not frame.on_device
    np.testing.assert_array_equal(frame.array, in_format(expected, fmt))
    # The top-left pixel is the top-left quadrant: the image is top-down.
    np.testing.assert_array_equal(frame.array[0, 0], in_format(np.array(TL, np.uint8), fmt))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_flip_false_is_bottom_up_and_contiguous(gl: Any, ctx: EGLContext, backend: str) -> None:
    expected = paint_quadrants(gl)
    with GLSource(ctx, backend=backend, flip=False) as src:
        frame = src.read()
    assert frame.array.flags.c_contiguous
    np.testing.assert_array_equal(frame.array, expected[::-1])


def test_auto_backend_skips_cuda_gl_with_a_reason(gl: Any, ctx: EGLContext) -> None:
    paint_quadrants(gl)
    with GLSource(ctx) as src:
        if src.backend == "cuda-gl":
            pytest.skip("CUDA-GL interop works here; the fallback is not exercised")
        assert src.backend == "pbo"
        assert src.reasons.get("cuda-gl")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_frame_memory_is_a_pool_slot_viewed_without_copy(
    gl: Any, ctx: EGLContext, backend: str
) -> None:
    paint_quadrants(gl)
    with GLSource(ctx, backend=backend, pool_slots=3) as src:
        pool = src.pool
        before = pool.in_use
        frame = src.read()
        arr = frame.array
        assert arr.strides[0] == -W * 4  # a flipped view, not a flipped copy
        buf = pool_buffer(arr)
        assert buf is not None and buf.owner is pool
        low = lowest_address(arr)
        assert buf.address == low and low + arr.nbytes <= buf.address + buf.nbytes
        assert np.shares_memory(arr, np.asarray(buf))
        assert pool.in_use == before + 1
        del frame, arr, buf
        gc.collect()
        assert pool.in_use == before  # the slot came back when the frame died


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_held_frames_are_never_overwritten(gl: Any, ctx: EGLContext, backend: str) -> None:
    with GLSource(ctx, backend=backend, pool_slots=2) as src:
        held = []
        for colour in (TL, TR, BL, BR, TL):  # more than the pool's slots: it grows
            paint_solid(gl, colour)
            held.append((colour, src.read()))
        for colour, frame in held:
            assert (frame.array == colour).all()
        assert len({lowest_address(f.array) for _, f in held}) == len(held)


def test_exhaustion_raise_policy(gl: Any, ctx: EGLContext) -> None:
    from isthmus.buffer import PoolExhaustedError

    with GLSource(ctx, backend="readpixels", pool_slots=1, exhaustion="raise") as src:
        first = src.read()
        with pytest.raises(PoolExhaustedError):
            src.read()
        del first
        gc.collect()
        src.read()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_latency0_reads_what_was_just_rendered(gl: Any, ctx: EGLContext, backend: str) -> None:
    with GLSource(ctx, backend=backend) as src:
        assert src.latency == 0
        for i, colour in enumerate((TL, TR, BL, BR)):
            paint_solid(gl, colour)
            frame = src.read()
            assert frame.pts == i
            assert (frame.array == colour).all()


def test_pbo_latency1_returns_the_previous_read(gl: Any, ctx: EGLContext) -> None:
    with GLSource(ctx, backend="pbo", latency=1) as src:
        assert src.latency == 1
        paint_solid(gl, TL)
        first = src.read()  # primes the pipeline: synchronous
        paint_solid(gl, TR)
        second = src.read()  # the image queued by the first read, again
        paint_solid(gl, BL)
        third = src.read()  # queued by the second read
        fourth = src.read()  # queued by the third read
        assert (first.array == TL).all()
        assert (second.array == TL).all()
        assert (third.array == TR).all()
        assert (fourth.array == BL).all()
        assert [f.pts for f in (first, second, third, fourth)] == [0, 1, 2, 3]
        assert third.timestamp_ns <= fourth.timestamp_ns


def test_latency1_is_synchronous_for_readpixels(gl: Any, ctx: EGLContext) -> None:
    with GLSource(ctx, backend="readpixels", latency=1) as src:
        assert src.latency == 0
        paint_solid(gl, TR)
        assert (src.read().array == TR).all()


def test_texture_and_bound_framebuffer_sources(gl: Any, ctx: EGLContext) -> None:
    expected = paint_quadrants(gl)
    assert ctx.color_texture is not None
    with GLSource(texture=ctx.color_texture, width=W, height=H) as src:
        np.testing.assert_array_equal(src.read().array, expected)
        read_fbo = src._read_fbo
        assert gl.glIsFramebuffer(read_fbo)
    assert not gl.glIsFramebuffer(read_fbo)
    # With neither, whatever is bound for reading; the binding is left as it was.
    with GLSource(None, None, W, H, backend="readpixels") as src:
        np.testing.assert_array_equal(src.read().array, expected)
    assert int(gl.glGetIntegerv(gl.GL_READ_FRAMEBUFFER_BINDING)) == ctx.fbo
    with GLSource(ctx.fbo, width=W, height=H) as src:
        np.testing.assert_array_equal(src.read().array, expected)


def test_source_follows_a_resized_context(gl: Any, ctx: EGLContext) -> None:
    with GLSource(ctx) as src:
        assert src.read().data.shape == (H, W, 4)
        ctx.resize(32, 16)
        expected = paint_quadrants(gl, 32, 16)
        frame = src.read()
        assert (frame.width, frame.height) == (32, 16)
        np.testing.assert_array_equal(frame.array, expected)


# --- errors and lifetime ---------------------------------------------------------------------
def test_unknown_and_unavailable_backends_are_typed_errors(gl: Any, ctx: EGLContext) -> None:
    with pytest.raises(BackendUnavailableError, match="unknown GL backend"):
        GLSource(ctx, backend="vulkan")
    if _probe_cuda_gl(gl) is not None:
        with pytest.raises(BackendUnavailableError) as info:
            GLSource(ctx, backend="cuda-gl")
        assert "cuda-gl" in info.value.reasons
    with pytest.raises(FramesError):
        GLSource(ctx, format="nv12")
    with pytest.raises(FramesError):
        GLSource(None, None, None, None)


def test_missing_pyopengl_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "OpenGL", None)
    with pytest.raises(BackendUnavailableError, match="PyOpenGL"):
        load_gl()
    with pytest.raises(BackendUnavailableError):
        EGLContext(8, 8)


def test_modules_import_without_opengl_or_vispy() -> None:
    code = (
        "import sys\n"
        "import isthmus.frames._egl, isthmus.frames._gl, isthmus.frames._vispy_source\n"
        "assert 'OpenGL' not in sys.modules and 'vispy' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_close_is_idempotent_and_releases(gl: Any, ctx: EGLContext, backend: str) -> None:
    src = GLSource(ctx, backend=backend)
    frame = src.read()
    pool = src.pool
    pbos = src._reader.buffers if backend == "pbo" else []  # type: ignore[union-attr]
    assert all(gl.glIsBuffer(b) for b in pbos) and len(pbos) == 2 * (backend == "pbo")
    src.close()
    src.close()
    assert src.closed and src.pool is None and pool.closed
    assert not any(gl.glIsBuffer(b) for b in pbos)
    assert (frame.array == frame.array).all()  # a held frame outlives the source
    with pytest.raises(FramesError, match="closed"):
        src.read()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_closed_context_raises_context_lost(gl: Any, backend: str) -> None:
    context = EGLContext(W, H)
    owned = GLSource(context, backend=backend)
    by_name = GLSource(context.fbo, width=W, height=H, backend=backend)
    owned.read()
    by_name.read()
    context.close()
    context.close()
    assert context.closed and context.fbo == 0
    with pytest.raises(ContextLostError):
        owned.read()
    with pytest.raises(ContextLostError):
        by_name.read()
    owned.close()
    by_name.close()
    with pytest.raises(ContextLostError):
        GLSource(context)
    with pytest.raises(ContextLostError):
        context.make_current()


def test_egl_context_basics(gl: Any) -> None:
    with pytest.raises(FramesError):
        EGLContext(0, 10)
    with EGLContext(16, 8, color="renderbuffer", profile="compat", make_current=False) as a:
        assert not a.is_current and a.color_texture is None and a.color_renderbuffer
        with EGLContext(8, 8) as b:
            assert b.is_current and b.platform in ("surfaceless", "pbuffer")
            a.make_current()
            assert a.is_current and not b.is_current
            assert int(gl.glGetIntegerv(gl.GL_FRAMEBUFFER_BINDING)) == a.fbo
            paint_solid(gl, BR)
            with GLSource(a) as src:
                assert (src.read().array == BR).all()
        # Closing b (not current) left a current.
        assert a.is_current
        a.release_current()
        assert not a.is_current
    assert a.closed and "closed" in repr(a)


# --- CUDA-GL interop -------------------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_gl_reads_a_device_frame(gl: Any, ctx: EGLContext) -> None:
    cupy = pytest.importorskip("cupy")
    why = _probe_cuda_gl(gl)
    if why is not None:
        pytest.skip(f"CUDA-GL interop unavailable: {why}")
    expected = paint_quadrants(gl)
    with GLSource(ctx, backend="cuda-gl") as src:
        frame = src.read()
        assert frame.on_device
        np.testing.assert_array_equal(cupy.asnumpy(frame.data), expected)


# --- timing (informational) ------------------------------------------------------------------
def test_time_one_1080p_read_per_backend(gl: Any) -> None:
    """Prints per-backend 1080p read times; no assertion on speed (run with -s to see them)."""
    with EGLContext(1920, 1080) as big:
        expected = paint_quadrants(gl, 1920, 1080)
        gl.glFinish()
        for backend, latency in (("readpixels", 0), ("pbo", 0), ("pbo", 1)):
            with GLSource(big, backend=backend, latency=latency) as src:
                src.read()  # warm up (and prime the PBO pipeline)
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    frame = src.read()
                    times.append((time.perf_counter() - t0) * 1e3)
                    np.testing.assert_array_equal(frame.array[::540, ::960], expected[::540, ::960])
                    del frame
            print(f"1080p {backend} latency={latency}: median {np.median(times):.2f} ms")


# --- vispy -----------------------------------------------------------------------------------
def test_vispy_canvas_source_returns_the_drawn_colours() -> None:
    pytest.importorskip("vispy")
    from isthmus.frames._vispy_source import VispyCanvasSource

    try:
        src = VispyCanvasSource(size=(W, H), bgcolor=(0, 0, 1, 1))
    except BackendUnavailableError as exc:
        _skip(f"vispy's EGL backend cannot start here: {exc}")
    from vispy import scene

    with src:
        assert src.backend == "vispy-egl"
        frame = src.read()
        assert frame.data.shape == (H, W, 4) and frame.format is PixelFormat.RGBA
        assert (frame.array == (0, 0, 255, 255)).all()
        # A red rectangle over the top-left quadrant (scene units are pixels from the top-left).
        scene.visuals.Rectangle(
            center=(W / 4, H / 4), width=W / 2, height=H / 2, color=(1, 0, 0, 1),
            parent=src.canvas.scene,
        )  # fmt: skip
        frame = src.read()
        assert frame.pts == 1
        np.testing.assert_array_equal(frame.array[2, 2], (255, 0, 0, 255))
        np.testing.assert_array_equal(frame.array[-3, -3], (0, 0, 255, 255))
        np.testing.assert_array_equal(frame.array[H // 4, W - 3], (0, 0, 255, 255))
        canvas = src.canvas
    assert src.closed and canvas._closed
    src.close()
    with pytest.raises(FramesError):
        src.read()


def test_vispy_canvas_source_formats_and_wrapping() -> None:
    pytest.importorskip("vispy")
    from isthmus.frames._vispy_source import VispyCanvasSource, vispy_egl_app

    try:
        app = vispy_egl_app()
    except BackendUnavailableError as exc:
        _skip(f"vispy's EGL backend cannot start here: {exc}")
    from vispy import scene

    canvas = scene.SceneCanvas(size=(W, H), app=app, show=False, bgcolor=(1, 0, 0, 1))

    class NapariLike:
        _scene_canvas = canvas

    try:
        with VispyCanvasSource(NapariLike(), format="bgra") as bgra:
            np.testing.assert_array_equal(bgra.read().array[0, 0], (0, 0, 255, 255))
        with VispyCanvasSource(canvas, format="rgb") as rgb:
            np.testing.assert_array_equal(rgb.read().array[0, 0], (255, 0, 0))
        assert not canvas._closed  # the caller's canvas stays open
        with pytest.raises(FramesError):
            VispyCanvasSource(object())
    finally:
        canvas.close()


def test_gl_backends_constant() -> None:
    assert GL_BACKENDS == ("cuda-gl", "pbo", "readpixels")


def test_make_current_false_keeps_the_callers_context(gl: Any, ctx: EGLContext) -> None:
    with EGLContext(8, 8, make_current=False) as other:
        assert ctx.is_current and not other.is_current
        other.make_current()
        assert other.is_current
    assert not other.is_current and other.closed


def test_unsupported_gl_version_falls_back_to_the_default_context(gl: Any) -> None:
    with EGLContext(8, 8, gl_version=(9, 9)) as context:
        assert context.is_current
        paint_solid(gl, TR)
        with GLSource(context, backend="readpixels") as src:
            assert (src.read().array == TR).all()
