"""The asyncio front end: Server, Client and ServerEndpoint over the callback core."""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import json
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, TypeVar

from ._buffers import recv_view, send_views
from ._core import (
    BACKENDS,
    FULL_MASK,
    Connection,
    Reactor,
    RecvOp,
    SendOp,
    Worker,
    boot_id,
    timeout_error,
    tls_handshake,
)
from ._errors import ConnectionLostError, TransportClosedError, TransportError

__all__ = ["Client", "Message", "Server", "ServerEndpoint"]

log = logging.getLogger("isthmus.transport")

T = TypeVar("T")

ADDRESS_PREFIX = b"isthmus-transport/1:"
#: The buffer argument of a receive whose buffer is allocated once the size is known.
UNKNOWN_SIZE: Any = object()


def unix_name(port: int) -> str:
    """The abstract Unix socket a Server listening on TCP ``port`` also accepts on."""
    return f"\0isthmus-transport/{port}"


def _backend(backend: str | None) -> str:
    chosen = backend or os.environ.get("ISTHMUS_TRANSPORT_BACKEND", "auto") or "auto"
    if chosen not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {chosen!r}")
    return chosen


def _spin(spin: float | None) -> float:
    if spin is not None:
        return max(0.0, spin)
    env = os.environ.get("ISTHMUS_TRANSPORT_SPIN_US")
    return max(0.0, float(env) * 1e-6) if env else DEFAULT_SPIN


#: After traffic, while a receive waits, the loop keeps polling this long before it sleeps: a
#: virtual CPU that halts takes ~30 us to wake, more than the whole reply takes.  Bounded, and
#: only after traffic, so an idle connection uses no CPU.
DEFAULT_SPIN = 100e-6


def _check_tag(tag: int, what: str = "tag") -> int:
    if not isinstance(tag, int) or not 0 <= tag <= FULL_MASK:
        raise ValueError(f"{what} must be an int in [0, 2**64), got {tag!r}")
    return tag


def is_local_address(host: str) -> bool:
    """True when ``host`` names this machine (so a Unix socket can reach a Server there)."""
    if host in ("localhost", ""):
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))  # only this host's own addresses can be bound
        return True
    except OSError:
        return False


