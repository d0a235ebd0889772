"""The optional UCX backend: :class:`UcxServer` and :class:`UcxClient` on ucxx (``ucxx-cu12``).

They are subclasses of :class:`~isthmus.transport.Server` and :class:`~isthmus.transport.Client`
with the same methods, futures, tag matching and typed errors; ``Server(backend="ucx")`` makes one.
Importing :mod:`isthmus.transport` never imports ucxx: this module loads it on the first
``UcxServer``/``UcxClient``, and raises :class:`BackendUnavailableError` when it is missing.

How it is built
---------------
* **One UCX context per Server or Client, one UCX worker per connection.**  A Server gives every
  client its own worker, so a message's worker says who sent it: ``arecv_from`` and
  ``Message.endpoint`` are exact and the whole 64-bit tag stays the application's (no sender id
  in the tag's high bits, no header in the payload).  The cost is a worker per client: about
  10 ms to create and 11 file descriptors.
* **Transports.**  Endpoints are created from worker addresses *without* UCX endpoint error
  handling.  With error handling (ucxx's default) UCX 1.21 accepts only transports that can
  report a dead peer and, for rendezvous, invalidate registered memory: on one host that leaves
  TCP alone.  Without it UCX picks System V shared memory for eager messages and CMA
  (``process_vm_readv``, "rendezvous zero-copy read from remote") for large ones, and TCP
  between hosts.  ``Client.transports()`` / ``ServerEndpoint.view_transports()`` report the
  lanes UCX chose, from ``ucp_ep_print_info``.
* **Liveness without UCX error handling.**  Each connection keeps the TCP socket its handshake
  used (worker addresses are exchanged there, as JSON lines).  The kernel closes it when a peer
  dies, which is how a lost peer is noticed (``ConnectionLostError``); it also carries
  FLUSH/FLUSHED, BYE ("I send you nothing new") and DONE ("my sends to you all completed").
  Without error handling UCX cannot cancel a rendezvous send to a dead peer, and a failed CMA
  read is a fatal error that aborts the process.  Three measures make loss recoverable:

  - a log handler pushed onto UCX's log (``ucs_log_push_handler``) swallows the fatal
    ``process_vm_readv`` message from ``cma_ep.c``, so the read fails the endpoint instead of
    aborting the process;
  - contexts are created with ``PROTO_INDIRECT_ID=on``, so UCX tracks every send by id even
    without error handling and a failed endpoint completes each one (with an error);
  - right after connecting, each side sends the other one *canary* message at the rendezvous
    threshold, which the receiver keeps unread.  When the peer goes away, reading its canary
    either succeeds (the peer is alive and closing: its canary send completes) or fails the
    endpoint (the peer is dead), which ends every send still waiting for that peer.  Either
    way the worker is then released, with no descriptors left behind.

  Closing: each side reads what the other left (the canary, unread messages), says DONE once
  its own requests completed, and frees its worker when it has the peer's DONE or EOF.
* **Matching.**  Messages are taken off UCX's unexpected queue with ``tag_probe(remove=True)`` as
  they arrive and matched here, first posted first, with ``(msg_tag & mask) == (tag & mask)``;
  a matched message is received into the posted buffer with ``tag_recv_with_handle`` (eager data
  is copied out of UCX's buffer, a rendezvous is one CMA read straight into it).  UCX never holds
  a posted buffer before a message matched it, so a receive that is cancelled or times out
  while waiting is simply withdrawn.  Because the size is known before receiving, a message
  larger than the posted buffer fails that receive with ``MessageTruncatedError`` and stays
  queued, and ``arecv_message`` allocates exactly the message's size.
* **Progress.**  Event driven on the event loop's thread: each worker's epoll descriptor is
  registered with the loop (``add_reader``), a pass progresses, probes, reaps completed
  requests and re-arms the worker.  No progress thread, no Python thread.  ``spin`` (seconds,
  env ``ISTHMUS_TRANSPORT_SPIN_US``; default 0 here, it did not pay on 2 shared cores) keeps
  polling that long after traffic while receives wait.
* **Configuration.**  ucxx sets ``UCX_RNDV_THRESH=8192``, ``UCX_MAX_RNDV_RAILS=1`` and
  ``UCX_RNDV_FRAG_MEM_TYPE=cuda`` in ``os.environ`` when imported.  Values the application did
  not set itself are overridden per context: the rendezvous threshold is ``rndv_threshold``
  (default :data:`DEFAULT_RNDV_THRESHOLD`), the others get UCX's defaults.  Any other ``UCX_*``
  variable is honoured as usual; ``ucx_config={"TLS": "tcp"}`` passes options to the context.
  ucxx's ``UCX_MEMTYPE_CACHE=n`` is hidden from the first worker's environment check (UCX
  1.19+ no longer knows it and would print a warning on stdout); the variable stays set.

Where it differs from the core backends
---------------------------------------
* **Cancelling a send** (or its ``timeout``) fails its future at once, but UCX cannot withdraw a
  message it has handed over: the peer may still receive it, and the buffer stays referenced
  until UCX is done with it.
* **Cancelling a receive that UCX is already filling** (a rendezvous being read) waits, on the
  spot, for that copy to finish (normally milliseconds; at most :data:`CANCEL_DRAIN_LIMIT`), so
  the buffer is not written after ``cancel()`` returns; the message then goes back first in
  line, as in the core.  A device buffer's message is dropped instead.
* **Multi-buffer sends** go as one UCX IOV message (``ucp_tag_send_nbx`` with
  ``UCP_DATATYPE_IOV``, called through ctypes because ucxx does not expose it), all parts in host
  memory; where that call is unavailable the parts are gathered into one staging buffer.
* **Flush** completes when every earlier send completed locally (for a rendezvous: the peer has
  read it) and the peer then progressed its worker and took everything that arrived off UCX's
  queue.  Between hosts (UCX over TCP) that second half is best effort.
* **A peer that leaves**: a Server copies the messages it had not received yet out of UCX
  (reading them also completes the leaving peer's sends) and they stay receivable, as the core
  keeps a lost peer's whole messages; from a dead peer only what already arrived survives.  A
  Client fails its receives once the Server is gone, as in the core.
* **Rendezvous sends complete when the peer receives them** (UCX: from ``rndv_threshold``,
  64 KiB here, where the core's threshold is 4 MiB): awaiting such an ``asend`` before the peer
  posts a receive waits for it.  ``rndv_threshold=4 << 20`` gives the core's behaviour at some
  cost for mid-size messages.  ``aclose(drain=True)`` waits (up to ``timeout``) for them too.
* **Device buffers** (``__cuda_array_interface__``, e.g. CuPy) are passed to UCX as they are when
  the UCX context has CUDA support; ``arecv_message`` always allocates host memory.
* **No TLS** (``ssl_context`` must be None): the TCP socket carries only the handshake and
  control messages; data goes through UCX.  ``listen_address()`` / ``aconnect_address()``
  work as in the core (the address names the TCP listener).
* If a peer stops responding during a close, or a CMA-less configuration leaves a dead peer's
  rendezvous unreadable, that connection's worker cannot be released by UCX; it is kept (and
  logged) rather than risk a crash.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, TypeVar

from ._aio import (
    ADDRESS_PREFIX,
    Client,
    Message,
    Server,
    ServerEndpoint,
    _pool_alloc,
    _reject,
    _resolve,
    is_local_address,
)
from ._buffers import recv_view, send_views
from ._core import boot_id
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

__all__ = [
    "CANCEL_DRAIN_LIMIT",
    "DEFAULT_RNDV_THRESHOLD",
    "BackendUnavailableError",
    "UcxClient",
    "UcxServer",
    "available",
]

log = logging.getLogger("isthmus.transport.ucx")

T = TypeVar("T")

FULL_MASK = (1 << 64) - 1
#: Messages from this size on go by rendezvous (one CMA read on one host).  Below it UCX copies
#: them through its shared-memory FIFO.  Measured on 2 cores: 64 KiB keeps mid-size messages
#: in the FIFO (cheaper than a CMA round trip) without many fragments per message.
DEFAULT_RNDV_THRESHOLD = 64 * 1024
#: A cancelled receive whose rendezvous copy is under way waits at most this long for it.
CANCEL_DRAIN_LIMIT = 5.0
#: Rounds of progress/probe/reap per pass before yielding to the event loop.
PASS_ROUNDS = 32
#: While requests are outstanding the worker is also progressed this often, in case UCX raised
#: no event (ucxx's own blocking mode does the same, once a second).
SAFETY_INTERVAL = 0.05
_PROTO = "isthmus-transport-ucx/1"
_CANARY_TAG = 0xCA_4A_12_1E_5A_FE_00_01  # any value: the canary is the first message, by position
_UCXX_ENV_DEFAULTS = {"RNDV_THRESH": "8192", "MAX_RNDV_RAILS": "1", "RNDV_FRAG_MEM_TYPE": "cuda"}
_UCX_DEFAULTS = {"MAX_RNDV_RAILS": "2", "RNDV_FRAG_MEM_TYPE": "host"}

_POSTED, _ACTIVE, _FINISHED = 0, 1, 2
_CONNECTING, _READY, _CLOSING, _CLOSED = 0, 1, 2, 3


# ------------------------------------------------------------------------------------------
# loading ucxx and the few libucp calls it does not expose
# ------------------------------------------------------------------------------------------


class _UcpParam(ctypes.Structure):
    """``ucp_request_param_t`` (ucp.h); only the fields flagged in ``op_attr_mask`` are read."""

    _fields_ = (
        ("op_attr_mask", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("request", ctypes.c_void_p),
        ("cb", ctypes.c_void_p),
        ("datatype", ctypes.c_uint64),
        ("user_data", ctypes.c_void_p),
        ("reply_buffer", ctypes.c_void_p),
        ("memory_type", ctypes.c_int),
        ("recv_info", ctypes.c_void_p),
        ("memh", ctypes.c_void_p),
    )


class _UcpIov(ctypes.Structure):
    _fields_ = (("buffer", ctypes.c_void_p), ("length", ctypes.c_size_t))


_UCP_OP_ATTR_FIELD_DATATYPE = 1 << 3
_UCP_DATATYPE_IOV = 2
_UCS_INPROGRESS = 1
_UCS_ERR_LAST = -100
_LOG_FUNC = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_void_p,
)


class _Lib:
    """ucxx's low-level API plus ctypes access to libucp/libucs, loaded once per process."""

    def __init__(self) -> None:
        names = [f"UCX_{k}" for k in (*_UCXX_ENV_DEFAULTS, "MEMTYPE_CACHE")]
        before = {k: os.environ.get(k) for k in names}
        already = "ucxx" in sys.modules
        try:
            import ucxx  # noqa: F401  (sets UCX_* defaults in os.environ, loads libucx)
            import ucxx._lib.libucxx as libucxx
            from ucxx._lib.arr import Array
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend='ucx' needs ucxx: pip install 'isthmus-transport[ucx]' "
                f"(ucxx-cu12) ({exc})"
            ) from exc
        self.L: Any = libucxx
        self.Array: Any = Array
        self.Tag: Any = libucxx.UCXXTag
        self.tag0: Any = libucxx.UCXXTag(0)
        self.mask0: Any = libucxx.UCXXTagMask(0)
        self.version: tuple[int, int, int] = tuple(libucxx.get_ucx_version())
        # UCX options ucxx injected into the environment (rather than the user) get ours.
        self.injected: set[str] = set()
        for key, value in _UCXX_ENV_DEFAULTS.items():
            env = f"UCX_{key}"
            if (already and os.environ.get(env) == value) or (
                not already and before[env] is None and os.environ.get(env) == value
            ):
                self.injected.add(key)
        # ucxx also sets UCX_MEMTYPE_CACHE=n, which this UCX no longer knows: it would warn
        # "unused environment variable" (on stdout) at the first context.  See context().
        self.memtype_cache_injected = os.environ.get("UCX_MEMTYPE_CACHE") == "n" and (
            already or before["UCX_MEMTYPE_CACHE"] is None
        )
        self.workers = 0
        self.ucp: Any = None
        self.libc: Any = None
        self.log_handler: Any = None
        self.quiet = 0  # >0 while tearing down a lost connection: UCX flush errors are expected
        self.swallowed = 0
        try:
            self.ucp = ctypes.CDLL("libucp.so.0")
            self.ucp.ucp_ep_print_info.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            self.ucp.ucp_ep_print_info.restype = None
            self.ucp.ucp_tag_send_nbx.argtypes = [
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_uint64,
                ctypes.POINTER(_UcpParam),
            ]
            self.ucp.ucp_tag_send_nbx.restype = ctypes.c_void_p
            self.ucp.ucp_request_check_status.argtypes = [ctypes.c_void_p]
            self.ucp.ucp_request_check_status.restype = ctypes.c_int
            self.ucp.ucp_request_free.argtypes = [ctypes.c_void_p]
            self.ucp.ucp_request_free.restype = None
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.open_memstream.restype = ctypes.c_void_p
            libc.open_memstream.argtypes = [
                ctypes.POINTER(ctypes.c_char_p),
                ctypes.POINTER(ctypes.c_size_t),
            ]
            libc.fclose.argtypes = [ctypes.c_void_p]
            libc.free.argtypes = [ctypes.c_void_p]
            self.libc = libc
        except (OSError, AttributeError) as exc:
            log.info("libucp not reachable through ctypes (%s): no IOV sends, no lane report", exc)
            self.ucp = None
        self._install_log_handler()

    # --- the fatal-on-peer-death CMA error -----------------------------------------------------
    def _install_log_handler(self) -> None:
        try:
            ucs = ctypes.CDLL("libucs.so.0")
            push = ucs.ucs_log_push_handler
            count = ucs.ucs_log_num_handlers
        except (OSError, AttributeError) as exc:
            log.warning(
                "cannot hook UCX's log (%s): a peer dying during a CMA read aborts the process",
                exc,
            )
            return
        count.restype = ctypes.c_uint
        push.argtypes = [_LOG_FUNC]

        def handler(
            file: bytes | None,
            line: int,
            function: bytes | None,
            level: int,
            comp: int | None,
            fmt: bytes | None,
            ap: int | None,
        ) -> int:
            # UCS_LOG_LEVEL_FATAL == 0, ERROR == 1; return 0 (STOP) to hide, 1 (CONTINUE).
            name = file or b""
            if level == 0 and name.endswith(b"cma_ep.c"):
                self.swallowed += 1
                return 0
            if self.quiet and level == 1 and name.endswith(b"flush.c"):
                return 0
            return 1

        self.log_handler = _LOG_FUNC(handler)
        push(self.log_handler)
        index = int(count())
        pop = ucs.ucs_log_pop_handler

        def unhook() -> None:
            # Never leave a Python callback in UCX's log after the interpreter is gone.
            if int(count()) == index:
                pop()
            else:  # someone pushed after us: make ours inert (it cannot be removed)
                self.log_handler = None

        atexit.register(unhook)

    # --- helpers -----------------------------------------------------------------------------
    def context(self, rndv_threshold: int, options: dict[str, str] | None) -> Any:
        config = {k: _UCX_DEFAULTS[k] for k in self.injected if k in _UCX_DEFAULTS}
        # Always explicit: the canary must be a rendezvous message (see the module notes).
        config["RNDV_THRESH"] = str(rndv_threshold)
        # Track requests by id even without error handling, so that a failed endpoint
        # completes every send still waiting on it ("auto" tracks only with error handling).
        config["PROTO_INDIRECT_ID"] = "on"
        config.update(options or {})
        L = self.L
        return L.UCXContext(config, feature_flags=(L.Feature.TAG, L.Feature.WAKEUP))

    def worker(self, ctx: Any) -> Any:
        """A UCX worker in blocking-progress mode (no progress thread, no Python futures)."""
        # UCX checks the environment for unknown UCX_* variables once, at the first worker.
        hide = self.workers == 0 and self.memtype_cache_injected and self.version >= (1, 19, 0)
        saved = os.environ.pop("UCX_MEMTYPE_CACHE", None) if hide else None
        try:
            worker = self.L.UCXWorker(
                ctx, enable_delayed_submission=False, enable_python_future=False
            )
        finally:
            if saved is not None:
                os.environ["UCX_MEMTYPE_CACHE"] = saved
        self.workers += 1
        worker.init_blocking_progress_mode()
        return worker

    def ep_info(self, ep_handle: int) -> str:
        """``ucp_ep_print_info`` as text ("" where libucp is not reachable)."""
        if self.ucp is None or self.libc is None or not ep_handle:
            return ""
        buf = ctypes.c_char_p()
        size = ctypes.c_size_t()
        stream = self.libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        if not stream:
            return ""
        try:
            self.ucp.ucp_ep_print_info(ctypes.c_void_p(ep_handle), ctypes.c_void_p(stream))
        finally:
            self.libc.fclose(ctypes.c_void_p(stream))
        try:
            return ctypes.string_at(buf, size.value).decode(errors="replace")
        finally:
            self.libc.free(buf)

    def iov_send(self, ep_handle: int, parts: list[tuple[int, int]], tag: int) -> _IovRequest:
        """One tagged message from several host buffers, without copying them together."""
        iov = (_UcpIov * len(parts))(*[_UcpIov(addr, n) for addr, n in parts])
        param = _UcpParam()
        param.op_attr_mask = _UCP_OP_ATTR_FIELD_DATATYPE
        param.datatype = _UCP_DATATYPE_IOV
        ptr = self.ucp.ucp_tag_send_nbx(
            ctypes.c_void_p(ep_handle),
            ctypes.cast(iov, ctypes.c_void_p),
            len(parts),
            tag,
            ctypes.byref(param),
        )
        return _IovRequest(self, ptr, iov)


