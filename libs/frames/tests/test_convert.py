"""RGB <-> YUV conversion: exact reference values, backends agree, memory is pooled."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import PURE, scene
from isthmus.frames import (
    BackendUnavailableError,
    ColorSpec,
    Converter,
    FrameFormatError,
    PixelFormat,
    as_frame,
    available_converters,
    rgb_to_yuv,
    rgb_to_yuv_matrix,
    yuv_to_rgb,
    yuv_to_rgb_matrix,
)

BACKENDS = available_converters()


def solid(rgb: tuple[int, int, int], w: int = 8, h: int = 4) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[...] = rgb
    return img


def yuv_of(rgb: tuple[int, int, int], color: ColorSpec, backend: str) -> tuple[int, int, int]:
    out = Converter(
        8, 4, dst="yuv444", color=ColorSpec(color.matrix, color.range, "444"), backend=backend
    )  # type: ignore[arg-type]
    planes = out.convert(solid(rgb)).array
    return int(planes[0, 0, 0]), int(planes[1, 0, 0]), int(planes[2, 0, 0])


def test_pure_python_mode_selects_numpy() -> None:
    if PURE:
        assert BACKENDS == ["numpy"]
    assert Converter(8, 4).backend == BACKENDS[0]
    assert BACKENDS[-1] == "numpy"  # the fallback is always there


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("rgb", "color", "expected"),
    [
        # BT.709 limited range (ITU-R BT.709-6 with 8-bit quantisation).
        ((255, 255, 255), ColorSpec(), (235, 128, 128)),
        ((0, 0, 0), ColorSpec(), (16, 128, 128)),
        ((255, 0, 0), ColorSpec(), (63, 102, 240)),
        ((0, 255, 0), ColorSpec(), (173, 42, 26)),
        ((0, 0, 255), ColorSpec(), (32, 240, 118)),
        # BT.601 limited range: the values every JPEG/MPEG text quotes.
        ((255, 0, 0), ColorSpec("bt601"), (81, 90, 240)),
        # Full range.
        ((255, 255, 255), ColorSpec("bt709", "full"), (255, 128, 128)),
        ((255, 0, 0), ColorSpec("bt709", "full"), (54, 99, 255)),
    ],
)
def test_reference_values(
    backend: str, rgb: tuple[int, int, int], color: ColorSpec, expected: tuple[int, int, int]
) -> None:
    got = yuv_of(rgb, color, backend)
    assert all(abs(g - e) <= 1 for g, e in zip(got, expected, strict=True)), (got, expected)


def test_matrices_invert() -> None:
    for color in (ColorSpec(), ColorSpec("bt601"), ColorSpec("bt709", "full")):
        fwd, inv = rgb_to_yuv_matrix(color), yuv_to_rgb_matrix(color)
        rgb = np.array([12.0, 200.0, 99.0])
        yuv = fwd[:, :3] @ rgb + fwd[:, 3]
        assert np.allclose(inv[:, :3] @ yuv + inv[:, 3], rgb, atol=1e-3)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs OpenCV and numpy (not in pure-Python mode)")
@pytest.mark.parametrize("dst", ["i420", "nv12", "yuv444"])
def test_opencv_and_numpy_agree(dst: str) -> None:
    img = scene(96, 64, 3)
    a = Converter(96, 64, dst=dst, backend="opencv").convert(img).array
    b = Converter(96, 64, dst=dst, backend="numpy").convert(img).array
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_i420_and_nv12_hold_the_same_samples(backend: str) -> None:
    img = scene(64, 32, 1)
    i420 = Converter(64, 32, dst="i420", backend=backend).convert(img).array  # type: ignore[arg-type]
    nv12 = Converter(64, 32, dst="nv12", backend=backend).convert(img).array  # type: ignore[arg-type]
    assert np.array_equal(i420[:32], nv12[:32])
    u = i420[32:].reshape(-1)[: 16 * 32].reshape(16, 32)
    v = i420[32:].reshape(-1)[16 * 32 :].reshape(16, 32)
    uv = nv12[32:].reshape(16, 32, 2)
    assert np.array_equal(uv[..., 0], u) and np.array_equal(uv[..., 1], v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chroma_is_the_mean_of_each_2x2_block(backend: str) -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 0)  # one red pixel in four: a quarter of red's chroma offset
    out = Converter(2, 2, dst="i420", backend=backend).convert(img).array.reshape(-1)  # type: ignore[arg-type]
    v_red = 240 - 128
    assert abs(int(out[5]) - (128 + v_red / 4)) <= 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("fmt", "perm"), [("bgr", [2, 1, 0]), ("rgba", [0, 1, 2, 3]), ("bgra", [2, 1, 0, 3])]
)
def test_channel_orders_give_the_same_yuv(backend: str, fmt: str, perm: list[int]) -> None:
    rgb = scene(32, 16, 2)
    rgba = np.concatenate([rgb, np.full((16, 32, 1), 77, np.uint8)], axis=2)
    other = np.ascontiguousarray(rgba[:, :, perm][:, :, : len(perm)])
    ref = Converter(32, 16, backend=backend).convert(rgb).array  # type: ignore[arg-type]
    got = Converter(32, 16, backend=backend).convert(as_frame(other, fmt)).array  # type: ignore[arg-type]
    assert np.array_equal(ref, got)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gray_maps_to_neutral_chroma(backend: str) -> None:
    gray = np.full((4, 8), 255, np.uint8)
    out = Converter(8, 4, backend=backend).convert(gray).array  # type: ignore[arg-type]
    assert (out[:4] == 235).all() and (out[4:] == 128).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_and_flipped_input(backend: str) -> None:
    img = scene(32, 16, 0)
    padded = np.zeros((16, 40, 3), np.uint8)
    padded[:, :32] = img
    conv = Converter(32, 16, backend=backend)  # type: ignore[arg-type]
    ref = conv.convert(img).array.copy()
    assert np.array_equal(conv.convert(padded[:, :32]).array, ref)
    flipped_back = conv.convert(np.ascontiguousarray(img[::-1])[::-1]).array
    assert np.array_equal(flipped_back, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dst", ["i420", "nv12", "yuv444"])
def test_round_trip_is_close(backend: str, dst: str) -> None:
    img = scene(64, 48, 5)
    yuv = Converter(64, 48, dst=dst, backend=backend).convert(img)  # type: ignore[arg-type]
    back = yuv_to_rgb(yuv, backend=backend)  # type: ignore[arg-type]
    err = np.abs(back.array.astype(int) - img.astype(int))
    # 4:4:4 loses only rounding; 4:2:0 also loses chroma detail at the disc's edge.
    assert np.median(err) <= 1
    assert err.max() <= (3 if dst == "yuv444" else 255)
    assert back.format is PixelFormat.RGB and back.color == yuv.color


def test_wrong_matrix_is_visible() -> None:
    """Decoding BT.709 data as BT.601 visibly shifts a green: the matrix must be right."""
    yuv = rgb_to_yuv(solid((40, 200, 90)), "yuv444", ColorSpec(chroma="444"))
    right = yuv_to_rgb(yuv, ColorSpec(chroma="444")).array[0, 0].astype(int)
    wrong = yuv_to_rgb(yuv, ColorSpec("bt601", chroma="444")).array[0, 0].astype(int)
    assert np.abs(right - (40, 200, 90)).max() <= 1
    assert np.abs(wrong - right).max() > 10


def test_output_memory_is_pooled_and_reused() -> None:
    conv = Converter(64, 32, slots=2)
    first = conv.convert(scene(64, 32)).array
    addr = first.__array_interface__["data"][0]
    del first  # the slot goes back to the pool when the frame's array is collected
    again = conv.convert(scene(64, 32, 1)).array
    assert again.__array_interface__["data"][0] == addr
    held = [conv.convert(scene(64, 32, i)).array for i in range(4)]  # more than the slots: it grows
    assert len({a.__array_interface__["data"][0] for a in held}) == 4
    conv.close()


def test_out_parameter_is_written_in_place() -> None:
    out = np.empty((48, 32), np.uint8)
    frame = Converter(32, 32).convert(scene(32, 32), out=out)
    assert frame.array is out
    with pytest.raises(FrameFormatError):
        Converter(32, 32).convert(scene(32, 32), out=np.empty((10, 10), np.uint8))


def test_bad_conversions_are_typed() -> None:
    with pytest.raises(FrameFormatError, match="even"):
        Converter(31, 16)
    with pytest.raises(FrameFormatError, match="64x32"):
        Converter(64, 32).convert(scene(32, 16))
    with pytest.raises(FrameFormatError, match="YUV"):
        Converter(8, 4).convert(as_frame(np.zeros((6, 8), np.uint8), "i420"))
    with pytest.raises(FrameFormatError):
        Converter(8, 4, dst="rgb")
    with pytest.raises(BackendUnavailableError):
        Converter(8, 4, backend="vulkan")  # type: ignore[arg-type]
    with pytest.raises(FrameFormatError):
        yuv_to_rgb(as_frame(scene(8, 4)))
    assert Converter(31, 15, dst="yuv444").width == 31  # 4:4:4 has no even-size rule


@pytest.mark.gpu
def test_device_frames_convert_on_the_gpu() -> None:
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA device")
    img = scene(64, 32, 4)
    host = Converter(64, 32, backend="numpy").convert(img).array
    for dst in ("i420", "nv12"):
        dev = Converter(64, 32, dst=dst).convert(cupy.asarray(img))
        assert dev.on_device
        ref = (
            host
            if dst == "i420"
            else Converter(64, 32, dst="nv12", backend="numpy").convert(img).array
        )
        assert np.abs(cupy.asnumpy(dev.data).astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.skipif("opencv" not in BACKENDS, reason="the band split is the OpenCV backend's")
@pytest.mark.parametrize("fmt", ["rgb", "bgra"])
@pytest.mark.parametrize("dst", ["i420", "nv12", "yuv444"])
def test_large_frames_convert_in_bands_with_the_same_result(fmt: str, dst: str) -> None:
    img = scene(1280, 722, 9)  # 722 rows: the bands do not divide the height evenly
    if fmt == "bgra":
        src = as_frame(
            np.ascontiguousarray(np.concatenate([img[:, :, ::-1], img[:, :, :1]], axis=2)), "bgra"
        )
    else:
        src = as_frame(img)
    conv = Converter(1280, 722, dst=dst, backend="opencv")
    assert conv._bands > 1 or len(__import__("os").sched_getaffinity(0)) == 1
    banded = conv.convert(src).array
    whole = Converter(1280, 722, dst=dst, backend="numpy").convert(img).array
    assert np.abs(banded.astype(int) - whole.astype(int)).max() <= 1
    conv.close()
    conv.close()  # idempotent; the band threads are gone
    assert conv._threads is None
