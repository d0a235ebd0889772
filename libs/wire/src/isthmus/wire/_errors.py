"""Errors raised by isthmus.wire."""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "LocalProtocolError", "ProtocolError", "WireError"]


class ErrorCode(enum.StrEnum):
    """Why a peer's bytes were rejected; the same strings are used by the JavaScript decoder."""

    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    RESERVED_FLAGS = "reserved_flags"
    UNKNOWN_STREAM = "unknown_stream"
    FRAME_TOO_LARGE = "frame_too_large"
    MESSAGE_TOO_LARGE = "message_too_large"
    BAD_CHUNK = "bad_chunk"
    SEQUENCE = "sequence"
    INVALID_PAYLOAD = "invalid_payload"
    TRUNCATED = "truncated"
    CREDIT_OVERRUN = "credit_overrun"
    UNEXPECTED_MESSAGE = "unexpected_message"


class WireError(Exception):
    """Base class of every isthmus.wire error."""


class ProtocolError(WireError):
    """The peer broke the protocol.

    ``code`` says how (an :class:`ErrorCode`) and ``offset`` is the position of the offending
    byte in the received stream, counted from the first byte given to ``receive_data``.
    """

    def __init__(self, code: ErrorCode, message: str, offset: int) -> None:
        super().__init__(f"{code.value} at offset {offset}: {message}")
        self.code = code
        self.message = message
        self.offset = offset

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.code, self.message, self.offset))


class LocalProtocolError(WireError):
    """This side tried something the protocol does not allow (for example sending a message
    before the handshake, or a packet larger than the negotiated maximum)."""
