"""RGB -> YUV on the GPU with a CuPy kernel, so device frames never visit host memory.

One thread per 2x2 block writes four Y samples and one averaged U/V pair (4:2:0), or one
thread per pixel for 4:4:4.  Only imported for device frames; needs CuPy and a CUDA GPU.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ._convert import rgb_to_yuv_matrix
from ._errors import BackendUnavailableError, FrameFormatError
from ._types import ColorSpec, Frame, PixelFormat

__all__ = ["rgb_to_yuv_device"]

_SOURCE = r"""
extern "C" __global__ void rgb_to_yuv420(
    const unsigned char* src, long long src_pitch, int channels, int width, int height,
    const float* m, unsigned char* y, unsigned char* u, unsigned char* v, int uv_step) {
  int bx = blockIdx.x * blockDim.x + threadIdx.x;
  int by = blockIdx.y * blockDim.y + threadIdx.y;
  if (bx >= width / 2 || by >= height / 2) return;
  float su = 0.f, sv = 0.f;
  for (int dy = 0; dy < 2; ++dy) {
    for (int dx = 0; dx < 2; ++dx) {
      int px = 2 * bx + dx, py = 2 * by + dy;
      const unsigned char* p = src + py * src_pitch + (long long)px * channels;
      float r = p[0], g = p[1], b = p[2];
      float yy = m[0] * r + m[1] * g + m[2] * b + m[3];
      y[py * width + px] = (unsigned char)fminf(fmaxf(rintf(yy), 0.f), 255.f);
      su += m[4] * r + m[5] * g + m[6] * b + m[7];
      sv += m[8] * r + m[9] * g + m[10] * b + m[11];
    }
  }
  int i = by * (width / 2) + bx;
  u[i * uv_step] = (unsigned char)fminf(fmaxf(rintf(su * 0.25f), 0.f), 255.f);
  v[i * uv_step] = (unsigned char)fminf(fmaxf(rintf(sv * 0.25f), 0.f), 255.f);
}

extern "C" __global__ void rgb_to_yuv444(
    const unsigned char* src, long long src_pitch, int channels, int width, int height,
    const float* m, unsigned char* out) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int yq = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= width || yq >= height) return;
  const unsigned char* p = src + yq * src_pitch + (long long)x * channels;
  float r = p[0], g = p[1], b = p[2];
  long long plane = (long long)width * height, i = (long long)yq * width + x;
  for (int c = 0; c < 3; ++c) {
    float val = m[4 * c] * r + m[4 * c + 1] * g + m[4 * c + 2] * b + m[4 * c + 3];
    out[c * plane + i] = (unsigned char)fminf(fmaxf(rintf(val), 0.f), 255.f);
  }
}
"""


@lru_cache(maxsize=1)
def _module() -> Any:
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError("device frames need CuPy", {"cupy": str(exc)}) from exc
    return cupy, cupy.RawModule(code=_SOURCE)


def rgb_to_yuv_device(src: Frame, dst: PixelFormat, color: ColorSpec) -> Any:
    """A CuPy array holding ``src`` (a device RGB/BGR/RGBA/BGRA frame) in ``dst`` layout."""
    # RawKernel arguments are passed by their numpy type: give each the C type it has.
    cupy, module = _module()
    if src.format not in (PixelFormat.RGB, PixelFormat.BGR, PixelFormat.RGBA, PixelFormat.BGRA):
        raise FrameFormatError(f"device conversion takes RGB-family frames, not {src.format.value}")
    arr = cupy.asarray(src.data)
    order = "bgr" if src.format in (PixelFormat.BGR, PixelFormat.BGRA) else "rgb"
    m = cupy.asarray(rgb_to_yuv_matrix(color, order).ravel())
    w, h, ch = src.width, src.height, src.format.channels
    pitch = int(arr.strides[0])
    if pitch < 0:
        arr = cupy.ascontiguousarray(arr)
        pitch = int(arr.strides[0])
    block = (16, 16, 1)
    if dst is PixelFormat.YUV444:
        out = cupy.empty((3, h, w), cupy.uint8)
        grid = ((w + 15) // 16, (h + 15) // 16, 1)
        module.get_function("rgb_to_yuv444")(
            grid, block, (arr, np.int64(pitch), np.int32(ch), np.int32(w), np.int32(h), m, out)
        )
        return out
    out = cupy.empty((h * 3 // 2, w), cupy.uint8)
    flat = out.ravel()
    y = flat[: w * h]
    q = (w // 2) * (h // 2)
    if dst is PixelFormat.NV12:
        u, v, step = flat[w * h :], flat[w * h + 1 :], 2
    else:
        u, v, step = flat[w * h : w * h + q], flat[w * h + q :], 1
    grid = ((w // 2 + 15) // 16, (h // 2 + 15) // 16, 1)
    module.get_function("rgb_to_yuv420")(
        grid,
        block,
        (arr, np.int64(pitch), np.int32(ch), np.int32(w), np.int32(h), m, y, u, v, np.int32(step)),
    )
    return out
