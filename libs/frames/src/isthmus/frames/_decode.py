"""The decode seam: H.264 (PyAV with slice threads; NVDEC when present), JPEG and PNG.

A corrupt packet raises :class:`CorruptPacketError`; the decoder then drops packets until the
next keyframe (``waiting_for_keyframe``), and the application asks the sender for one (see
:class:`~isthmus.frames.KeyframeRequester`).
"""

from __future__ import annotations

import abc
import logging
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ._errors import BackendUnavailableError, CorruptPacketError, DecoderError, FramesError
from ._h264 import is_keyframe
from ._types import ColorSpec, Frame, Packet, PixelFormat, StreamConfig

__all__ = ["DECODER_BACKENDS", "Decoder", "open_decoder", "probe_decoders"]

log = logging.getLogger(__name__)

Output = str  # "rgb" or "yuv"


def _payload(packet: Packet | bytes | bytearray | memoryview) -> tuple[memoryview, Packet | None]:
    if isinstance(packet, Packet):
        return memoryview(packet.payload).cast("B"), packet
    return memoryview(packet).cast("B"), None


class Decoder(abc.ABC):
    """Packets in, frames out: ``decode(packet) -> list[Frame]`` (one frame per packet here).

    ``output="rgb"`` (default) returns RGB frames; ``"yuv"`` returns the decoder's own I420
    planes without converting (for a renderer that converts in a shader).
    """

    backend: ClassVar[str]
    codec: ClassVar[str]

    def __init__(self, *, output: Output = "rgb") -> None:
        if output not in ("rgb", "yuv"):
            raise ValueError(f"output must be 'rgb' or 'yuv', got {output!r}")
        self.output = output
        self.waiting_for_keyframe = False
        self.config: StreamConfig | None = None
        self.frames = 0
        self.dropped = 0
        self._closed = False

    def decode(self, packet: Packet | bytes | bytearray | memoryview) -> list[Frame]:
        """Decode one packet; ``[]`` for a packet dropped while waiting for a keyframe."""
        if self._closed:
            raise DecoderError(f"{self.backend} decoder is closed")
        data, pkt = _payload(packet)
        if pkt is not None and pkt.config is not None:
            self.config = pkt.config
        key = pkt.keyframe if pkt is not None else self._is_key(data)
        if self.waiting_for_keyframe:
            if not key:
                self.dropped += 1
                return []
            self.waiting_for_keyframe = False
        try:
            frames = self._decode(data, pkt)
        except CorruptPacketError:
            self.waiting_for_keyframe = not key or self.codec == "h264"
            raise
        except FramesError:
            raise
        except Exception as exc:
            self.waiting_for_keyframe = True
            raise CorruptPacketError(f"{self.backend} could not decode a packet: {exc}") from exc
        self.frames += len(frames)
        return frames

    def _is_key(self, data: memoryview) -> bool:
        return True

    @abc.abstractmethod
    def _decode(self, data: memoryview, packet: Packet | None) -> list[Frame]:
        """Frames of one packet."""

    def close(self) -> None:
        """Release the decoder; idempotent."""
        self._closed = True

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PyAVH264Decoder(Decoder):
    """FFmpeg's H.264 decoder through PyAV, slice-threaded (adds no frames of delay)."""

    backend = "pyav"
    codec = "h264"

    def __init__(self, *, output: Output = "rgb", threads: int = 0) -> None:
        super().__init__(output=output)
        from ._encode import _av

        av = _av()
        self._av = av
        self._ctx = av.CodecContext.create("h264", "r")
        self._ctx.thread_type = "SLICE"
        self._ctx.thread_count = threads
        # One reformatter for the stream: VideoFrame.reformat() would build a new SwsContext
        # (and its tables) for every frame.
        self._rgb = av.video.reformatter.VideoReformatter()
        self._sws_threads = min(4, len(os.sched_getaffinity(0)))

    def _is_key(self, data: memoryview) -> bool:
        return is_keyframe(data)

    def _decode(self, data: memoryview, packet: Packet | None) -> list[Frame]:
        av = self._av
        try:
            out = self._ctx.decode(av.Packet(data))
        except av.error.InvalidDataError as exc:
            raise CorruptPacketError(f"corrupt H.264 packet: {exc}") from exc
        frames = []
        pts = packet.pts if packet is not None else self.frames
        for vf in out:
            if vf.is_corrupt:
                # FFmpeg concealed damage; showing it would smear until the next keyframe.
                raise CorruptPacketError("corrupt H.264 packet (the decoder had to conceal errors)")
            frames.append(self._frame(vf, pts))
        return frames

    def _color(self, vf: Any) -> ColorSpec:
        matrix = "bt601" if vf.colorspace in (5, 6) else "bt709"
        rng = "full" if vf.color_range == 2 else "limited"
        return ColorSpec(matrix, rng, "444" if vf.format.name.startswith("yuv444") else "420")  # type: ignore[arg-type]

    def _frame(self, vf: Any, pts: int) -> Frame:
        color = self._color(vf)
        w, h = vf.width, vf.height
        if self.output == "yuv" and vf.format.name in ("yuv420p", "yuvj420p"):
            arr = np.empty((h * 3 // 2, w), np.uint8)
            y = np.frombuffer(vf.planes[0], np.uint8).reshape(h, vf.planes[0].line_size)[:, :w]
            arr[:h] = y
            for i, plane in enumerate(vf.planes[1:3]):
                p = np.frombuffer(plane, np.uint8).reshape(h // 2, plane.line_size)[:, : w // 2]
                start = h * w + i * (h // 2) * (w // 2)
                arr.reshape(-1)[start : start + (h // 2) * (w // 2)] = p.reshape(-1)
            return Frame(arr, PixelFormat.I420, w, h, pts, time.monotonic_ns(), color)
        # swscale's YUV->RGB path is SIMD and honours the stream's matrix and range.
        rgb = self._rgb.reformat(
            vf,
            format="rgb24",
            src_colorspace="itu709" if color.matrix == "bt709" else "itu601",
            dst_colorspace="itu709" if color.matrix == "bt709" else "itu601",
            src_color_range="JPEG" if color.range == "full" else "MPEG",
            dst_color_range="JPEG",
            # One slice per core: with the context cached this halves the conversion
            # (1080p: 0.99 -> 0.55 ms on 2 cores).
            threads=self._sws_threads,
        )
        plane = rgb.planes[0]
        # A view over the frame's own plane (rows may be padded): no copy.
        arr = (
            np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, : w * 3].reshape(h, w, 3)
        )
        return Frame(arr, PixelFormat.RGB, w, h, pts, time.monotonic_ns(), color)

    def close(self) -> None:
        """Drop the codec context."""
        super().close()
        self._ctx = None


class NvdecDecoder(Decoder):
    """NVDEC through PyNvVideoCodec (needs an NVIDIA GPU); frames stay on the device as NV12."""

    backend = "nvdec"
    codec = "h264"

    def __init__(self, *, output: Output = "yuv") -> None:
        super().__init__(output=output)
        import PyNvVideoCodec as nvc

        self._nvc = nvc
        self._dec = nvc.CreateDecoder(gpuid=0, codec=nvc.cudaVideoCodec.H264, usedevicememory=True)

    def _is_key(self, data: memoryview) -> bool:
        return is_keyframe(data)

    def _decode(self, data: memoryview, packet: Packet | None) -> list[Frame]:
        import cupy

        pkt = self._nvc.PacketData()
        buf = np.frombuffer(data, np.uint8)
        pkt.bsl_data = buf.ctypes.data
        pkt.bsl = buf.size
        frames = []
        for df in self._dec.Decode(pkt):
            arr = cupy.from_dlpack(df)
            h = arr.shape[0] * 2 // 3
            frames.append(
                Frame(
                    arr,
                    PixelFormat.NV12,
                    arr.shape[1],
                    h,
                    packet.pts if packet else 0,
                    on_device=True,
                )
            )
        return frames


class JpegDecoder(Decoder):
    """JPEG through simplejpeg; a damaged image raises :class:`CorruptPacketError`."""

    backend = "jpeg"
    codec = "jpeg"

    def __init__(self, *, output: Output = "rgb") -> None:
        super().__init__(output=output)
        import simplejpeg

        self._sj = simplejpeg

    def _decode(self, data: memoryview, packet: Packet | None) -> list[Frame]:
        try:
            arr = self._sj.decode_jpeg(
                bytes(data), colorspace="RGB", fastdct=True, fastupsample=True
            )
        except ValueError as exc:
            raise CorruptPacketError(f"corrupt JPEG: {exc}") from exc
        h, w = arr.shape[:2]
        return [Frame(arr, PixelFormat.RGB, w, h, packet.pts if packet else self.frames)]


class PngDecoder(Decoder):
    """PNG through OpenCV, or the pure-Python reader."""

    backend = "png"
    codec = "png"

    def _decode(self, data: memoryview, packet: Packet | None) -> list[Frame]:
        from ._png import decode_png

        arr = decode_png(data)
        fmt = {2: PixelFormat.GRAY, 3: PixelFormat.RGB}.get(arr.ndim, PixelFormat.RGB)
        if arr.ndim == 3 and arr.shape[2] == 4:
            fmt = PixelFormat.RGBA
        h, w = arr.shape[:2]
        return [Frame(arr, fmt, w, h, packet.pts if packet else self.frames)]


class AutoDecoder(Decoder):
    """Dispatches on ``Packet.codec``, so a stream that fell back from H.264 to JPEG still plays."""

    backend = "auto"
    codec = "auto"

    def __init__(self, *, output: Output = "rgb") -> None:
        super().__init__(output=output)
        self._decoders: dict[str, Decoder] = {}

    def decode(self, packet: Packet | bytes | bytearray | memoryview) -> list[Frame]:
        """Decode with the decoder for this packet's codec (opened on first use)."""
        if not isinstance(packet, Packet):
            raise DecoderError("the auto decoder needs Packet objects (it reads Packet.codec)")
        dec = self._decoders.get(packet.codec)
        if dec is None:
            dec = self._decoders[packet.codec] = open_decoder(packet.codec, output=self.output)
        try:
            return dec.decode(packet)
        finally:
            self.waiting_for_keyframe = dec.waiting_for_keyframe

    def _decode(self, data: memoryview, packet: Packet | None) -> list[Frame]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        """Close every decoder opened so far."""
        super().close()
        for dec in self._decoders.values():
            dec.close()
        self._decoders.clear()


def _probe_pyav() -> None:
    from ._encode import _av

    _av().CodecContext.create("h264", "r")


def _probe_nvdec() -> None:
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 1:
        raise BackendUnavailableError("no CUDA device")
    NvdecDecoder().close()


def _probe_jpeg() -> None:
    import simplejpeg

    simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8)))


#: Decoder backends per codec, best first: (name, factory, probe).
DECODER_BACKENDS: dict[str, list[tuple[str, Callable[..., Decoder], Callable[[], None]]]] = {
    "h264": [("nvdec", NvdecDecoder, _probe_nvdec), ("pyav", PyAVH264Decoder, _probe_pyav)],
    "jpeg": [("jpeg", JpegDecoder, _probe_jpeg)],
    "png": [("png", PngDecoder, lambda: None)],
}
_PROBED: dict[str, str] = {}  # backend -> "" if fine, else why not


def _probe(name: str, probe: Callable[[], None]) -> str:
    if name not in _PROBED:
        try:
            probe()
        except Exception as exc:
            _PROBED[name] = f"{type(exc).__name__}: {exc}"
            log.info("decoder backend %s skipped: %s", name, _PROBED[name])
        else:
            _PROBED[name] = ""
    return _PROBED[name]


def probe_decoders() -> dict[str, str]:
    """Probe every decoder backend (cached): name -> "" when usable, else the reason."""
    for backends in DECODER_BACKENDS.values():
        for name, _, probe in backends:
            _probe(name, probe)
    return dict(_PROBED)


def open_decoder(
    codec: str, *, backend: str | None = None, output: Output = "rgb", **options: Any
) -> Decoder:
    """Open the best decoder for ``codec`` (``"h264"``, ``"jpeg"``, ``"png"``, or ``"auto"``,
    which dispatches on each packet's codec).  NVDEC is preferred where it probes well; its
    frames stay on the GPU, so pass ``backend="pyav"`` for host RGB frames regardless."""
    if codec == "auto":
        return AutoDecoder(output=output)
    if codec not in DECODER_BACKENDS:
        raise BackendUnavailableError(f"unknown codec {codec!r}; expected h264, jpeg, png or auto")
    reasons: dict[str, str] = {}
    for name, factory, probe in DECODER_BACKENDS[codec]:
        if backend is not None and name != backend:
            continue
        reason = _probe(name, probe)
        if reason:
            reasons[name] = reason
            continue
        return factory(output=output, **options)
    if backend is not None and not reasons:
        raise BackendUnavailableError(f"unknown {codec} decoder backend {backend!r}")
    raise BackendUnavailableError(f"no {codec} decoder is available", reasons)
