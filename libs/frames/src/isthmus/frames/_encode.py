"""The encode seam: backends, their probes, and :func:`open_encoder` with mid-stream fallback.

Every backend's :meth:`~EncoderBackend.probe` makes a real one-frame encode at a small size the
first time it is asked, then caches the answer, so a missing library or a GPU-less machine is
ruled out once and costs nothing afterwards.  Settings are low latency everywhere: no B-frames,
no lookahead, one packet out per frame in, keyframes forced per frame (never by resetting the
encoder), SPS/PPS in-band with every keyframe.
"""

from __future__ import annotations

import abc
import fractions
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from ._convert import Converter
from ._errors import BackendUnavailableError, EncoderError, FrameFormatError, FramesError
from ._types import ColorSpec, Frame, Packet, PixelFormat, StreamConfig, as_frame

__all__ = [
    "BACKENDS",
    "Encoder",
    "EncoderBackend",
    "FallbackEncoder",
    "ProbeResult",
    "open_encoder",
    "probe_encoders",
]

log = logging.getLogger(__name__)

PROBE_SIZE = (64, 64)


class ProbeResult:
    """Whether a backend works here, why not if it does not, and what the probe cost."""

    __slots__ = ("backend", "ok", "reason", "seconds")

    def __init__(self, backend: str, ok: bool, reason: str, seconds: float) -> None:
        self.backend = backend
        self.ok = ok
        self.reason = reason
        self.seconds = seconds

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"unavailable: {self.reason}"
        return f"<ProbeResult {self.backend} {state} ({self.seconds * 1e3:.2f} ms)>"


