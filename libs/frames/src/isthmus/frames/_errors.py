"""The typed errors of isthmus.frames; every one is a :class:`FramesError`."""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ContextLostError",
    "CorruptPacketError",
    "DecoderError",
    "EncoderError",
    "FrameFormatError",
    "FramesError",
]


class FramesError(Exception):
    """Base class of every error raised by isthmus.frames."""


class FrameFormatError(FramesError, ValueError):
    """A frame whose shape, dtype, strides, pixel format or dimensions cannot be used."""


class BackendUnavailableError(FramesError):
    """No backend (or not the named one) could be opened; ``reasons`` maps backend to why."""

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons: dict[str, str] = dict(reasons or {})


class EncoderError(FramesError):
    """An encoder failed while encoding; :class:`FallbackEncoder` moves on to the next backend."""


class DecoderError(FramesError):
    """A decoder failed for a reason other than a corrupt packet."""


class CorruptPacketError(DecoderError):
    """A packet could not be decoded.

    The decoder drops what follows until the next keyframe (``waiting_for_keyframe`` is true),
    so the application should ask the sender for one.
    """


class ContextLostError(FramesError):
    """The OpenGL context a capture source reads from was lost or destroyed."""
