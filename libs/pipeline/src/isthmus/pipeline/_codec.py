"""How items cross a ring: a 64-byte header, then the payload written in place.

Layout of a record (little-endian):

* ``0..24``: kind (u8), port length (u8), flags (u16), ``a`` (u32), ``b`` (u64), ``pts`` (f64);
* ``24..48``: kind-specific fields (below);
* ``48..52``: a sequence number (u32) that the worker uses to match answers to inputs;
* ``52..64``: the port name (UTF-8, at most 12 bytes; longer names go the pickle way);
* ``64..``: the payload, 64-byte aligned.

Kinds: ``AUDIO`` (a = sample rate, b = frames; 24: channels u16, format u8), ``VIDEO``
(24: height, width, components as u32, format as 12 ASCII bytes), ``ARRAY`` (24: dtype as 8
ASCII bytes, ndim u8, then up to 3 u32 dims; larger ndim pickles), ``BYTES``, ``PICKLE``
(protocol 5; also control messages and everything else) and the worker's own messages.
Audio, video, arrays and bytes are decoded as views of the ring: no copy on either side.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import numpy as np

from ._media import FORMAT_DTYPES, AudioChunk, VideoFrame

__all__ = [
    "AUDIO",
    "HEADER",
    "decode",
    "encode_into",
    "encoded_size",
]

HEADER = 64
AUDIO, VIDEO, ARRAY, BYTES, PICKLE = 1, 2, 3, 4, 5
# Worker messages (child <-> parent), payload pickled.
READY, DONE, ERROR, HEARTBEAT, CONTROL, FAILED = 10, 11, 12, 13, 14, 15

_HEAD = struct.Struct("<BBHIQd")
_SEQ = struct.Struct("<I")
_AUDIO = struct.Struct("<HB")
_VIDEO = struct.Struct("<III12s")
_ARRAY = struct.Struct("<8sB3I")
_FORMATS = list(FORMAT_DTYPES)
_FORMAT_CODE = {f: i for i, f in enumerate(_FORMATS)}


def _port(port: str) -> bytes | None:
    b = port.encode()
    return b if len(b) <= 12 else None


def _kind(item: Any, port: str) -> int:
    if _port(port) is None:
        return PICKLE
    t = type(item)
    if t is AudioChunk and item.samples.flags.c_contiguous and item.format in _FORMAT_CODE:
        return AUDIO
    if (
        t is VideoFrame
        and item.data.flags.c_contiguous
        and item.data.ndim in (2, 3)
        and len(item.format) <= 12
    ):
        return VIDEO
    if (
        t is np.ndarray
        and item.flags.c_contiguous
        and item.ndim <= 3
        and item.dtype.hasobject is False
    ):
        return ARRAY
    if t in (bytes, bytearray, memoryview):
        return BYTES
    return PICKLE


def encoded_size(item: Any, port: str = "") -> int:
    """Bytes :func:`encode_into` needs for ``item``."""
    k = _kind(item, port)
    if k == AUDIO:
        return HEADER + int(item.samples.nbytes)
    if k == VIDEO:
        return HEADER + int(item.data.nbytes)
    if k == ARRAY:
        return HEADER + int(item.nbytes)
    if k == BYTES:
        return HEADER + memoryview(item).nbytes
    return HEADER + len(pickle.dumps((port, item), protocol=5))


def _header(
    buf: memoryview, kind: int, port: str, a: int = 0, b: int = 0, pts: float = 0.0, flags: int = 0
) -> None:
    name = port.encode()
    _HEAD.pack_into(buf, 0, kind, len(name), flags, a, b, pts)
    buf[52 : 52 + len(name)] = name


def encode_into(buf: memoryview, item: Any, port: str = "", *, pickled: bytes | None = None) -> int:
    """Write ``item`` (from output/input ``port``) into ``buf``; returns the bytes used.

    Arrays are copied once, straight into ``buf`` (``np.copyto``), never element by element.
    """
    k = _kind(item, port)
    if k == AUDIO:
        s = item.samples
        _header(buf, AUDIO, port, item.sample_rate, s.shape[0], item.pts)
        _AUDIO.pack_into(buf, 24, s.shape[1], _FORMAT_CODE[item.format])
        dst = np.frombuffer(buf, s.dtype, s.size, HEADER).reshape(s.shape)
        np.copyto(dst, s)
        return HEADER + int(s.nbytes)
    if k == VIDEO:
        d = item.data
        h, w = d.shape[:2]
        c = d.shape[2] if d.ndim == 3 else 0
        _header(buf, VIDEO, port, flags=d.dtype.itemsize, pts=item.pts)
        _VIDEO.pack_into(buf, 24, h, w, c, item.format.encode())
        np.copyto(np.frombuffer(buf, d.dtype, d.size, HEADER).reshape(d.shape), d)
        return HEADER + int(d.nbytes)
    if k == ARRAY:
        dims = list(item.shape) + [0] * (3 - item.ndim)
        _header(buf, ARRAY, port)
        _ARRAY.pack_into(buf, 24, item.dtype.str.encode(), item.ndim, *dims)
        np.copyto(np.frombuffer(buf, item.dtype, item.size, HEADER).reshape(item.shape), item)
        return HEADER + int(item.nbytes)
    if k == BYTES:
        m = memoryview(item).cast("B")
        _header(buf, BYTES, port, b=m.nbytes)
        buf[HEADER : HEADER + m.nbytes] = m
        return HEADER + m.nbytes
    data = pickled if pickled is not None else pickle.dumps((port, item), protocol=5)
    _header(buf, PICKLE, "", b=len(data))
    buf[HEADER : HEADER + len(data)] = data
    return HEADER + len(data)


def encode_message(buf: memoryview, kind: int, payload: Any, a: int = 0) -> int:
    """A worker message: ``kind`` with a pickled payload and a small integer ``a``."""
    data = pickle.dumps(payload, protocol=5)
    _header(buf, kind, "", b=len(data))
    set_seq(buf, a)
    buf[HEADER : HEADER + len(data)] = data
    return HEADER + len(data)


def set_seq(buf: Any, seq: int) -> None:
    """Stamp a record with the worker's sequence number."""
    _SEQ.pack_into(buf, 48, seq)