class Encoder(abc.ABC):
    """One encoder instance: frames in, :class:`Packet` out, one packet per frame.

    ``encode(frame, keyframe=False)`` accepts a :class:`Frame` or an array (RGB, BGR, RGBA,
    BGRA, gray, or already-converted I420/NV12).  A frame of a new size reconfigures the
    encoder in place: the next packet is a keyframe carrying the new :class:`StreamConfig`.
    """

    #: Backend name, e.g. ``"x264"``; see :data:`BACKENDS`.
    backend: ClassVar[str]
    #: Codec produced: ``"h264"``, ``"jpeg"`` or ``"png"``.
    codec: ClassVar[str]
    #: Whether every packet is a keyframe (stills).
    intra_only: ClassVar[bool] = False

    def __init__(
        self,
        width: int,
        height: int,
        *,
        color: ColorSpec | None = None,
        fps: float = 60.0,
        bitrate: int | None = None,
        quality: int | None = None,
        **options: Any,
    ) -> None:
        self._check_size(width, height, color)
        self.width = width
        self.height = height
        self.color = color or ColorSpec()
        self.fps = fps
        self.bitrate = bitrate
        self.quality = quality
        self.options = options
        self._pts = 0
        self._force_key = True  # the first packet of a stream is always a keyframe
        self._closed = False
        self.frames = 0

    def _check_size(self, width: int, height: int, color: ColorSpec | None) -> None:
        if width <= 0 or height <= 0:
            raise FrameFormatError(f"empty frame size {width}x{height}")
        if (
            (color is None or color.chroma == "420")
            and not self.intra_only
            and (width % 2 or height % 2)
        ):
            raise FrameFormatError(f"4:2:0 video needs even dimensions, got {width}x{height}")

    @property
    def config(self) -> StreamConfig:
        """The stream configuration a decoder needs (sent with every keyframe)."""
        return StreamConfig(
            codec=self.codec,
            width=self.width,
            height=self.height,
            color=self.color,
            backend=self.backend,
            fps=self.fps,
            bitrate=self.bitrate,
            quality=self.quality,
        )

    def request_keyframe(self) -> None:
        """Make the next packet a keyframe (IDR with SPS/PPS for H.264)."""
        self._force_key = True

    def reconfigure(
        self,
        *,
        width: int | None = None,
        height: int | None = None,
        bitrate: int | None = None,
        quality: int | None = None,
    ) -> None:
        """Change size, bitrate or quality without a new Encoder; the next packet is a keyframe."""
        new_w, new_h = width or self.width, height or self.height
        self._check_size(new_w, new_h, self.color)
        changed = (new_w, new_h) != (self.width, self.height)
        self.width, self.height = new_w, new_h
        if bitrate is not None:
            self.bitrate = bitrate
        if quality is not None:
            self.quality = quality
        self._reconfigure(size_changed=changed)
        self._force_key = True

    def encode(self, frame: Frame | Any, *, keyframe: bool = False) -> Packet:
        """Encode one frame and return its packet (these settings add no frames of delay)."""
        if self._closed:
            raise EncoderError(f"{self.backend} encoder is closed")
        src = as_frame(frame)
        if (src.width, src.height) != (self.width, self.height):
            log.info(
                "%s: frame size %dx%d -> %dx%d, reconfiguring",
                self.backend,
                self.width,
                self.height,
                src.width,
                src.height,
            )
            self.reconfigure(width=src.width, height=src.height)
        key = keyframe or self._force_key or self.intra_only
        try:
            payload, is_key = self._encode(src, key)
        except FramesError:
            raise
        except Exception as exc:
            raise EncoderError(f"{self.backend} failed to encode frame {self._pts}: {exc}") from exc
        pts = self._pts
        self._pts += 1
        self.frames += 1
        if is_key:
            self._force_key = False
        return Packet(
            payload=payload,
            pts=pts,
            keyframe=is_key,
            codec=self.codec,
            width=self.width,
            height=self.height,
            config=self.config if is_key else None,
            backend=self.backend,
        )

    @abc.abstractmethod
    def _encode(self, frame: Frame, keyframe: bool) -> tuple[Any, bool]:
        """(payload, is_keyframe) for one frame."""

    def _reconfigure(self, *, size_changed: bool) -> None:  # noqa: B027 - optional hook
        """Apply the new size/bitrate/quality; stills have nothing to do."""

    def close(self) -> None:
        """Release the encoder; idempotent."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend} {self.codec} {self.width}x{self.height}>"


class EncoderBackend:
    """A named way to encode: how to probe it and how to open it."""

    def __init__(
        self,
        name: str,
        codec: str,
        factory: Callable[..., Encoder],
        probe: Callable[[], None],
        description: str,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._prepare = prepare
        self.codec = codec
        self._factory = factory
        self._probe = probe
        self.description = description
        self._result: ProbeResult | None = None

    def probe(self, *, refresh: bool = False) -> ProbeResult:
        """Try a real one-frame encode (once; cached unless ``refresh``)."""
        if self._result is None or refresh:
            t0 = time.perf_counter()
            try:
                if self._prepare is not None:
                    # Importing a library shared by several backends (PyAV) is not this
                    # backend's probe cost: a failure here still counts, its time does not.
                    self._prepare()
                    t0 = time.perf_counter()
                self._probe()
            except Exception as exc:  # whatever a missing library or device raises
                reason = f"{type(exc).__name__}: {exc}".strip()
                self._result = ProbeResult(self.name, False, reason, time.perf_counter() - t0)
                log.info("encoder backend %s skipped: %s", self.name, reason)
            else:
                self._result = ProbeResult(self.name, True, "", time.perf_counter() - t0)
                log.debug("encoder backend %s available", self.name)
        return self._result

    def open(self, width: int, height: int, **options: Any) -> Encoder:
        """Open an encoder of this backend (no probe: the caller decides)."""
        return self._factory(width, height, **options)


# ---------------------------------------------------------------------------------------------
# PyAV (libx264 and h264_nvenc from host memory)
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _av() -> Any:
    import av

    # PyAV leaves FFmpeg's log callback off by default, and so do we: with it on, a log line
    # from a codec's worker thread needs the GIL, which can deadlock threaded decoding.
    return av


class _PyAVH264(Encoder):
    """H.264 through a PyAV codec context fed zero-copy from our own YUV conversion."""

    codec = "h264"
    codec_name: ClassVar[str] = ""

    def __init__(self, width: int, height: int, **kwargs: Any) -> None:
        # One slice per usable core: x264's own "auto" (1.5x cores) adds slices that only cost
        # bits and scheduling on a small machine (measured: 2 threads beat 3 and 4 on 2 cores).
        self.threads = int(kwargs.pop("threads", 0)) or len(os.sched_getaffinity(0))
        super().__init__(width, height, **kwargs)
        self._ctx: Any = None
        self._converter: Converter | None = None
        self._open()

    def _codec_options(self) -> dict[str, str]:
        raise NotImplementedError

    def _open(self) -> None:
        av = _av()
        ctx = av.CodecContext.create(self.codec_name, "w")
        ctx.width = self.width
        ctx.height = self.height
        ctx.pix_fmt = "yuv444p" if self.color.chroma == "444" else "yuv420p"
        ctx.time_base = fractions.Fraction(1, max(1, round(self.fps)))
        ctx.framerate = fractions.Fraction(max(1, round(self.fps)), 1)
        ctx.max_b_frames = 0
        ctx.gop_size = int(self.options.get("gop", 10_000))  # keyframes come when asked for
        if self.bitrate:
            ctx.bit_rate = int(self.bitrate)
        # Stated in the stream (H.264 VUI), so any decoder converts back with the same matrix.
        ctx.colorspace = 1 if self.color.matrix == "bt709" else 6
        ctx.color_primaries = 1 if self.color.matrix == "bt709" else 6
        ctx.color_trc = 1 if self.color.matrix == "bt709" else 6
        ctx.color_range = 1 if self.color.range == "limited" else 2
        ctx.options = self._codec_options()
        ctx.thread_type = "SLICE"  # frame threads would add a frame of delay per thread
        ctx.thread_count = self.threads
        ctx.open()
        self._ctx = ctx
        dst = PixelFormat.YUV444 if self.color.chroma == "444" else PixelFormat.I420
        if self._converter is not None:
            self._converter.close()
        self._converter = Converter(self.width, self.height, dst=dst, color=self.color)

    def _reconfigure(self, *, size_changed: bool) -> None:
        # libx264 can change rate control in place, but PyAV exposes no per-frame reconfig, and a
        # size change needs new SPS anyway: reopen the context (a few ms) and go on with the pts.
        self._ctx = None
        self._open()

    def _to_yuv(self, frame: Frame) -> Frame:
        assert self._converter is not None
        if frame.format.is_yuv:
            want = PixelFormat.YUV444 if self.color.chroma == "444" else PixelFormat.I420
            if frame.format is not want:
                raise FrameFormatError(
                    f"this encoder takes {want.value} or RGB frames, not {frame.format.value}"
                )
            if frame.on_device:
                import cupy

                return replace(frame, data=cupy.asnumpy(frame.data), on_device=False)
            return frame
        # Device frames are converted on the GPU, then only the (half as large) YUV crosses.
        out = self._converter.convert(frame)
        if out.on_device:
            import cupy

            out = replace(out, data=cupy.asnumpy(out.data), on_device=False)
        return out

    def _encode(self, frame: Frame, keyframe: bool) -> tuple[Any, bool]:
        av = _av()
        yuv = self._to_yuv(frame)
        arr = yuv.array
        if self.color.chroma == "444":
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="yuv444p")
        else:
            if not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
            vf = av.VideoFrame.from_numpy_buffer(arr, format="yuv420p")  # no copy
        vf.pts = self._pts
        vf.colorspace = self._ctx.colorspace
        vf.color_range = self._ctx.color_range
        if keyframe:
            vf.pict_type = av.video.frame.PictureType.I
        packets = self._ctx.encode(vf)
        if len(packets) != 1:
            raise EncoderError(
                f"{self.backend} returned {len(packets)} packets for one frame (expected 1)"
            )
        (pkt,) = packets
        return memoryview(pkt), bool(pkt.is_keyframe)

    def close(self) -> None:
        """Flush nothing (no frames are held) and drop the codec context and converter."""
        if self._closed:
            return
        super().close()
        self._ctx = None
        if self._converter is not None:
            self._converter.close()
            self._converter = None


class X264Encoder(_PyAVH264):
    """libx264 (bundled with PyAV): ``preset=ultrafast``, ``tune=zerolatency``, slice threads.

    ``quality`` is the CRF (default 23); ``bitrate`` switches to ABR with a one-frame VBV.
    """

    backend = "x264"
    codec_name = "libx264"

    def _codec_options(self) -> dict[str, str]:
        opts = {
            "preset": str(self.options.get("preset", "ultrafast")),
            "tune": "zerolatency",  # no lookahead, no B-frames, sliced threads
            "forced-idr": "1",  # a forced keyframe is an IDR, so a decoder can join there
            "x264-params": "repeat-headers=1:bframes=0",  # SPS/PPS before every keyframe
        }
        if self.bitrate:
            vbv = max(1, int(self.bitrate / max(1.0, self.fps) / 1000))  # kbit, about one frame
            opts["x264-params"] += f":vbv-maxrate={int(self.bitrate / 1000)}:vbv-bufsize={vbv * 2}"
        else:
            opts["crf"] = str(23 if self.quality is None else self.quality)
        return opts


class NvencHostEncoder(_PyAVH264):
    """NVENC through PyAV's ``h264_nvenc`` from host memory: preset p1, tune ull, delay 0."""

    backend = "nvenc-host"
    codec_name = "h264_nvenc"

    def _codec_options(self) -> dict[str, str]:
        opts = {
            "preset": "p1",
            "tune": "ull",
            "delay": "0",
            "zerolatency": "1",
            "rc-lookahead": "0",
            "forced-idr": "1",
            "bf": "0",
        }
        if self.bitrate:
            opts["rc"] = "cbr"
        else:
            opts["rc"] = "constqp"
            opts["qp"] = str(23 if self.quality is None else self.quality)
        return opts