class _IovRequest:
    """A libucp request driven through ctypes, with the surface of ucxx's UCXRequest."""

    __slots__ = ("_iov", "_lib", "_ptr", "status")

    def __init__(self, lib: _Lib, ptr: int | None, iov: Any) -> None:
        self._lib = lib
        self._iov = iov  # UCX reads the IOV array until the send completes
        self._ptr: int | None = None
        self.status: int | None = None
        value = 0 if ptr is None else int(ptr)
        if value == 0:
            self.status = 0
        elif value >= (1 << 64) + _UCS_ERR_LAST:  # UCS_PTR_IS_ERR
            self.status = value - (1 << 64)
        else:
            self._ptr = value

    @property
    def completed(self) -> bool:
        if self.status is None:
            assert self._ptr is not None
            status = int(self._lib.ucp.ucp_request_check_status(ctypes.c_void_p(self._ptr)))
            if status != _UCS_INPROGRESS:
                self.status = status
                self._lib.ucp.ucp_request_free(ctypes.c_void_p(self._ptr))
                self._ptr = None
                self._iov = None
        return self.status is not None

    def check_error(self) -> None:
        if self.status is not None and self.status < 0:
            raise TransportError(f"UCX send failed with status {self.status}")

    def release(self) -> None:
        """The worker is going away: let UCX free the request whenever it completes."""
        if self._ptr is not None:
            self._lib.ucp.ucp_request_free(ctypes.c_void_p(self._ptr))
            self._ptr = None
            self.status = -1


