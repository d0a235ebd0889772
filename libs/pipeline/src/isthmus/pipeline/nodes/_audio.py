"""Audio nodes: resample, rechunk, channel_mix, sample_format, level_meter, array_source."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import numpy as np

from .._caps import Caps
from .._control import Control, EndOfStream, Interrupt
from .._media import FORMAT_DTYPES, AudioChunk
from .._node import Node, Port, register
from ._dsp import Rechunker, StreamResampler, convert_format, level, mix_channels

__all__ = [
    "ArraySource",
    "ChannelMix",
    "LevelMeter",
    "Levels",
    "Rechunk",
    "Resample",
    "SampleFormat",
]

_RESAMPLE_FORMATS = "[f32,f64,s16,s32]"


def _audio_in(inputs: Mapping[str, Caps]) -> Caps:
    c = inputs.get("in")
    return c if isinstance(c, Caps) else Caps.of("audio")


class Resample(Node):
    """Streaming soxr resampler: one stateful resampler per stream, so chunk edges do not click.

    Params: ``sample_rate`` (output rate), ``quality`` (soxr: QQ, LQ, MQ, HQ, VHQ).  Follows a
    change of input rate mid-stream by starting a new resampler.
    """

    node_type = "resample"
    inputs = {"in": Port(f"audio(format={_RESAMPLE_FORMATS})", behaviour="adaptive")}  # noqa: RUF012
    outputs = {"out": Port(f"audio(format={_RESAMPLE_FORMATS})", behaviour="configured")}  # noqa: RUF012

    def __init__(self, *, sample_rate: int = 16000, quality: str = "HQ") -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self.sample_rate = int(sample_rate)
        self.quality = quality
        self._rs: StreamResampler | None = None
        self._out_frames = 0
        self._pts0 = 0.0
        self._chunker: Rechunker | None = None

    def output_caps(self, inputs: Mapping[str, Caps]) -> dict[str, Caps]:
        return {"out": _audio_in(inputs).with_fields(sample_rate=self.sample_rate)}

    def process(self, item: AudioChunk, port: str) -> AudioChunk | None:
        rs = self._rs
        s = item.samples
        if (
            rs is None
            or rs.in_rate != item.sample_rate
            or rs.channels != s.shape[1]
            or rs.dtype != s.dtype
        ):
            rs = self._rs = StreamResampler(
                item.sample_rate, self.sample_rate, s.shape[1], s.dtype, self.quality
            )
            self._out_frames = 0
            self._pts0 = item.pts
            self._chunker = None
        out = rs.process(s)
        # soxr's output length wobbles by a frame from chunk to chunk: re-cut it to the
        # input's duration so frame_ms holds downstream (webrtcvad needs exact frames).
        want = round(item.frames * self.sample_rate / item.sample_rate)
        if self._chunker is None or self._chunker.frames != want:
            self._chunker = Rechunker(want)
        for samples, _ in self._chunker.push(out, 0.0, self.sample_rate):
            pts = self._pts0 + self._out_frames / self.sample_rate
            self._out_frames += samples.shape[0]
            self.emit(AudioChunk(samples, self.sample_rate, pts))
        return None

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream) and self._rs is not None:
            tail = self._rs.flush()
            self._rs = None
            if self._chunker is not None:
                for samples, _ in self._chunker.push(tail, 0.0, self.sample_rate):
                    self.emit(AudioChunk(samples, self.sample_rate, self._next_pts(samples)))
                left = self._chunker.flush(pad=True)
                if left is not None:
                    self.emit(AudioChunk(left[0], self.sample_rate, self._next_pts(left[0])))
                self._chunker = None
        elif isinstance(msg, Interrupt):
            self._rs = None
            self._chunker = None
        return None

    def _next_pts(self, samples: Any) -> float:
        pts = self._pts0 + self._out_frames / self.sample_rate
        self._out_frames += samples.shape[0]
        return pts


class Rechunk(Node):
    """Chunks of exactly ``frame_ms`` milliseconds (or ``samples`` frames); ``pad`` zero-fills
    the last one at the end of the stream."""

    node_type = "rechunk"
    inputs = {"in": Port("audio", behaviour="adaptive")}  # noqa: RUF012
    outputs = {"out": Port("audio", behaviour="configured")}  # noqa: RUF012

    def __init__(
        self, *, frame_ms: float | None = None, samples: int | None = None, pad: bool = True
    ) -> None:
        if (frame_ms is None) == (samples is None):
            raise ValueError("rechunk takes one of frame_ms or samples")
        self.frame_ms = frame_ms
        self.samples = samples
        self.pad = pad
        self._r: Rechunker | None = None
        self._rate = 0

    def output_caps(self, inputs: Mapping[str, Caps]) -> dict[str, Caps]:
        c = _audio_in(inputs)
        if self.frame_ms is not None:
            return {"out": c.with_fields(frame_ms=self.frame_ms)}
        rate = c.get("sample_rate")
        if isinstance(rate, int | float) and self.samples:
            return {"out": c.with_fields(frame_ms=self.samples * 1000 / rate)}
        return {"out": c.without("frame_ms")}

    def _frames(self, rate: int) -> int:
        if self.samples is not None:
            return int(self.samples)
        assert self.frame_ms is not None
        return round(self.frame_ms * rate / 1000)

    def process(self, item: AudioChunk, port: str) -> None:
        if self._r is None or self._rate != item.sample_rate:
            self._r = Rechunker(self._frames(item.sample_rate))
            self._rate = item.sample_rate
        for samples, pts in self._r.push(item.samples, item.pts, item.sample_rate):
            self.emit(AudioChunk(samples, item.sample_rate, pts))

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream) and self._r is not None:
            left = self._r.flush(self.pad)
            if left is not None:
                return AudioChunk(left[0], self._rate, left[1])
        elif isinstance(msg, Interrupt) and self._r is not None:
            self._r.reset()
        return None


class ChannelMix(Node):
    """Down-mix (mean) or up-mix (repeat) to ``channels``."""

    node_type = "channel_mix"
    inputs = {"in": Port("audio", behaviour="adaptive")}  # noqa: RUF012
    outputs = {"out": Port("audio", behaviour="configured")}  # noqa: RUF012

    def __init__(self, *, channels: int = 1) -> None:
        self.channels = int(channels)

    def output_caps(self, inputs: Mapping[str, Caps]) -> dict[str, Caps]:
        return {"out": _audio_in(inputs).with_fields(channels=self.channels)}

    def process(self, item: AudioChunk, port: str) -> AudioChunk:
        if item.channels == self.channels:
            return item
        return AudioChunk(mix_channels(item.samples, self.channels), item.sample_rate, item.pts)


class SampleFormat(Node):
    """Convert samples to ``format`` (f32, f64, s16, s32, u8) with correct scaling."""

    node_type = "sample_format"
    inputs = {"in": Port("audio", behaviour="adaptive")}  # noqa: RUF012
    outputs = {"out": Port("audio", behaviour="configured")}  # noqa: RUF012

    def __init__(self, *, format: str = "f32") -> None:
        if format not in FORMAT_DTYPES:
            raise ValueError(f"unknown sample format {format!r}: one of {', '.join(FORMAT_DTYPES)}")
        self.format = format

    def output_caps(self, inputs: Mapping[str, Caps]) -> dict[str, Caps]:
        return {"out": _audio_in(inputs).with_fields(format=self.format)}

    def process(self, item: AudioChunk, port: str) -> AudioChunk:
        if item.format == self.format:
            return item
        return AudioChunk(convert_format(item.samples, self.format), item.sample_rate, item.pts)


class Levels:
    """A level reading: ``pts``, ``rms_dbfs``, ``peak_dbfs``."""

    __slots__ = ("peak_dbfs", "pts", "rms_dbfs")

    def __init__(self, pts: float, rms_dbfs: float, peak_dbfs: float) -> None:
        self.pts, self.rms_dbfs, self.peak_dbfs = pts, rms_dbfs, peak_dbfs

    def as_dict(self) -> dict[str, float]:
        """JSON-able form."""
        return {"pts": self.pts, "rms_dbfs": self.rms_dbfs, "peak_dbfs": self.peak_dbfs}

    def __repr__(self) -> str:
        return (
            f"Levels(pts={self.pts:.3f}, rms={self.rms_dbfs:.1f} dBFS, "
            f"peak={self.peak_dbfs:.1f} dBFS)"
        )


class LevelMeter(Node):
    """Passes audio through on ``out``; a :class:`Levels` reading on ``levels`` every
    ``interval_ms`` (0: every chunk)."""

    node_type = "level_meter"
    inputs = {"in": Port("audio", behaviour="adaptive")}  # noqa: RUF012
    outputs = {"out": Port("audio", behaviour="passthrough"), "levels": Port("levels")}  # noqa: RUF012

    def __init__(self, *, interval_ms: float = 0.0) -> None:
        self.interval = interval_ms / 1000
        self._next = 0.0
        self.last: Levels | None = None

    def process(self, item: AudioChunk, port: str) -> AudioChunk:
        if item.pts >= self._next:
            rms, peak = level(item.samples)
            self.last = Levels(item.pts, rms, peak)
            self.emit(self.last, "levels")
            self._next = item.pts + self.interval
        return item


class ArraySource(Node):
    """A generated tone (or silence with ``tone_hz=0``) in chunks: for tests, demos and
    benchmarks.  ``realtime`` paces the chunks at their duration."""

    node_type = "array_source"
    inputs: dict[str, Port] = {}  # noqa: RUF012
    outputs = {"out": Port("audio", behaviour="configured")}  # noqa: RUF012

    def __init__(
        self,
        *,
        sample_rate: int = 48000,
        channels: int = 1,
        frame_ms: float = 20,
        seconds: float = 1.0,
        tone_hz: float = 440.0,
        amplitude: float = 0.5,
        format: str = "f32",
        realtime: bool = False,
    ) -> None:
        self.sample_rate, self.channels, self.frame_ms = int(sample_rate), int(channels), frame_ms
        self.seconds, self.tone_hz, self.amplitude = seconds, tone_hz, amplitude
        self.format, self.realtime = format, realtime

    def output_caps(self, inputs: Mapping[str, Caps]) -> dict[str, Caps]:
        ms = self.frame_ms
        return {
            "out": Caps.of(
                "audio",
                sample_rate=self.sample_rate,
                channels=self.channels,
                format=self.format,
                frame_ms=int(ms) if float(ms).is_integer() else ms,
            )
        }

    def _chunks(self) -> Iterator[AudioChunk]:
        n = round(self.frame_ms * self.sample_rate / 1000)
        total = round(self.seconds * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        for start in range(0, total, n):
            ph = 2 * math.pi * self.tone_hz * (t + start / self.sample_rate)
            x = (self.amplitude * np.sin(ph)).astype(np.float32)
            x = np.repeat(x[:, None], self.channels, axis=1)
            yield AudioChunk(
                convert_format(x, self.format), self.sample_rate, start / self.sample_rate
            )

    async def generate(self) -> AsyncIterator[AudioChunk]:
        t0 = time.monotonic()
        for i, chunk in enumerate(self._chunks()):
            if self.realtime:
                delay = t0 + chunk.pts - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 32 == 31:
                await asyncio.sleep(0)
            yield chunk


for _cls in (Resample, Rechunk, ChannelMix, SampleFormat, LevelMeter, ArraySource):
    register(_cls)
