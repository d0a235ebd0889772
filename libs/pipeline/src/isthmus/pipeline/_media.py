"""The media items that flow through pipelines: audio chunks, video frames, speech segments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._caps import Caps

__all__ = ["FORMAT_DTYPES", "AudioChunk", "SpeechSegment", "VideoFrame", "dtype_format"]

#: Sample format names (as in caps strings) and their numpy dtypes.
FORMAT_DTYPES: dict[str, np.dtype[Any]] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "s16": np.dtype(np.int16),
    "s32": np.dtype(np.int32),
    "u8": np.dtype(np.uint8),
}
_DTYPE_FORMATS = {dt: name for name, dt in FORMAT_DTYPES.items()}


def dtype_format(dtype: Any) -> str:
    """The caps name of a sample dtype (``float32`` -> ``"f32"``); ValueError if unsupported."""
    try:
        return _DTYPE_FORMATS[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"unsupported sample dtype {np.dtype(dtype)}") from None


@dataclass(slots=True)
class AudioChunk:
    """A chunk of PCM audio.

    ``samples`` has shape ``(frames, channels)`` (interleaved in memory, C order); ``pts`` is
    the stream time of the first frame, in seconds.  A 1-D array is taken as mono.
    """

    samples: np.ndarray[Any, Any]
    sample_rate: int
    pts: float = 0.0

    def __post_init__(self) -> None:
        if self.samples.ndim == 1:
            self.samples = self.samples.reshape(-1, 1)
        elif self.samples.ndim != 2:
            raise ValueError(f"audio samples must be (frames, channels), not {self.samples.shape}")

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.samples.shape[1])

    @property
    def frames(self) -> int:
        """Number of sample frames (samples per channel)."""
        return int(self.samples.shape[0])

    @property
    def format(self) -> str:
        """Sample format name: ``f32``, ``f64``, ``s16``, ``s32`` or ``u8``."""
        return dtype_format(self.samples.dtype)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return int(self.samples.shape[0]) / self.sample_rate

    @property
    def frame_ms(self) -> float:
        """Length in milliseconds (what ``frame_ms`` in caps constrains)."""
        return int(self.samples.shape[0]) * 1000.0 / self.sample_rate

    def caps(self) -> Caps:
        """The fixed caps this chunk satisfies."""
        from ._caps import Caps

        ms = self.frame_ms
        return Caps.of(
            "audio",
            sample_rate=self.sample_rate,
            channels=self.channels,
            format=self.format,
            frame_ms=int(ms) if ms == int(ms) else ms,
        )


@dataclass(slots=True)
class VideoFrame:
    """A video frame: ``data`` is ``(height, width, components)`` or ``(height, width)``."""

    data: np.ndarray[Any, Any]
    format: str = "rgb24"
    pts: float = 0.0

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.data.shape[0])

    def caps(self) -> Caps:
        """The fixed caps this frame satisfies."""
        from ._caps import Caps

        return Caps.of("video", width=self.width, height=self.height, format=self.format)


@dataclass(frozen=True, slots=True)
class SpeechSegment:
    """A span of detected speech, ``start`` to ``end`` in stream seconds (audio optional)."""

    start: float
    end: float
    samples: np.ndarray[Any, Any] | None = None
    sample_rate: int | None = None

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    def caps(self) -> Caps:
        """``speech`` caps."""
        from ._caps import Caps

        return Caps.of("speech")