class NvencDeviceEncoder(Encoder):
    """NVENC from device memory through PyNvVideoCodec: NV12 converted on the GPU, no host copy.

    Written against PyNvVideoCodec's documented ``CreateEncoder``/``Encode`` API; it needs an
    NVENC-capable GPU (L4, T4, RTX; not H100), so it is probed and skipped elsewhere.
    """

    backend = "nvenc-device"
    codec = "h264"

    def __init__(self, width: int, height: int, **kwargs: Any) -> None:
        super().__init__(width, height, **kwargs)
        self._enc: Any = None
        self._host_converter: Converter | None = None
        self._open()

    def _open(self) -> None:
        import PyNvVideoCodec as nvc

        config: dict[str, Any] = {
            "codec": "h264",
            "preset": "P1",
            "tuning_info": "ultra_low_latency",
            "bf": 0,
            "repeatspspps": 1,
            "gop": 10_000,
            "fps": max(1, round(self.fps)),
        }
        if self.bitrate:
            config.update(rc="cbr", bitrate=int(self.bitrate))
        else:
            config.update(rc="constqp", constqp=23 if self.quality is None else self.quality)
        self._nvc = nvc
        self._enc = nvc.CreateEncoder(self.width, self.height, "NV12", False, **config)

    def _reconfigure(self, *, size_changed: bool) -> None:
        self._enc = None
        if self._host_converter is not None:
            self._host_converter.close()
            self._host_converter = None
        self._open()

    def _encode(self, frame: Frame, keyframe: bool) -> tuple[Any, bool]:
        from ._cuda import rgb_to_yuv_device

        if frame.format is PixelFormat.NV12 and frame.on_device:
            nv12 = frame.data
        elif frame.on_device:
            nv12 = rgb_to_yuv_device(frame, PixelFormat.NV12, self.color)
        else:
            import cupy

            if self._host_converter is None:
                self._host_converter = Converter(
                    self.width, self.height, dst=PixelFormat.NV12, color=self.color
                )
            nv12 = cupy.asarray(self._host_converter.convert(frame).array)
        flags = getattr(self._nvc, "NV_ENC_PIC_FLAGS", None)
        if keyframe and flags is not None:
            data = self._enc.Encode(nv12, int(flags.FORCEIDR) | int(flags.OUTPUT_SPSPPS))
        else:
            data = self._enc.Encode(nv12)
        payload = bytes(data)
        return payload, keyframe or _h264_has_idr(payload)

    def close(self) -> None:
        """End the NVENC session."""
        if self._closed:
            return
        super().close()
        if self._host_converter is not None:
            self._host_converter.close()
            self._host_converter = None
        if self._enc is not None:
            try:
                self._enc.EndEncode()
            finally:
                self._enc = None


