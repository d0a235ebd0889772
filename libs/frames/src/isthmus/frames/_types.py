"""Frames, packets and stream configuration: the values every backend shares."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ._errors import FrameFormatError

__all__ = [
    "ColorSpec",
    "Frame",
    "Packet",
    "PixelFormat",
    "StreamConfig",
    "as_frame",
]

Matrix = Literal["bt709", "bt601"]
Range = Literal["limited", "full"]
Chroma = Literal["420", "444"]


class PixelFormat(enum.StrEnum):
    """Pixel layouts of host and device frames (8 bits per sample)."""

    RGB = "rgb"
    BGR = "bgr"
    RGBA = "rgba"
    BGRA = "bgra"
    GRAY = "gray"
    #: Y plane then interleaved UV at half resolution, one contiguous (H*3/2, W) array.
    NV12 = "nv12"
    #: Y, U and V planes, U and V at half resolution, one contiguous (H*3/2, W) array.
    I420 = "i420"
    #: Y, U and V planes at full resolution, one contiguous (3, H, W) array.
    YUV444 = "yuv444"

    @property
    def channels(self) -> int:
        """Samples per pixel of a packed format (1 for planar ones)."""
        return _CHANNELS[self]

    @property
    def is_yuv(self) -> bool:
        """Whether this is one of the planar YUV layouts."""
        return self in (PixelFormat.NV12, PixelFormat.I420, PixelFormat.YUV444)


_CHANNELS = {
    PixelFormat.RGB: 3,
    PixelFormat.BGR: 3,
    PixelFormat.RGBA: 4,
    PixelFormat.BGRA: 4,
    PixelFormat.GRAY: 1,
    PixelFormat.NV12: 1,
    PixelFormat.I420: 1,
    PixelFormat.YUV444: 1,
}


@dataclass(frozen=True, slots=True)
class ColorSpec:
    """How RGB maps to YUV: matrix, range and chroma subsampling.

    The default is what the encoders write into the stream (H.264 VUI): BT.709, limited
    ("TV", 16-235) range, 4:2:0.
    """

    matrix: Matrix = "bt709"
    range: Range = "limited"
    chroma: Chroma = "420"

    def __post_init__(self) -> None:
        if self.matrix not in ("bt709", "bt601"):
            raise FrameFormatError(f"matrix must be 'bt709' or 'bt601', got {self.matrix!r}")
        if self.range not in ("limited", "full"):
            raise FrameFormatError(f"range must be 'limited' or 'full', got {self.range!r}")
        if self.chroma not in ("420", "444"):
            raise FrameFormatError(f"chroma must be '420' or '444', got {self.chroma!r}")


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What a receiver needs to know about an encoded stream; sent with every keyframe."""

    codec: str
    width: int
    height: int
    color: ColorSpec = field(default_factory=ColorSpec)
    backend: str = ""
    fps: float = 60.0
    bitrate: int | None = None
    quality: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form, e.g. for a wire ``Welcome`` or a state message."""
        return {
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "matrix": self.color.matrix,
            "range": self.color.range,
            "chroma": self.color.chroma,
            "backend": self.backend,
            "fps": self.fps,
            "bitrate": self.bitrate,
            "quality": self.quality,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamConfig:
        """The inverse of :meth:`to_dict`."""
        color = ColorSpec(
            data.get("matrix", "bt709"), data.get("range", "limited"), data.get("chroma", "420")
        )
        return cls(
            codec=str(data["codec"]),
            width=int(data["width"]),
            height=int(data["height"]),
            color=color,
            backend=str(data.get("backend", "")),
            fps=float(data.get("fps", 60.0)),
            bitrate=data.get("bitrate"),
            quality=data.get("quality"),
        )


@dataclass(frozen=True, slots=True)
class Packet:
    """One encoded frame.

    ``payload`` is bytes-like (bytes, memoryview or an ``isthmus.buffer.Buffer``); ``config``
    is set on keyframes so a receiver joining late can configure its decoder.
    """

    payload: Any
    pts: int
    keyframe: bool
    codec: str
    width: int
    height: int
    config: StreamConfig | None = None
    backend: str = ""

    @property
    def nbytes(self) -> int:
        """Size of the payload in bytes."""
        return memoryview(self.payload).nbytes

    def __bytes__(self) -> bytes:
        return bytes(memoryview(self.payload))


@dataclass(slots=True)
class Frame:
    """An image in host or device memory, plus its format and timing.

    ``data`` is a numpy array (host) or a CuPy/DLPack array (device) in the layout of
    ``format``: ``(H, W, C)`` for packed formats, ``(H, W)`` for gray, ``(H*3/2, W)`` for NV12
    and I420 and ``(3, H, W)`` for YUV444.  Rows may be padded (a row stride larger than the
    row), which costs no copy anywhere.
    """

    data: Any
    format: PixelFormat
    width: int
    height: int
    pts: int = 0
    timestamp_ns: int = field(default_factory=time.monotonic_ns)
    color: ColorSpec | None = None
    on_device: bool = False

    @property
    def array(self) -> npt.NDArray[np.uint8]:
        """The host array (raises for device frames: use ``data``)."""
        if self.on_device:
            raise FrameFormatError("this frame is in device memory; use Frame.data")
        return self.data  # type: ignore[no-any-return]


def _device_array(obj: Any) -> Any | None:
    """A CuPy view of a device object (CAI or DLPack), or None if it is host memory."""
    if hasattr(obj, "__cuda_array_interface__"):
        import cupy

        return cupy.asarray(obj)
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is not None:
        kind, _ = dev()
        if int(kind) in (2, 3, 13):  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
            import cupy

            return cupy.from_dlpack(obj)
    return None


def _expected_shape(fmt: PixelFormat, shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) of an array of ``shape`` in ``fmt``; FrameFormatError if it does not fit."""
    if fmt is PixelFormat.GRAY:
        if len(shape) == 3 and shape[2] == 1:
            return shape[1], shape[0]
        if len(shape) != 2:
            raise FrameFormatError(f"a gray frame is (H, W), got shape {shape}")
        return shape[1], shape[0]
    if fmt in (PixelFormat.NV12, PixelFormat.I420):
        if len(shape) != 2 or shape[0] % 3:
            raise FrameFormatError(f"an {fmt.value} frame is (H*3/2, W), got shape {shape}")
        h, w = shape[0] * 2 // 3, shape[1]
        if h % 2 or w % 2:
            raise FrameFormatError(f"4:2:0 needs even dimensions, got {w}x{h}")
        return w, h
    if fmt is PixelFormat.YUV444:
        if len(shape) != 3 or shape[0] != 3:
            raise FrameFormatError(f"a yuv444 frame is (3, H, W), got shape {shape}")
        return shape[2], shape[1]
    if len(shape) != 3 or shape[2] != fmt.channels:
        raise FrameFormatError(f"a {fmt.value} frame is (H, W, {fmt.channels}), got shape {shape}")
    return shape[1], shape[0]


