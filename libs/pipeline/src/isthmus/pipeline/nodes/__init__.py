"""The built-in node types (registered by name for manifests when this module is imported).

======================  =============================================================
``resample``            streaming soxr resampler (``sample_rate``, ``quality``)
``rechunk``             exact-size chunks (``frame_ms`` or ``samples``, ``pad``)
``channel_mix``         down-/up-mix to ``channels``
``sample_format``       f32/f64/s16/s32/u8 (``format``)
``level_meter``         audio through; RMS/peak dBFS on ``levels``
``webrtcvad``           WebRTC VAD; audio through, ``SpeechSegment`` on ``segments``
``silero_vad``          Silero VAD (``silero`` extra), same ports
``tee`` / ``merge``     one to N / N to one
``array_source``        a generated tone, for tests and benchmarks
``audio_file_source``   decode a file with PyAV (``av`` extra); ``audio_file_sink``
``video_file_source``   decode video frames; ``video_file_sink``
``iceoryx_source``      items from an iceoryx2 service (``iceoryx2`` extra); ``iceoryx_sink``
======================  =============================================================
"""

from .._iceoryx import IceoryxSink, IceoryxSource
from ._audio import ArraySource, ChannelMix, LevelMeter, Levels, Rechunk, Resample, SampleFormat
from ._av import AudioFileSink, AudioFileSource, VideoFileSink, VideoFileSource
from ._dsp import (
    Rechunker,
    SileroVad,
    SpeechTracker,
    StreamResampler,
    WebRtcVad,
    convert_format,
    level,
    mix_channels,
)
from ._flow import Merge, Tee
from ._vad import SileroVadNode, WebRtcVadNode

__all__ = [
    "ArraySource",
    "AudioFileSink",
    "AudioFileSource",
    "ChannelMix",
    "IceoryxSink",
    "IceoryxSource",
    "LevelMeter",
    "Levels",
    "Merge",
    "Rechunk",
    "Rechunker",
    "Resample",
    "SampleFormat",
    "SileroVad",
    "SileroVadNode",
    "SpeechTracker",
    "StreamResampler",
    "Tee",
    "VideoFileSink",
    "VideoFileSource",
    "WebRtcVad",
    "WebRtcVadNode",
    "convert_format",
    "level",
    "mix_channels",
]
