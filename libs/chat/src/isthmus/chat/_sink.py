"""What the chat state needs from a connection: a formatter and a place to push bytes."""

from __future__ import annotations

from typing import Protocol

from ._model import Event, Message

__all__ = ["Formatter", "Sink"]


class Formatter(Protocol):
    """Encodes messages and events once per wire format.

    The state encodes each message once per distinct formatter among a room's members and pushes
    the same bytes to every member using it, so formatters are shared objects (one per front end,
    or per IRC capability set), compared by identity.
    """

    #: Whether the sender receives its own message (IRC: only with ``echo-message``).
    echo: bool
    # Optional ``joinable = True``: the bytes of several messages may be concatenated into one
    # push (byte streams such as the line protocol and IRC; not WebSocket frames).

    def message(self, msg: Message) -> bytes:
        """The bytes that deliver ``msg``."""
        ...

    def event(self, ev: Event) -> bytes | None:
        """The bytes that deliver ``ev``, or None to not deliver it."""
        ...


class Sink(Protocol):
    """A live connection the state can deliver to."""

    fmt: Formatter

    def push(self, data: bytes) -> None:
        """Queue ``data`` for the peer; must not block. A sink over its queue bound closes
        itself (slow consumer) rather than stall the room."""
        ...

    def close(self, reason: str) -> None:
        """Close the connection (the state calls :meth:`Chat.disconnect` itself)."""
        ...
