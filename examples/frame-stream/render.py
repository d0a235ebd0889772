"""The picture the example streams: an animated OpenGL test scene that carries its own number.

``Scene.draw`` paints a slowly changing background, a dozen bouncing boxes and, along the bottom
edge, a strip of black and white cells spelling the frame's number in binary.  ``read_code`` reads
that number back from a decoded RGB image, so the receiver checks that it got the picture the
sender meant, not just a picture of the right size.

Only ``glClear`` inside scissor boxes is used: it works in a core-profile context with no shaders
or vertex buffers.  Replace ``Scene`` with your own renderer; anything that draws into the
:class:`isthmus.frames.EGLContext`'s framebuffer can be streamed the same way.
"""

from __future__ import annotations

import colorsys
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CODE_BITS", "Scene", "code_of", "read_code"]

#: Bits of the frame number drawn into the picture (it wraps around after 65,536 frames).
CODE_BITS = 16


def _strip(width: int, height: int) -> tuple[int, int]:
    """(cell width, strip height) of the code strip: big enough to survive lossy coding."""
    return width // CODE_BITS, max(8, height // 12)


class Scene:
    """An animated scene drawn into whatever framebuffer is bound (GL's origin is bottom-left)."""

    def __init__(self, gl: ModuleType, width: int, height: int, boxes: int = 12) -> None:
        self._gl = gl
        self.width, self.height = width, height
        self._cell, self._strip_h = _strip(width, height)
        rng = np.random.default_rng(7)  # the same scene every run
        self._boxes = [
            (
                rng.uniform(0.06, 0.2) * width,  # box width
                rng.uniform(0.06, 0.2) * height,  # box height
                rng.uniform(0, 1),  # phase x
                rng.uniform(0, 1),  # phase y
                rng.uniform(0.1, 0.4) * rng.choice([-1, 1]),  # speed x, screens per second
                rng.uniform(0.1, 0.4) * rng.choice([-1, 1]),  # speed y
                colorsys.hsv_to_rgb(float(rng.uniform(0, 1)), 0.7, 0.95),
            )
            for _ in range(boxes)
        ]

    def draw(self, index: int, t: float) -> None:
        """Draw frame ``index`` at ``t`` seconds and wait until GL has finished it."""
        gl = self._gl
        w, h = self.width, self.height
        gl.glDisable(gl.GL_SCISSOR_TEST)
        r, g, b = colorsys.hsv_to_rgb((t / 20.0) % 1.0, 0.5, 0.25)
        gl.glClearColor(r, g, b, 1.0)
        gl.glClear(gl.GL_COLOR_BUFFER_BIT | gl.GL_DEPTH_BUFFER_BIT)
        gl.glEnable(gl.GL_SCISSOR_TEST)
        top = self._strip_h + 4  # boxes stay clear of the code strip
        for bw, bh, px, py, vx, vy, color in self._boxes:
            x = _bounce(px + vx * t, w - bw)
            y = top + _bounce(py + vy * t, h - top - bh)
            gl.glScissor(int(x), int(y), max(1, int(bw)), max(1, int(bh)))
            gl.glClearColor(*color, 1.0)
            gl.glClear(gl.GL_COLOR_BUFFER_BIT)
        code = index % (1 << CODE_BITS)
        for bit in range(CODE_BITS):
            on = (code >> bit) & 1
            gl.glScissor(bit * self._cell, 0, self._cell, self._strip_h)
            gl.glClearColor(float(on), float(on), float(on), 1.0)
            gl.glClear(gl.GL_COLOR_BUFFER_BIT)
        gl.glDisable(gl.GL_SCISSOR_TEST)
        # Without this the drawing would be finished inside the readback and counted as capture.
        gl.glFinish()


def _bounce(phase: float, span: float) -> float:
    """A triangle wave over [0, span]: ``phase`` 0 -> 0, 0.5 -> span, 1 -> 0 again."""
    p = phase % 1.0
    return max(0.0, span) * (2 * p if p < 0.5 else 2 - 2 * p)


def read_code(image: npt.NDArray[np.uint8] | Any) -> int:
    """The frame number drawn by :meth:`Scene.draw`, read from a top-down RGB(A) image."""
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    cell, strip_h = _strip(w, h)
    row = h - 1 - strip_h // 2  # the strip is at the bottom of a top-down image
    code = 0
    for bit in range(CODE_BITS):
        x = bit * cell + cell // 2
        patch = arr[row - 1 : row + 2, max(0, x - 1) : x + 2, :3]
        if float(patch.mean()) > 127.5:
            code |= 1 << bit
    return code


def code_of(index: int) -> int:
    """What :func:`read_code` returns for a picture drawn as frame ``index``."""
    return index % (1 << CODE_BITS)
