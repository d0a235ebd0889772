"""File sources and sinks through PyAV (the ``av`` extra): any format FFmpeg reads or writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .._caps import Caps
from .._control import Control, EndOfStream
from .._media import AudioChunk, VideoFrame
from .._node import Node, Port, register
from ._dsp import Rechunker, convert_format

__all__ = ["AudioFileSink", "AudioFileSource", "VideoFileSink", "VideoFileSource"]

_AV_FORMATS = {"f32": "flt", "s16": "s16", "s32": "s32", "f64": "dbl", "u8": "u8"}
_SINK_CODECS = {
    ".wav": ("pcm_s16le", "s16"),
    ".flac": ("flac", "s16"),
    ".ogg": ("libvorbis", "fltp"),
    ".mp3": ("libmp3lame", "fltp"),
    ".m4a": ("aac", "fltp"),
    ".opus": ("libopus", "s16"),
}


def _av() -> Any:
    try:
        import av
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise ImportError("file nodes need PyAV: pip install 'isthmus-pipeline[av]'") from e
    return av


class AudioFileSource(Node):
    """Decodes an audio file into :class:`AudioChunk` s of ``frame_ms`` (its caps are found when
    the file is opened: a ``runtime`` port).  ``sample_rate``/``channels`` convert on decode;
    ``realtime`` paces the chunks at their duration."""

    node_type = "audio_file_source"
    inputs: dict[str, Port] = {}  # noqa: RUF012
    outputs = {"out": Port("audio", behaviour="runtime")}  # noqa: RUF012

    def __init__(
        self,
        *,
        path: str,
        sample_rate: int | None = None,
        channels: int | None = None,
        format: str = "f32",
        frame_ms: float = 20,
        realtime: bool = False,
    ) -> None:
        self.path = str(path)
        self.sample_rate, self.channels, self.format = sample_rate, channels, format
        self.frame_ms, self.realtime = frame_ms, realtime
        self._container: Any = None
        self._stream: Any = None

    def initialize(self) -> None:
        av = _av()
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"no such audio file: {self.path}")
        self._container = av.open(self.path)
        if not self._container.streams.audio:
            self._container.close()
            raise ValueError(f"{self.path} has no audio stream")
        self._stream = self._container.streams.audio[0]
        self.sample_rate = self.sample_rate or self._stream.rate
        self.channels = self.channels or self._stream.channels

    def discovered_caps(self) -> dict[str, Caps] | None:
        if self._stream is None:
            return None
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

    async def generate(self) -> AsyncIterator[AudioChunk]:
        av = _av()
        assert self._container is not None and self.sample_rate and self.channels
        layout = (
            "mono"
            if self.channels == 1
            else "stereo"
            if self.channels == 2
            else f"{self.channels}c"
        )
        resampler = av.AudioResampler(format="flt", layout=layout, rate=self.sample_rate)
        rate = int(self.sample_rate)
        chunker = Rechunker(round(self.frame_ms * rate / 1000))
        t0 = time.monotonic()
        done = 0

        def decoded() -> Any:
            for frame in self._container.decode(self._stream):
                yield from resampler.resample(frame)
            yield from resampler.resample(None)

        for frame in decoded():
            x = frame.to_ndarray().reshape(-1, self.channels)
            for samples, _pts in chunker.push(x, done / rate, rate):
                chunk = AudioChunk(convert_format(samples, self.format), rate, _pts)
                if self.realtime:
                    delay = t0 + chunk.pts - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                yield chunk
            done += x.shape[0]
        left = chunker.flush(pad=True)
        if left is not None:
            yield AudioChunk(convert_format(left[0], self.format), rate, left[1])

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class AudioFileSink(Node):
    """Writes the audio it gets to ``path`` (codec from the extension: wav, flac, ogg, mp3,
    m4a, opus); the file is complete when the stream ends or the node closes."""

    node_type = "audio_file_sink"
    inputs = {"in": Port("audio", behaviour="adaptive")}  # noqa: RUF012
    outputs: dict[str, Port] = {}  # noqa: RUF012

    def __init__(self, *, path: str, codec: str | None = None) -> None:
        self.path = str(path)
        self.codec = codec
        self._container: Any = None
        self._stream: Any = None
        self._fmt = "s16"
        self.frames = 0

    def _open(self, chunk: AudioChunk) -> None:
        av = _av()
        codec, fmt = _SINK_CODECS.get(Path(self.path).suffix.lower(), ("pcm_s16le", "s16"))
        self._container = av.open(self.path, "w")
        self._stream = self._container.add_stream(self.codec or codec, rate=chunk.sample_rate)
        self._stream.layout = "mono" if chunk.channels == 1 else "stereo"
        self._fmt = fmt

    def process(self, item: AudioChunk, port: str) -> None:
        av = _av()
        if self._container is None:
            self._open(item)
        planar = self._fmt.endswith("p")
        base = self._fmt.rstrip("p")
        x = convert_format(item.samples, "s16" if base == "s16" else "f32")
        arr = np.ascontiguousarray(x.T) if planar else np.ascontiguousarray(x.reshape(1, -1))
        frame = av.AudioFrame.from_ndarray(arr, format=self._fmt, layout=self._stream.layout.name)
        frame.sample_rate = item.sample_rate
        frame.pts = self.frames
        frame.time_base = Fraction(1, item.sample_rate)
        self.frames += item.frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream):
            self.close()
        return None

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None


class VideoFileSource(Node):
    """Decodes a video file into :class:`VideoFrame` s (``rgb24`` by default)."""

    node_type = "video_file_source"
    inputs: dict[str, Port] = {}  # noqa: RUF012
    outputs = {"out": Port("video", behaviour="runtime")}  # noqa: RUF012

    def __init__(self, *, path: str, format: str = "rgb24", realtime: bool = False) -> None:
        self.path, self.format, self.realtime = str(path), format, realtime
        self._container: Any = None
        self._stream: Any = None

    def initialize(self) -> None:
        av = _av()
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"no such video file: {self.path}")
        self._container = av.open(self.path)
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{self.path} has no video stream")
        self._stream = self._container.streams.video[0]

    def discovered_caps(self) -> dict[str, Caps] | None:
        if self._stream is None:
            return None
        s = self._stream
        return {"out": Caps.of("video", width=s.width, height=s.height, format=self.format)}

    async def generate(self) -> AsyncIterator[VideoFrame]:
        t0 = time.monotonic()
        for i, frame in enumerate(self._container.decode(self._stream)):
            pts = float(frame.time) if frame.time is not None else 0.0
            if self.realtime:
                delay = t0 + pts - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 8 == 7:
                await asyncio.sleep(0)
            yield VideoFrame(frame.to_ndarray(format=self.format), self.format, pts)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class VideoFileSink(Node):
    """Encodes the frames it gets to ``path`` (``codec``, ``fps``; yuv420p)."""

    node_type = "video_file_sink"
    inputs = {"in": Port("video", behaviour="adaptive")}  # noqa: RUF012
    outputs: dict[str, Port] = {}  # noqa: RUF012

    def __init__(
        self, *, path: str, fps: int = 30, codec: str = "mpeg4", bit_rate: int = 2_000_000
    ) -> None:
        self.path, self.fps, self.codec, self.bit_rate = str(path), fps, codec, bit_rate
        self._container: Any = None
        self._stream: Any = None
        self.frames = 0

    def process(self, item: VideoFrame, port: str) -> None:
        av = _av()
        if self._container is None:
            self._container = av.open(self.path, "w")
            self._stream = self._container.add_stream(self.codec, rate=self.fps)
            self._stream.width, self._stream.height = item.width, item.height
            self._stream.pix_fmt = "yuv420p"
            self._stream.bit_rate = self.bit_rate
        frame = av.VideoFrame.from_ndarray(item.data, format=item.format)
        frame.pts = self.frames
        self.frames += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream):
            self.close()
        return None

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None


for _cls in (AudioFileSource, AudioFileSink, VideoFileSource, VideoFileSink):
    register(_cls)
