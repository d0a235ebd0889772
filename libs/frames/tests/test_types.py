"""Frames are validated and wrapped without copies; configs round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from isthmus.frames import (
    ArraySource,
    ColorSpec,
    Frame,
    FrameFormatError,
    FramesError,
    FrameSource,
    Packet,
    PixelFormat,
    StreamConfig,
    as_frame,
)


def test_rgb_array_is_wrapped_not_copied() -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    frame = as_frame(img, pts=7)
    assert (frame.width, frame.height, frame.format, frame.pts) == (64, 48, PixelFormat.RGB, 7)
    assert np.shares_memory(frame.array, img)


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [((4, 6, 3), PixelFormat.RGB), ((4, 6, 4), PixelFormat.RGBA), ((4, 6), PixelFormat.GRAY)],
)
def test_format_is_guessed_from_shape(shape: tuple[int, ...], fmt: PixelFormat) -> None:
    assert as_frame(np.zeros(shape, np.uint8)).format is fmt


def test_explicit_formats() -> None:
    assert as_frame(np.zeros((4, 6, 4), np.uint8), "bgra").format is PixelFormat.BGRA
    nv12 = as_frame(np.zeros((6, 8), np.uint8), "nv12")
    assert (nv12.width, nv12.height) == (8, 4)
    yuv444 = as_frame(np.zeros((3, 4, 8), np.uint8), "yuv444")
    assert (yuv444.width, yuv444.height) == (8, 4)


def test_padded_rows_need_no_copy() -> None:
    padded = np.zeros((48, 80, 3), np.uint8)
    view = padded[:, :64]  # row stride 240 bytes for a 192-byte row, as GL and video often have
    frame = as_frame(view)
    assert frame.width == 64 and np.shares_memory(frame.array, padded)


def test_flipped_rows_are_accepted() -> None:
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    frame = as_frame(img[::-1])
    assert frame.array.strides[0] < 0 and np.shares_memory(frame.array, img)


@pytest.mark.parametrize(
    ("array", "fmt", "match"),
    [
        (np.zeros((4, 6, 3), np.float32), None, "uint8"),
        (np.zeros((4, 6, 5), np.uint8), None, "pixel format"),
        (np.zeros((4, 6, 3), np.uint8), "rgba", r"\(H, W, 4\)"),
        (np.zeros((4, 6, 3), np.uint8)[:, ::2], None, "contiguous"),
        (np.zeros((3, 6, 4), np.uint8).transpose(1, 0, 2)[:, :, :3], None, "contiguous"),
        (np.zeros((7, 6), np.uint8), "i420", r"H\*3/2"),
        (np.zeros((9, 7), np.uint8), "nv12", "even"),
        (np.zeros((0, 6, 3), np.uint8), None, "empty"),
        (np.zeros((2, 4, 8), np.uint8), "yuv444", r"\(3, H, W\)"),
    ],
)
def test_bad_frames_get_a_typed_error(array: np.ndarray, fmt: str | None, match: str) -> None:
    with pytest.raises(FrameFormatError, match=match):
        as_frame(array, fmt)


def test_bad_objects_get_a_typed_error() -> None:
    with pytest.raises(FrameFormatError):
        as_frame(object())
    with pytest.raises(ValueError):  # FrameFormatError is also a ValueError
        as_frame(np.zeros((2, 2, 3), np.int16))


def test_array_interface_objects_are_accepted() -> None:
    class Exporter:
        def __init__(self, arr: np.ndarray) -> None:
            self.__array_interface__ = arr.__array_interface__
            self._arr = arr

    img = np.ones((4, 6, 3), np.uint8)
    frame = as_frame(Exporter(img))
    assert np.shares_memory(frame.array, img)


def test_color_spec_validates() -> None:
    with pytest.raises(FrameFormatError):
        ColorSpec(matrix="bt2020")  # type: ignore[arg-type]
    with pytest.raises(FrameFormatError):
        ColorSpec(range="tv")  # type: ignore[arg-type]


def test_stream_config_round_trips() -> None:
    cfg = StreamConfig(
        "h264", 1920, 1080, ColorSpec("bt709", "limited", "420"), "x264", 60.0, 6_000_000, None
    )
    assert StreamConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["matrix"] == "bt709" and cfg.to_dict()["range"] == "limited"


def test_packet_is_bytes_like() -> None:
    p = Packet(memoryview(b"\x00\x00\x01\x65abc"), 3, True, "h264", 2, 2)
    assert p.nbytes == 7 and bytes(p) == b"\x00\x00\x01\x65abc"


def test_array_source_iterates_and_closes() -> None:
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(3)]
    with ArraySource(frames) as src:
        assert isinstance(src, FrameSource)
        got = list(src)
    assert [f.pts for f in got] == [0, 1, 2]
    assert [int(f.array[0, 0, 0]) for f in got] == [0, 1, 2]
    assert all(np.shares_memory(f.array, a) for f, a in zip(got, frames, strict=True))
    with pytest.raises(FramesError):
        src.read()


def test_array_source_from_callable() -> None:
    img = np.zeros((4, 6, 4), np.uint8)
    src = ArraySource(lambda: img, format="bgra")
    frame = src.read()
    assert isinstance(frame, Frame) and frame.format is PixelFormat.BGRA and src.backend == "array"


def test_host_dlpack_objects_are_viewed_not_copied() -> None:
    class DLPackOnly:  # only the DLPack protocol, as torch/jax CPU tensors offer
        def __init__(self, arr: np.ndarray) -> None:
            self._arr = arr

        def __dlpack__(self, **kwargs: object) -> object:
            return self._arr.__dlpack__(**kwargs)

        def __dlpack_device__(self) -> tuple[int, int]:
            return self._arr.__dlpack_device__()

    img = np.zeros((4, 6, 3), np.uint8)
    frame = as_frame(DLPackOnly(img))
    assert frame.format is PixelFormat.RGB and not frame.on_device
    assert np.shares_memory(frame.array, img)


def test_pooled_isthmus_buffers_are_frames() -> None:
    from isthmus.buffer import BufferPool

    pool = BufferPool(4 * 6 * 3, 1)
    buf = pool.acquire()
    frame = as_frame(buf.asarray(shape=(4, 6, 3)))
    frame.array[...] = 7
    assert buf.tobytes() == bytes([7]) * 72  # the frame is the pooled memory itself
    del frame
    buf.release()
    pool.close()
