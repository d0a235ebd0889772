"""Typed errors. Every front end maps :attr:`ChatError.code` onto its own reply."""

from __future__ import annotations

__all__ = [
    "AuthError",
    "Banned",
    "ChatError",
    "InvalidName",
    "LimitExceeded",
    "NameInUse",
    "NoSuchClient",
    "NoSuchRoom",
    "NotInRoom",
    "PermissionDenied",
    "RateLimited",
    "RoomExists",
    "SlowConsumer",
    "StoreError",
]


class ChatError(Exception):
    """Base class: a request that the chat state refused. ``code`` is a stable upper-case word."""

    code = "ERROR"


class NoSuchRoom(ChatError):
    """The room does not exist."""

    code = "NO_SUCH_ROOM"


class RoomExists(ChatError):
    """A room of that name exists already."""

    code = "ROOM_EXISTS"


class NoSuchClient(ChatError):
    """No client of that name is connected (or known)."""

    code = "NO_SUCH_CLIENT"


class NameInUse(ChatError):
    """The nickname is taken by a connected client or reserved by an account."""

    code = "NAME_IN_USE"


class InvalidName(ChatError):
    """A nickname, room name or other field has forbidden characters or is empty."""

    code = "INVALID_NAME"


class NotInRoom(ChatError):
    """The client must join the room first."""

    code = "NOT_IN_ROOM"


class PermissionDenied(ChatError):
    """The client lacks the room permission (owner or moderator) the request needs."""

    code = "PERMISSION_DENIED"


class Banned(ChatError):
    """The client is banned from the room."""

    code = "BANNED"


class LimitExceeded(ChatError):
    """A configured limit (clients, message length, field length, rooms) would be exceeded."""

    code = "LIMIT_EXCEEDED"


class RateLimited(ChatError):
    """The client sends faster than its token bucket allows."""

    code = "RATE_LIMITED"


class AuthError(ChatError):
    """Wrong password, bad or expired token, or an account is required."""

    code = "AUTH_FAILED"


class SlowConsumer(ChatError):
    """A client's send queue passed its bound; it is disconnected so the room does not stall."""

    code = "SLOW_CONSUMER"


class StoreError(ChatError):
    """The store failed to persist or read; the request was not acknowledged."""

    code = "STORE_ERROR"
