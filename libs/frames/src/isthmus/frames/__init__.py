"""isthmus.frames: frame capture, colour conversion and low-latency encode/decode.

* :func:`as_frame` / :class:`Frame` — numpy, CuPy or DLPack images, validated, never copied.
* :class:`Converter` / :func:`rgb_to_yuv` / :func:`yuv_to_rgb` — BT.709 (default) or BT.601,
  limited or full range, I420, NV12 or 4:4:4; OpenCV, numpy or a CuPy kernel.
* :func:`open_encoder` / :func:`open_decoder` — H.264 (NVENC from device or host memory,
  libx264), JPEG and PNG behind one probed fallback chain; :class:`FallbackEncoder` moves down
  the chain if a backend fails mid-stream.
* :class:`FrameSource` — capture from arrays, OpenGL (CUDA-GL interop, PBO, glReadPixels) under a
  headless :class:`EGLContext`, or a vispy canvas.
* Streaming policy for any transport: per-client ack windows, latest-frame-wins, keyframes on
  join and request, settle stills, interaction scaling; per-stage timing histograms.
"""

from ._capture import ArraySource, FrameSource
from ._convert import (
    Converter,
    available_converters,
    rgb_to_yuv,
    rgb_to_yuv_matrix,
    yuv_to_rgb,
    yuv_to_rgb_matrix,
)
from ._decode import DECODER_BACKENDS, Decoder, open_decoder, probe_decoders
from ._egl import EGLContext, load_gl
from ._encode import (
    BACKENDS,
    Encoder,
    EncoderBackend,
    FallbackEncoder,
    ProbeResult,
    open_encoder,
    probe_encoders,
)
from ._errors import (
    BackendUnavailableError,
    ContextLostError,
    CorruptPacketError,
    DecoderError,
    EncoderError,
    FrameFormatError,
    FramesError,
)
from ._gl import GL_BACKENDS, GLSource
from ._h264 import is_keyframe, nal_types
from ._policy import (
    ClientState,
    ClientWindow,
    Dispatch,
    EncodeJob,
    InteractionScaler,
    KeyframeReason,
    KeyframeRequester,
    PolicyError,
    SettleDetector,
    StreamPolicy,
)
from ._timing import STAGES, FrameTimings, LatencyHistogram, StageSummary
from ._types import ColorSpec, Frame, Packet, PixelFormat, StreamConfig, as_frame
from ._version import __version__
from ._vispy_source import VispyCanvasSource, vispy_egl_app

__all__ = [
    "BACKENDS",
    "DECODER_BACKENDS",
    "GL_BACKENDS",
    "STAGES",
    "ArraySource",
    "BackendUnavailableError",
    "ClientState",
    "ClientWindow",
    "ColorSpec",
    "ContextLostError",
    "Converter",
    "CorruptPacketError",
    "Decoder",
    "DecoderError",
    "Dispatch",
    "EGLContext",
    "EncodeJob",
    "Encoder",
    "EncoderBackend",
    "EncoderError",
    "FallbackEncoder",
    "Frame",
    "FrameFormatError",
    "FrameSource",
    "FrameTimings",
    "FramesError",
    "GLSource",
    "InteractionScaler",
    "KeyframeReason",
    "KeyframeRequester",
    "LatencyHistogram",
    "Packet",
    "PixelFormat",
    "PolicyError",
    "ProbeResult",
    "SettleDetector",
    "StageSummary",
    "StreamConfig",
    "StreamPolicy",
    "VispyCanvasSource",
    "__version__",
    "as_frame",
    "available_converters",
    "is_keyframe",
    "load_gl",
    "nal_types",
    "open_decoder",
    "open_encoder",
    "probe_decoders",
    "probe_encoders",
    "rgb_to_yuv",
    "rgb_to_yuv_matrix",
    "vispy_egl_app",
    "yuv_to_rgb",
    "yuv_to_rgb_matrix",
]
