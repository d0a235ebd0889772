"""Just enough H.264 Annex B parsing to tell keyframes and parameter sets apart."""

from __future__ import annotations

__all__ = ["NAL_IDR", "NAL_PPS", "NAL_SPS", "is_keyframe", "nal_types"]

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8


def nal_types(data: bytes | bytearray | memoryview) -> list[int]:
    """The ``nal_unit_type`` of every NAL unit in an Annex B byte stream, in order."""
    buf = data if isinstance(data, bytes) else bytes(data)  # find() needs bytes; copy only then
    types: list[int] = []
    i = buf.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(buf):
        types.append(buf[i + 3] & 0x1F)
        i = buf.find(b"\x00\x00\x01", i + 3)
    return types


def is_keyframe(data: bytes | bytearray | memoryview) -> bool:
    """Whether the access unit holds an IDR slice (a decoder can start there)."""
    return NAL_IDR in nal_types(data)
