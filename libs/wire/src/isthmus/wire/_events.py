"""Events a connection reports about itself (as opposed to messages from the peer)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionClosed", "FramesDropped", "VersionMismatch"]


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer's byte stream ended (``receive_data(b"")``) at a frame boundary."""


@dataclass(frozen=True, slots=True)
class FramesDropped:
    """This side dropped ``count`` packets of a credit stream because the peer's window was
    full. ``keyframe_needed`` is set when the dropped packets broke an inter-frame codec's
    chain: non-key frames are dropped until the application sends a keyframe."""

    stream: int
    count: int
    keyframe_needed: bool


@dataclass(frozen=True, slots=True)
class VersionMismatch:
    """A hello asked for a protocol version this server does not speak. The connection has
    queued an ``error`` and a ``goodbye`` with the reason; send them and close."""

    offered: int
    supported: tuple[int, ...]
    reason: str