def _h264_has_idr(data: bytes | memoryview) -> bool:
    from ._h264 import nal_types

    return 5 in nal_types(data)


# ---------------------------------------------------------------------------------------------
# Stills: JPEG and PNG
# ---------------------------------------------------------------------------------------------


def _host_rgb(frame: Frame) -> tuple[np.ndarray[Any, Any], str]:
    """A host array and its colour order, for the still encoders."""
    if frame.on_device:
        import cupy

        frame = replace(frame, data=cupy.asnumpy(frame.data), on_device=False)
    if frame.format.is_yuv:
        from ._convert import yuv_to_rgb

        frame = yuv_to_rgb(frame)
    return frame.array, frame.format.value


class JpegEncoder(Encoder):
    """JPEG through simplejpeg (libjpeg-turbo); ``quality`` 1-100 (default 85), 4:2:0 chroma."""

    backend = "jpeg"
    codec = "jpeg"
    intra_only = True

    def __init__(self, width: int, height: int, **kwargs: Any) -> None:
        super().__init__(width, height, **kwargs)
        import simplejpeg

        self._sj = simplejpeg

    def _encode(self, frame: Frame, keyframe: bool) -> tuple[Any, bool]:
        arr, order = _host_rgb(frame)
        colorspace = {"rgb": "RGB", "bgr": "BGR", "rgba": "RGBA", "bgra": "BGRA", "gray": "GRAY"}[
            order
        ]
        if colorspace == "GRAY" and arr.ndim == 2:
            arr = arr[:, :, None]
        sub = "444" if self.color.chroma == "444" else "420"
        if not arr.flags.c_contiguous:  # padded or flipped rows
            arr = np.ascontiguousarray(arr)
        data = self._sj.encode_jpeg(
            arr,
            quality=85 if self.quality is None else int(self.quality),
            colorspace=colorspace,
            colorsubsampling=sub if colorspace != "GRAY" else "Gray",
            fastdct=True,
        )
        return data, True


