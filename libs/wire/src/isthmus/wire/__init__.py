"""isthmus.wire: the sans-IO protocol Isthmus applications speak.

One multiplexed, versioned connection carries control, state, input, video, audio, tensors
and blobs. Like h11 and wsproto it does no I/O: feed received bytes to
:meth:`Connection.receive_data`, read events with :meth:`Connection.next_event`, and write the
buffers that :meth:`Connection.send` returns.

* :class:`Connection` — handshake, streams, priorities, chunking, credits.
* :class:`FrameDecoder` — framing and message decoding alone (no handshake).
* Control messages (msgspec Structs): :class:`Hello`, :class:`Welcome`, :class:`Goodbye`,
  :class:`Error`, :class:`Ping`, :class:`Pong`, :class:`Ack`, :class:`RequestKeyframe`,
  :class:`Stats`, :class:`Pointer`, :class:`Wheel`, :class:`Key`, :class:`StatePatch`.
* Binary packets: :class:`VideoPacket`, :class:`AudioChunk`, :class:`Tensor`, :class:`Blob`;
  received payloads are :class:`isthmus.buffer.Buffer` views of the received memory.
* :func:`json_schema` — JSON Schema of the control messages.
"""

from ._codec import Codec, decode_message, encode_message
from ._connection import HANDSHAKE_MAX_FRAME_SIZE, Connection, Role, State, StreamStats
from ._decoder import FrameDecoder
from ._errors import ErrorCode, LocalProtocolError, ProtocolError, WireError
from ._events import ConnectionClosed, FramesDropped, VersionMismatch
from ._header import (
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Flags,
    FrameHeader,
    MessageType,
    pack_header,
    pack_header_into,
    parse_header,
)
from ._messages import (
    CONTROL_MESSAGES,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    Ack,
    ControlMessage,
    Error,
    Goodbye,
    Hello,
    Key,
    Ping,
    Pointer,
    Pong,
    RequestKeyframe,
    StatePatch,
    Stats,
    StreamSpec,
    Welcome,
    Wheel,
    default_streams,
)
from ._packets import AudioChunk, Blob, Packet, Tensor, VideoPacket
from ._schema import json_schema
from ._version import __version__

__all__ = [
    "CONTROL_MESSAGES",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HANDSHAKE_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "PROTOCOL_VERSION",
    "VERSION",
    "Ack",
    "AudioChunk",
    "Blob",
    "Codec",
    "Connection",
    "ConnectionClosed",
    "ControlMessage",
    "Error",
    "ErrorCode",
    "Flags",
    "FrameDecoder",
    "FrameHeader",
    "FramesDropped",
    "Goodbye",
    "Hello",
    "Key",
    "LocalProtocolError",
    "MessageType",
    "Packet",
    "Ping",
    "Pointer",
    "Pong",
    "ProtocolError",
    "RequestKeyframe",
    "Role",
    "State",
    "StatePatch",
    "Stats",
    "StreamSpec",
    "StreamStats",
    "Tensor",
    "VersionMismatch",
    "VideoPacket",
    "Welcome",
    "Wheel",
    "WireError",
    "__version__",
    "decode_message",
    "default_streams",
    "encode_message",
    "json_schema",
    "pack_header",
    "pack_header_into",
    "parse_header",
]
