"""Typed control messages, defined once as msgspec Structs and encoded as JSON or MessagePack.

Each class carries its wire type code (``TYPE``) and the stream it travels on by default
(``STREAM``). Field names are the keys of the JSON object / MessagePack map on the wire.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from ._header import MessageType

__all__ = [
    "CONTROL_MESSAGES",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "PROTOCOL_VERSION",
    "Ack",
    "ControlMessage",
    "Error",
    "Goodbye",
    "Hello",
    "Key",
    "Ping",
    "Pointer",
    "Pong",
    "RequestKeyframe",
    "StatePatch",
    "Stats",
    "StreamSpec",
    "Welcome",
    "Wheel",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024 * 1024

CONTROL, STATE, VIDEO, AUDIO, DATA = 0, 1, 2, 3, 4

#: A signed 64-bit integer, which every peer (MessagePack, JavaScript BigInt64) can carry.
Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
#: A stream id (u16 in the frame header).
StreamId = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]

StreamKind = Literal["control", "state", "video", "audio", "data"]


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One logical stream of a connection, as announced in the welcome.

    ``credits`` > 0 makes the stream credit-controlled: at most that many messages in flight,
    latest-wins dropping beyond. ``priority`` orders streams when sending (0 first).
    ``chunk_size`` is the largest frame the sender cuts a message into (0: as large as the
    negotiated maximum frame size).
    """

    id: StreamId
    name: str
    kind: StreamKind
    credits: Int = 0
    priority: Int = 2
    chunk_size: Int = 0


def default_streams() -> list[StreamSpec]:
    """The five streams every connection starts with."""
    return [
        StreamSpec(id=CONTROL, name="control", kind="control", priority=0),
        StreamSpec(id=STATE, name="state", kind="state", priority=1, chunk_size=64 * 1024),
        StreamSpec(
            id=VIDEO, name="video", kind="video", credits=4, priority=3, chunk_size=16 * 1024
        ),
        StreamSpec(id=AUDIO, name="audio", kind="audio", priority=2, chunk_size=16 * 1024),
        StreamSpec(id=DATA, name="data", kind="data", priority=4, chunk_size=256 * 1024),
    ]


class ControlMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the control messages (JSON or MessagePack bodies)."""

    TYPE: ClassVar[MessageType]
    STREAM: ClassVar[int] = CONTROL


class Hello(ControlMessage, frozen=True, kw_only=True):
    """First message of a client: what it speaks and what it can take."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    protocol: Int = PROTOCOL_VERSION
    role: str = "client"
    name: str = ""
    encodings: list[str] = msgspec.field(default_factory=lambda: ["msgpack", "json"])
    codecs: list[str] = msgspec.field(default_factory=list)
    max_frame_size: Int = DEFAULT_MAX_FRAME_SIZE
    max_message_size: Int = DEFAULT_MAX_MESSAGE_SIZE
    credits: Int = 4
    token: str | None = None


class Welcome(ControlMessage, frozen=True, kw_only=True):
    """The server's answer to a hello: what was chosen, the limits and the stream table."""

    TYPE: ClassVar[MessageType] = MessageType.WELCOME
    protocol: Int = PROTOCOL_VERSION
    role: str = "server"
    name: str = ""
    session: str = ""
    encoding: str = "msgpack"
    codecs: list[str] = msgspec.field(default_factory=list)
    max_frame_size: Int = DEFAULT_MAX_FRAME_SIZE
    max_message_size: Int = DEFAULT_MAX_MESSAGE_SIZE
    credits: Int = 4
    streams: list[StreamSpec] = msgspec.field(default_factory=default_streams)


class Goodbye(ControlMessage, frozen=True, kw_only=True):
    """The sender is closing the connection, and why (codes follow WebSocket close codes)."""

    TYPE: ClassVar[MessageType] = MessageType.GOODBYE
    code: Int = 1000
    reason: str = ""