class PngEncoder(Encoder):
    """Lossless PNG stills through OpenCV, or the pure-Python writer (zlib) without it."""

    backend = "png"
    codec = "png"
    intra_only = True

    def _encode(self, frame: Frame, keyframe: bool) -> tuple[Any, bool]:
        from ._png import encode_png

        arr, order = _host_rgb(frame)
        return encode_png(arr, order, level=int(self.options.get("compression", 1))), True


# ---------------------------------------------------------------------------------------------
# probes and the registry
# ---------------------------------------------------------------------------------------------


def _probe_frame() -> np.ndarray[Any, Any]:
    w, h = PROBE_SIZE
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = np.arange(w, dtype=np.uint8)[None, :] * 4
    return img


def _require_libcuda() -> None:
    """NVENC needs the CUDA driver; a failed dlopen says so in a tenth of a millisecond."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise BackendUnavailableError(f"no CUDA driver: {exc}") from exc


def _probe_encode(cls: type[Encoder]) -> None:
    enc = cls(*PROBE_SIZE)
    try:
        if enc.encode(_probe_frame()).nbytes == 0:
            raise EncoderError("empty packet")
    finally:
        enc.close()


def _probe_with(
    cls: type[Encoder], *, requires: Callable[[], None] | None = None
) -> Callable[[], None]:
    """A probe that checks ``requires`` (a cheap precondition), then encodes one frame."""

    def probe() -> None:
        if requires is not None:
            requires()
        if not issubclass(cls, _PyAVH264):
            _probe_encode(cls)
            return
        # FFmpeg logs why a codec failed to open ("Cannot load libcuda.so.1"); during a probe
        # that line is captured into the probe's reason (logging is on only for the probe).
        logging_ = _av().logging
        previous = logging_.get_level()
        logging_.set_level(logging_.ERROR)
        try:
            with logging_.Capture() as logs:
                try:
                    _probe_encode(cls)
                except Exception as exc:
                    detail = "; ".join(str(line[2]).strip() for line in logs if line[2])
                    # The exception itself repeats the whole option dict.
                    raise EncoderError(
                        f"{cls.codec_name}: {detail}" if detail else str(exc)
                    ) from exc
        finally:
            logging_.set_level(previous)

    return probe


def _import_nvenc_device() -> None:
    import cupy  # noqa: F401
    import PyNvVideoCodec  # noqa: F401


def _probe_nvenc_device() -> None:
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 1:
        raise BackendUnavailableError("no CUDA device")
    enc = NvencDeviceEncoder(*PROBE_SIZE)
    try:
        enc.encode(cupy.asarray(_probe_frame()))
    finally:
        enc.close()


#: Every encoder backend, in the order :func:`open_encoder` tries them.
BACKENDS: dict[str, EncoderBackend] = {
    b.name: b
    for b in (
        EncoderBackend(
            "nvenc-device",
            "h264",
            NvencDeviceEncoder,
            _probe_nvenc_device,
            "NVENC from device memory (PyNvVideoCodec + CuPy)",
            prepare=_import_nvenc_device,
        ),
        EncoderBackend(
            "nvenc-host",
            "h264",
            NvencHostEncoder,
            _probe_with(NvencHostEncoder, requires=_require_libcuda),
            "NVENC via PyAV h264_nvenc",
            prepare=_av,
        ),
        EncoderBackend(
            "x264",
            "h264",
            X264Encoder,
            _probe_with(X264Encoder),
            "libx264 via PyAV, OpenCV colour conversion",
            prepare=_av,
        ),
        EncoderBackend(
            "jpeg", "jpeg", JpegEncoder, _probe_with(JpegEncoder), "JPEG via simplejpeg"
        ),
        EncoderBackend("png", "png", PngEncoder, _probe_with(PngEncoder), "lossless PNG stills"),
    )
}


def probe_encoders(*, refresh: bool = False) -> list[ProbeResult]:
    """Probe every backend (cached) and return the results in chain order."""
    return [b.probe(refresh=refresh) for b in BACKENDS.values()]


def _chain(codec: str) -> list[EncoderBackend]:
    if codec == "auto":
        return list(BACKENDS.values())
    chain = [b for b in BACKENDS.values() if b.codec == codec]
    if not chain:
        raise BackendUnavailableError(f"unknown codec {codec!r}; expected h264, jpeg, png or auto")
    return chain


class FallbackEncoder(Encoder):
    """An :class:`Encoder` over a chain of backends.

    If the one in use fails mid-stream it is closed, the next backend that probes well is
    opened at the same size, and the frame is encoded again as a keyframe, so the receiver can
    resynchronise at once (``Packet.codec`` and ``Packet.backend`` say what changed).
    """

    def __init__(
        self, chain: Sequence[EncoderBackend], width: int, height: int, **options: Any
    ) -> None:
        self._chain = list(chain)
        self._options = options
        self._inner: Encoder | None = None
        self.failures: list[tuple[str, str]] = []
        self.width, self.height = width, height
        self.frames = 0  # packets produced, whichever backend made them
        self._closed = False
        self._open_next(first=True)

    def _open_next(self, *, first: bool = False) -> None:
        reasons: dict[str, str] = {}
        while self._chain:
            b = self._chain.pop(0)
            result = b.probe()
            if not result.ok:
                reasons[b.name] = result.reason
                continue
            try:
                self._inner = b.open(self.width, self.height, **self._options)
            except FrameFormatError:
                raise  # the caller's size or options are wrong, not the backend
            except Exception as exc:
                reasons[b.name] = f"{type(exc).__name__}: {exc}"
                log.warning("encoder backend %s failed to open: %s", b.name, exc)
                continue
            if not first:
                log.warning("falling back to encoder backend %s", b.name)
            return
        self._inner = None
        raise BackendUnavailableError(
            "no encoder backend is available: "
            + "; ".join(f"{k}: {v}" for k, v in reasons.items()),
            reasons,
        )

    @property
    def inner(self) -> Encoder:
        """The backend encoder in use."""
        if self._inner is None:
            raise EncoderError("no encoder backend is open")
        return self._inner

    @property
    def backend(self) -> str:  # type: ignore[override]
        """Name of the backend in use."""
        return self.inner.backend

    @property
    def codec(self) -> str:  # type: ignore[override]
        """Codec of the backend in use."""
        return self.inner.codec

    @property
    def config(self) -> StreamConfig:
        """The stream configuration of the backend in use."""
        return self.inner.config

    @property
    def color(self) -> ColorSpec:  # type: ignore[override]
        return self.inner.color

    def request_keyframe(self) -> None:
        """Make the next packet a keyframe."""
        self.inner.request_keyframe()

    def reconfigure(
        self,
        *,
        width: int | None = None,
        height: int | None = None,
        bitrate: int | None = None,
        quality: int | None = None,
    ) -> None:
        """Reconfigure the backend in use (and remember the size for any fallback)."""
        self.inner.reconfigure(width=width, height=height, bitrate=bitrate, quality=quality)
        self.width, self.height = self.inner.width, self.inner.height
        for key, value in (("bitrate", bitrate), ("quality", quality)):
            if value is not None:
                self._options[key] = value

    def encode(self, frame: Frame | Any, *, keyframe: bool = False) -> Packet:
        """Encode with the backend in use, falling back (and forcing a keyframe) if it fails."""
        if self._closed:
            raise EncoderError("encoder is closed")
        src = as_frame(frame)
        while True:
            inner = self.inner
            try:
                packet = inner.encode(src, keyframe=keyframe)
            except EncoderError as exc:
                self.failures.append((inner.backend, str(exc)))
                log.warning("encoder backend %s failed mid-stream: %s", inner.backend, exc)
                inner.close()
                self.width, self.height = src.width, src.height
                self._open_next()
                keyframe = True
                continue
            self.width, self.height = inner.width, inner.height
            self.frames += 1
            return packet

    def _encode(self, frame: Frame, keyframe: bool) -> tuple[Any, bool]:  # pragma: no cover
        raise NotImplementedError  # encode() is overridden

    def close(self) -> None:
        """Close the backend in use; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._inner is not None:
            self._inner.close()

    def __repr__(self) -> str:
        inner = self._inner.backend if self._inner is not None else "none"
        return f"<FallbackEncoder using {inner} {self.width}x{self.height}>"


