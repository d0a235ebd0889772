"""PNG stills: OpenCV when present, else a small pure-Python (zlib + numpy) codec.

The pure writer uses the Up filter only (fast with numpy, and good on rendered scenes); the
pure reader understands all five filters, so it can read PNGs from other writers too (Sub,
Average and Paeth rows are undone with a Python loop per row, which is slow but correct).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from ._convert import _cv2 as _opencv
from ._convert import _pure
from ._errors import CorruptPacketError, FrameFormatError

__all__ = ["decode_png", "encode_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (gray, RGB, RGBA)
_CHANNELS = {0: 1, 2: 3, 6: 4}


def _cv2() -> Any | None:
    """OpenCV, unless it is missing or ISTHMUS_PUREPYTHON=1 asks for the pure codec."""
    return None if _pure() else _opencv()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(arr: np.ndarray[Any, Any], order: str = "rgb", *, level: int = 1) -> bytes:
    """PNG bytes of an (H, W), (H, W, 3) or (H, W, 4) uint8 array.

    ``order`` is the channel order: rgb, bgr, rgba, bgra or gray.
    """
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise FrameFormatError(f"PNG takes uint8 (H, W[, C]) arrays, got {arr.dtype} {arr.shape}")
    cv2 = _cv2()
    if cv2 is not None:
        img = arr
        if order in ("rgb", "rgba"):
            img = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if order == "rgb" else cv2.COLOR_RGBA2BGRA)
        ok, data = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, level])
        if not ok:
            raise FrameFormatError("OpenCV could not encode the PNG")
        return bytes(data)
    img = arr if arr.ndim == 3 else arr[:, :, None]
    if order in ("bgr", "bgra"):
        img = img[:, :, [2, 1, 0, 3][: img.shape[2]]]
    h, w, c = img.shape
    if c not in _COLOR_TYPES:
        raise FrameFormatError(f"PNG takes 1, 3 or 4 channels, got {c}")
    rows = np.ascontiguousarray(img).reshape(h, w * c)
    filtered = np.empty((h, w * c + 1), np.uint8)
    filtered[:, 0] = 2  # Up: each row minus the row above
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:], dtype=np.uint8, casting="unsafe")
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[c], 0, 0, 0)
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)),
            _chunk(b"IEND", b""),
        )
    )


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, h: int, stride: int, bpp: int) -> np.ndarray[Any, Any]:
    data = np.frombuffer(raw, np.uint8)
    if data.size != h * (stride + 1):
        raise CorruptPacketError(
            f"PNG image data is {data.size} bytes, expected {h * (stride + 1)}"
        )
    rows = data.reshape(h, stride + 1)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(h):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 2:
            cur = (line + prev).astype(np.uint8)
        elif kind == 1:
            # Sub is a running sum per channel; uint8 arithmetic wraps like PNG's mod 256.
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind in (3, 4):
            cur_l = [0] * stride
            lp = prev.tolist()
            ll = line.tolist()
            for x in range(stride):
                a = cur_l[x - bpp] if x >= bpp else 0
                b = lp[x]
                if kind == 3:
                    cur_l[x] = (ll[x] + ((a + b) >> 1)) & 0xFF
                else:
                    c = lp[x - bpp] if x >= bpp else 0
                    cur_l[x] = (ll[x] + _paeth(a, b, c)) & 0xFF
            cur = np.array(cur_l, np.uint8)
        else:
            raise CorruptPacketError(f"PNG row {y} has unknown filter type {kind}")
        out[y] = cur
        prev = cur
    return out


def decode_png(data: bytes | bytearray | memoryview) -> np.ndarray[Any, Any]:
    """An (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) gray array from 8-bit PNG bytes."""
    buf = bytes(data)
    cv2 = _cv2()
    if cv2 is not None:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise CorruptPacketError("not a decodable PNG")
        if img.ndim == 3:
            code = cv2.COLOR_BGR2RGB if img.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
            img = cv2.cvtColor(img, code)
        return img  # type: ignore[no-any-return]
    if not buf.startswith(_SIGNATURE):
        raise CorruptPacketError("not a PNG: bad signature")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(buf):
        (length,) = struct.unpack_from(">I", buf, pos)
        kind = buf[pos + 4 : pos + 8]
        body = buf[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(buf):
            raise CorruptPacketError("truncated PNG chunk")
        (crc,) = struct.unpack_from(">I", buf, pos + 8 + length)
        if zlib.crc32(kind + body) != crc:
            raise CorruptPacketError(f"PNG chunk {kind!r} fails its CRC")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise CorruptPacketError("PNG without IHDR")
    w, h, depth, ctype, _, _, interlace = header
    if depth != 8 or ctype not in _CHANNELS or interlace:
        raise FrameFormatError(
            "only 8-bit non-interlaced gray/RGB/RGBA PNG is supported"
            f" (depth {depth}, type {ctype})"
        )
    c = _CHANNELS[ctype]
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise CorruptPacketError(f"PNG image data does not inflate: {exc}") from exc
    img = _unfilter(raw, h, w * c, c).reshape(h, w, c)
    return img[:, :, 0] if c == 1 else img