class Error(ControlMessage, frozen=True, kw_only=True):
    """Something went wrong; ``code`` is an :class:`ErrorCode` value or an application code."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: str
    message: str = ""
    offset: Int | None = None


class Ping(ControlMessage, frozen=True, kw_only=True):
    """Liveness and round-trip probe; answer with :meth:`response`."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    nonce: Int = 0
    time_ns: Int = 0

    def response(self) -> Pong:
        """The pong that answers this ping."""
        return Pong(nonce=self.nonce, time_ns=self.time_ns)


class Pong(ControlMessage, frozen=True, kw_only=True):
    """Answer to a ping, echoing its nonce and time."""

    TYPE: ClassVar[MessageType] = MessageType.PONG
    nonce: Int = 0
    time_ns: Int = 0


class Ack(ControlMessage, frozen=True, kw_only=True):
    """Cumulative acknowledgement of a credit stream: every message up to ``seq`` is done."""

    TYPE: ClassVar[MessageType] = MessageType.ACK
    stream: StreamId
    seq: Int


class RequestKeyframe(ControlMessage, frozen=True, kw_only=True):
    """Ask the sender of a video stream for a keyframe (after loss or on join)."""

    TYPE: ClassVar[MessageType] = MessageType.REQUEST_KEYFRAME
    stream: StreamId = VIDEO


class Stats(ControlMessage, frozen=True, kw_only=True):
    """Periodic statistics of a stream or of the whole connection (``stream`` None)."""

    TYPE: ClassVar[MessageType] = MessageType.STATS
    stream: StreamId | None = None
    fps: float = 0.0
    kbps: float = 0.0
    frames: Int = 0
    dropped: Int = 0
    rtt_ms: float | None = None
    latency_ms: float | None = None
    extra: dict[str, float] = msgspec.field(default_factory=dict)


# Modifier bits of input events.
SHIFT, CTRL, ALT, META = 1, 2, 4, 8


class Pointer(ControlMessage, frozen=True, kw_only=True):
    """A pointer (mouse, pen, touch) event in canvas pixels; ``modifiers`` is a bit set
    (shift 1, ctrl 2, alt 4, meta 8) and ``buttons`` the pressed buttons (bit 0 primary)."""

    TYPE: ClassVar[MessageType] = MessageType.POINTER
    kind: Literal["down", "up", "move", "enter", "leave", "cancel"] = "move"
    x: float
    y: float
    button: Int = 0
    buttons: Int = 0
    modifiers: Int = 0
    pointer_id: Int = 0


class Wheel(ControlMessage, frozen=True, kw_only=True):
    """A wheel or trackpad scroll at (x, y)."""

    TYPE: ClassVar[MessageType] = MessageType.WHEEL
    x: float = 0.0
    y: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    dz: float = 0.0
    mode: Literal["pixel", "line", "page"] = "pixel"
    modifiers: Int = 0


class Key(ControlMessage, frozen=True, kw_only=True):
    """A key press or release; ``key`` is the DOM key value, ``code`` the physical key."""

    TYPE: ClassVar[MessageType] = MessageType.KEY
    kind: Literal["down", "up"] = "down"
    key: str
    code: str = ""
    modifiers: Int = 0
    repeat: bool = False


class StatePatch(ControlMessage, frozen=True, kw_only=True):
    """A change to application state at ``path`` (a JSON-pointer such as ``/camera/zoom``).

    ``op`` is ``set`` (replace the value), ``merge`` (shallow-merge a mapping) or ``delete``;
    ``rev`` lets an application order or deduplicate patches. What the paths mean belongs to
    the application.
    """

    TYPE: ClassVar[MessageType] = MessageType.STATE_PATCH
    STREAM: ClassVar[int] = STATE
    path: str
    op: Literal["set", "merge", "delete"] = "set"
    value: Any = None
    rev: Int | None = None


CONTROL_MESSAGES: tuple[type[ControlMessage], ...] = (
    Hello,
    Welcome,
    Goodbye,
    Error,
    Ping,
    Pong,
    Ack,
    RequestKeyframe,
    Stats,
    Pointer,
    Wheel,
    Key,
    StatePatch,
)
