"""The trio front end: ``from isthmus.transport import trio as ttrio``.

:class:`Server` and :class:`Client` have the methods of the asyncio ones, with the operations as
``async`` functions, and are opened as async context managers::

    async with ttrio.Server() as server:
        server.listen("127.0.0.1", 0)
        ep, tag, n = await server.arecv_from(buf, 7)

    async with ttrio.Client() as client:
        await client.aconnect("127.0.0.1", port)
        await client.asend(data, 7)

The ``async with`` block opens the nursery that hosts the tasks watching the sockets; leaving it
closes everything (draining in-flight sends first when the block ends without an exception).
Both speak the same protocol as the asyncio front end, so a trio peer and an asyncio peer talk to
each other.  Cancelling a task that awaits an operation withdraws the operation: a cancelled
receive never writes into its buffer, and its message goes to the next matching receive.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket
import ssl
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import outcome
import trio

from . import _aio
from ._aio import Message, ServerEndpoint, is_local_address, unix_name
from ._buffers import recv_view, send_views
from ._core import (
    FINISHED,
    FULL_MASK,
    Connection,
    RecvOp,
    SendOp,
    boot_id,
    timeout_error,
    tls_handshake,
)
from ._errors import (
    ConnectionLostError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)

__all__ = ["Client", "Message", "Server", "ServerEndpoint"]

log = logging.getLogger("isthmus.transport")

T = TypeVar("T")


def _invoke(callback: Callable[[], object]) -> None:
    """Run a core callback; an exception is logged, never allowed to tear the nursery down."""
    try:
        callback()
    except Exception:
        log.exception("isthmus.transport callback %r raised", callback)


# ------------------------------------------------------------------------------------------
# the reactor: what the callback core needs from an event loop, over trio
# ------------------------------------------------------------------------------------------


class _Handle:
    """What ``call_soon``/``call_later`` return: ``cancel()`` before it runs and it never does."""

    __slots__ = ("callback", "cancelled", "scope")

    def __init__(
        self, callback: Callable[[], object], scope: trio.CancelScope | None = None
    ) -> None:
        self.callback = callback
        self.cancelled = False
        self.scope = scope

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class _Watch:
    """One ``add_reader``/``add_writer`` registration, served by one task."""

    __slots__ = ("active", "callback", "fd", "scope")

    def __init__(self, fd: int, callback: Callable[[], object]) -> None:
        self.fd = fd
        self.callback = callback
        self.active = True
        self.scope = trio.CancelScope()


class _TrioReactor:
    """The core's :class:`~isthmus.transport._core.Reactor` over trio.

    A reader (writer) is a task in ``nursery`` looping on ``wait_readable`` (``wait_writable``)
    and calling its callback; removing it cancels the task, which trio deregisters from epoll
    synchronously, so the socket may be closed right after.  ``call_soon`` callbacks run in
    batches on one task (those scheduled by a batch run in the next, after trio polled I/O, as
    asyncio does); ``call_later`` is a sleeping task.  Callback exceptions are logged.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._readers: dict[int, _Watch] = {}
        self._writers: dict[int, _Watch] = {}
        self._soon: deque[_Handle] = deque()
        self._runner: trio.lowlevel.Task | None = None
        self._parked = False
        self.closed = False
        nursery.start_soon(self._run_soon, name="isthmus.transport call_soon")

    # --- file descriptors --------------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        self._add(self._readers, fd, callback, "read")

    def add_writer(self, fd: int, callback: Callable[[], object]) -> None:
        self._add(self._writers, fd, callback, "write")

    def remove_reader(self, fd: int) -> bool:
        return self._remove(self._readers, fd)

    def remove_writer(self, fd: int) -> bool:
        return self._remove(self._writers, fd)

    def _add(
        self, table: dict[int, _Watch], fd: int, callback: Callable[[], object], what: str
    ) -> None:
        watch = table.get(fd)
        if watch is not None:
            watch.callback = callback  # as asyncio does: the new callback replaces the old
            return
        if self.closed:
            raise RuntimeError("the trio reactor is closed (its `async with` block ended)")
        watch = _Watch(fd, callback)
        self._nursery.start_soon(self._watch, table, watch, what, name=f"isthmus {what} fd {fd}")
        table[fd] = watch

    def _remove(self, table: dict[int, _Watch], fd: int) -> bool:
        watch = table.pop(fd, None)
        if watch is None:
            return False
        watch.active = False
        watch.scope.cancel()  # trio takes the task off epoll right here, not when it next runs
        if not self.closed and fd not in self._readers and fd not in self._writers:
            # The core closes the socket next: drop the fd from trio's epoll set too, and wake
            # anything else still waiting on it instead of leaving it on a dead fd.
            trio.lowlevel.notify_closing(fd)
        return True

    async def _watch(self, table: dict[int, _Watch], watch: _Watch, what: str) -> None:
        wait = trio.lowlevel.wait_readable if what == "read" else trio.lowlevel.wait_writable
        with watch.scope:
            try:
                # ``active`` is checked before every wait: a task removed (and its fd closed,
                # maybe reused) before it got to run never waits on that fd number.
                while watch.active:
                    await wait(watch.fd)
                    if watch.active:
                        _invoke(watch.callback)
            except (trio.ClosedResourceError, trio.BusyResourceError, OSError) as exc:
                # The fd was closed behind our back: one more callback lets its owner find out
                # (its next read or write fails and tears the connection down).
                if watch.active:
                    log.debug("fd %d: %s wait failed: %r", watch.fd, what, exc)
                    watch.active = False
                    _invoke(watch.callback)
            finally:
                if table.get(watch.fd) is watch:
                    del table[watch.fd]

    # --- callbacks ---------------------------------------------------------------------------
    def call_soon(self, callback: Callable[[], object]) -> _Handle:
        handle = _Handle(callback)
        if not self.closed:
            self._soon.append(handle)
            if self._parked:
                self._parked = False
                assert self._runner is not None
                trio.lowlevel.reschedule(self._runner)
        return handle

    def _unpark(self, _raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._parked = False
        return trio.lowlevel.Abort.SUCCEEDED

    async def _run_soon(self) -> None:
        self._runner = trio.lowlevel.current_task()
        while True:
            if not self._soon:
                self._parked = True
                await trio.lowlevel.wait_task_rescheduled(self._unpark)
            batch, self._soon = self._soon, deque()
            for handle in batch:
                if not handle.cancelled:
                    _invoke(handle.callback)
            await trio.lowlevel.checkpoint()

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Handle:
        if self.closed:
            raise RuntimeError("the trio reactor is closed (its `async with` block ended)")
        handle = _Handle(callback, trio.CancelScope())
        self._nursery.start_soon(self._later, handle, trio.current_time() + delay)
        return handle

    @staticmethod
    async def _later(handle: _Handle, deadline: float) -> None:
        assert handle.scope is not None
        with handle.scope:
            await trio.sleep_until(deadline)
            if not handle.cancelled:
                handle.cancelled = True
                _invoke(handle.callback)

    def time(self) -> float:
        return trio.current_time()

    def close(self) -> None:
        """Stop every watcher and timer; later ``add_*``/``call_later`` raise RuntimeError."""
        self.closed = True
        for table in (self._readers, self._writers):
            for watch in table.values():
                watch.active = False
                watch.scope.cancel()
            table.clear()
        self._soon.clear()


# ------------------------------------------------------------------------------------------
# awaiting an operation of the core
# ------------------------------------------------------------------------------------------


class _Waiter:
    """Parks the task that issued an operation until the core calls back (exactly once).

    Cancelling the task withdraws the operation synchronously, from trio's abort callback, so no
    callback can slip in between: a cancelled receive is never written to.  A send that cannot
    be withdrawn any more (its bytes are half on the wire) refuses the cancellation
    (``Abort.FAILED``): the task is woken when the send completes and is told it completed (a
    cancellation still in force is delivered at its next checkpoint; a ``timeout=`` is not).
    """

    __slots__ = ("aborting", "op", "parked", "result", "stale", "task")

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.op: RecvOp | SendOp | None = None
        self.result: outcome.Outcome[Any] | None = None
        self.parked = False
        self.aborting = False
        self.stale = False  # the task stopped waiting: later callbacks are ignored

    def resolve(self, value: Any = None) -> None:
        self._set(outcome.Value(value))

    def reject(self, exc: BaseException) -> None:
        self._set(outcome.Error(exc))

    def _set(self, result: outcome.Outcome[Any]) -> None:
        if self.stale or self.result is not None:
            return
        self.result = result
        if self.parked and not self.aborting:
            self.parked = False
            trio.lowlevel.reschedule(self.task, result)

    def _abort(self, _raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        op = self.op
        if op is not None and op.state != FINISHED:
            self.aborting = True
            try:
                op.cancel()
            except Exception:
                log.exception("withdrawing %r failed", op)
            finally:
                self.aborting = False
            if op.state != FINISHED:
                return trio.lowlevel.Abort.FAILED  # still running: wait for its completion
        self.parked = False
        self.stale = True
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> Any:
        if self.result is not None:  # completed while being issued
            await trio.lowlevel.cancel_shielded_checkpoint()
            return self.result.unwrap()
        self.parked = True
        return await trio.lowlevel.wait_task_rescheduled(self._abort)

    async def wait_for(self, timeout: float | None, what: str) -> Any:
        if timeout is None:
            return await self.wait()
        with trio.move_on_after(timeout):
            return await self.wait()
        raise timeout_error(what, timeout)


# ------------------------------------------------------------------------------------------
# the asyncio classes' reactor-agnostic parts, with the worker built on a _TrioReactor
# ------------------------------------------------------------------------------------------


class _TrioCore(_aio._Node):
    _reactor: _TrioReactor | None = None
    _gone: trio.Event | None = None

    def _worker_reactor(self) -> _TrioReactor:
        if self._closed:
            raise TransportClosedError(
                f"{type(self).__name__.strip('_').removesuffix('Core')} is closed"
            )
        reactor = self._reactor
        if reactor is None:
            raise TransportError(
                "a trio Server/Client works inside its `async with` block: "
                "`async with isthmus.transport.trio.Server() as server: ...`"
            )
        return reactor

    def _connection_lost(self, conn: Connection, exc: BaseException) -> None:
        super()._connection_lost(conn, exc)
        worker = self._worker
        if self._gone is not None and worker is not None and not worker.connections:
            self._gone.set()


class _ServerCore(_TrioCore, _aio.Server):
    pass


class _ClientCore(_TrioCore, _aio.Client):
    pass


CoreT = TypeVar("CoreT", bound=_TrioCore)


class _Node(Generic[CoreT]):
    """What the trio Server and Client share: the nursery, operation plumbing, flush, close."""

    def __init__(self, core: CoreT) -> None:
        self._core = core
        self._stack: AsyncExitStack | None = None
        self._reactor: _TrioReactor | None = None
        self._nursery: trio.Nursery | None = None
        self._orphans: list[socket.socket] = []  # sockets of abandoned TLS handshakes

    @property
    def backend(self) -> str:
        """The backend in use: ``"auto"``, ``"cma"``, ``"shm"`` or ``"tcp"``."""
        return self._core.backend

    @property
    def name(self) -> str:
        """This end's name (what the peer sees as ``peer_name``)."""
        return self._core.name

    async def __aenter__(self) -> Self:
        if self._stack is not None or self._core._closed:
            raise TransportError(f"{type(self).__name__} can be entered once")
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        self._nursery = nursery
        self._reactor = self._core._reactor = _TrioReactor(nursery)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, reactor, nursery = self._stack, self._reactor, self._nursery
        assert stack is not None and reactor is not None and nursery is not None
        try:
            if exc_type is None:
                await self.aclose()
        finally:
            self._close_now()
            reactor.close()
            for sock in self._orphans:
                sock.close()
            self._orphans.clear()
            nursery.cancel_scope.cancel()
            # The nursery ends without the block's exception (which propagates as it is, not
            # wrapped in an ExceptionGroup): its tasks never raise, callbacks are logged.
            await stack.aclose()

    def _close_now(self) -> None:
        core = self._core
        core._closed = True
        worker = core._worker
        if worker is not None:
            core._worker = None
            worker.close(TransportClosedError(f"{type(self).__name__} closed"))

    async def aclose(self, *, drain: bool = True, timeout: float | None = 30.0) -> None:
        """Close: finish in-flight sends first (``drain``, up to ``timeout`` seconds), then
        release every socket.  Leaving the ``async with`` block does this too."""
        core = self._core
        worker = core._worker
        if core._closed or worker is None:
            core._closed = True
            await trio.lowlevel.checkpoint()
            return
        core._closed = True
        try:
            if drain and worker.connections:
                core._gone = gone = trio.Event()
                for conn in list(worker.connections):
                    conn.close_gracefully()
                if worker.connections:
                    with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                        await gone.wait()
                    if scope.cancelled_caught:
                        log.warning(
                            "%s: in-flight sends not drained within %s s", core.name, timeout
                        )
        finally:
            self._close_now()
        await trio.lowlevel.checkpoint()

    # --- operations --------------------------------------------------------------------------
    async def _send(self, conn: Connection, buffer: Any, tag: int, timeout: float | None) -> None:
        views = send_views(buffer)
        _aio._check_tag(tag)
        await trio.lowlevel.checkpoint_if_cancelled()
        waiter = _Waiter()
        op = SendOp(conn, views, tag, waiter.resolve, waiter.reject)
        waiter.op = op
        conn.send(op)
        await waiter.wait_for(timeout, "send")

    async def _recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        timeout: float | None,
        result: Callable[[int, int, Connection, Any], T],
        alloc: Callable[[int], Any] | None = None,
    ) -> T:
        worker = self._core._w()
        view = recv_view(buffer) if buffer is not _aio.UNKNOWN_SIZE else None
        _aio._check_tag(tag)
        _aio._check_tag(tag_mask, "tag_mask")
        await trio.lowlevel.checkpoint_if_cancelled()
        waiter = _Waiter()

        def done(t: int, n: int, conn: Connection, buf: Any) -> None:
            try:
                value = result(t, n, conn, buf)
            except Exception as exc:
                waiter.reject(exc)
            else:
                waiter.resolve(value)

        op = RecvOp(worker, view, tag, tag_mask, done, waiter.reject, alloc)
        waiter.op = op
        worker.post_recv(op)
        value: T = await waiter.wait_for(timeout, "receive")
        return value

    def _flush_cb(
        self,
        conns: list[Connection],
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Call ``done_callback`` once every connection in ``conns`` flushed, or
        ``fail_callback`` once, with the first failure."""
        left = len(conns)
        finished = False

        def one_done() -> None:
            nonlocal left, finished
            left -= 1
            if left == 0 and not finished:
                finished = True
                done_callback()

        def one_failed(exc: BaseException) -> None:
            nonlocal finished
            if not finished:
                finished = True
                fail_callback(exc)

        if not conns:
            done_callback()
            return
        for conn in conns:
            conn.flush(one_done, one_failed)

    async def _flush(self, conns: list[Connection]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        waiter = _Waiter()
        self._flush_cb(conns, waiter.resolve, waiter.reject)
        await waiter.wait()  # a flush cannot be withdrawn; a cancelled wait just stops waiting


class Server(_Node[_ServerCore]):
    """Accepts Clients; sends to one endpoint, receives from any (trio).

    Use as ``async with Server(...) as server:``.  Options as for
    :class:`isthmus.transport.Server`: ``backend`` (``"auto"``, ``"cma"``, ``"shm"``, ``"tcp"``;
    env ``ISTHMUS_TRANSPORT_BACKEND``), ``name``, ``rndv_threshold``, ``spin`` and
    ``ssl_context`` (a server-side :class:`ssl.SSLContext`: TCP clients must speak TLS).
    """

    def __init__(
        self,
        *,
        backend: str | None = None,
        name: str = "",
        rndv_threshold: int | None = None,
        spin: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            _ServerCore(
                backend=backend,
                name=name,
                rndv_threshold=rndv_threshold,
                spin=spin,
                ssl_context=ssl_context,
            )
        )

    # --- listening ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port (after ``listen``)."""
        return self._core.port

    @property
    def address(self) -> tuple[str, int]:
        """The bound TCP (host, port) (after ``listen``)."""
        return self._core.address

    def listen(self, addr: str, port: int) -> None:
        """Listen on TCP ``addr:port`` (port 0 picks one) and, unless ``backend="tcp"``, on the
        abstract Unix socket that clients on this host use for it."""
        self._core.listen(addr, port)

    def listen_address(self, host: str = "0.0.0.0") -> bytes:
        """Listen (on ``host``, an ephemeral port) and return the worker address for
        :meth:`Client.aconnect_address`."""
        return self._core.listen_address(host)

    def get_worker_address(self) -> bytes:
        """Bytes that :meth:`Client.aconnect_address` connects with (after ``listen``)."""
        return self._core.get_worker_address()

    def set_accept_cb(self, on_accept: Callable[[ServerEndpoint], None]) -> None:
        """Call ``on_accept(endpoint)`` (in the reactor's task) for each client once its
        handshake is done."""
        self._core.set_accept_cb(on_accept)

    def list_clients(self) -> set[ServerEndpoint]:
        """The endpoints of the clients connected now."""
        return self._core.list_clients()

    # --- operations --------------------------------------------------------------------------
    async def asend(
        self, client_ep: ServerEndpoint, buffer: Any, tag: int, *, timeout: float | None = None
    ) -> None:
        """Send ``buffer`` (or a list of buffers, as one message) to one client with ``tag``.

        Returns when the buffer may be reused; until then it must not change.
        """
        await self._send(self._core._live_conn_of(client_ep), buffer, tag, timeout)

    async def arecv(
        self, buffer: Any, tag: int, tag_mask: int = FULL_MASK, *, timeout: float | None = None
    ) -> tuple[int, int]:
        """Receive from any client into ``buffer``: ``(sender_tag, length)``.

        Matches when ``(msg_tag & tag_mask) == (tag & tag_mask)``.  Cancelled (or timed out,
        :class:`~isthmus.transport.TransportTimeoutError`), it never writes into ``buffer``.
        """
        return await self._recv(buffer, tag, tag_mask, timeout, lambda t, n, _c, _b: (t, n))

    async def arecv_from(
        self, buffer: Any, tag: int, tag_mask: int = FULL_MASK, *, timeout: float | None = None
    ) -> tuple[ServerEndpoint, int, int]:
        """Like :meth:`arecv` and also says who sent it: ``(endpoint, sender_tag, length)``."""
        return await self._recv(
            buffer, tag, tag_mask, timeout, lambda t, n, c, _b: (c.endpoint, t, n)
        )

    async def arecv_message(
        self,
        tag: int,
        tag_mask: int = FULL_MASK,
        *,
        pool: Any = None,
        timeout: float | None = None,
    ) -> Message:
        """Receive a message of unknown size into a buffer from ``pool`` (an
        ``isthmus.buffer.BufferPool``; messages larger than its slots get their own buffer)."""
        return await self._recv(
            _aio.UNKNOWN_SIZE,
            tag,
            tag_mask,
            timeout,
            lambda t, n, c, b: Message(t, b, n, c.endpoint),
            _aio._pool_alloc(pool),
        )

    async def aflush(self) -> None:
        """Return once every send issued so far completed and every client processed it."""
        await self._flush(list(self._core._w().connections))

    async def aflush_ep(self, client_ep: ServerEndpoint) -> None:
        """:meth:`aflush` for one client."""
        await self._flush([self._core._live_conn_of(client_ep)])

    # --- callback forms (the callbacks run in the reactor's tasks) ----------------------------
    def send(
        self,
        client_ep: ServerEndpoint,
        buffer: Any,
        tag: int,
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`asend`."""
        self._core.send(client_ep, buffer, tag, done_callback, fail_callback)

    def recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        done_callback: Callable[[int, int], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`arecv`."""
        self._core.recv(buffer, tag, tag_mask, done_callback, fail_callback)

    def flush(
        self, done_callback: Callable[[], None], fail_callback: Callable[[BaseException], None]
    ) -> None:
        """Callback form of :meth:`aflush`."""
        self._flush_cb(list(self._core._w().connections), done_callback, fail_callback)

    def flush_ep(
        self,
        client_ep: ServerEndpoint,
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`aflush_ep`."""
        self._flush_cb([self._core._live_conn_of(client_ep)], done_callback, fail_callback)


class Client(_Node[_ClientCore]):
    """Connects to one Server; full duplex tagged send and receive (trio).

    Use as ``async with Client(...) as client:``.  Options as for :class:`Server`;
    ``connect_timeout`` bounds the connect and the handshake; ``ssl_context`` (a client-side
    :class:`ssl.SSLContext`) makes the connection TLS over TCP, even to a Server on this host,
    with ``server_hostname`` defaulting to the host connected to.
    """

    def __init__(
        self,
        *,
        backend: str | None = None,
        name: str = "",
        rndv_threshold: int | None = None,
        spin: float | None = None,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        super().__init__(
            _ClientCore(
                backend=backend,
                name=name,
                rndv_threshold=rndv_threshold,
                spin=spin,
                connect_timeout=connect_timeout,
                ssl_context=ssl_context,
                server_hostname=server_hostname,
            )
        )

    @property
    def connected(self) -> bool:
        """True between a successful connect and close or loss of the connection."""
        return self._core.connected

    def transports(self) -> list[tuple[str, str]]:
        """(purpose, transport) pairs in use, e.g. ``("rendezvous", "cma")``."""
        return self._core.transports()

    def get_worker_address(self) -> bytes:
        """An address naming this client (for symmetry with Starway; clients do not listen)."""
        return self._core.get_worker_address()

    # --- connecting --------------------------------------------------------------------------
    async def aconnect(self, addr: str, port: int) -> None:
        """Connect to a Server's ``listen(addr, port)``; a Unix socket when it is on this host."""
        self._core._w()
        await self._connect([(addr, port)], self._core.backend != "tcp")

    async def aconnect_address(self, remote_address: bytes) -> None:
        """Connect with a Server's worker address (``listen_address()``)."""
        self._core._w()
        prefix = _aio.ADDRESS_PREFIX
        if not isinstance(remote_address, bytes) or not remote_address.startswith(prefix):
            raise ValueError("not an isthmus.transport worker address")
        info = json.loads(remote_address[len(prefix) :])
        port = int(info["port"])
        same_host = info.get("boot") == boot_id()
        hosts = [(str(h), port) for h in info["hosts"]]
        await self._connect(hosts, same_host and self._core.backend != "tcp")

    async def _connect(self, targets: list[tuple[str, int]], try_unix: bool) -> None:
        core = self._core
        if core._conn is not None:
            raise TransportError("already connected")
        worker = core._w()
        limit = core._connect_timeout
        sock: socket.socket | None = None
        kind = "tcp"
        if try_unix and core._ssl is None and any(is_local_address(h) for h, _ in targets):
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.setblocking(False)
            try:
                with trio.move_on_after(limit):
                    await _sock_connect(unix, unix_name(targets[0][1]))
                    sock, kind = unix, "unix"
            except OSError:
                pass
            finally:
                if sock is None:
                    unix.close()
        errors = []
        if sock is None:
            for host, port in targets:
                try:
                    tcp = await _tcp_connect(host, port, limit)
                    if core._ssl is not None:
                        sock = await self._tls(tcp, core._server_hostname or host)
                        kind = "tls"
                    else:
                        sock = tcp
                    break
                except (OSError, TransportError) as exc:
                    errors.append(f"{host}:{port}: {exc}")
        if sock is None:
            raise ConnectionLostError("could not connect: " + "; ".join(errors))
        waiter = _Waiter()
        conn = worker.add_connection(sock, kind)
        core._conn = conn
        try:
            if conn.closed:
                raise conn._closed_error()
            conn.on_ready = lambda _c: waiter.resolve()
            conn.on_fail = waiter.reject
            with trio.move_on_after(limit):
                await waiter.wait()
                return
            raise TransportTimeoutError(f"handshake did not complete within {limit} s")
        except BaseException:
            conn.lost(ConnectionLostError("handshake did not complete"))
            core._conn = None
            raise

    async def _tls(self, tcp: socket.socket, hostname: str) -> ssl.SSLSocket:
        core = self._core
        assert core._ssl is not None
        name = hostname if core._ssl.check_hostname else None
        tls = core._ssl.wrap_socket(tcp, server_hostname=name, do_handshake_on_connect=False)
        tls.setblocking(False)
        waiter = _Waiter()
        tls_handshake(core._w().reactor, tls, waiter.resolve, waiter.reject, core._connect_timeout)
        try:
            sock: ssl.SSLSocket = await waiter.wait()
        except BaseException:
            if tls.fileno() >= 0:
                # Cancelled mid-handshake: the handshake owns the socket until it ends (it
                # closes it on failure or timeout); leaving the block closes it at the latest.
                self._orphans.append(tls)
            raise
        return sock

    # --- operations --------------------------------------------------------------------------
    async def asend(self, buffer: Any, tag: int, *, timeout: float | None = None) -> None:
        """Send ``buffer`` (or a list of buffers, as one message) with ``tag``.

        Returns when the buffer may be reused; until then it must not change.
        """
        await self._send(self._core._c(), buffer, tag, timeout)

    async def arecv(
        self, buffer: Any, tag: int, tag_mask: int = FULL_MASK, *, timeout: float | None = None
    ) -> tuple[int, int]:
        """Receive into ``buffer`` the first message whose tag matches: ``(sender_tag, length)``.

        Matches when ``(msg_tag & tag_mask) == (tag & tag_mask)``.  Cancelled (or timed out,
        :class:`~isthmus.transport.TransportTimeoutError`), it never writes into ``buffer``.
        """
        conn = self._core._conn
        if conn is not None and conn.closed:
            await trio.lowlevel.checkpoint()
            raise conn._closed_error()
        return await self._recv(buffer, tag, tag_mask, timeout, lambda t, n, _c, _b: (t, n))

    async def arecv_message(
        self,
        tag: int,
        tag_mask: int = FULL_MASK,
        *,
        pool: Any = None,
        timeout: float | None = None,
    ) -> Message:
        """Receive a message of unknown size (see :meth:`Server.arecv_message`)."""
        return await self._recv(
            _aio.UNKNOWN_SIZE,
            tag,
            tag_mask,
            timeout,
            lambda t, n, _c, b: Message(t, b, n, None),
            _aio._pool_alloc(pool),
        )

    async def aflush(self) -> None:
        """Return once every send issued so far completed and the Server processed them."""
        await self._flush([self._core._c()])

    # --- callback forms (the callbacks run in the reactor's tasks) ----------------------------
    def send(
        self,
        buffer: Any,
        tag: int,
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`asend`."""
        self._core.send(buffer, tag, done_callback, fail_callback)

    def recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        done_callback: Callable[[int, int], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`arecv`."""
        self._core.recv(buffer, tag, tag_mask, done_callback, fail_callback)

    def flush(
        self, done_callback: Callable[[], None], fail_callback: Callable[[BaseException], None]
    ) -> None:
        """Callback form of :meth:`aflush`."""
        self._flush_cb([self._core._c()], done_callback, fail_callback)


# ------------------------------------------------------------------------------------------
# connecting a non-blocking stdlib socket under trio
# ------------------------------------------------------------------------------------------


async def _sock_connect(sock: socket.socket, address: Any) -> None:
    """``connect`` a non-blocking socket: ``connect_ex``, then wait writable, then SO_ERROR."""
    while True:
        err = sock.connect_ex(address)
        if err in (0, errno.EISCONN):
            await trio.lowlevel.checkpoint()
            return
        if err == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            return
        if err == errno.EAGAIN and sock.family == socket.AF_UNIX:
            await trio.sleep(0.001)  # the listener's backlog is full: try again
            continue
        raise OSError(err, os.strerror(err))


async def _tcp_connect(host: str, port: int, limit: float) -> socket.socket:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(errno.EHOSTUNREACH, f"no address for {host!r}")
    family, _type, _proto, _name, sockaddr = infos[0]
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setblocking(False)
    try:
        with trio.move_on_after(limit):
            await _sock_connect(tcp, sockaddr)
            return tcp
        raise TimeoutError(errno.ETIMEDOUT, f"connect timed out after {limit} s")
    except BaseException:
        tcp.close()
        raise