class _OpFuture(asyncio.Future[T], Generic[T]):
    """A Future whose ``cancel()`` withdraws the operation from the core.

    After ``cancel()`` returns, a receive's buffer is never written to again; a send's buffer
    stays referenced until the peer can no longer read it.
    """

    __slots__ = ("_op",)
    _op: Any

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        op = getattr(self, "_op", None)
        if op is not None:
            self._op = None
            op.cancel()
        return True


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _reject(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class ServerEndpoint:
    """A connected client as the Server sees it (hashable; what ``list_clients()`` returns)."""

    __slots__ = ("_conn", "local_addr", "local_port", "name", "remote_addr", "remote_port")

    def __init__(
        self,
        conn: Connection,
        name: str,
        local: tuple[str, int],
        remote: tuple[str, int],
    ) -> None:
        self._conn = conn
        self.name = name
        self.local_addr, self.local_port = local
        self.remote_addr, self.remote_port = remote

    @property
    def connected(self) -> bool:
        """False once the client closed, went away or the Server closed."""
        return not self._conn.closed

    @property
    def peer_name(self) -> str:
        """The name the client gave its ``Client(name=...)``."""
        return self._conn.peer_name

    @property
    def peer_pid(self) -> int:
        """The client's process id (as its own pid namespace sees it)."""
        return self._conn.peer_pid

    def view_transports(self) -> list[tuple[str, str]]:
        """(purpose, transport) pairs in use, e.g. ``("rendezvous", "cma")``."""
        return self._conn.transports()

    def __repr__(self) -> str:
        return (
            f"<ServerEndpoint {self.name} {self.remote_addr}:{self.remote_port} -> "
            f"{self.local_addr}:{self.local_port}>"
        )


class Message:
    """A message received without knowing its size in advance (``arecv_message``).

    ``data`` views the bytes; ``release()`` (or leaving a ``with`` block) gives a pooled buffer
    back to its pool.
    """

    __slots__ = ("_buffer", "data", "endpoint", "tag")

    def __init__(self, tag: int, buffer: Any, length: int, endpoint: ServerEndpoint | None) -> None:
        self.tag = tag
        self._buffer = buffer
        view = memoryview(buffer)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self.data: memoryview = view[:length]
        self.endpoint = endpoint

    @property
    def nbytes(self) -> int:
        """The message length in bytes."""
        return self.data.nbytes

    def release(self) -> None:
        """Release the view and, for a pooled buffer, return it to its pool."""
        self.data.release()
        release = getattr(self._buffer, "release", None)
        if release is not None:
            release()

    def __enter__(self) -> Message:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Message tag={self.tag:#x} nbytes={self.nbytes}>"


class _Node:
    """What Client and Server share: the worker, operation plumbing, flush and close."""

    #: Keys ``get_worker_address()`` adds to the address, after the common ones.
    _address_tags: ClassVar[dict[str, int]] = {}

    def __init__(
        self,
        *,
        backend: str | None,
        name: str,
        rndv_threshold: int | None,
        spin: float | None,
    ) -> None:
        self.backend = _backend(backend)
        self.name = name or f"pid{os.getpid()}-{secrets.token_hex(3)}"
        self._rndv_threshold = rndv_threshold
        self._spin = _spin(spin)
        self._worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._all_gone: asyncio.Event | None = None

    def _w(self) -> Worker:
        worker = self._worker
        if worker is None:
            worker = Worker(
                self._worker_reactor(),
                backend=self.backend,
                name=self.name,
                rndv_threshold=self._rndv_threshold,
                spin=self._spin,
            )
            worker.on_connection_lost = self._connection_lost
            self._worker = worker
        return worker

    def _worker_reactor(self) -> Reactor:
        """The event loop a new worker runs on; raises once closed."""
        if self._closed:
            raise TransportClosedError(f"{type(self).__name__} is closed")
        loop = self._loop = asyncio.get_running_loop()
        return loop

    def _connection_lost(self, conn: Connection, exc: BaseException) -> None:
        worker = self._worker
        if self._all_gone is not None and worker is not None and not worker.connections:
            self._all_gone.set()

    # --- operations --------------------------------------------------------------------------
    def _send(
        self, conn: Connection, buffer: Any, tag: int, timeout: float | None
    ) -> _OpFuture[None]:
        views = send_views(buffer)
        _check_tag(tag)
        loop = self._loop
        assert loop is not None
        fut: _OpFuture[None] = _OpFuture(loop=loop)
        op = SendOp(conn, views, tag, lambda: _resolve(fut, None), lambda e: _reject(fut, e))
        fut._op = op
        conn.send(op)
        if timeout is not None and not fut.done():
            op.timer = loop.call_later(timeout, lambda: op.cancel(timeout_error("send", timeout)))
        return fut

    def _recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        timeout: float | None,
        result: Callable[[int, int, Connection, Any], Any],
        alloc: Callable[[int], Any] | None = None,
    ) -> _OpFuture[Any]:
        worker = self._w()
        view = recv_view(buffer) if buffer is not UNKNOWN_SIZE else None
        _check_tag(tag)
        _check_tag(tag_mask, "tag_mask")
        loop = self._loop
        assert loop is not None
        fut: _OpFuture[Any] = _OpFuture(loop=loop)

        def done(t: int, n: int, conn: Connection, buf: Any) -> None:
            if not fut.done():
                fut.set_result(result(t, n, conn, buf))

        op = RecvOp(worker, view, tag, tag_mask, done, lambda e: _reject(fut, e), alloc)
        fut._op = op
        worker.post_recv(op)
        if timeout is not None and not fut.done():
            op.timer = loop.call_later(
                timeout, lambda: op.cancel(timeout_error("receive", timeout))
            )
        return fut

    def _flush_conns(self, conns: Iterable[Connection]) -> asyncio.Future[None]:
        self._w()
        loop = self._loop
        assert loop is not None
        futs: list[asyncio.Future[None]] = []
        for conn in conns:
            fut: asyncio.Future[None] = loop.create_future()
            conn.flush(
                lambda f=fut: _resolve(f, None),  # type: ignore[misc]
                lambda e, f=fut: _reject(f, e),  # type: ignore[misc]
            )
            futs.append(fut)
        if not futs:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        if len(futs) == 1:
            return futs[0]
        gathered = asyncio.gather(*futs)
        out: asyncio.Future[None] = loop.create_future()
        gathered.add_done_callback(
            lambda g: (
                _reject(out, g.exception())  # type: ignore[arg-type]
                if g.exception() is not None
                else _resolve(out, None)
            )
        )
        return out

    async def _close(self, drain: bool, timeout: float | None) -> None:
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker is None:
            return
        if drain and worker.connections:
            self._all_gone = asyncio.Event()
            for conn in list(worker.connections):
                conn.close_gracefully()
            if worker.connections:
                try:
                    await asyncio.wait_for(self._all_gone.wait(), timeout)
                except TimeoutError:
                    log.warning("%s: in-flight sends not drained within %s s", self.name, timeout)
        worker.close(TransportClosedError(f"{type(self).__name__} closed"))
        self._worker = None

    def aflush(self) -> asyncio.Future[None]:
        """Complete once every send issued so far completed and every peer processed it."""
        raise NotImplementedError

    def aclose(self, *, drain: bool = True, timeout: float | None = 30.0) -> asyncio.Future[None]:
        """Close: finish in-flight sends first (``drain``), then release every socket."""
        return asyncio.ensure_future(self._close(drain, timeout))

    # Callback forms: the core completes on the loop thread, so these run there too.
    def recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        done_callback: Callable[[int, int], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`arecv`."""
        self._cb_recv(buffer, tag, tag_mask, done_callback, fail_callback)

    def flush(
        self, done_callback: Callable[[], None], fail_callback: Callable[[BaseException], None]
    ) -> None:
        """Callback form of :meth:`aflush`."""
        _callbacks(self.aflush(), done_callback, fail_callback)

    def _cb_send(
        self,
        conn: Connection,
        buffer: Any,
        tag: int,
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        _check_tag(tag)
        conn.send(SendOp(conn, send_views(buffer), tag, done_callback, fail_callback))

    def _cb_recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        done_callback: Callable[[int, int], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        worker = self._w()
        _check_tag(tag)
        _check_tag(tag_mask, "tag_mask")
        worker.post_recv(
            RecvOp(
                worker,
                recv_view(buffer),
                tag,
                tag_mask,
                lambda t, n, _c, _b: done_callback(t, n),
                fail_callback,
            )
        )


class Server(_Node):
    """Accepts Clients; sends to one endpoint, receives from any.

    ``backend``: ``"auto"`` (default; env ``ISTHMUS_TRANSPORT_BACKEND``) uses a Unix socket plus
    ``process_vm_readv`` for clients on this host (a shared-memory ring where that call is
    refused) and TCP for others; ``"cma"``, ``"shm"`` and ``"tcp"`` force one path.
    ``rndv_threshold``: bytes from which a same-host message goes by one-copy rendezvous.
    ``spin``: seconds the loop keeps polling after traffic while a receive waits, before it
    sleeps (default 100 us, env ``ISTHMUS_TRANSPORT_SPIN_US``; 0 never polls).
    ``ssl_context``: a server-side :class:`ssl.SSLContext`; TCP clients must then speak TLS
    (clients on this host that connect without TLS use the Unix socket, which has no TLS).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Server:
        if cls is Server and _backend(kwargs.get("backend")) == "ucx":
            from ._ucx import UcxServer  # imports ucxx only when one is constructed

            return super().__new__(UcxServer)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        backend: str | None = None,
        name: str = "",
        rndv_threshold: int | None = None,
        spin: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(backend=backend, name=name, rndv_threshold=rndv_threshold, spin=spin)
        self._ssl = ssl_context
        self._accept_cb: Callable[[ServerEndpoint], None] | None = None
        self._clients: dict[Connection, ServerEndpoint] = {}
        self._address: tuple[str, int] = ("", 0)
        self._worker_address: bytes | None = None
        self._n = 0

    # --- listening ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port (after ``listen``)."""
        return self._address[1]

    @property
    def address(self) -> tuple[str, int]:
        """The bound TCP (host, port) (after ``listen``)."""
        return self._address

    def listen(self, addr: str, port: int) -> None:
        """Listen on TCP ``addr:port`` (port 0 picks one) and, unless ``backend="tcp"``, on the
        abstract Unix socket that clients on this host use for it."""
        worker = self._w()
        if worker.listeners:
            raise TransportError("already listening")
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((addr, port))
            tcp.listen(1024)
        except OSError:
            tcp.close()
            raise
        tcp.setblocking(False)
        self._address = tcp.getsockname()[:2]
        self._add_listener(tcp, "tcp")
        if self.backend != "tcp":
            self._listen_unix(unix_name(self._address[1]))

    def _listen_unix(self, name: str) -> None:
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unix.bind(name)
            unix.listen(1024)
        except OSError as exc:
            unix.close()
            log.info("no Unix listener %r (%s): same-host clients use TCP", name, exc)
            return
        unix.setblocking(False)
        self._add_listener(unix, "unix")

    def _add_listener(self, lsock: socket.socket, kind: str) -> None:
        worker = self._w()
        worker.listeners.append(lsock)
        worker.reactor.add_reader(lsock.fileno(), lambda: self._accept(lsock, kind))

    def listen_address(self, host: str = "0.0.0.0") -> bytes:
        """Listen (on ``host``, an ephemeral port) and return the worker address for
        :meth:`Client.aconnect_address`."""
        if not self._w().listeners:
            self.listen(host, 0)
        return self.get_worker_address()

    def get_worker_address(self) -> bytes:
        """Bytes that :meth:`Client.aconnect_address` connects with (after ``listen``)."""
        if not self._address[1]:
            raise TransportError("not listening: call listen() or listen_address() first")
        host, port = self._address
        hosts = [host]
        if host in ("0.0.0.0", "::"):
            hosts = [_primary_ip(), "127.0.0.1"]
        info = {"boot": boot_id(), "port": port, "hosts": hosts, "name": self.name}
        info.update(self._address_tags)
        return ADDRESS_PREFIX + json.dumps(info).encode()

    def set_accept_cb(self, on_accept: Callable[[ServerEndpoint], None]) -> None:
        """Call ``on_accept(endpoint)`` (on the loop) for each client once its handshake is done."""
        self._accept_cb = on_accept

    def list_clients(self) -> set[ServerEndpoint]:
        """The endpoints of the clients connected now."""
        return set(self._clients.values())

    def _accept(self, lsock: socket.socket, kind: str) -> None:
        worker = self._worker
        if worker is None:
            return
        for _ in range(64):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed: %s", exc)
                    return
                raise
            if kind == "tcp" and self._ssl is not None:
                try:
                    tls = self._ssl.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (ssl.SSLError, OSError) as exc:
                    log.warning("TLS wrap for %s failed: %s", peer, exc)
                    sock.close()
                    continue
                tls.setblocking(False)
                tls_handshake(
                    worker.reactor,
                    tls,
                    functools.partial(self._add, kind="tls", peer=peer),
                    functools.partial(_log_tls_failure, peer),
                    10.0,
                )
                continue
            self._add(sock, kind, peer)

    def _add(self, sock: socket.socket, kind: str, peer: Any) -> None:
        worker = self._worker
        if worker is None:
            sock.close()
            return
        conn = worker.add_connection(sock, kind)
        conn.on_ready = lambda c: self._ready(c, peer)

    def _ready(self, conn: Connection, peer: Any) -> None:
        self._n += 1
        if conn.kind != "unix":
            remote = (str(peer[0]), int(peer[1]))
        else:
            remote = ("localhost", conn.peer_pid)
        ep = ServerEndpoint(conn, f"{remote[0]}:{remote[1]}#{self._n}", self._address, remote)
        conn.endpoint = ep
        self._clients[conn] = ep
        if self._accept_cb is not None:
            try:
                self._accept_cb(ep)
            except Exception:
                log.exception("accept callback raised")

    def _connection_lost(self, conn: Connection, exc: BaseException) -> None:
        self._clients.pop(conn, None)
        super()._connection_lost(conn, exc)

    def _conn_of(self, client_ep: ServerEndpoint) -> Connection:
        if not isinstance(client_ep, ServerEndpoint):
            raise TypeError(f"expected a ServerEndpoint, got {type(client_ep).__name__}")
        return client_ep._conn

    def _live_conn_of(self, client_ep: ServerEndpoint) -> Connection:
        """:meth:`_conn_of` once the worker is up (a closed Server raises first)."""
        self._w()
        return self._conn_of(client_ep)

    # --- operations --------------------------------------------------------------------------
    def asend(
        self, client_ep: ServerEndpoint, buffer: Any, tag: int, *, timeout: float | None = None
    ) -> asyncio.Future[None]:
        """Send ``buffer`` (or a list of buffers, as one message) to one client with ``tag``.

        Completes when the buffer may be reused; until then it is referenced and must not change.
        """
        return self._send(self._live_conn_of(client_ep), buffer, tag, timeout)

    def arecv(
        self, buffer: Any, tag: int, tag_mask: int = FULL_MASK, *, timeout: float | None = None
    ) -> asyncio.Future[tuple[int, int]]:
        """Receive from any client into ``buffer``: ``(sender_tag, length)``."""
        return self._recv(buffer, tag, tag_mask, timeout, lambda t, n, _c, _b: (t, n))

    def arecv_from(
        self, buffer: Any, tag: int, tag_mask: int = FULL_MASK, *, timeout: float | None = None
    ) -> asyncio.Future[tuple[ServerEndpoint, int, int]]:
        """Like :meth:`arecv` and also says who sent it: ``(endpoint, sender_tag, length)``."""
        return self._recv(buffer, tag, tag_mask, timeout, lambda t, n, c, _b: (c.endpoint, t, n))

    def arecv_message(
        self,
        tag: int,
        tag_mask: int = FULL_MASK,
        *,
        pool: Any = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Message]:
        """Receive a message of unknown size into a buffer from ``pool`` (an
        ``isthmus.buffer.BufferPool``; messages larger than its slots get their own buffer)."""
        return self._recv(
            UNKNOWN_SIZE,
            tag,
            tag_mask,
            timeout,
            lambda t, n, c, b: Message(t, b, n, c.endpoint),
            _pool_alloc(pool),
        )

    def aflush(self) -> asyncio.Future[None]:
        """Complete once every send issued so far has completed and every client processed it."""
        worker = self._w()
        return self._flush_conns(list(worker.connections))

    def aflush_ep(self, client_ep: ServerEndpoint) -> asyncio.Future[None]:
        """:meth:`aflush` for one client."""
        return self._flush_conns([self._conn_of(client_ep)])

    # callback forms
    def send(
        self,
        client_ep: ServerEndpoint,
        buffer: Any,
        tag: int,
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`asend`."""
        self._cb_send(self._live_conn_of(client_ep), buffer, tag, done_callback, fail_callback)

    def flush_ep(
        self,
        client_ep: ServerEndpoint,
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`aflush_ep`."""
        _callbacks(self.aflush_ep(client_ep), done_callback, fail_callback)


class Client(_Node):
    """Connects to one Server; full duplex tagged send and receive.

    Options as for :class:`Server`; ``connect_timeout`` bounds the connect and handshake.
    ``ssl_context`` (a client-side :class:`ssl.SSLContext`) makes the connection TLS over TCP,
    even to a Server on this host; ``server_hostname`` defaults to the host connected to.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Client:
        if cls is Client and _backend(kwargs.get("backend")) == "ucx":
            from ._ucx import UcxClient  # imports ucxx only when one is constructed

            return super().__new__(UcxClient)
        return super().__new__(cls)

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
        super().__init__(backend=backend, name=name, rndv_threshold=rndv_threshold, spin=spin)
        self._conn: Connection | None = None
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._server_hostname = server_hostname

    @property
    def connected(self) -> bool:
        """True between a successful connect and close or loss of the connection."""
        return self._conn is not None and not self._conn.closed

    def transports(self) -> list[tuple[str, str]]:
        """(purpose, transport) pairs in use, e.g. ``("rendezvous", "cma")``."""
        return self._c().transports()

    def aconnect(self, addr: str, port: int) -> asyncio.Future[None]:
        """Connect to a Server's ``listen(addr, port)``; a Unix socket when it is on this host."""
        self._w()
        return asyncio.ensure_future(self._connect([(addr, port)], self.backend != "tcp"))

    def aconnect_address(self, remote_address: bytes) -> asyncio.Future[None]:
        """Connect with a Server's worker address (``listen_address()``)."""
        self._w()
        if not isinstance(remote_address, bytes) or not remote_address.startswith(ADDRESS_PREFIX):
            raise ValueError("not an isthmus.transport worker address")
        info = json.loads(remote_address[len(ADDRESS_PREFIX) :])
        port = int(info["port"])
        same_host = info.get("boot") == boot_id()
        hosts = [(str(h), port) for h in info["hosts"]]
        return asyncio.ensure_future(self._connect(hosts, same_host and self.backend != "tcp"))

    async def _connect(self, targets: list[tuple[str, int]], try_unix: bool) -> None:
        if self._conn is not None:
            raise TransportError("already connected")
        worker = self._w()
        loop = self._loop
        assert loop is not None
        sock: socket.socket | None = None
        kind = "tcp"
        if try_unix and self._ssl is None and any(is_local_address(h) for h, _ in targets):
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.setblocking(False)
            try:
                await loop.sock_connect(unix, unix_name(targets[0][1]))
                sock, kind = unix, "unix"
            except OSError:
                unix.close()
        errors = []
        if sock is None:
            for host, port in targets:
                try:
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    family, *_rest, sockaddr = infos[0]
                    tcp = socket.socket(family, socket.SOCK_STREAM)
                    tcp.setblocking(False)
                    try:
                        await asyncio.wait_for(
                            loop.sock_connect(tcp, sockaddr), self._connect_timeout
                        )
                    except BaseException:
                        tcp.close()
                        raise
                    if self._ssl is not None:
                        sock = await self._tls(tcp, self._server_hostname or host)
                        kind = "tls"
                    else:
                        sock = tcp
                    break
                except (OSError, TimeoutError, TransportError) as exc:
                    errors.append(f"{host}:{port}: {exc}")
        if sock is None:
            raise ConnectionLostError("could not connect: " + "; ".join(errors))
        ready: asyncio.Future[None] = loop.create_future()
        conn = worker.add_connection(sock, kind)
        conn.on_ready = lambda _c: _resolve(ready, None)
        conn.on_fail = lambda e: _reject(ready, e)
        self._conn = conn
        try:
            await asyncio.wait_for(ready, self._connect_timeout)
        except BaseException:
            conn.lost(ConnectionLostError("handshake did not complete"))
            self._conn = None
            raise

    async def _tls(self, tcp: socket.socket, hostname: str) -> ssl.SSLSocket:
        assert self._ssl is not None and self._loop is not None
        name = hostname if self._ssl.check_hostname else None
        tls = self._ssl.wrap_socket(tcp, server_hostname=name, do_handshake_on_connect=False)
        tls.setblocking(False)
        done: asyncio.Future[ssl.SSLSocket] = self._loop.create_future()
        tls_handshake(
            self._w().reactor,
            tls,
            lambda s: _resolve(done, s),
            lambda e: _reject(done, e),
            self._connect_timeout,
        )
        return await done

    def _connection_lost(self, conn: Connection, exc: BaseException) -> None:
        worker = self._worker
        if worker is not None and conn is self._conn:
            # Nobody else can satisfy this client's receives now.
            worker.fail_posted(exc)
        super()._connection_lost(conn, exc)

    def _c(self) -> Connection:
        conn = self._conn
        if conn is None:
            if self._closed:
                raise TransportClosedError("Client is closed")
            raise TransportError("not connected: await aconnect() first")
        return conn

    def asend(self, buffer: Any, tag: int, *, timeout: float | None = None) -> asyncio.Future[None]:
        """Send ``buffer`` (or a list of buffers, as one message) with ``tag``.

        Completes when the buffer may be reused; until then it is referenced and must not change.
        """
        conn = self._c()
        return self._send(conn, buffer, tag, timeout)

    def arecv(
        self, buffer: Any, tag: int, tag_mask: int = FULL_MASK, *, timeout: float | None = None
    ) -> asyncio.Future[tuple[int, int]]:
        """Receive into ``buffer`` the first message whose tag matches: ``(sender_tag, length)``."""
        conn = self._conn
        if conn is not None and conn.closed:
            fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
            fut.set_exception(conn._closed_error())
            return fut
        return self._recv(buffer, tag, tag_mask, timeout, lambda t, n, _c, _b: (t, n))

    def arecv_message(
        self,
        tag: int,
        tag_mask: int = FULL_MASK,
        *,
        pool: Any = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Message]:
        """Receive a message of unknown size (see :meth:`Server.arecv_message`)."""
        return self._recv(
            UNKNOWN_SIZE,
            tag,
            tag_mask,
            timeout,
            lambda t, n, _c, b: Message(t, b, n, None),
            _pool_alloc(pool),
        )

    def aflush(self) -> asyncio.Future[None]:
        """Complete once every send issued so far completed and the Server processed them."""
        return self._flush_conns([self._c()])

    def get_worker_address(self) -> bytes:
        """An address naming this client (for symmetry with Starway; clients do not listen)."""
        info = {"boot": boot_id(), "pid": os.getpid(), "name": self.name}
        info.update(self._address_tags)
        return ADDRESS_PREFIX + json.dumps(info).encode()

    # callback forms
    def send(
        self,
        buffer: Any,
        tag: int,
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        """Callback form of :meth:`asend`."""
        self._cb_send(self._c(), buffer, tag, done_callback, fail_callback)


def _callbacks(
    fut: asyncio.Future[Any],
    done_callback: Callable[[], None],
    fail_callback: Callable[[BaseException], None],
) -> None:
    def on_done(f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            fail_callback(TransportClosedError("cancelled"))
        elif f.exception() is not None:
            fail_callback(f.exception())  # type: ignore[arg-type]
        else:
            done_callback()

    fut.add_done_callback(on_done)


def _log_tls_failure(peer: Any, exc: BaseException) -> None:
    log.warning("TLS handshake with %s failed: %s", peer, exc)


def _pool_alloc(pool: Any) -> Callable[[int], Any] | None:
    if pool is None:
        return None
    slot = int(pool.slot_size)

    def alloc(n: int) -> Any:
        return pool.acquire() if n <= slot else bytearray(n)

    return alloc


def _primary_ip() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