_LIB: _Lib | None = None


def _lib() -> _Lib:
    global _LIB
    if _LIB is None:
        _LIB = _Lib()
    return _LIB


def available() -> bool:
    """True when ucxx can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ucxx") is not None


def _check_tag(tag: int, what: str = "tag") -> int:
    if not isinstance(tag, int) or not 0 <= tag <= FULL_MASK:
        raise ValueError(f"{what} must be an int in [0, 2**64), got {tag!r}")
    return tag


def _timeout_error(what: str, timeout: float) -> TransportTimeoutError:
    return TransportTimeoutError(f"{what} did not complete within {timeout} s")


def _is_device(obj: Any) -> bool:
    if not hasattr(obj, "__cuda_array_interface__"):
        return False
    try:
        memoryview(obj).release()
    except TypeError:
        return True
    return False


class _OpFuture(asyncio.Future[T], Generic[T]):
    """A Future whose ``cancel()`` withdraws the operation (see the module notes)."""

    _op: Any = None

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        op = self._op
        if op is not None:
            self._op = None
            op.cancel()
        return True


# ------------------------------------------------------------------------------------------
# operations and messages
# ------------------------------------------------------------------------------------------

DoneRecv = Callable[[int, int, "_Conn", Any], None]
Fail = Callable[[BaseException], None]


class _Msg:
    """A message taken off UCX's queue that no receive matched yet (or salvaged bytes)."""

    __slots__ = ("conn", "data", "length", "probe", "tag")

    def __init__(self, conn: _Conn, tag: int, length: int, probe: Any, data: Any = None) -> None:
        self.conn = conn
        self.tag = tag
        self.length = length
        self.probe = probe  # ucxx TagProbeResult (a UCX message handle) until received
        self.data = data  # bytes once salvaged out of UCX


class _RecvOp:
    __slots__ = (
        "alloc",
        "arr",
        "buf",
        "capacity",
        "conn",
        "dev",
        "done",
        "fail",
        "mask",
        "msg",
        "node",
        "req",
        "state",
        "tag",
        "timer",
        "view",
    )

    def __init__(
        self,
        node: _UcxNode,
        buffer: Any,
        tag: int,
        mask: int,
        done: DoneRecv,
        fail: Fail,
        alloc: Callable[[int], Any] | None = None,
    ) -> None:
        self.node = node
        self.tag = tag & mask
        self.mask = mask
        self.done = done
        self.fail = fail
        self.alloc = alloc
        self.buf: Any = None
        self.view: memoryview | None = None
        self.dev: Any = None
        self.arr: Any = None
        self.capacity = -1  # unknown size: allocate on match
        if buffer is not None:
            if _is_device(buffer):
                self.dev = node._u_device_array(buffer, writable=True)
                self.arr = self.dev
                self.capacity = int(self.dev.nbytes)
            else:
                self.view = recv_view(buffer)
                self.capacity = self.view.nbytes
        self.state = _POSTED
        self.timer: asyncio.TimerHandle | None = None
        self.req: Any = None
        self.conn: _Conn | None = None
        self.msg: _Msg | None = None

    def matches(self, tag: int) -> bool:
        return (tag & self.mask) == self.tag

    def materialize(self, length: int) -> None:
        obj = self.alloc(length) if self.alloc is not None else bytearray(length)
        self.buf = obj
        view = memoryview(obj)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self.view = view[:length]
        self.capacity = length

    def target(self) -> Any:
        if self.arr is None:
            self.arr = _lib().Array(self.view)
        return self.arr

    def finish(self, tag: int, length: int, conn: _Conn) -> None:
        if self.state == _FINISHED:
            return
        self.state = _FINISHED
        if self.timer is not None:
            self.timer.cancel()
        self.view = None
        self.arr = None
        self.req = None
        self.done(tag, length, conn, self.buf)

    def abort(self, exc: BaseException) -> None:
        if self.state == _FINISHED:
            return
        self.state = _FINISHED
        if self.timer is not None:
            self.timer.cancel()
        self.view = None
        self.arr = None
        self.req = None
        self.fail(exc)

    def cancel(self, exc: BaseException | None = None) -> None:
        """Withdraw; once this returns the buffer is not written to again."""
        if self.state == _FINISHED:
            return
        err = exc or TransportClosedError("receive cancelled")
        if self.state == _POSTED:
            self.node._u_withdraw(self)
            self.abort(err)
            return
        conn = self.conn
        if conn is not None:
            conn.unbind(self, err)
        else:
            self.abort(err)


class _SendOp:
    __slots__ = ("conn", "done", "fail", "keep", "nbytes", "parts", "req", "seq", "state", "timer")

    def __init__(
        self,
        conn: _Conn,
        parts: list[Any],
        keep: list[Any],
        nbytes: int,
        done: Callable[[], None],
        fail: Fail,
    ) -> None:
        self.conn = conn
        self.parts = parts  # ucxx Arrays, or (address, length) pairs for an IOV send
        self.keep = keep  # what must stay alive (and unmoved) until UCX is done
        self.nbytes = nbytes
        self.done = done
        self.fail = fail
        self.state = _POSTED
        self.req: Any = None
        self.seq = 0
        self.timer: asyncio.TimerHandle | None = None

    def finish(self) -> None:
        if self.state == _FINISHED:
            return
        self.state = _FINISHED
        if self.timer is not None:
            self.timer.cancel()
        self.done()

    def abort(self, exc: BaseException) -> None:
        if self.state == _FINISHED:
            return
        self.state = _FINISHED
        if self.timer is not None:
            self.timer.cancel()
        self.fail(exc)

    def cancel(self, exc: BaseException | None = None) -> None:
        """Fail the future now; UCX keeps (and may still deliver) a message it was handed."""
        self.abort(exc or TransportClosedError("send cancelled"))


def _map_error(exc: BaseException, conn: _Conn) -> BaseException:
    if isinstance(exc, TransportError):
        return exc
    if conn.lost_error is not None:
        return conn.lost_error
    if conn.node._u_closed:
        return TransportClosedError(f"closed ({exc})")
    return ConnectionLostError(f"UCX reported an error for this peer: {exc}")


# ------------------------------------------------------------------------------------------
# one connection: control socket, UCX worker and endpoint
# ------------------------------------------------------------------------------------------