def open_encoder(
    codec: str,
    width: int,
    height: int,
    *,
    backend: str | None = None,
    fallback: bool = True,
    **options: Any,
) -> Encoder:
    """Open the best encoder for ``codec`` (``"h264"``, ``"jpeg"``, ``"png"`` or ``"auto"``).

    Backends are tried in :data:`BACKENDS` order (NVENC from device memory, NVENC from host
    memory, libx264, JPEG, PNG), keeping those whose probe succeeds.  ``backend=`` names one.
    With ``fallback=True`` (the default) the result is a :class:`FallbackEncoder` that moves
    down the chain if the backend fails mid-stream; ``"auto"`` may fall through to stills.

    ``options``: ``color`` (:class:`ColorSpec`), ``fps``, ``bitrate`` (bit/s), ``quality``
    (CRF/QP for H.264, 1-100 for JPEG), ``threads`` and ``preset`` for x264.
    """
    if backend is not None:
        if backend not in BACKENDS:
            raise BackendUnavailableError(
                f"unknown encoder backend {backend!r}; known: {', '.join(BACKENDS)}"
            )
        b = BACKENDS[backend]
        result = b.probe()
        if not result.ok:
            raise BackendUnavailableError(
                f"encoder backend {backend} is unavailable: {result.reason}",
                {backend: result.reason},
            )
        if not fallback:
            return b.open(width, height, **options)
        names = list(BACKENDS)
        chain = [b] + [
            x for x in list(BACKENDS.values())[names.index(backend) + 1 :] if x.codec == b.codec
        ]
        return FallbackEncoder(chain, width, height, **options)
    chain = _chain(codec)
    if fallback:
        return FallbackEncoder(chain, width, height, **options)
    reasons: dict[str, str] = {}
    for b in chain:
        result = b.probe()
        if result.ok:
            return b.open(width, height, **options)
        reasons[b.name] = result.reason
    raise BackendUnavailableError(f"no {codec} encoder is available", reasons)
