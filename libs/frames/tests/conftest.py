"""Shared helpers for the isthmus-frames tests.

``scene(w, h, t)`` draws a deterministic frame that looks like a viewer's canvas (a smooth
image layer, a grid and a moving disc), so encoder behaviour is tested on realistic content.
nox runs the suite twice: with OpenCV conversion and with ISTHMUS_PUREPYTHON=1 (numpy).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest


def pytest_report_header() -> str:
    from isthmus.frames import available_converters

    return f"isthmus.frames converters: {available_converters()}"


PURE = os.environ.get("ISTHMUS_PUREPYTHON", "") not in ("", "0")


def scene(width: int, height: int, t: int = 0) -> np.ndarray[Any, Any]:
    """A canvas-like RGB frame; ``t`` moves the disc and pans the image a little."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.uint8)
    phase = t * 0.05
    img[..., 0] = (127 + 100 * np.sin(xx / 37.0 + phase) * np.cos(yy / 53.0)).astype(np.uint8)
    img[..., 1] = (127 + 90 * np.cos(xx / 71.0 - yy / 29.0 + phase)).astype(np.uint8)
    img[..., 2] = (60 + (xx + yy) * 120 / (width + height)).astype(np.uint8)
    img[:: max(8, height // 12), :, :] = 200  # grid lines
    cx, cy = (width // 4 + 3 * t) % width, height // 2
    r = max(4, min(width, height) // 6)
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    img[disc] = (250, 240, 20)
    return img


@pytest.fixture
def make_scene() -> Any:
    return scene
