"""Starway's public API on isthmus.transport: ``from isthmus.transport import starway``.

Code written for Starway 0.6 runs unchanged: ``Server``/``Client`` with ``listen``,
``listen_address``, ``aconnect``, ``aconnect_address``, ``set_accept_cb``, ``list_clients``,
``asend``/``arecv``/``aflush``/``aflush_ep``/``aclose`` (each taking an optional ``loop``), their
callback forms ``send``/``recv``/``flush``/``flush_ep`` (whose ``fail_callback`` receives a reason
string, as Starway's does), ``get_worker_address`` and ``ServerEndpoint``.

What differs, on purpose: no thread busy-polls a core; a strided or read-only buffer is rejected
with :class:`~isthmus.transport.BufferValidationError` instead of being corrupted; an ``int64``
array is sent as its bytes and the length reported is in bytes; a cancelled ``arecv`` never
writes into its buffer; ``aclose`` drains in-flight sends; failures are typed
:class:`~isthmus.transport.TransportError` subclasses (still ``Exception``, as Starway raises).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from ._aio import Client as _Client
from ._aio import Server as _Server
from ._aio import ServerEndpoint

__all__ = ["Client", "Server", "ServerEndpoint", "check_sys_libs"]


def check_sys_libs() -> Literal["system", "wheel"]:
    """Starway reports where libucx came from; nothing is loaded here, so: ``"system"``."""
    return "system"


def _reason(cb: Callable[[str], None]) -> Callable[[BaseException], None]:
    return lambda exc: cb(str(exc) or type(exc).__name__)


class _Common:
    """What Starway's Server and Client share, on either of ours."""

    _impl: _Server | _Client

    def aclose(self, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[None]:
        """Close, after draining in-flight sends."""
        return self._impl.aclose()

    def recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        done_callback: Callable[[int, int], None],
        fail_callback: Callable[[str], None],
    ) -> None:
        """Receive (on a Server: from any client); ``done_callback(sender_tag, length)``."""
        self._impl.recv(buffer, tag, tag_mask, done_callback, _reason(fail_callback))

    def arecv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Future[tuple[int, int]]:
        """Receive (on a Server: from any client): ``(sender_tag, length)``."""
        return self._impl.arecv(buffer, tag, tag_mask)

    def flush(
        self, done_callback: Callable[[], None], fail_callback: Callable[[str], None]
    ) -> None:
        """Callback form of :meth:`aflush`."""
        self._impl.flush(done_callback, _reason(fail_callback))

    def aflush(self, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[None]:
        """Wait for every send so far to complete."""
        return self._impl.aflush()

    def get_worker_address(self) -> bytes:
        """The worker address (a Server's after ``listen``)."""
        return self._impl.get_worker_address()


class Server(_Common):
    """Starway's ``Server``."""

    def __init__(self) -> None:
        self._server = self._impl = _Server()

    def listen(self, addr: str, port: int) -> None:
        """Listen on ``addr:port``."""
        self._server.listen(addr, port)

    def listen_address(self) -> bytes:
        """Listen on an ephemeral port and return the worker address."""
        return self._server.listen_address()

    def set_accept_cb(self, on_accept: Callable[[ServerEndpoint], None]) -> None:
        """Call ``on_accept(endpoint)`` for each connecting client."""
        self._server.set_accept_cb(on_accept)

    def list_clients(self) -> set[ServerEndpoint]:
        """The connected clients."""
        return self._server.list_clients()

    def send(
        self,
        client_ep: ServerEndpoint,
        buffer: Any,
        tag: int,
        done_callback: Callable[[], None],
        fail_callback: Callable[[str], None],
    ) -> None:
        """Send to one client; callbacks on completion."""
        self._server.send(client_ep, buffer, tag, done_callback, _reason(fail_callback))

    def asend(
        self,
        client_ep: ServerEndpoint,
        buffer: Any,
        tag: int,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Future[None]:
        """Send to one client."""
        return self._server.asend(client_ep, buffer, tag)

    def flush_ep(
        self,
        client_ep: ServerEndpoint,
        done_callback: Callable[[], None],
        fail_callback: Callable[[str], None],
    ) -> None:
        """Callback form of :meth:`aflush_ep`."""
        self._server.flush_ep(client_ep, done_callback, _reason(fail_callback))

    def aflush_ep(
        self, client_ep: ServerEndpoint, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[None]:
        """Wait for every send so far to one client to complete."""
        return self._server.aflush_ep(client_ep)


class Client(_Common):
    """Starway's ``Client``."""

    def __init__(self) -> None:
        self._client = self._impl = _Client()

    def aconnect(
        self, addr: str, port: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[None]:
        """Connect to a Server's ``listen(addr, port)``."""
        return self._client.aconnect(addr, port)

    def aconnect_address(
        self, remote_address: bytes, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[None]:
        """Connect with a Server's worker address."""
        return self._client.aconnect_address(remote_address)

    def send(
        self,
        buffer: Any,
        tag: int,
        done_callback: Callable[[], None],
        fail_callback: Callable[[str], None],
    ) -> None:
        """Send; callbacks on completion."""
        self._client.send(buffer, tag, done_callback, _reason(fail_callback))

    def asend(
        self, buffer: Any, tag: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[None]:
        """Send."""
        return self._client.asend(buffer, tag)
