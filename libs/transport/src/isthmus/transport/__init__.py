"""isthmus.transport: zero-copy, full-duplex async tagged messaging into preallocated buffers.

* :class:`Server` / :class:`Client` — ``asend(buf, tag)`` and ``arecv(buf, tag, tag_mask)`` with
  UCX-style tag matching, over a Unix socket plus one-copy ``process_vm_readv`` on one host (an
  ``isthmus.buffer`` shared-memory ring where that call is refused) or TCP across hosts.
* :class:`ServerEndpoint` — a connected client; :class:`Message` — a receive of unknown size.
* ``isthmus.transport.starway`` — Starway's API, unchanged, on this core.
* ``isthmus.transport.trio`` — the same Server and Client for trio.

Every failure is a :class:`TransportError` subclass on the operation's future.
"""

from ._aio import Client, Message, Server, ServerEndpoint
from ._core import BACKENDS
from ._errors import (
    BackendUnavailableError,
    BufferValidationError,
    ConnectionLostError,
    MessageTruncatedError,
    ProtocolError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)
from ._version import __version__

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "BufferValidationError",
    "Client",
    "ConnectionLostError",
    "Message",
    "MessageTruncatedError",
    "ProtocolError",
    "Server",
    "ServerEndpoint",
    "TransportClosedError",
    "TransportError",
    "TransportTimeoutError",
    "__version__",
]
