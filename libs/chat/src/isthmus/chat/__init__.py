"""isthmus.chat: one chat state, many front ends.

* :class:`Chat` — rooms, sessions, messages, presence, history, accounts (no I/O of its own).
* Front ends over one ``Chat``: :class:`LineProtocolServer` (the seed's line protocol),
  :class:`IrcServer` (RFC 1459/2812 subset with IRCv3), and :func:`create_app`, an ASGI app
  with REST, WebSocket and a web page.
* Stores: :class:`MemoryStore`, :class:`SQLiteStore` (embedded default), :class:`PostgresStore`.
* Scale-out: :class:`RedisBackplane`.
* :func:`serve` starts everything (the ``isthmus-chat serve`` CLI).
"""

from ._config import ServerConfig, load_config
from ._errors import (
    AuthError,
    Banned,
    ChatError,
    InvalidName,
    LimitExceeded,
    NameInUse,
    NoSuchClient,
    NoSuchRoom,
    NotInRoom,
    PermissionDenied,
    RateLimited,
    RoomExists,
    SlowConsumer,
    StoreError,
)
from ._irc import IrcFormatter, IrcServer
from ._line import LineFormatter, LineProtocolServer
from ._model import Account, Event, Limits, Message, RoomRecord, Status, dm_key
from ._postgres import PostgresStore
from ._redis import RedisBackplane
from ._server import ChatServer, make_store, serve
from ._sink import Formatter, Sink
from ._sqlite import SQLiteStore
from ._state import Backplane, Chat, Room, Session
from ._store import Draft, MemoryStore, Store
from ._version import __version__
from ._web import WsFormatter, app_from_env, create_app

__all__ = [
    "Account",
    "AuthError",
    "Backplane",
    "Banned",
    "Chat",
    "ChatError",
    "ChatServer",
    "Draft",
    "Event",
    "Formatter",
    "InvalidName",
    "IrcFormatter",
    "IrcServer",
    "LimitExceeded",
    "Limits",
    "LineFormatter",
    "LineProtocolServer",
    "MemoryStore",
    "Message",
    "NameInUse",
    "NoSuchClient",
    "NoSuchRoom",
    "NotInRoom",
    "PermissionDenied",
    "PostgresStore",
    "RateLimited",
    "RedisBackplane",
    "Room",
    "RoomExists",
    "RoomRecord",
    "SQLiteStore",
    "ServerConfig",
    "Session",
    "Sink",
    "SlowConsumer",
    "Status",
    "Store",
    "StoreError",
    "WsFormatter",
    "__version__",
    "app_from_env",
    "create_app",
    "dm_key",
    "load_config",
    "make_store",
    "serve",
]
