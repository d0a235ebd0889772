"""Binary packets: video, audio, tensor and blob bodies with a fixed little-endian layout.

The payload bytes of a received packet are never copied: ``data`` is an
:class:`isthmus.buffer.Buffer` over the memory the frame was received into.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from isthmus.buffer import Buffer

from ._errors import ErrorCode, ProtocolError
from ._header import MessageType
from ._messages import AUDIO, DATA, VIDEO

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "AUDIO_CODECS",
    "INTER_CODECS",
    "SAMPLE_FORMATS",
    "VIDEO_CODECS",
    "AudioChunk",
    "Blob",
    "Packet",
    "Tensor",
    "VideoPacket",
    "decode_packet",
    "encode_packet",
]

VIDEO_CODECS = ("raw", "h264", "hevc", "av1", "vp9", "jpeg")
# Codecs whose non-key frames depend on earlier frames: dropping one breaks decoding until
# the next keyframe.
INTER_CODECS = frozenset({"h264", "hevc", "av1", "vp9"})
AUDIO_CODECS = ("pcm", "opus", "aac")
SAMPLE_FORMATS = {"s16": 1, "s32": 2, "f32": 3, "u8": 4, "f64": 5}
_SAMPLE_NAMES = {v: k for k, v in SAMPLE_FORMATS.items()}
_VIDEO_CODE = {name: i for i, name in enumerate(VIDEO_CODECS)}
_AUDIO_CODE = {name: i for i, name in enumerate(AUDIO_CODECS)}

_VIDEO = struct.Struct("<BBHIIIq")  # codec, vflags, reserved, width, height, config_len, pts
_AUDIO = struct.Struct("<IHBBq")  # rate, channels, sample format, codec, pts
_TENSOR = struct.Struct("<BBHI")  # ndim, dtype_len, reserved, data_offset
_BLOB = struct.Struct("<HH")  # mime_len, name_len
MAX_NDIM = 32
# numpy's limit on an array's nominal size (its intp), even when zero strides need no memory.
_MAX_ARRAY_BYTES = 2**63 - 1
TENSOR_ALIGN = 64
# numpy dtype strings a tensor may carry: plain numbers only (never objects).
_DTYPE = re.compile(r"^[<>|=]?(?:[iu][1248]|f[248]|f16|c(?:8|16)|b1|\?)$")


def _as_bytes_view(obj: Any) -> memoryview:
    mv = obj if isinstance(obj, memoryview) else memoryview(obj)
    if mv.ndim != 1 or mv.format not in ("B", "b", "c") or mv.itemsize != 1:
        mv = mv.cast("B") if mv.c_contiguous else memoryview(mv.tobytes())
    return mv


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoPacket:
    """One coded picture. ``config`` carries the codec configuration (SPS/PPS, avcC), sent
    inline with keyframes; ``pts`` is in nanoseconds."""

    TYPE: ClassVar[MessageType] = MessageType.VIDEO
    STREAM: ClassVar[int] = VIDEO
    data: Any
    codec: str = "h264"
    width: int = 0
    height: int = 0
    keyframe: bool = False
    pts: int = 0
    config: Any = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioChunk:
    """A chunk of audio: interleaved (or ``planar``) samples, or coded audio (``codec``)."""

    TYPE: ClassVar[MessageType] = MessageType.AUDIO
    STREAM: ClassVar[int] = AUDIO
    data: Any
    rate: int = 48000
    channels: int = 2
    sample_format: str = "s16"
    planar: bool = False
    codec: str = "pcm"
    pts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Tensor:
    """An n-dimensional array: ``dtype`` is a numpy dtype string, ``strides`` in bytes
    (``None``: C-contiguous). :meth:`to_numpy` views the received bytes without copying."""

    TYPE: ClassVar[MessageType] = MessageType.TENSOR
    STREAM: ClassVar[int] = DATA
    data: Any
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None

    @classmethod
    def from_array(cls, array: Any) -> Tensor:
        """A tensor over a numpy (or buffer-protocol) array's memory; copies only when the
        array is neither C- nor Fortran-contiguous."""
        import numpy as np

        arr = np.asarray(array)
        if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
            arr = np.ascontiguousarray(arr)
        flat = arr.ravel(order="K")
        return cls(
            data=flat.data.cast("B") if flat.size else b"",
            dtype=arr.dtype.str,
            shape=tuple(int(n) for n in arr.shape),
            # numpy calls a one-element (or empty) reversed view contiguous, with a negative
            # stride; a dimension of length 0 or 1 never steps, so 0 is as good.
            strides=tuple(
                int(s) if n > 1 and arr.size else 0
                for n, s in zip(arr.shape, arr.strides, strict=True)
            ),
        )

    def to_numpy(self) -> np.ndarray[Any, Any]:
        """A numpy array over ``data`` (no copy; read-only when the data is)."""
        import numpy as np

        dtype = np.dtype(self.dtype)
        return np.ndarray(
            self.shape, dtype=dtype, buffer=memoryview(self.data), strides=self.strides
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Blob:
    """Opaque bytes with a media type and an optional name."""

    TYPE: ClassVar[MessageType] = MessageType.BLOB
    STREAM: ClassVar[int] = DATA
    data: Any
    mime: str = "application/octet-stream"
    name: str = ""


Packet = VideoPacket | AudioChunk | Tensor | Blob
PACKET_TYPES: tuple[type[Any], ...] = (VideoPacket, AudioChunk, Tensor, Blob)


def _itemsize(dtype: str) -> int:
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return int(digits) if digits else 1


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _extent(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> int:
    if any(n == 0 for n in shape):
        return 0
    return sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + itemsize


def encode_packet(packet: Packet) -> tuple[bytes, memoryview]:
    """The fixed body prefix (fields, plus inline config or names) and the payload view."""
    if isinstance(packet, VideoPacket):
        config = _as_bytes_view(packet.config)
        try:
            codec = _VIDEO_CODE[packet.codec]
        except KeyError:
            raise ValueError(
                f"unknown video codec {packet.codec!r}; known: {VIDEO_CODECS}"
            ) from None
        prefix = _VIDEO.pack(
            codec,
            1 if packet.keyframe else 0,
            0,
            packet.width,
            packet.height,
            config.nbytes,
            packet.pts,
        )
        if config.nbytes:
            prefix += config
        return prefix, _as_bytes_view(packet.data)
    if isinstance(packet, AudioChunk):
        try:
            fmt = SAMPLE_FORMATS[packet.sample_format] | (128 if packet.planar else 0)
            codec = _AUDIO_CODE[packet.codec]
        except KeyError as exc:
            raise ValueError(f"unknown audio sample format or codec {exc}") from None
        prefix = _AUDIO.pack(packet.rate, packet.channels, fmt, codec, packet.pts)
        return prefix, _as_bytes_view(packet.data)
    if isinstance(packet, Tensor):
        if not _DTYPE.match(packet.dtype):
            raise ValueError(f"tensor dtype {packet.dtype!r} is not a plain numeric dtype")
        shape = tuple(packet.shape)
        if len(shape) > MAX_NDIM:
            raise ValueError(f"tensor has {len(shape)} dimensions; at most {MAX_NDIM}")
        itemsize = _itemsize(packet.dtype)
        strides = _c_strides(shape, itemsize) if packet.strides is None else tuple(packet.strides)
        data = _as_bytes_view(packet.data)
        if len(strides) != len(shape) or any(s < 0 for s in strides):
            raise ValueError("tensor strides must be non-negative, one per dimension")
        if math.prod(shape) * itemsize > _MAX_ARRAY_BYTES:
            raise ValueError("tensor shape is larger than any array can be")
        if _extent(shape, strides, itemsize) > data.nbytes:
            raise ValueError("tensor shape and strides reach past its data")
        dt = packet.dtype.encode("ascii")
        head = _TENSOR.size + (len(dt) + 7) // 8 * 8 + 16 * len(shape)
        data_offset = (head + TENSOR_ALIGN - 1) // TENSOR_ALIGN * TENSOR_ALIGN
        fields = bytearray(data_offset)
        _TENSOR.pack_into(fields, 0, len(shape), len(dt), 0, data_offset)
        fields[8 : 8 + len(dt)] = dt
        pos = 8 + (len(dt) + 7) // 8 * 8
        struct.pack_into(f"<{len(shape)}Q{len(shape)}q", fields, pos, *shape, *strides)
        return bytes(fields), data
    if isinstance(packet, Blob):
        mime = packet.mime.encode()
        name = packet.name.encode()
        if len(mime) > 0xFFFF or len(name) > 0xFFFF:
            raise ValueError("blob mime type and name are limited to 65535 bytes each")
        return _BLOB.pack(len(mime), len(name)) + mime + name, _as_bytes_view(packet.data)
    raise TypeError(f"not a packet: {type(packet).__name__}")


def _truncated(what: str, field_at: int) -> ProtocolError:
    return ProtocolError(ErrorCode.TRUNCATED, f"{what} runs past the end of the packet", field_at)


def _invalid(what: str, at: int) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PAYLOAD, what, at)


def decode_packet(type_: int, body: memoryview, base: int) -> Packet:
    """Decode a binary body. ``body`` is a byte view of the message, which the returned
    buffers keep alive; ``base`` is the body's stream offset (for error offsets)."""
    n = body.nbytes
    if type_ == MessageType.VIDEO:
        if n < _VIDEO.size:
            raise _truncated("video header", base)
        codec, vflags, reserved, width, height, config_len, pts = _VIDEO.unpack_from(body)
        if codec >= len(VIDEO_CODECS):
            raise _invalid(f"unknown video codec {codec}", base)
        if vflags & ~1:
            raise _invalid(f"reserved video flag bits {vflags:#x}", base + 1)
        if reserved:
            raise _invalid("reserved video bytes are not zero", base + 2)
        end = _VIDEO.size + config_len
        if end > n:
            raise _truncated("video config", base + 12)
        return VideoPacket(
            data=Buffer(body[end:]),
            codec=VIDEO_CODECS[codec],
            width=width,
            height=height,
            keyframe=bool(vflags & 1),
            pts=pts,
            config=Buffer(body[_VIDEO.size : end]),
        )
    if type_ == MessageType.AUDIO:
        if n < _AUDIO.size:
            raise _truncated("audio header", base)
        rate, channels, fmt, codec, pts = _AUDIO.unpack_from(body)
        sample = _SAMPLE_NAMES.get(fmt & 0x7F)
        if sample is None:
            raise _invalid(f"unknown sample format {fmt}", base + 6)
        if codec >= len(AUDIO_CODECS):
            raise _invalid(f"unknown audio codec {codec}", base + 7)
        return AudioChunk(
            data=Buffer(body[_AUDIO.size :]),
            rate=rate,
            channels=channels,
            sample_format=sample,
            planar=bool(fmt & 128),
            codec=AUDIO_CODECS[codec],
            pts=pts,
        )
    if type_ == MessageType.TENSOR:
        if n < _TENSOR.size:
            raise _truncated("tensor header", base)
        ndim, dtype_len, reserved, data_offset = _TENSOR.unpack_from(body)
        if ndim > MAX_NDIM:
            raise _invalid(f"tensor has {ndim} dimensions; at most {MAX_NDIM}", base)
        if reserved:
            raise _invalid("reserved tensor bytes are not zero", base + 2)
        pos = 8 + (dtype_len + 7) // 8 * 8
        if 8 + dtype_len > n:
            raise _truncated("tensor dtype", base + 1)
        try:
            dtype = bytes(body[8 : 8 + dtype_len]).decode("ascii")
        except UnicodeDecodeError:
            dtype = "?bad"
        if not _DTYPE.match(dtype):
            raise _invalid(f"tensor dtype {dtype!r} is not a plain numeric dtype", base + 8)
        if pos + 16 * ndim > n:
            raise _truncated("tensor shape", base)
        dims = struct.unpack_from(f"<{ndim}Q{ndim}q", body, pos)
        shape, strides = tuple(dims[:ndim]), tuple(dims[ndim:])
        for i, s in enumerate(strides):
            if s < 0:
                raise _invalid("negative tensor stride", base + pos + 8 * ndim + 8 * i)
        if data_offset < pos + 16 * ndim:
            raise _invalid("tensor data overlaps its header", base + 4)
        if data_offset > n:
            raise _truncated("tensor data", base + 4)
        if math.prod(shape) * _itemsize(dtype) > _MAX_ARRAY_BYTES:
            raise _invalid("tensor shape is larger than any array can be", base + pos)
        if _extent(shape, strides, _itemsize(dtype)) > n - data_offset:
            raise _truncated("tensor shape and strides", base + pos)
        return Tensor(data=Buffer(body[data_offset:]), dtype=dtype, shape=shape, strides=strides)
    if type_ == MessageType.BLOB:
        if n < _BLOB.size:
            raise _truncated("blob header", base)
        mime_len, name_len = _BLOB.unpack_from(body)
        if 4 + mime_len > n:
            raise _truncated("blob media type", base)
        if 4 + mime_len + name_len > n:
            raise _truncated("blob name", base + 2)
        try:
            mime = bytes(body[4 : 4 + mime_len]).decode()
        except UnicodeDecodeError as exc:
            raise _invalid(f"blob media type is not UTF-8: {exc}", base + 4) from None
        try:
            name = bytes(body[4 + mime_len : 4 + mime_len + name_len]).decode()
        except UnicodeDecodeError as exc:
            raise _invalid(f"blob name is not UTF-8: {exc}", base + 4 + mime_len) from None
        return Blob(data=Buffer(body[4 + mime_len + name_len :]), mime=mime, name=name)
    raise _invalid(f"type {type_} is not a binary packet", base)