class _Conn:
    """One peer: its TCP control socket, its own UCX worker and the endpoint on it."""

    def __init__(self, node: _UcxNode, sock: socket.socket, remote: tuple[str, int]) -> None:
        self.node = node
        self.lib = node._u_lib
        loop = node._u_loop
        assert loop is not None
        self.loop = loop
        self.sock = sock
        self.remote = remote
        self.state = _CONNECTING
        self.lost_error: BaseException | None = None
        self.peer_pid = 0
        self.peer_name = ""
        self.peer_boot = ""
        self.endpoint: Any = None  # the Server's ServerEndpoint
        self.on_ready: Callable[[_Conn], None] | None = None
        self.on_fail: Callable[[BaseException], None] | None = None
        # UCX
        self.worker: Any = node._u_lib.worker(node._u_context())
        self.fd: int = int(self.worker.epoll_file_descriptor)
        self.ep: Any = None
        self.pending: dict[Any, Callable[[BaseException | None], None]] = {}
        self.scheduled = False
        self.safety: asyncio.TimerHandle | None = None
        self.spin_until = 0.0
        self.canary_in: Any = None
        self.canary_seen = False
        self.canary_out: bytearray | None = None
        # sends in flight, in issue order; flushes waiting for them
        self.seq = 0
        self.inflight: dict[int, _SendOp] = {}
        self.active: set[_RecvOp] = set()
        self.flushes: list[list[Any]] = []  # [mark, sent, done, fail, id]
        self.flush_id = 0
        # control channel
        self.rbuf = b""
        self.wbuf = bytearray()
        self.writing = False
        self.bye_sent = False
        self.bye_received = False
        self.done_sent = False
        self.peer_done = False
        self.eof = False
        self.wakeup: asyncio.Event | None = None
        self.teardown: asyncio.Task[None] | None = None
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.add_reader(self.fd, self.progress)
        loop.add_reader(sock.fileno(), self._ctl_readable)
        address = bytes(self.worker.address)
        self._ctl_send(
            {
                "k": "hello",
                "proto": _PROTO,
                "pid": os.getpid(),
                "name": node.name,
                "boot": boot_id(),
                "addr": address.hex(),
            }
        )

    def __del__(self) -> None:
        # Dropped without a close (no aclose(), loop gone): ask UCX to close the endpoint
        # without waiting, or ucxx's destructor would wait for it, forever if the peer is dead.
        ep = getattr(self, "ep", None)
        if ep is not None:
            self.ep = None
            with contextlib.suppress(Exception):
                ep.close()

    # --- state -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.state >= _CLOSING

    def _closed_error(self) -> BaseException:
        return self.lost_error or TransportClosedError("connection is closed")

    def transports(self) -> list[tuple[str, str]]:
        """(purpose, transport) per UCX lane, e.g. ``("rendezvous", "cma")``."""
        return _lanes(self.ucx_info())

    def ucx_info(self) -> str:
        if self.ep is None or self.worker is None:
            return ""
        return self.lib.ep_info(int(self.ep.handle))

    # --- progress ----------------------------------------------------------------------------
    def kick(self) -> None:
        if not self.scheduled and self.worker is not None:
            self.scheduled = True
            self.loop.call_soon(self.progress)

    def progress(self) -> None:
        """Progress the worker, take arrivals off its queue, reap completions, re-arm."""
        self.scheduled = False
        worker = self.worker
        if worker is None:
            return
        spin = self.node._spin
        for _ in range(PASS_ROUNDS):
            while worker.progress_once():
                pass
            did = self._probe()
            if self.pending and self._reap():
                did = True
            if self.worker is None:
                return
            if did:
                if spin:
                    self.spin_until = self.loop.time() + spin
                continue
            if spin and self.node._u_posted and self.loop.time() < self.spin_until:
                self.kick()
                return
            if worker.arm():
                self._arm_safety()
                return
        self.kick()

    def _arm_safety(self) -> None:
        if self.pending and self.safety is None:
            self.safety = self.loop.call_later(SAFETY_INTERVAL, self._safety_tick)

    def _safety_tick(self) -> None:
        self.safety = None
        self.progress()

    def _probe(self) -> bool:
        worker = self.worker
        lib = self.lib
        got = False
        while True:
            probe = worker.tag_probe(lib.tag0, lib.mask0, True)
            if not probe.matched:
                return got
            got = True
            if not self.canary_seen:
                self.canary_seen = True
                self.canary_in = probe
                continue
            self.node._u_deliver(_Msg(self, int(probe.sender_tag.value), int(probe.length), probe))
            if self.worker is None:
                return got

    def _reap(self) -> bool:
        done = [req for req in self.pending if req.completed]
        for req in done:
            cb = self.pending.pop(req, None)
            if cb is None:
                continue
            cb(_req_error(req))
        if not self.pending:
            self._wake()
            if self.safety is not None:
                self.safety.cancel()
                self.safety = None
        return bool(done)

    def watch(self, req: Any, cb: Callable[[BaseException | None], None]) -> None:
        """Call ``cb(error_or_None)`` once UCX completes ``req`` (it is referenced till then)."""
        self.pending[req] = cb
        self.kick()

    # --- sends -------------------------------------------------------------------------------
    def send(self, op: _SendOp, tag: int) -> None:
        if self.state != _READY:
            op.abort(self._closed_error() if self.closed else TransportError("not connected"))
            return
        lib = self.lib
        try:
            if len(op.parts) == 1:
                req = self.ep.tag_send(op.parts[0], lib.Tag(tag))
            else:
                req = lib.iov_send(int(self.ep.handle), op.parts, tag)
        except Exception as exc:
            op.abort(_map_error(exc, self))
            return
        self.seq += 1
        op.seq = self.seq
        op.req = req
        self.inflight[op.seq] = op
        if req.completed:
            self._sent(op, _req_error(req))
        else:
            self.watch(req, lambda err, op=op: self._sent(op, err))  # type: ignore[misc]

    def _sent(self, op: _SendOp, err: BaseException | None) -> None:
        self.inflight.pop(op.seq, None)
        op.req = None
        op.keep = []
        op.parts = []
        if err is None:
            op.finish()
        else:
            exc = _map_error(err, self)
            op.abort(exc)
            self._ucx_failed(exc)
        self._check_flushes()

    # --- receives ----------------------------------------------------------------------------
    def bind(self, op: _RecvOp, msg: _Msg) -> None:
        """Receive ``msg`` (matched, fits) into ``op``'s buffer."""
        if op.view is None and op.dev is None:
            op.materialize(msg.length)
        if msg.data is not None:
            if op.view is None:
                op.abort(
                    BufferValidationError("a salvaged host message cannot fill a device buffer")
                )
                return
            op.view[: msg.length] = msg.data
            op.finish(msg.tag, msg.length, self)
            return
        probe, msg.probe = msg.probe, None
        try:
            req = self.worker.tag_recv_with_handle(op.target(), probe)
        except Exception as exc:
            op.abort(_map_error(exc, self))
            return
        if req.completed:
            self._received(op, msg, _req_error(req))
            return
        op.state = _ACTIVE
        op.req = req
        op.conn = self
        op.msg = msg
        self.active.add(op)
        self.watch(req, lambda err, op=op, msg=msg: self._received(op, msg, err))  # type: ignore[misc]

    def _received(self, op: _RecvOp, msg: _Msg, err: BaseException | None) -> None:
        self.active.discard(op)
        if err is None:
            op.finish(msg.tag, msg.length, self)
        else:
            exc = _map_error(err, self)
            op.abort(exc)
            self._ucx_failed(exc)

    def unbind(self, op: _RecvOp, exc: BaseException) -> None:
        """A receive UCX is filling was cancelled: let the copy finish first (see notes)."""
        req, msg = op.req, op.msg
        if req is None or msg is None or self.worker is None:
            op.abort(exc)
            return
        deadline = time.monotonic() + CANCEL_DRAIN_LIMIT
        while not req.completed and time.monotonic() < deadline:
            self.worker.progress()
        self.active.discard(op)
        if not req.completed:
            log.warning("cancelled receive still being filled after %ss", CANCEL_DRAIN_LIMIT)
            keep = (op.view, op.arr, op.buf)
            self.pending[req] = lambda _e, keep=keep: None  # type: ignore[misc]
            op.abort(exc)
            return
        self.pending.pop(req, None)
        if _req_error(req) is None and op.view is not None:
            # Nothing is lost: the message goes back first in line.
            data = bytes(op.view[: msg.length])
            self.node._u_requeue(_Msg(self, msg.tag, msg.length, None, data))
        op.abort(exc)

    # --- flush -------------------------------------------------------------------------------
    def flush(self, done: Callable[[], None], fail: Fail) -> None:
        if self.closed or self.state != _READY:
            fail(self._closed_error() if self.closed else TransportError("not connected"))
            return
        self.flush_id += 1
        self.flushes.append([self.seq, False, done, fail, self.flush_id])
        self._check_flushes()

    def _check_flushes(self) -> None:
        if not self.flushes or self.closed:
            return
        oldest = next(iter(self.inflight), None)
        for f in self.flushes:
            if not f[1] and (oldest is None or oldest > f[0]):
                f[1] = True
                self._ctl_send({"k": "flush", "id": f[4]})

    def _flushed(self, ident: int) -> None:
        for f in self.flushes:
            if f[4] == ident:
                self.flushes.remove(f)
                f[2]()
                return

    # --- control channel ---------------------------------------------------------------------
    def _ctl_send(self, obj: dict[str, Any]) -> None:
        if self.sock.fileno() < 0:
            return
        self.wbuf += json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        if not self.writing:
            self._ctl_writable()

    def _ctl_writable(self) -> None:
        try:
            while self.wbuf:
                n = self.sock.send(self.wbuf)
                del self.wbuf[:n]
        except (BlockingIOError, InterruptedError):
            if not self.writing:
                self.writing = True
                self.loop.add_writer(self.sock.fileno(), self._ctl_writable)
            return
        except OSError as exc:
            self.wbuf.clear()
            self._peer_gone(ConnectionLostError(f"control connection failed: {exc}"))
            return
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.sock.fileno())

    def _ctl_readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._peer_gone(ConnectionLostError(f"peer went away ({exc})"))
            return
        if not data:
            self._stop_reading()
            self.eof = True
            self._wake()
            if self.bye_received:
                self._peer_gone(ConnectionLostError("peer closed the connection"))
            else:
                self._peer_gone(
                    ConnectionLostError("peer went away (connection reset or process died)")
                )
            return
        self.rbuf += data
        if (self.state == _CONNECTING and not self.rbuf.startswith(b"{")) or len(self.rbuf) > 65536:
            self._peer_gone(ProtocolError("peer is not an isthmus-transport UCX backend"))
            return
        while b"\n" in self.rbuf:
            line, self.rbuf = self.rbuf.split(b"\n", 1)
            try:
                msg = json.loads(line)
                kind = msg["k"]
            except (ValueError, KeyError, TypeError):
                self._peer_gone(ProtocolError("peer sent something that is not this protocol"))
                return
            self._on_ctl(kind, msg)
            if self.sock.fileno() < 0:
                return

    def _stop_reading(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            self.loop.remove_reader(self.sock.fileno())

    def _on_ctl(self, kind: str, msg: dict[str, Any]) -> None:
        if kind == "hello":
            self._on_hello(msg)
        elif kind == "flush":
            self.progress()  # take whatever arrived before the FLUSH off UCX's queue
            self._ctl_send({"k": "flushed", "id": msg.get("id")})
        elif kind == "flushed":
            self._flushed(int(msg.get("id", 0)))
        elif kind == "bye":  # the peer closes: it sends us nothing new
            self.bye_received = True
            if not self.closed:
                self._peer_gone(ConnectionLostError("peer closed the connection"), alive=True)
        elif kind == "done":  # every send of the peer's to us completed: it touches us no more
            self.peer_done = True
            self._wake()

    def _on_hello(self, msg: dict[str, Any]) -> None:
        if self.state != _CONNECTING:
            return
        if msg.get("proto") != _PROTO:
            self._peer_gone(ProtocolError(f"peer speaks {msg.get('proto')!r}, not {_PROTO!r}"))
            return
        try:
            self.peer_pid = int(msg["pid"])
            self.peer_name = str(msg.get("name", ""))
            self.peer_boot = str(msg.get("boot", ""))
            address = bytes.fromhex(msg["addr"])
        except (KeyError, ValueError, TypeError):
            self._peer_gone(ProtocolError("bad HELLO from peer"))
            return
        L = self.lib.L
        try:
            self.ep = L.UCXEndpoint.create_from_worker_address(
                self.worker, L.UCXAddress.create_from_buffer(address), False
            )
        except Exception as exc:
            self._peer_gone(ConnectionLostError(f"UCX could not reach the peer: {exc}"))
            return
        # The canary: the first message either side sends, kept unread by the receiver.
        self.canary_out = bytearray(self.node._u_rndv_threshold)
        try:
            req = self.ep.tag_send(self.lib.Array(self.canary_out), self.lib.Tag(_CANARY_TAG))
        except Exception as exc:
            self._peer_gone(ConnectionLostError(f"UCX could not send to the peer: {exc}"))
            return
        if not req.completed:
            self.watch(req, self._canary_sent)
        self.state = _READY
        self.kick()
        cb = self.on_ready
        self.on_ready = None
        self.on_fail = None
        if cb is not None:
            cb(self)

    def _canary_sent(self, err: BaseException | None) -> None:
        self.canary_out = None

    # --- losing the peer ---------------------------------------------------------------------
    def _ucx_failed(self, exc: BaseException) -> None:
        """UCX failed an operation on this endpoint: the peer is as good as gone."""
        if isinstance(exc, ConnectionLostError) and not self.closed:
            self._peer_gone(exc)

    def _peer_gone(self, exc: BaseException, alive: bool = False) -> None:
        """The peer closed (``alive``: said BYE) or vanished: fail what needs it, release UCX."""
        if self.state >= _CLOSING:
            return  # a close is under way already; its loop sees EOF, BYE and DONE
        if self.state == _READY:
            self.progress()  # what arrived before the BYE is still delivered
        if self.state >= _CLOSING:
            return
        connecting = self.state == _CONNECTING
        cb = self.on_fail
        self.on_fail = None
        self.on_ready = None
        self.state = _CLOSING
        self.lost_error = exc
        self._fail_user_ops(exc)
        self.node._u_conn_lost(self, exc)
        if cb is not None:
            cb(exc)
        if alive and not self.bye_sent:
            self.bye_sent = True
            self._ctl_send({"k": "bye"})
        if self.worker is not None and not connecting:
            self._read_leftovers()  # before anyone else's receive can match what it left
        self._start_release(exc, 2.0 if connecting else 10.0)

    def _start_release(self, exc: BaseException, limit: float) -> None:
        self.teardown = asyncio.ensure_future(self._release(exc, limit))
        self.node._u_tasks.add(self.teardown)

    def _fail_user_ops(self, exc: BaseException) -> None:
        """Fail sends and flushes now (UCX keeps their buffers referenced until released)."""
        for op in list(self.inflight.values()):
            op.abort(exc)
        for f in self.flushes:
            f[3](exc)
        self.flushes = []

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup.set()

    async def close(self, drain: bool, timeout: float | None) -> None:
        """Our side closes: let in-flight sends finish (``drain``), say BYE, release."""
        if self.state < _CLOSING:
            deadline = None if timeout is None else self.loop.time() + timeout
            if drain and self.state == _READY and self.inflight:
                # As the core does: a rendezvous completes once the peer received it.
                waiter: asyncio.Future[None] = self.loop.create_future()
                self.flush(lambda: _resolve(waiter, None), lambda e: _reject(waiter, e))
                try:
                    await asyncio.wait_for(waiter, _left(deadline))
                except (TimeoutError, TransportError):
                    log.info("%s: in-flight sends not drained within %s s", self.node.name, timeout)
            if self.state < _CLOSING:
                exc = TransportClosedError("connection closed")
                self.state = _CLOSING
                self.lost_error = exc
                self._fail_user_ops(exc)
                self.node._u_conn_lost(self, exc)
                self.bye_sent = True
                self._ctl_send({"k": "bye"})
                self._start_release(exc, _left(deadline, 10.0) or 0.0)
        if self.teardown is not None:
            await asyncio.shield(self.teardown)

    async def _release(self, exc: BaseException, limit: float) -> None:
        try:
            await self._release_inner(exc, limit)
        finally:
            if self.teardown is not None:
                self.node._u_tasks.discard(self.teardown)

    async def _release_inner(self, exc: BaseException, limit: float) -> None:
        """Receive what the peer left, let it receive what we left, then free UCX.

        Both sides run this: each reads the other's canary and unread messages (which
        completes the other's sends) and says DONE once its own requests completed.  From a
        dead peer the canary read fails the endpoint instead, which ends our requests too.
        """
        loop = self.loop
        deadline = loop.time() + max(limit, 1.0)
        lib = self.lib
        lib.quiet += 1
        self.wakeup = asyncio.Event()
        try:
            while self.worker is not None:
                self.progress()
                if self.worker is None:
                    break
                self._read_leftovers()
                self._reap()
                if not self.pending and not self.done_sent:
                    self.done_sent = True
                    self._ctl_send({"k": "done"})
                if not self.pending and (self.peer_done or self.eof or self.ep is None):
                    break
                if loop.time() >= deadline:
                    log.warning(
                        "%s: %s did not finish closing; %d UCX request(s) outstanding",
                        self.node.name,
                        self.peer_name or self.remote,
                        len(self.pending),
                    )
                    break
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), min(0.05, deadline - loop.time()))
            self._release_ucx(exc)
        finally:
            lib.quiet -= 1
            self.wakeup = None
        self._close_socket()
        self.state = _CLOSED

    def _read_leftovers(self) -> None:
        """Receive what the peer sent and nobody took: its canary and its unread messages."""
        worker = self.worker
        lib = self.lib
        if self.canary_in is not None:
            probe, self.canary_in = self.canary_in, None
            buf = bytearray(max(int(probe.length), 1))
            # A real read: from a dead peer it fails the endpoint, releasing our sends to it.
            req = worker.tag_recv_with_handle(lib.Array(buf), probe)
            if not req.completed:
                self.pending[req] = lambda _e, buf=buf: None  # type: ignore[misc]
        salvage = self.node._u_salvages() and not self.node._u_closed
        for msg in self.node._u_unexpected_from(self):
            probe, msg.probe = msg.probe, None
            if salvage:
                buf = bytearray(msg.length)
                req = worker.tag_recv_with_handle(lib.Array(buf), probe)
                self._settle_salvage(req, msg, buf)
            else:
                # Receiving into one byte ends it ("truncated") and releases the sender at once.
                one = bytearray(1)
                req = worker.tag_recv_with_handle(lib.Array(one), probe)
                self.node._u_drop(msg)
                if not req.completed:
                    self.pending[req] = lambda _e, one=one: None  # type: ignore[misc]

    def _settle_salvage(self, req: Any, msg: _Msg, buf: bytearray) -> None:
        def done(err: BaseException | None) -> None:
            if err is None:
                msg.data = buf
            else:
                self.node._u_drop(msg)

        if req.completed:
            done(_req_error(req))
        else:
            self.pending[req] = done

    def _release_ucx(self, exc: BaseException) -> None:
        # Receives being filled: their requests completed by now, or are kept (with their
        # buffers) below when UCX could not finish them.
        for op in list(self.active):
            op.abort(exc)
        self.active.clear()
        if self.safety is not None:
            self.safety.cancel()
            self.safety = None
        worker = self.worker
        if worker is None:
            return
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            self.loop.remove_reader(self.fd)
        for msg in [m for m in self.node._u_unexp if m.conn is self and m.data is None]:
            self.node._u_drop(msg)  # never read out of UCX: gone with the worker
        ep = self.ep
        if ep is not None:
            try:
                creq = ep.close()
            except Exception as exc2:  # pragma: no cover - defensive
                log.debug("UCX endpoint close failed: %s", exc2)
                creq = None
            deadline = time.monotonic() + 0.2
            while creq is not None and not creq.completed and time.monotonic() < deadline:
                worker.progress()
        leftover = self.pending
        for req in leftover:
            if isinstance(req, _IovRequest):
                req.release()
        if leftover:
            # UCX cannot release these; keep them (and so the worker) alive rather than crash.
            _KEPT.append((worker, ep, dict(leftover), list(self.inflight.values())))
        self.pending = {}
        self.inflight.clear()
        self.canary_in = None
        self.ep = None
        self.worker = None

    def _close_socket(self) -> None:
        self._stop_reading()
        if self.writing:
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                self.loop.remove_writer(self.sock.fileno())
            self.writing = False
        if self.wbuf and self.sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                self.sock.setblocking(True)
                self.sock.settimeout(0.5)
                self.sock.sendall(self.wbuf)
        self.wbuf.clear()
        self.sock.close()

    def abort_now(self, exc: BaseException) -> None:
        """Synchronous last resort (interpreter exit, loop gone): release without waiting."""
        if self.state == _CLOSED:
            return
        self.state = _CLOSING
        self.lost_error = self.lost_error or exc
        self._fail_user_ops(exc)
        try:
            if self.worker is not None:
                self._read_leftovers()
                deadline = time.monotonic() + 0.5
                while self.pending and time.monotonic() < deadline:
                    self.worker.progress()
                    self._reap()
            self._release_ucx(exc)
        finally:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                self._close_socket()
            self.state = _CLOSED