def _guess_format(shape: tuple[int, ...]) -> PixelFormat:
    if len(shape) == 2:
        return PixelFormat.GRAY
    if len(shape) == 3 and shape[2] in (3, 4, 1):
        return {3: PixelFormat.RGB, 4: PixelFormat.RGBA, 1: PixelFormat.GRAY}[shape[2]]
    raise FrameFormatError(
        f"cannot tell the pixel format of shape {shape}: pass format= (rgb, rgba, bgra, gray, ...)"
    )


def as_frame(
    obj: Any,
    format: PixelFormat | str | None = None,
    *,
    pts: int = 0,
    timestamp_ns: int | None = None,
    color: ColorSpec | None = None,
) -> Frame:
    """Wrap an array (numpy, anything with ``__array_interface__``, ``__cuda_array_interface__``
    or DLPack, or a :class:`Frame`) as a :class:`Frame` without copying it.

    ``format`` defaults to RGB for (H, W, 3), RGBA for (H, W, 4) and gray for (H, W).  The
    dtype must be uint8; every axis but the row axis must be contiguous (rows may be padded,
    as GL and video frames often are).  Violations raise :class:`FrameFormatError`.
    """
    if isinstance(obj, Frame):
        return obj
    device = _device_array(obj)
    arr: Any = device if device is not None else None
    if arr is None and not hasattr(obj, "__array_interface__") and hasattr(obj, "__dlpack__"):
        try:  # a host DLPack exporter (e.g. an isthmus.buffer.Buffer): a view, not a copy
            arr = np.from_dlpack(obj)
        except Exception as exc:
            raise FrameFormatError(f"cannot use {type(obj).__name__} as a frame: {exc}") from exc
    if arr is None:
        try:
            arr = np.asarray(obj)
        except Exception as exc:  # an object numpy cannot view
            raise FrameFormatError(f"cannot use {type(obj).__name__} as a frame: {exc}") from exc
        if arr.dtype == object:
            raise FrameFormatError(f"cannot use {type(obj).__name__} as a frame")
    if arr.dtype != np.uint8:
        raise FrameFormatError(f"frames are uint8, got dtype {arr.dtype}")
    shape = tuple(int(s) for s in arr.shape)
    fmt = _guess_format(shape) if format is None else PixelFormat(format)
    width, height = _expected_shape(fmt, shape)
    if width <= 0 or height <= 0:
        raise FrameFormatError(f"empty frame: {width}x{height}")
    strides = tuple(int(s) for s in arr.strides)
    # Samples of a pixel and pixels of a row must be adjacent; rows may be padded or flipped.
    if len(shape) == 3 and fmt is not PixelFormat.YUV444:
        if strides[2] != 1 or strides[1] != shape[2]:
            raise FrameFormatError(
                f"pixels must be contiguous within a row (strides {strides} for shape {shape});"
                " use numpy.ascontiguousarray"
            )
    elif strides[-1] != 1:
        raise FrameFormatError(f"samples must be contiguous within a row, strides {strides}")
    if fmt is PixelFormat.GRAY and len(shape) == 3:
        arr = arr[:, :, 0]
    return Frame(
        data=arr,
        format=fmt,
        width=width,
        height=height,
        pts=pts,
        timestamp_ns=time.monotonic_ns() if timestamp_ns is None else timestamp_ns,
        color=color,
        on_device=device is not None,
    )
