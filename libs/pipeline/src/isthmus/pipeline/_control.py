"""Control messages: they flow along the edges beside data, in order with it.

*System* messages (``Interrupt``, ``EndOfStream``, ``CapsChanged``, ``Flush``) are never dropped:
not by an interruption, which flushes queued data, nor by an edge's overflow policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ._caps import Caps

__all__ = ["CapsChanged", "Control", "EndOfStream", "Flush", "Interrupt", "Message", "is_system"]


@dataclass(frozen=True, slots=True)
class Control:
    """Base class of control messages; ``system`` ones survive interruption and overflow."""

    system: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Interrupt(Control):
    """Stop what you are doing: queued data is flushed, nodes reset their state (barge-in)."""

    system: ClassVar[bool] = True
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EndOfStream(Control):
    """No more data on this edge: nodes flush what they hold (a resampler's tail, say)."""

    system: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Flush(Control):
    """Emit whatever is buffered now, but keep going."""

    system: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class CapsChanged(Control):
    """The format on this edge changes from the next item on (renegotiation)."""

    system: ClassVar[bool] = True
    caps: Caps | None = None
    port: str = ""


@dataclass(frozen=True, slots=True)
class Message(Control):
    """An application control message (not a system message: interruption may drop it)."""

    name: str = ""
    data: Any = None


def is_system(item: object) -> bool:
    """True for control messages that must never be dropped."""
    return isinstance(item, Control) and type(item).system