_KEPT: list[Any] = []


def _req_error(req: Any) -> BaseException | None:
    """The error a completed UCX request ended with, if any (without a traceback: one would
    keep this frame, and through ``req`` the UCX worker, alive until the next GC)."""
    try:
        req.check_error()
    except Exception as exc:
        return exc.with_traceback(None)
    return None


def _left(deadline: float | None, default: float | None = None) -> float | None:
    if deadline is None:
        return default
    return max(deadline - asyncio.get_running_loop().time(), 0.0)


_LANE = re.compile(r"lane\[\d+\]:\s+\d+:(\w+)/\S+.*?seg \d+\s+(.*)$")
_PURPOSE = {"am": "eager", "rma_bw": "rendezvous", "rma": "rma", "tag": "tag-offload"}


def _lanes(info: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in info.splitlines():
        m = _LANE.search(line)
        if not m:
            continue
        transport = m.group(1)
        for usage in m.group(2).split():
            purpose = _PURPOSE.get(usage.split("#")[0], usage.split("#")[0])
            if (purpose, transport) not in out:
                out.append((purpose, transport))
    return out


# ------------------------------------------------------------------------------------------
# what UcxServer and UcxClient share
# ------------------------------------------------------------------------------------------


class _UcxNode:
    """The matcher, the UCX context and the operation plumbing of a UcxServer or UcxClient."""

    name: str
    backend: str
    _spin: float
    _address_tags: ClassVar[dict[str, int]] = {"ucx": 1}

    def _u_init(
        self,
        backend: str | None,
        name: str,
        rndv_threshold: int | None,
        spin: float | None,
        ucx_config: dict[str, str] | None,
    ) -> None:
        if backend not in (None, "ucx"):
            raise ValueError(f"{type(self).__name__} is the 'ucx' backend, not {backend!r}")
        self._u_lib = _lib()
        self.backend = "ucx"
        self.name = name or f"pid{os.getpid()}-{secrets.token_hex(3)}"
        if spin is None:
            env = os.environ.get("ISTHMUS_TRANSPORT_SPIN_US")
            spin = float(env) * 1e-6 if env else 0.0
        self._spin = max(0.0, spin)
        if rndv_threshold is None:
            env = os.environ.get("UCX_RNDV_THRESH", "")
            user_set = env.isdigit() and "RNDV_THRESH" not in self._u_lib.injected
            rndv_threshold = int(env) if user_set else DEFAULT_RNDV_THRESHOLD
        self._u_rndv_threshold = int(rndv_threshold)
        if self._u_rndv_threshold < 1:
            raise ValueError("rndv_threshold must be positive")
        self._u_options = dict(ucx_config or {})
        self._u_ctx: Any = None
        self._u_loop: asyncio.AbstractEventLoop | None = None
        self._u_closed = False
        self._u_posted: list[_RecvOp] = []
        self._u_unexp: deque[_Msg] = deque()
        self._u_conns: list[_Conn] = []
        self._u_tasks: set[asyncio.Task[None]] = set()
        _NODES.add(self)

    # --- plumbing ----------------------------------------------------------------------------
    def _u_start(self) -> asyncio.AbstractEventLoop:
        if self._u_closed:
            raise TransportClosedError(f"{type(self).__name__} is closed")
        loop = self._u_loop
        if loop is None:
            loop = self._u_loop = asyncio.get_running_loop()
        return loop

    def _u_context(self) -> Any:
        if self._u_ctx is None:
            self._u_ctx = self._u_lib.context(self._u_rndv_threshold, self._u_options)
        return self._u_ctx

    @property
    def cuda_support(self) -> bool:
        """Whether this UCX context can move device (CUDA) buffers."""
        return bool(self._u_context().cuda_support)

    def _u_device_array(self, obj: Any, writable: bool) -> Any:
        arr = self._u_lib.Array(obj)
        if not arr.c_contiguous:
            raise BufferValidationError("device buffer is not C-contiguous")
        if writable and arr.readonly:
            raise BufferValidationError("device receive buffer is read-only")
        if not self.cuda_support:
            raise BufferValidationError(
                f"{type(obj).__name__} is device memory but this UCX has no CUDA support "
                "(a GPU, the cuda transports and UCX_TLS allowing them are needed)"
            )
        return arr

    def _u_salvages(self) -> bool:
        return False

    def _u_conn_lost(self, conn: _Conn, exc: BaseException) -> None:
        pass

    # --- matching ----------------------------------------------------------------------------
    def _u_post(self, op: _RecvOp) -> None:
        if self._u_closed:
            op.abort(TransportClosedError("closed"))
            return
        for msg in self._u_unexp:
            if msg.probe is None and msg.data is None:
                continue  # being copied out of a departed peer's UCX queue
            if op.matches(msg.tag):
                if op.capacity >= 0 and msg.length > op.capacity:
                    op.abort(MessageTruncatedError(msg.tag, msg.length, op.capacity))
                    return
                self._u_unexp.remove(msg)
                msg.conn.bind(op, msg)
                return
        self._u_posted.append(op)

    def _u_deliver(self, msg: _Msg) -> None:
        posted = self._u_posted
        while True:
            op = next((o for o in posted if o.matches(msg.tag)), None)
            if op is None:
                self._u_unexp.append(msg)
                return
            posted.remove(op)
            if op.capacity >= 0 and msg.length > op.capacity:
                op.abort(MessageTruncatedError(msg.tag, msg.length, op.capacity))
                continue
            msg.conn.bind(op, msg)
            return

    def _u_requeue(self, msg: _Msg) -> None:
        self._u_unexp.appendleft(msg)
        posted = self._u_posted
        op = next((o for o in posted if o.matches(msg.tag)), None)
        if op is not None:
            self._u_unexp.popleft()
            posted.remove(op)
            if op.capacity >= 0 and msg.length > op.capacity:
                op.abort(MessageTruncatedError(msg.tag, msg.length, op.capacity))
                self._u_unexp.appendleft(msg)
            else:
                msg.conn.bind(op, msg)

    def _u_withdraw(self, op: _RecvOp) -> None:
        with contextlib.suppress(ValueError):
            self._u_posted.remove(op)

    def _u_unexpected_from(self, conn: _Conn) -> list[_Msg]:
        return [m for m in self._u_unexp if m.conn is conn and m.probe is not None]

    def _u_drop(self, msg: _Msg) -> None:
        with contextlib.suppress(ValueError):
            self._u_unexp.remove(msg)

    def _u_fail_posted(self, exc: BaseException) -> None:
        ops, self._u_posted = self._u_posted, []
        for op in ops:
            op.abort(exc)

    # --- operations --------------------------------------------------------------------------
    # _send, _recv, _cb_send, _cb_recv and _flush_conns (with UcxServer._conn_of and
    # UcxClient._c) replace the hooks that Server's and Client's public methods call.
    def _u_send_op(
        self,
        conn: _Conn,
        buffer: Any,
        done: Callable[[], None],
        fail: Fail,
    ) -> _SendOp:
        lib = self._u_lib
        items = list(buffer) if isinstance(buffer, (list, tuple)) else [buffer]
        if len(items) == 1 and _is_device(items[0]):
            arr = self._u_device_array(items[0], writable=False)
            return _SendOp(conn, [arr], [items[0], arr], int(arr.nbytes), done, fail)
        if any(_is_device(b) for b in items):
            raise BufferValidationError(
                "a multi-buffer send must be all host memory (send device buffers one by one)"
            )
        views = send_views(items if len(items) > 1 else items[0])
        nbytes = sum(v.nbytes for v in views)
        if len(views) == 1:
            arr = lib.Array(views[0])
            return _SendOp(conn, [arr], [views[0], arr], nbytes, done, fail)
        parts = [v for v in views if v.nbytes]
        if len(parts) <= 1:
            view = parts[0] if parts else views[0]
            arr = lib.Array(view)
            return _SendOp(conn, [arr], [view, arr], nbytes, done, fail)
        if lib.ucp is not None:
            pairs = [(_address(v), v.nbytes) for v in parts]
            return _SendOp(conn, pairs, list(parts), nbytes, done, fail)
        staged = bytearray(nbytes)  # no libucp through ctypes: gather (one copy)
        pos = 0
        for v in parts:
            staged[pos : pos + v.nbytes] = v
            pos += v.nbytes
        arr = lib.Array(staged)
        return _SendOp(conn, [arr], [staged, arr], nbytes, done, fail)

    def _send(
        self,
        conn: _Conn,
        buffer: Any,
        tag: int,
        timeout: float | None,
    ) -> _OpFuture[None]:
        _check_tag(tag)
        loop = self._u_start()
        fut: _OpFuture[None] = _OpFuture(loop=loop)
        op = self._u_send_op(conn, buffer, lambda: _resolve(fut, None), lambda e: _reject(fut, e))
        fut._op = op
        conn.send(op, tag)
        if timeout is not None and not fut.done():
            op.timer = loop.call_later(timeout, lambda: op.cancel(_timeout_error("send", timeout)))
        return fut

    def _recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        timeout: float | None,
        result: Callable[[int, int, _Conn, Any], Any],
        alloc: Callable[[int], Any] | None = None,
    ) -> _OpFuture[Any]:
        _check_tag(tag)
        _check_tag(tag_mask, "tag_mask")
        loop = self._u_start()
        fut: _OpFuture[Any] = _OpFuture(loop=loop)

        def done(t: int, n: int, conn: _Conn, buf: Any) -> None:
            if not fut.done():
                fut.set_result(result(t, n, conn, buf))

        op = _RecvOp(self, buffer, tag, tag_mask, done, lambda e: _reject(fut, e), alloc)
        fut._op = op
        self._u_post(op)
        if timeout is not None and not fut.done():
            op.timer = loop.call_later(
                timeout, lambda: op.cancel(_timeout_error("receive", timeout))
            )
        return fut

    def _cb_recv(
        self,
        buffer: Any,
        tag: int,
        tag_mask: int,
        done_callback: Callable[[int, int], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        _check_tag(tag)
        _check_tag(tag_mask, "tag_mask")
        self._u_start()
        self._u_post(
            _RecvOp(
                self,
                buffer,
                tag,
                tag_mask,
                lambda t, n, _c, _b: done_callback(t, n),
                fail_callback,
            )
        )

    def _cb_send(
        self,
        conn: _Conn,
        buffer: Any,
        tag: int,
        done_callback: Callable[[], None],
        fail_callback: Callable[[BaseException], None],
    ) -> None:
        _check_tag(tag)
        self._u_start()
        conn.send(self._u_send_op(conn, buffer, done_callback, fail_callback), tag)

    def _flush_conns(self, conns: Iterable[_Conn]) -> asyncio.Future[None]:
        loop = self._u_start()
        futs: list[asyncio.Future[None]] = []
        for conn in conns:
            fut: asyncio.Future[None] = loop.create_future()
            conn.flush(
                lambda f=fut: _resolve(f, None),  # type: ignore[misc]
                lambda e, f=fut: _reject(f, e),  # type: ignore[misc]
            )
            futs.append(fut)
        out: asyncio.Future[None] = loop.create_future()
        if not futs:
            out.set_result(None)
            return out
        gathered = asyncio.gather(*futs)

        def settle(g: asyncio.Future[Any]) -> None:
            if g.cancelled():
                _reject(out, TransportClosedError("flush cancelled"))
            elif g.exception() is not None:
                _reject(out, g.exception())  # type: ignore[arg-type]
            else:
                _resolve(out, None)

        gathered.add_done_callback(settle)
        return out

    def _u_new_conn(self, sock: socket.socket, remote: tuple[str, int]) -> _Conn:
        self._u_start()
        conn = _Conn(self, sock, remote)
        self._u_conns.append(conn)
        return conn

    async def _u_close(self, drain: bool, timeout: float | None) -> None:
        if self._u_closed:
            for task in list(self._u_tasks):
                await asyncio.shield(task)
            return
        self._u_closed = True
        self._u_close_listener()
        conns = [c for c in self._u_conns if c.state != _CLOSED]
        if conns:
            await asyncio.gather(*(c.close(drain, timeout) for c in conns), return_exceptions=True)
        while self._u_tasks:
            await asyncio.gather(*list(self._u_tasks), return_exceptions=True)
        self._u_fail_posted(TransportClosedError(f"{type(self).__name__} closed"))
        self._u_unexp.clear()
        self._u_conns = []
        self._u_ctx = None
        _NODES.discard(self)

    def _u_close_listener(self) -> None:
        pass

    def _u_abort_now(self) -> None:
        """Interpreter exit without aclose(): release UCX without waiting for anyone."""
        self._u_closed = True
        self._u_close_listener()
        for conn in list(self._u_conns):
            with contextlib.suppress(Exception):
                conn.abort_now(TransportClosedError("interpreter exiting"))
        self._u_conns = []
        self._u_posted = []
        self._u_unexp.clear()
        self._u_ctx = None


_NODES: weakref.WeakSet[_UcxNode] = weakref.WeakSet()


@atexit.register
def _abort_all() -> None:
    for node in list(_NODES):
        node._u_abort_now()


def _address(view: memoryview) -> int:
    from ._buffers import address

    return address(view)


# ------------------------------------------------------------------------------------------
# the Server
# ------------------------------------------------------------------------------------------


class UcxServer(_UcxNode, Server):  # type: ignore[misc]  # hooks on _Conn, not Connection
    """A :class:`~isthmus.transport.Server` whose data moves through UCX (see the module notes).

    ``rndv_threshold``: bytes from which UCX uses rendezvous (default
    :data:`DEFAULT_RNDV_THRESHOLD`); ``ucx_config``: extra UCX options for its context, e.g.
    ``{"TLS": "tcp"}``.
    """

    def __init__(
        self,
        *,
        backend: str | None = None,
        name: str = "",
        rndv_threshold: int | None = None,
        spin: float | None = None,
        ssl_context: Any = None,
        ucx_config: dict[str, str] | None = None,
    ) -> None:
        _no_tls(ssl_context)
        self._u_init(backend, name, rndv_threshold, spin, ucx_config)
        # What the base classes' own code expects to find (none of it runs the core).
        self._ssl = None
        self._worker = None
        self._loop = None
        self._closed = False
        self._all_gone = None
        self._rndv_threshold = rndv_threshold
        self._accept_cb: Callable[[ServerEndpoint], None] | None = None
        self._clients: dict[Any, ServerEndpoint] = {}  # _Conn keys
        self._address: tuple[str, int] = ("", 0)
        self._worker_address = None
        self._n = 0
        self._u_listener: socket.socket | None = None

    # --- listening ---------------------------------------------------------------------------
    def listen(self, addr: str, port: int) -> None:
        """Listen on TCP ``addr:port`` (port 0 picks one) for clients' handshakes."""
        loop = self._u_start()
        if self._u_listener is not None:
            raise TransportError("already listening")
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        lsock = socket.socket(family, socket.SOCK_STREAM)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((addr, port))
            lsock.listen(1024)
        except OSError:
            lsock.close()
            raise
        lsock.setblocking(False)
        self._address = lsock.getsockname()[:2]
        self._u_listener = lsock
        loop.add_reader(lsock.fileno(), self._u_accept)

    def listen_address(self, host: str = "0.0.0.0") -> bytes:
        """Listen (on ``host``, an ephemeral port) and return an address for
        :meth:`UcxClient.aconnect_address`."""
        if self._u_listener is None:
            self.listen(host, 0)
        return self.get_worker_address()

    def _u_accept(self) -> None:
        lsock = self._u_listener
        if lsock is None or self._u_closed:
            return
        for _ in range(64):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("accept failed: %s", exc)
                return
            try:
                conn = self._u_new_conn(sock, (str(peer[0]), int(peer[1])))
            except Exception as exc:
                log.error("could not set up UCX for a client: %s", exc)
                sock.close()
                continue
            conn.on_ready = self._u_ready

    def _u_ready(self, conn: _Conn) -> None:
        self._n += 1
        remote = conn.remote
        ep = ServerEndpoint(conn, f"{remote[0]}:{remote[1]}#{self._n}", self._address, remote)  # type: ignore[arg-type]
        conn.endpoint = ep
        self._clients[conn] = ep
        if self._accept_cb is not None:
            try:
                self._accept_cb(ep)
            except Exception:
                log.exception("accept callback raised")

    def _u_conn_lost(self, conn: _Conn, exc: BaseException) -> None:
        self._clients.pop(conn, None)
        with contextlib.suppress(ValueError):
            self._u_conns.remove(conn)

    def _u_salvages(self) -> bool:
        return True

    def _u_close_listener(self) -> None:
        lsock = self._u_listener
        if lsock is None:
            return
        self._u_listener = None
        if self._u_loop is not None:
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                self._u_loop.remove_reader(lsock.fileno())
        lsock.close()

    def _conn_of(self, client_ep: ServerEndpoint) -> _Conn:  # type: ignore[override]
        if not isinstance(client_ep, ServerEndpoint):
            raise TypeError(f"expected a ServerEndpoint, got {type(client_ep).__name__}")
        conn: Any = client_ep._conn
        if not isinstance(conn, _Conn) or conn.node is not self:
            raise TransportError("that endpoint does not belong to this server")
        return conn

    def _live_conn_of(self, client_ep: ServerEndpoint) -> _Conn:  # type: ignore[override]
        return self._conn_of(client_ep)  # the operation itself checks for a closed UcxServer

    # --- operations --------------------------------------------------------------------------
    def arecv_message(
        self,
        tag: int,
        tag_mask: int = FULL_MASK,
        *,
        pool: Any = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Message]:
        """Receive a message of unknown size (host memory; from ``pool`` when given)."""
        return self._recv(
            None,
            tag,
            tag_mask,
            timeout,
            lambda t, n, c, b: Message(t, b, n, c.endpoint),
            _pool_alloc(pool),
        )

    def aflush(self) -> asyncio.Future[None]:
        """Complete once every send so far completed and every client took it off UCX."""
        return self._flush_conns([c for c in self._u_conns if c.state == _READY])

    def aclose(self, *, drain: bool = True, timeout: float | None = 30.0) -> asyncio.Future[None]:
        """Close: finish in-flight sends (``drain``), say goodbye to every client, release UCX."""
        self._closed = True
        return asyncio.ensure_future(self._u_close(drain, timeout))


# ------------------------------------------------------------------------------------------
# the Client
# ------------------------------------------------------------------------------------------


class UcxClient(_UcxNode, Client):  # type: ignore[misc]  # hooks on _Conn, not Connection
    """A :class:`~isthmus.transport.Client` whose data moves through UCX (see the module notes)."""

    def __init__(
        self,
        *,
        backend: str | None = None,
        name: str = "",
        rndv_threshold: int | None = None,
        spin: float | None = None,
        connect_timeout: float = 10.0,
        ssl_context: Any = None,
        server_hostname: str | None = None,
        ucx_config: dict[str, str] | None = None,
    ) -> None:
        _no_tls(ssl_context)
        self._u_init(backend, name, rndv_threshold, spin, ucx_config)
        self._ssl = None
        self._server_hostname = server_hostname
        self._worker = None
        self._loop = None
        self._closed = False
        self._all_gone = None
        self._rndv_threshold = rndv_threshold
        self._conn: Any = None  # the _Conn once connected
        self._connect_timeout = connect_timeout

    @property
    def connected(self) -> bool:
        """True between a successful connect and close or loss of the connection."""
        conn: _Conn | None = self._conn
        return conn is not None and conn.state == _READY

    def transports(self) -> list[tuple[str, str]]:
        """(purpose, transport) per UCX lane, e.g. ``[("eager", "sysv"), ("rendezvous", "cma")]``.

        Read from ``ucp_ep_print_info``: what UCX chose for this endpoint, not a guess.
        """
        return self._c().transports()

    def ucx_info(self) -> str:
        """UCX's own description of the endpoint (``ucp_ep_print_info``): lanes and protocols."""
        return self._c().ucx_info()

    def aconnect(self, addr: str, port: int) -> asyncio.Future[None]:
        """Connect to a UcxServer's ``listen(addr, port)``."""
        self._u_start()
        return asyncio.ensure_future(self._u_connect([(addr, port)]))

    def aconnect_address(self, remote_address: bytes) -> asyncio.Future[None]:
        """Connect with a UcxServer's ``listen_address()``."""
        self._u_start()
        if not isinstance(remote_address, bytes) or not remote_address.startswith(ADDRESS_PREFIX):
            raise ValueError("not an isthmus.transport worker address")
        info = json.loads(remote_address[len(ADDRESS_PREFIX) :])
        port = int(info["port"])
        hosts = [str(h) for h in info["hosts"]]
        if info.get("boot") == boot_id():
            hosts.sort(key=lambda h: not is_local_address(h))
        return asyncio.ensure_future(self._u_connect([(h, port) for h in hosts]))

    async def _u_connect(self, targets: list[tuple[str, int]]) -> None:
        if self._conn is not None:
            raise TransportError("already connected")
        loop = self._u_start()
        errors = []
        sock = None
        remote = ("", 0)
        for host, port in targets:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, *_rest, sockaddr = infos[0]
                s = socket.socket(family, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    await asyncio.wait_for(loop.sock_connect(s, sockaddr), self._connect_timeout)
                except BaseException:
                    s.close()
                    raise
                sock, remote = s, (str(sockaddr[0]), int(sockaddr[1]))
                break
            except (OSError, TimeoutError) as exc:
                errors.append(f"{host}:{port}: {exc}")
        if sock is None:
            raise ConnectionLostError("could not connect: " + "; ".join(errors))
        if self._u_closed:
            sock.close()
            raise TransportClosedError("Client is closed")
        ready: asyncio.Future[None] = loop.create_future()
        try:
            conn = self._u_new_conn(sock, remote)
        except Exception:
            sock.close()
            raise
        conn.on_ready = lambda _c: _resolve(ready, None)
        conn.on_fail = lambda e: _reject(ready, e)
        self._conn = conn
        try:
            await asyncio.wait_for(ready, self._connect_timeout)
        except BaseException:
            if conn.state == _CONNECTING:
                conn._peer_gone(ConnectionLostError("handshake did not complete"))
            self._conn = None
            raise

    def _u_conn_lost(self, conn: _Conn, exc: BaseException) -> None:
        if conn is self._conn:
            self._u_fail_posted(exc)  # nobody else can satisfy this client's receives

    def _c(self) -> _Conn:  # type: ignore[override]
        conn: _Conn | None = self._conn
        if conn is None:
            if self._u_closed:
                raise TransportClosedError("Client is closed")
            raise TransportError("not connected: await aconnect() first")
        return conn

    def arecv_message(
        self,
        tag: int,
        tag_mask: int = FULL_MASK,
        *,
        pool: Any = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Message]:
        """Receive a message of unknown size (host memory; from ``pool`` when given)."""
        conn: _Conn | None = self._conn
        if conn is not None and conn.closed:
            fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            fut.set_exception(conn._closed_error())
            return fut
        return self._recv(
            None,
            tag,
            tag_mask,
            timeout,
            lambda t, n, _c, b: Message(t, b, n, None),
            _pool_alloc(pool),
        )

    def aflush(self) -> asyncio.Future[None]:
        """Complete once every send so far completed and the Server took it off UCX."""
        return self._flush_conns([self._c()])

    def aclose(self, *, drain: bool = True, timeout: float | None = 30.0) -> asyncio.Future[None]:
        """Close: finish in-flight sends (``drain``), say goodbye, release UCX."""
        self._closed = True
        return asyncio.ensure_future(self._u_close(drain, timeout))


def _no_tls(ssl_context: Any) -> None:
    if ssl_context is not None:
        raise ValueError("backend='ucx' has no TLS: UCX moves the data, not the TCP handshake")