def message_size(payload: Any) -> tuple[int, bytes]:
    """Size and pickled bytes of a worker message."""
    data = pickle.dumps(payload, protocol=5)
    return HEADER + len(data), data


def peek(buf: Any) -> tuple[int, int]:
    """``(kind, sequence number)`` of a record."""
    kind = _HEAD.unpack_from(buf, 0)[0]
    return int(kind), int(_SEQ.unpack_from(buf, 48)[0])


def decode(buf: Any, *, copy: bool = False) -> tuple[str, Any]:
    """``(port, item)`` from a record; arrays view ``buf`` unless ``copy``."""
    kind, plen, flags, a, b, pts = _HEAD.unpack_from(buf, 0)
    mv = memoryview(buf)
    port = bytes(mv[52 : 52 + plen]).decode() if plen else ""
    if kind == AUDIO:
        ch, code = _AUDIO.unpack_from(buf, 24)
        dt = FORMAT_DTYPES[_FORMATS[code]]
        x = np.frombuffer(mv, dt, b * ch, HEADER).reshape(b, ch)
        return port, AudioChunk(x.copy() if copy else x, a, pts)
    if kind == VIDEO:
        h, w, c, fmt = _VIDEO.unpack_from(buf, 24)
        shape = (h, w, c) if c else (h, w)
        dt = np.dtype(f"u{flags}") if flags in (1, 2, 4) else np.dtype(np.uint8)
        x = np.frombuffer(mv, dt, int(np.prod(shape)), HEADER).reshape(shape)
        return port, VideoFrame(x.copy() if copy else x, fmt.rstrip(b"\0").decode(), pts)
    if kind == ARRAY:
        dts, ndim, d0, d1, d2 = _ARRAY.unpack_from(buf, 24)
        shape = (d0, d1, d2)[:ndim]
        dt = np.dtype(dts.rstrip(b"\0").decode())
        x = np.frombuffer(mv, dt, int(np.prod(shape)) if ndim else 1, HEADER).reshape(shape)
        return port, x.copy() if copy else x
    if kind == BYTES:
        v = mv[HEADER : HEADER + b]
        return port, bytes(v) if copy else v
    if kind == PICKLE:
        p, item = pickle.loads(mv[HEADER : HEADER + b])
        return str(p), item
    return "", pickle.loads(mv[HEADER : HEADER + b])
