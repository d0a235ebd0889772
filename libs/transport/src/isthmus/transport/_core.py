"""The callback core: framing, tag matching, eager and rendezvous protocols, one per Worker.

Everything here runs on one thread (the event loop's) and talks to the loop only through a
:class:`Reactor` (``add_reader``, ``call_soon``, ...), so the asyncio and trio front ends share it.
Operations complete by calling ``done``/``fail`` callbacks exactly once.

Wire format: every frame starts with a 24-byte header ``<BBHIQQ`` (kind, flags, unused, aux, tag,
length).  Small messages (and every message over TCP) are ``DATA`` frames carrying their payload.
Between processes of one host a large message is a ``RNDV`` frame carrying the sender's (address,
length) segments: the receiver, once a receive matches, copies straight from the sender's memory
into the posted buffer with ``process_vm_readv`` and answers ``ACK``.  Where the kernel refuses
that call, the message goes through an ``isthmus.buffer`` shared-memory ring instead (``RING``,
``PULL``, ``CHUNK``, ``CREDIT``).  The socket is the doorbell in every case: nothing polls.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from . import _cma
from ._buffers import address
from ._errors import (
    ConnectionLostError,
    MessageTruncatedError,
    ProtocolError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)

log = logging.getLogger("isthmus.transport")

__all__ = [
    "BACKENDS",
    "Connection",
    "Reactor",
    "RecvOp",
    "SendOp",
    "Worker",
]

HDR = struct.Struct("<BBHIQQ")
HLEN = HDR.size
U64 = struct.Struct("<Q")
SEG = struct.Struct("<QQ")
FULL_MASK = (1 << 64) - 1

K_HELLO, K_READY, K_DATA, K_RNDV, K_RING, K_ACK, K_CANCEL = 1, 2, 3, 4, 5, 6, 7
K_PULL, K_CHUNK, K_CREDIT, K_FLUSH, K_FLUSH_ACK, K_BYE, K_RINGOPEN = 8, 9, 10, 11, 12, 13, 14
K_EAGER = 15  # a whole message waits in the shared-memory ring

READY_CMA = 1  # "read my peer's memory with process_vm_readv": you may send me RNDV
READY_SHM = 2  # same host: you may send me messages through a shared-memory ring

ACK_DONE, ACK_DROPPED = 0, 1

BACKENDS = ("auto", "cma", "shm", "tcp", "ucx")

#: Messages at least this large go by rendezvous (one copy, process_vm_readv) between processes
#: of one host.  The call pins the peer's pages, about 10 us whatever the size, so below this
#: two user-space copies through the shared-memory ring, one per core, are cheaper.
DEFAULT_RNDV_THRESHOLD = 4 * 1024 * 1024
#: Same-host messages from this size up to the rendezvous threshold go through the ring: a
#: socket's kernel copies cost more than memcpy from about here.
EAGER_SHM_MIN = 8 * 1024
#: A rendezvous copy is split into steps of this size, with the loop free in between; a receive
#: cancelled between two steps is never written to again.
CMA_STEP = 16 * 1024 * 1024
#: Rendezvous messages this large are copied by two threads, in steps of PARALLEL_STEP of which
#: the helper thread takes HELPER_SHARE (a hand-off per 16 MiB step costs more than it saves).
#: Measured here, 25 % on a second core lifts a 256 MiB copy from ~90 % to ~105 % of one core's
#: memcpy for ~15 % more CPU time: one kernel copy does not reach the memory's bandwidth.
PARALLEL_MIN = 128 * 1024 * 1024
PARALLEL_STEP = 64 * 1024 * 1024
HELPER_SHARE = 0.25
#: DATA payloads from this size on are read straight into the posted buffer, not via our buffer.
DIRECT_READ = 64 * 1024
RBUF_SIZE = 256 * 1024
READ_BUDGET = 1024 * 1024
RING_CAPACITY = 32 * 1024 * 1024
RING_CHUNK = 4 * 1024 * 1024
SOCK_BUF = 4 * 1024 * 1024
IOV_MAX = 512
#: A rendezvous frame lists every segment; beyond this many the message goes inline instead.
MAX_SEGS = 4096

_BOOT_ID: str | None = None


def boot_id() -> str:
    """This kernel's boot id: two processes share a host (and may try CMA) when theirs agree."""
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
                _BOOT_ID = f.read().strip()
        except OSError:
            _BOOT_ID = socket.gethostname()
    return _BOOT_ID


class Handle(Protocol):
    def cancel(self) -> None: ...


class Reactor(Protocol):
    """What the core needs from an event loop; an asyncio loop is one as it stands."""

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_reader(self, fd: int) -> bool: ...
    def add_writer(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_writer(self, fd: int) -> bool: ...
    def call_soon(self, callback: Callable[[], None]) -> Handle: ...
    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle: ...
    def time(self) -> float: ...


# ------------------------------------------------------------------------------------------
# operations
# ------------------------------------------------------------------------------------------

POSTED, ACTIVE, FINISHED = 0, 1, 2

DoneRecv = Callable[[int, int, "Connection", Any], None]
Fail = Callable[[BaseException], None]


class RecvOp:
    """A posted receive: a target view (or None: allocate on match), a tag and mask, callbacks."""

    __slots__ = (
        "alloc",
        "buf",
        "done",
        "fail",
        "mask",
        "msg",
        "seq",
        "state",
        "tag",
        "timer",
        "view",
        "worker",
    )

    def __init__(
        self,
        worker: Worker,
        view: memoryview | None,
        tag: int,
        mask: int,
        done: DoneRecv,
        fail: Fail,
        alloc: Callable[[int], Any] | None = None,
    ) -> None:
        self.worker = worker
        self.view = view
        self.alloc = alloc
        self.buf: Any = None
        self.tag = tag & mask
        self.mask = mask
        self.done = done
        self.fail = fail
        self.seq = 0
        self.state = POSTED
        self.msg: Msg | None = None
        self.timer: Handle | None = None

    def matches(self, tag: int) -> bool:
        return (tag & self.mask) == self.tag

    def materialize(self, length: int) -> None:
        """A receive of unknown size: allocate its buffer now that the size is known."""
        obj = self.alloc(length) if self.alloc is not None else bytearray(length)
        self.buf = obj
        view = memoryview(obj)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self.view = view[:length]

    def finish(self, tag: int, length: int, conn: Connection) -> None:
        if self.state == FINISHED:
            return
        self.state = FINISHED
        if self.timer is not None:
            self.timer.cancel()
        self.view = None
        done, buf = self.done, self.buf
        self.buf = None
        self.done = _noop_recv
        self.fail = _noop_fail
        done(tag, length, conn, buf)

    def abort(self, exc: BaseException) -> None:
        if self.state == FINISHED:
            return
        self.state = FINISHED
        if self.timer is not None:
            self.timer.cancel()
        self.view = None
        fail = self.fail
        self.done = _noop_recv
        self.fail = _noop_fail
        fail(exc)

    def cancel(self, exc: BaseException | None = None) -> None:
        """Withdraw the receive; after this returns, its buffer is never written to again."""
        if self.state == FINISHED:
            return
        self.worker.withdraw_recv(self)
        self.abort(exc or TransportClosedError("receive cancelled"))


class SendOp:
    """A send: the views it holds until completion, its tag, callbacks."""

    __slots__ = (
        "conn",
        "done",
        "fail",
        "gen",
        "id",
        "nbytes",
        "sent",
        "state",
        "tag",
        "timer",
        "views",
    )

    def __init__(
        self,
        conn: Connection,
        views: list[memoryview],
        tag: int,
        done: Callable[[], None],
        fail: Fail,
    ) -> None:
        self.conn = conn
        self.views = views
        self.nbytes = sum(v.nbytes for v in views)
        self.tag = tag
        self.done = done
        self.fail = fail
        self.id = 0
        self.state = POSTED
        self.timer: Handle | None = None
        self.sent = 0  # ring path: bytes streamed so far
        self.gen = 0  # ring path: the receiver's pull being served

    def finish(self) -> None:
        if self.state == FINISHED:
            return
        self.state = FINISHED
        if self.timer is not None:
            self.timer.cancel()
        done = self.done
        self._let_go(True)
        done()

    def abort(self, exc: BaseException) -> None:
        if self.state == FINISHED:
            return
        self.state = FINISHED
        if self.timer is not None:
            self.timer.cancel()
        fail = self.fail
        # A withdrawn rendezvous keeps its views until the peer acknowledges: it may be reading.
        self._let_go(self.id not in self.conn.rndv)
        fail(exc)

    def _let_go(self, views: bool) -> None:
        # Drop what ties the caller's buffer and future to this op (a future holds its op).
        self.done = _noop
        self.fail = _noop_fail
        if views:
            self.views = []

    def cancel(self, exc: BaseException | None = None) -> None:
        """Withdraw the send: it fails with ``exc`` now.  A frame half written to the socket is
        finished in the background, and a rendezvous the peer may be reading stays referenced
        until the peer answers, so the message may still arrive; ``aflush`` waits for both."""
        if self.state == FINISHED:
            return
        self.conn.withdraw_send(self, exc or TransportClosedError("send cancelled"))


def _noop() -> None:
    pass


def _noop_fail(exc: BaseException) -> None:
    pass


def _noop_recv(tag: int, length: int, conn: Connection, buf: Any) -> None:
    pass


class Msg:
    """A message that arrived before any receive matched it (or a rendezvous awaiting its copy)."""

    __slots__ = ("conn", "data", "gen", "held", "id", "kind", "length", "segs", "seq", "tag")

    def __init__(
        self,
        conn: Connection,
        tag: int,
        length: int,
        kind: int,
        data: Any = None,
        ident: int = 0,
        segs: list[tuple[int, int]] | None = None,
    ) -> None:
        self.conn = conn
        self.tag = tag
        self.length = length
        self.kind = kind
        self.data = data
        self.id = ident
        self.segs = segs
        self.seq = 0
        self.held: Any = None  # a ring Buffer that ``data`` views, released once copied out
        self.gen = 0  # ring rendezvous: which pull the chunks in flight belong to

    def release(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.data.release()
            held.release()


# ------------------------------------------------------------------------------------------
# tag matching
# ------------------------------------------------------------------------------------------


def _remove_keyed(queues: dict[int, deque[Any]], key: int, item: Any) -> bool:
    """Remove ``item`` from ``queues[key]``, dropping the queue once empty; False if absent."""
    q = queues.get(key)
    if q is None:
        return False
    try:
        q.remove(item)
    except ValueError:
        return False
    if not q:
        del queues[key]
    return True


class Matcher:
    """UCX-style ordered tag matching: ``(msg_tag & mask) == (tag & mask)``, first posted first.

    Full-mask receives and unexpected messages are kept per tag, so the common case is O(1)
    however many operations are outstanding.
    """

    def __init__(self) -> None:
        self.seq = 0
        self.exact: dict[int, deque[RecvOp]] = {}
        self.masked: list[RecvOp] = []
        self.unexpected: dict[int, deque[Msg]] = {}
        self.n_unexpected = 0

    def posted_count(self) -> int:
        return len(self.masked) + sum(len(q) for q in self.exact.values())

    def add_posted(self, op: RecvOp, front: bool = False) -> None:
        self.seq += 1
        op.seq = -self.seq if front else self.seq
        if op.mask == FULL_MASK:
            q = self.exact.get(op.tag)
            if q is None:
                q = self.exact[op.tag] = deque()
            if front:
                q.appendleft(op)
            else:
                q.append(op)
        elif front:
            self.masked.insert(0, op)
        else:
            self.masked.append(op)

    def remove_posted(self, op: RecvOp) -> bool:
        if op.mask == FULL_MASK:
            return _remove_keyed(self.exact, op.tag, op)
        try:
            self.masked.remove(op)
        except ValueError:
            return False
        return True

    def take_posted(self, tag: int) -> RecvOp | None:
        q = self.exact.get(tag)
        best = q[0] if q else None
        for op in self.masked:
            if op.matches(tag):
                if best is None or op.seq < best.seq:
                    best = op
                break
        if best is None:
            return None
        if best.mask == FULL_MASK:
            assert q is not None
            q.popleft()
            if not q:
                del self.exact[tag]
        else:
            self.masked.remove(best)
        return best

    def add_unexpected(self, msg: Msg, front: bool = False) -> None:
        self.seq += 1
        msg.seq = -self.seq if front else self.seq
        q = self.unexpected.get(msg.tag)
        if q is None:
            q = self.unexpected[msg.tag] = deque()
        if front:
            q.appendleft(msg)
        else:
            q.append(msg)
        self.n_unexpected += 1

    def peek_unexpected(self, op: RecvOp) -> Msg | None:
        if op.mask == FULL_MASK:
            q = self.unexpected.get(op.tag)
            return q[0] if q else None
        best: Msg | None = None
        for tag, q in self.unexpected.items():
            if op.matches(tag) and (best is None or q[0].seq < best.seq):
                best = q[0]
        return best

    def remove_unexpected(self, msg: Msg) -> bool:
        if not _remove_keyed(self.unexpected, msg.tag, msg):
            return False
        self.n_unexpected -= 1
        return True

    def drop_from(self, conn: Connection) -> None:
        """Forget rendezvous messages of a lost peer (their data lived in its memory); copy out
        whole messages still held in its ring, which is about to be unmapped."""
        for q in self.unexpected.values():
            for m in q:
                if m.conn is conn and m.held is not None:
                    data = bytes(m.data)
                    m.release()
                    m.data = data
        for tag in list(self.unexpected):
            q = self.unexpected[tag]
            keep = deque(m for m in q if m.conn is not conn or m.kind == K_DATA)
            self.n_unexpected -= len(q) - len(keep)
            if keep:
                self.unexpected[tag] = keep
            else:
                del self.unexpected[tag]


# ------------------------------------------------------------------------------------------
# connections
# ------------------------------------------------------------------------------------------


class Connection:
    """One peer: a non-blocking stream socket, our read buffer, the write queue, rendezvous."""

    def __init__(self, worker: Worker, sock: socket.socket, kind: str) -> None:
        self.worker = worker
        self.sock = sock
        self.fd = sock.fileno()
        self.kind = kind  # "unix" | "tcp" | "tls"
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.reactor = worker.reactor
        self.name = ""
        self.peer_pid = 0
        self.peer_name = ""
        self.peer_flags = 0  # what the peer lets us send it (READY_*)
        self.cma_in = False  # we read the peer's memory
        self.ready = False
        self.closed = False
        self.closing = False
        self.lost_error: BaseException | None = None
        self.on_ready: Callable[[Connection], None] | None = None
        self.on_fail: Callable[[BaseException], None] | None = None
        self.endpoint: Any = None  # the front end's ServerEndpoint
        # read side
        self.rbuf = bytearray(RBUF_SIZE)
        self.rview = memoryview(self.rbuf)
        self.rstart = 0
        self.rend = 0
        self.stream_view: memoryview | None = None  # a DATA payload being read in place
        self.stream_got = 0
        self.stream_len = 0
        self.stream_tag = 0
        self.stream_op: RecvOp | None = None
        self.stream_scratch: bytearray | None = None
        # write side
        self.wq: deque[list[Any]] = deque()  # [views, op-or-None, partly written]
        self.writing = False
        # sends not complete yet, in issue order (seq -> op), and rendezvous ids -> op
        self.send_seq = 0
        self.inflight: dict[int, SendOp] = {}
        self.rndv: dict[int, SendOp] = {}
        self.withdrawing: dict[int, BaseException] = {}  # rendezvous id -> why, awaiting ACK
        self.flushes: list[list[Any]] = []  # [mark, acked, done, fail, id]
        self.flush_id = 0
        # rendezvous copies in progress on our side (receiver), id -> (op, msg)
        self.pulling: dict[int, tuple[RecvOp, Msg]] = {}
        # shared-memory ring fallback
        self.ring_out: Any = None
        self.ring_in: Any = None
        self.ring_credit = 0
        self.ring_acked = False
        self.ring_queue: deque[SendOp] = deque()
        self.probe = bytearray(secrets.token_bytes(16))
        self.bye_received = False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
            if kind == "tcp":
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.setblocking(False)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Send our HELLO and start reading."""
        hello = {
            "v": 1,
            "pid": os.getpid(),
            "boot": boot_id(),
            "probe": [address(memoryview(self.probe)), len(self.probe)],
            "cookie": bytes(self.probe).hex(),
            "name": self.worker.name,
        }
        payload = json.dumps(hello).encode()
        self._queue([HDR.pack(K_HELLO, 0, 0, 0, 0, len(payload)) + payload], None)
        self.reactor.add_reader(self.fd, self.on_readable)

    def _on_hello(self, payload: bytes) -> None:
        try:
            hello = json.loads(payload)
            pid = int(hello["pid"])
            probe_addr, probe_len = hello["probe"]
            cookie = bytes.fromhex(hello["cookie"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"bad HELLO from peer: {exc}") from None
        self.peer_pid = pid
        self.peer_name = str(hello.get("name", ""))
        flags = 0
        backend = self.worker.backend
        same_host = hello.get("boot") == boot_id()
        if same_host and backend in ("auto", "cma") and _cma.available():
            got = bytearray(int(probe_len))
            try:
                _cma.read(pid, address(memoryview(got)), len(got), [(int(probe_addr), len(got))], 0)
                self.cma_in = bytes(got) == cookie
            except OSError as exc:
                log.info("process_vm_readv from pid %d refused (%s): shm ring fallback", pid, exc)
        if self.cma_in:
            flags |= READY_CMA
        if same_host and (backend == "shm" or (backend == "auto" and self.worker.eager_shm)):
            flags |= READY_SHM
        self._queue([HDR.pack(K_READY, 0, 0, flags, 0, 0)], None)

    def _on_ready(self, flags: int) -> None:
        backend = self.worker.backend
        if backend == "tcp":
            flags = 0
        elif backend == "shm":
            flags &= ~READY_CMA
        self.peer_flags = flags
        self.ready = True
        cb = self.on_ready
        self.on_ready = None
        if cb is not None:
            cb(self)

    def transports(self) -> list[tuple[str, str]]:
        """(purpose, transport) pairs, in the spirit of UCX's ``view_transports``."""
        out = [("control", self.kind), ("eager", self.kind)]
        if self.peer_flags & READY_SHM:
            out.append(("eager", "shm-ring"))
        if self.peer_flags & READY_CMA:
            out.append(("rendezvous", "cma"))
        elif self.peer_flags & READY_SHM:
            out.append(("rendezvous", "shm-ring"))
        return out

    # --- sending -----------------------------------------------------------------------------
    def send(self, op: SendOp) -> None:
        if self.closed or self.closing:
            op.abort(self._closed_error())
            return
        self.send_seq += 1
        seq = self.send_seq
        op.id = seq
        n = op.nbytes
        flags = self.peer_flags
        if n >= self.worker.rndv_threshold and flags & READY_CMA and len(op.views) <= MAX_SEGS:
            self.inflight[seq] = op
            self.rndv[seq] = op
            segs = [(address(v), v.nbytes) for v in op.views if v.nbytes]
            head = HDR.pack(K_RNDV, 0, 0, len(segs), op.tag, n) + U64.pack(seq)
            head += b"".join(SEG.pack(a, ln) for a, ln in segs)
            self._queue([head], None)
        elif n >= self.worker.rndv_threshold and flags & READY_SHM:
            self.inflight[seq] = op
            self.rndv[seq] = op
            self._queue([HDR.pack(K_RING, 0, 0, 0, op.tag, n) + U64.pack(seq)], None)
        elif n >= EAGER_SHM_MIN and flags & READY_SHM and self._ring_eager(op):
            return
        else:
            self.inflight[seq] = op
            head = HDR.pack(K_DATA, 0, 0, 0, op.tag, n)
            if n <= 2048:  # one small buffer beats a scatter-gather list of tiny pieces
                self._queue([head + b"".join(op.views)], op, HLEN + n)
            else:
                views: list[Any] = [head]
                views.extend(v for v in op.views if v.nbytes)
                self._queue(views, op, HLEN + n)

    def _queue(self, views: list[Any], op: SendOp | None, nbytes: int = -1) -> None:
        if self.closed:
            return
        if not self.wq:
            if nbytes < 0:
                nbytes = sum(memoryview(v).nbytes for v in views)
            try:
                sent = (
                    self.sock.sendmsg(views[:IOV_MAX])
                    if len(views) > 1 and not self.tls
                    else self.sock.send(views[0])
                )
            except _WOULD_BLOCK:
                sent = 0
            except OSError as exc:
                self.lost(ConnectionLostError(f"send to peer failed: {exc}"))
                return
            if sent == nbytes:
                if op is not None:
                    self._send_complete(op)
                return
            views = _advance(views, sent)
            self.wq.append([views, op, sent > 0])
        else:
            self.wq.append([views, op, False])
        if not self.writing:
            self.writing = True
            self.reactor.add_writer(self.fd, self.on_writable)

    def on_writable(self) -> None:
        wq = self.wq
        try:
            while wq:
                entry = wq[0]
                views = entry[0]
                # TLS sockets have no sendmsg: one view per call there.
                sent = self.sock.send(views[0]) if self.tls else self.sock.sendmsg(views[:IOV_MAX])
                views = _advance(views, sent)
                if views:
                    entry[0] = views
                    entry[2] = entry[2] or sent > 0
                    if sent == 0:
                        return
                    continue
                wq.popleft()
                if entry[1] is not None:
                    self._send_complete(entry[1])
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self.lost(ConnectionLostError(f"send to peer failed: {exc}"))
            return
        self.writing = False
        self.reactor.remove_writer(self.fd)
        if self.closing and self._drained():
            self.worker.reactor.call_soon(self._finish_close)

    def _send_complete(self, op: SendOp) -> None:
        self.inflight.pop(op.id, None)
        op.finish()
        if self.flushes:
            self._check_flushes()
        if self.closing and self._drained():
            self._finish_close()

    def _drained(self) -> bool:
        # An eager message sits in our ring until the peer has opened it: closing the ring
        # (which unlinks its name) before that would lose messages whose sends completed.
        return not self.inflight and not self.wq and (self.ring_out is None or self.ring_acked)

    def withdraw_send(self, op: SendOp, exc: BaseException) -> None:
        if op.id in self.rndv:
            # The peer holds a descriptor of our memory and may be copying from it right now:
            # ask it to drop the message; the op (and its views) stays in ``rndv`` until the
            # peer answers, so its memory stays valid for a copy already under way.
            if self.withdrawing.get(op.id) is None and not self.closed:
                self.withdrawing[op.id] = exc
                self._queue([HDR.pack(K_CANCEL, 0, 0, 0, op.id, 0)], None)
            op.abort(exc)
            return
        for i, entry in enumerate(self.wq):
            if entry[1] is op:
                if i == 0 and entry[2]:
                    # Half on the wire: the rest is written (the queue entry holds the views)
                    # or the stream would be torn; the caller hears of the failure now.
                    op.abort(exc)
                    return
                del self.wq[i]
                self.inflight.pop(op.id, None)
                op.abort(exc)
                self._check_flushes()
                return

    # --- flush -------------------------------------------------------------------------------
    def flush(self, done: Callable[[], None], fail: Fail) -> None:
        """Complete once every send issued so far completed and the peer processed them all."""
        if self.closed:
            fail(self._closed_error())
            return
        self.flush_id += 1
        self.flushes.append([self.send_seq, False, done, fail, self.flush_id])
        self._queue([HDR.pack(K_FLUSH, 0, 0, 0, self.flush_id, 0)], None)

    def _check_flushes(self) -> None:
        if not self.flushes:
            return
        oldest = next(iter(self.inflight), None)
        keep = []
        for f in self.flushes:
            if f[1] and (oldest is None or oldest > f[0]):
                f[2]()
            else:
                keep.append(f)
        self.flushes = keep

    # --- reading -----------------------------------------------------------------------------
    def on_readable(self) -> None:
        if self.closed:
            return
        try:
            self._read()
        except TransportError as exc:
            self.lost(exc)
        except OSError as exc:
            self.lost(ConnectionLostError(f"connection to peer lost: {exc}"))

    def _read(self) -> None:
        # A bounded amount per wake-up: the loop must get to run the tasks that post receives,
        # or a fast sender would have everything land in the unexpected queue (an extra copy).
        sock = self.sock
        budget = READ_BUDGET
        while not self.closed and budget > 0:
            if self.stream_view is not None:
                want = self.stream_len - self.stream_got
                try:
                    n = sock.recv_into(self.stream_view[self.stream_got :], want)
                except _WOULD_BLOCK:
                    return
                if n == 0:
                    self._eof()
                    return
                self.stream_got += n
                budget -= n
                if self.stream_got == self.stream_len:
                    self._stream_done()
                elif n < want and not (self.tls and self.sock.pending()):  # type: ignore[attr-defined]
                    return
                continue
            if self.rstart == self.rend:
                self.rstart = self.rend = 0
            elif RBUF_SIZE - self.rend < HLEN + 4096:
                left = self.rend - self.rstart
                self.rbuf[:left] = self.rview[self.rstart : self.rend]
                self.rstart, self.rend = 0, left
            want = RBUF_SIZE - self.rend
            try:
                n = sock.recv_into(self.rview[self.rend :], want)
            except _WOULD_BLOCK:
                return
            if n == 0:
                self._eof()
                return
            self.rend += n
            budget -= n
            self.worker.activity()
            self._parse()
            if n < want and self.stream_view is None:
                if self.tls and self.sock.pending():  # type: ignore[attr-defined]
                    continue  # decrypted bytes wait inside OpenSSL: no readiness event for them
                return

    def _parse(self) -> None:
        buf = self.rbuf
        unpack = HDR.unpack_from
        while not self.closed:
            start = self.rstart
            avail = self.rend - start
            if avail < HLEN:
                return
            kind, _flags, _, aux, tag, length = unpack(buf, start)
            if kind == K_DATA:
                if avail - HLEN >= length:
                    self.rstart = start + HLEN + length
                    self.worker.deliver_data(self, tag, self.rview[start + HLEN : self.rstart])
                    continue
                if length < DIRECT_READ and HLEN + length <= RBUF_SIZE:
                    return  # wait for the rest in our buffer
                have = avail - HLEN
                self.rstart = self.rend
                self._stream_begin(tag, length, self.rview[start + HLEN : start + HLEN + have])
                return
            if kind == K_RNDV:
                need = HLEN + 8 + SEG.size * aux
            elif kind in (K_HELLO, K_RINGOPEN):
                if length > 65536:
                    raise ProtocolError(f"control frame of {length} bytes")
                need = HLEN + length
            elif kind == K_RING:
                need = HLEN + 8
            elif K_HELLO <= kind <= K_EAGER:
                need = HLEN
            else:
                raise ProtocolError(f"unknown frame kind {kind}: not an isthmus.transport peer")
            if need > RBUF_SIZE:
                raise ProtocolError(f"control frame of {need} bytes")
            if avail < need:
                return
            self.rstart = start + need
            self._control(kind, aux, tag, length, start)

    def _control(self, kind: int, aux: int, tag: int, length: int, start: int) -> None:
        body = start + HLEN
        if kind == K_HELLO:
            self._on_hello(bytes(self.rview[body : body + length]))
        elif kind == K_READY:
            self._on_ready(aux)
        elif kind == K_RNDV:
            ident = U64.unpack_from(self.rbuf, body)[0]
            segs = [SEG.unpack_from(self.rbuf, body + 8 + i * SEG.size) for i in range(aux)]
            if not self.cma_in:
                raise ProtocolError("peer sent a rendezvous we did not allow")
            self.worker.deliver_msg(Msg(self, tag, length, K_RNDV, None, ident, segs))
        elif kind == K_RING:
            ident = U64.unpack_from(self.rbuf, body)[0]
            self.worker.deliver_msg(Msg(self, tag, length, K_RING, None, ident))
        elif kind == K_ACK:
            op = self.rndv.pop(tag, None)
            if op is not None:
                self.inflight.pop(op.id, None)
                withdrawn = self.withdrawing.pop(op.id, None)
                if aux == ACK_DONE:
                    op.finish()
                else:
                    op.abort(withdrawn or TransportClosedError("send withdrawn by the peer"))
                op.views = []
                self._check_flushes()
                if self.closing and self._drained():
                    self._finish_close()
        elif kind == K_CANCEL:
            self.worker.peer_cancelled(self, tag)
        elif kind == K_PULL:
            op = self.rndv.get(tag)
            if op is not None and op.state != FINISHED:
                op.gen = aux
                op.sent = 0  # a new pull (the previous one was abandoned) starts over
                self._ring_start(op)
        elif kind == K_CHUNK:
            self._ring_chunk(tag, length, aux)
        elif kind == K_EAGER:
            ring = self.ring_in
            if ring is None:
                raise ProtocolError("EAGER before RINGOPEN")
            buf = ring.recv(timeout=0)
            # Unexpected, it stays in the ring (no copy) until a receive matches it.
            self.worker.deliver_data(self, tag, memoryview(buf)[:length], buf)
        elif kind == K_CREDIT:
            if aux == 1:  # the peer opened our ring: its name is no longer needed
                self.ring_acked = True
                if self.ring_out is not None:
                    self.ring_out.unlink()  # nothing left in /dev/shm, even after a SIGKILL
                if self.closing and self._drained():
                    self._finish_close()
            self.ring_credit += length
            self._ring_pump()
        elif kind == K_RINGOPEN:
            from isthmus.buffer import Ring

            name = bytes(self.rview[body : body + length]).decode()
            # Created before RINGOPEN was sent and kept until our answer: no wait needed.
            self.ring_in = Ring.open(name, timeout=0.0)
            self._queue([HDR.pack(K_CREDIT, 0, 0, 1, 0, 0)], None)
        elif kind == K_FLUSH:
            self._queue([HDR.pack(K_FLUSH_ACK, 0, 0, 0, tag, 0)], None)
        elif kind == K_FLUSH_ACK:
            for f in self.flushes:
                if f[4] == tag:
                    f[1] = True
            self._check_flushes()
        elif kind == K_BYE:
            self.bye_received = True

    # --- DATA payloads read in place ---------------------------------------------------------
    def _stream_begin(self, tag: int, length: int, head: memoryview) -> None:
        op = self.worker.match_for_stream(self, tag, length)
        if op is not None:
            assert op.view is not None
            target = op.view
            self.stream_scratch = None
        else:
            self.stream_scratch = bytearray(length)
            target = memoryview(self.stream_scratch)
        n = head.nbytes
        target[:n] = head
        self.stream_view = target
        self.stream_op = op
        self.stream_got = n
        self.stream_len = length
        self.stream_tag = tag
        if n == length:
            self._stream_done()

    def adopt_stream(self, op: RecvOp) -> bool:
        """A receive posted while a large DATA payload that nothing matched yet is still being read
        into scratch memory takes it over: what arrived is copied once, the rest lands in place.

        Only called when no queued message matches ``op``, so the stream is next in line for it.
        """
        if self.stream_view is None or self.stream_op is not None:
            return False
        if not op.matches(self.stream_tag):
            return False
        length = self.stream_len
        if op.view is None:
            op.materialize(length)
        assert op.view is not None
        if op.view.nbytes < length:
            return False  # it fails when the message is whole, like any other truncation
        target = op.view[:length]
        target[: self.stream_got] = self.stream_view[: self.stream_got]
        op.state = ACTIVE
        self.stream_view = target
        self.stream_op = op
        self.stream_scratch = None
        return True

    def stream_abandon(self, op: RecvOp) -> None:
        """The receive being streamed into was cancelled: read the rest into scratch instead."""
        if self.stream_op is not op or self.stream_view is None:
            return
        scratch = bytearray(self.stream_len)
        scratch[: self.stream_got] = self.stream_view[: self.stream_got]
        self.stream_scratch = scratch
        self.stream_view = memoryview(scratch)
        self.stream_op = None

    def _stream_done(self) -> None:
        op, scratch = self.stream_op, self.stream_scratch
        tag, length = self.stream_tag, self.stream_len
        self.stream_view = None
        self.stream_op = None
        self.stream_scratch = None
        if op is not None:
            op.finish(tag, length, self)
        else:
            self.worker.deliver_msg(Msg(self, tag, length, K_DATA, scratch))

    # --- rendezvous (receiver side) ----------------------------------------------------------
    def pull(self, op: RecvOp, msg: Msg) -> None:
        """Copy a matched rendezvous message into ``op``'s buffer."""
        op.state = ACTIVE
        op.msg = msg
        self.pulling[msg.id] = (op, msg)
        if msg.kind == K_RING:
            msg.data = 0
            msg.gen += 1
            self._queue([HDR.pack(K_PULL, 0, 0, msg.gen & 0xFFFFFFFF, msg.id, 0)], None)
            return
        self._cma_step(op, msg, 0)

    def _cma_step(self, op: RecvOp, msg: Msg, offset: int) -> None:
        if op.state != ACTIVE or self.closed:
            return
        assert op.view is not None and msg.segs is not None
        local = address(op.view)
        copier = self.worker.copier() if msg.length >= PARALLEL_MIN else None
        n = min(PARALLEL_STEP if copier is not None else CMA_STEP, msg.length - offset)
        try:
            if copier is not None:
                # One kernel copy saturates a core well below the memory's bandwidth: a helper
                # thread copies the first part of the step while this one copies the rest.
                # Both are done before the step returns, so cancellation stays step-exact.
                head = int(n * HELPER_SHARE) & ~4095
                part = copier.submit(
                    _cma.read, self.peer_pid, local + offset, head, msg.segs, offset
                )
                try:
                    _cma.read(
                        self.peer_pid, local + offset + head, n - head, msg.segs, offset + head
                    )
                finally:
                    part.result()
            else:
                _cma.read(self.peer_pid, local + offset, n, msg.segs, offset)
        except OSError as exc:
            self.pulling.pop(msg.id, None)
            if exc.errno == errno.ESRCH:
                op.abort(ConnectionLostError(f"peer (pid {self.peer_pid}) died mid-transfer"))
            else:
                op.abort(ConnectionLostError(f"reading the peer's buffer failed: {exc}"))
            return
        offset += n
        if offset < msg.length:
            self.reactor.call_soon(lambda: self._cma_step(op, msg, offset))
            return
        self.pulling.pop(msg.id, None)
        self._queue([HDR.pack(K_ACK, 0, 0, ACK_DONE, msg.id, 0)], None)
        op.finish(msg.tag, msg.length, self)

    def unpull(self, op: RecvOp) -> None:
        """``op`` was cancelled mid-copy: its message goes back first in line, nothing is lost."""
        msg = op.msg
        if msg is None or self.pulling.pop(msg.id, None) is None:
            return
        # Ring chunks of this pull still in flight are dropped (their generation is stale); the
        # next receive that matches pulls the message again from the start.
        self.worker.matcher.add_unexpected(msg, front=True)

    def drop_rndv(self, ident: int) -> None:
        self._queue([HDR.pack(K_ACK, 0, 0, ACK_DROPPED, ident, 0)], None)

    # --- shared-memory ring: eager messages, and rendezvous where CMA is refused ---------------
    def _ring(self) -> Any:
        if self.ring_out is None:
            from isthmus.buffer import Ring

            name = f"isthmus-tr-{os.getpid()}-{secrets.token_hex(4)}"
            self.ring_out = Ring.create(name, RING_CAPACITY)
            self.ring_credit = RING_CAPACITY // 2
            raw = name.encode()
            self._queue([HDR.pack(K_RINGOPEN, 0, 0, 0, 0, len(raw)) + raw], None)
        return self.ring_out

    def _ring_eager(self, op: SendOp) -> bool:
        """Copy a message into the ring and complete the send; False when the ring is full."""
        from isthmus.buffer import WaitTimeoutError

        ring = self._ring()
        n = op.nbytes
        # Eager messages use at most a quarter of the ring: rendezvous chunks have half.
        if ring.pending + n > RING_CAPACITY // 4:
            return False
        try:
            buf = ring.loan(n, timeout=0)
        except WaitTimeoutError:
            return False
        with memoryview(buf) as dst:
            _gather(op.views, 0, dst)
        ring.commit()
        self._queue([HDR.pack(K_EAGER, 0, 0, 0, op.tag, n)], None, HLEN)
        self.inflight.pop(op.id, None)
        op.finish()
        if self.flushes:
            self._check_flushes()
        return True

    def _ring_start(self, op: SendOp) -> None:
        self._ring()
        if op not in self.ring_queue:
            self.ring_queue.append(op)
        self._ring_pump()

    def _ring_pump(self) -> None:
        ring = self.ring_out
        while self.ring_queue and ring is not None:
            op = self.ring_queue[0]
            if op.state == FINISHED:  # withdrawn: stop streaming it
                self.ring_queue.popleft()
                continue
            left = op.nbytes - op.sent
            n = min(RING_CHUNK, left, self.ring_credit)
            if n <= 0 and left > 0:
                return
            if n > 0:
                buf = ring.loan(n, timeout=0)
                with memoryview(buf) as dst:
                    _gather(op.views, op.sent, dst)
                ring.commit()
                op.sent += n
                self.ring_credit -= n
                self._queue([HDR.pack(K_CHUNK, 0, 0, op.gen, op.id, n)], None)
            if op.sent == op.nbytes:
                self.ring_queue.popleft()

    def _ring_chunk(self, ident: int, n: int, gen: int) -> None:
        ring = self.ring_in
        if ring is None:
            raise ProtocolError("CHUNK before RINGOPEN")
        buf = ring.recv(timeout=0)
        entry = self.pulling.get(ident)
        if entry is not None and entry[1].gen & 0xFFFFFFFF != gen:
            entry = None  # a chunk of an abandoned pull
        try:
            if entry is not None:
                op, msg = entry
                assert op.view is not None
                off = msg.data or 0
                with memoryview(buf) as src:
                    op.view[off : off + n] = src[:n]
        finally:
            buf.release()
        self._queue([HDR.pack(K_CREDIT, 0, 0, 0, 0, n)], None)
        if entry is None:
            return  # a withdrawn transfer: the chunk is dropped
        op, msg = entry
        msg.data = (msg.data or 0) + n
        if msg.data >= msg.length:
            self.pulling.pop(ident, None)
            self._queue([HDR.pack(K_ACK, 0, 0, ACK_DONE, ident, 0)], None)
            op.finish(msg.tag, msg.length, self)

    # --- shutdown ----------------------------------------------------------------------------
    def _eof(self) -> None:
        if self.bye_received or self.closing:
            self.lost(ConnectionLostError("peer closed the connection"))
        else:
            self.lost(ConnectionLostError("peer went away (connection reset or process died)"))

    def _closed_error(self) -> BaseException:
        return self.lost_error or TransportClosedError("connection is closed")

    def close_gracefully(self) -> None:
        """Finish queued and in-flight sends, then say BYE and close."""
        if self.closed or self.closing:
            return
        self.closing = True
        if self._drained():
            self._finish_close()

    def _finish_close(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(OSError):
            self.sock.send(HDR.pack(K_BYE, 0, 0, 0, 0, 0))
        self.lost(TransportClosedError("connection closed"))

    def lost(self, exc: BaseException) -> None:
        """Tear down: every outstanding operation on this peer fails with ``exc``; fds released."""
        if self.closed:
            return
        self.closed = True
        self.lost_error = exc
        try:
            self.reactor.remove_reader(self.fd)
            if self.writing:
                self.reactor.remove_writer(self.fd)
        except (ValueError, RuntimeError):
            pass  # the loop is already closed
        self.writing = False
        try:
            self.sock.close()
        finally:
            self.rview.release()
            self.wq.clear()
            ops = list(self.inflight.values())
            self.inflight.clear()
            self.rndv.clear()
            self.withdrawing.clear()
            for op in ops:
                op.abort(exc)
            for f in self.flushes:
                f[3](exc)
            self.flushes = []
            for rop, _msg in list(self.pulling.values()):
                rop.abort(exc)
            self.pulling.clear()
            if self.stream_op is not None:
                self.stream_op.abort(exc)
                self.stream_op = None
            self.stream_view = None
            self.worker.matcher.drop_from(self)  # before the ring its messages sit in goes
            for ring in (self.ring_out, self.ring_in):
                if ring is not None:
                    ring.close()
            self.ring_out = self.ring_in = None
            self.ring_queue.clear()
            cb = self.on_fail
            self.on_fail = None
            self.on_ready = None
            if cb is not None:
                cb(exc)
            self.worker.connection_lost(self, exc)


_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def tls_handshake(
    reactor: Reactor,
    sock: ssl.SSLSocket,
    on_done: Callable[[ssl.SSLSocket], None],
    on_fail: Callable[[BaseException], None],
    timeout: float,
) -> None:
    """Drive a non-blocking TLS handshake from readiness callbacks; closes ``sock`` on failure."""
    fd = sock.fileno()
    state = {"r": False, "w": False, "over": False}

    def finish(exc: BaseException | None) -> None:
        if state["over"]:
            return
        state["over"] = True
        timer.cancel()
        if state["r"]:
            reactor.remove_reader(fd)
        if state["w"]:
            reactor.remove_writer(fd)
        if exc is None:
            on_done(sock)
        else:
            sock.close()
            on_fail(exc)

    def step() -> None:
        if state["over"]:
            return
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            want_r, want_w = True, False
        except ssl.SSLWantWriteError:
            want_r, want_w = False, True
        except (ssl.SSLError, OSError) as exc:
            finish(ConnectionLostError(f"TLS handshake failed: {exc}"))
            return
        else:
            finish(None)
            return
        if want_r != state["r"]:
            (reactor.add_reader(fd, step) if want_r else reactor.remove_reader(fd))
            state["r"] = want_r
        if want_w != state["w"]:
            (reactor.add_writer(fd, step) if want_w else reactor.remove_writer(fd))
            state["w"] = want_w

    timer = reactor.call_later(
        timeout, lambda: finish(ConnectionLostError(f"TLS handshake took over {timeout} s"))
    )
    step()


def _advance(views: list[Any], sent: int) -> list[Any]:
    """The views still to send after ``sent`` bytes went out."""
    i = 0
    while i < len(views):
        n = memoryview(views[i]).nbytes
        if sent < n:
            break
        sent -= n
        i += 1
    rest = views[i:]
    if rest and sent:
        rest[0] = memoryview(rest[0])[sent:]
    return rest


def _gather(views: Sequence[memoryview], offset: int, dst: memoryview) -> None:
    """Copy ``dst.nbytes`` bytes of the concatenated ``views``, from ``offset``, into ``dst``."""
    need = dst.nbytes
    pos = 0
    for v in views:
        n = v.nbytes
        if offset >= n:
            offset -= n
            continue
        take = min(n - offset, need - pos)
        dst[pos : pos + take] = v[offset : offset + take]
        pos += take
        offset = 0
        if pos == need:
            return


# ------------------------------------------------------------------------------------------
# the worker: one per Client or Server
# ------------------------------------------------------------------------------------------


class Worker:
    """Connections, listeners and the tag matcher of one Client or Server."""

    def __init__(
        self,
        reactor: Reactor,
        *,
        backend: str = "auto",
        name: str = "",
        rndv_threshold: int | None = None,
        spin: float = 0.0,
        eager_shm: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "ucx":
            raise ValueError(
                "backend='ucx' is served by isthmus.transport.Server/Client (asyncio), "
                "not by this front end"
            )
        self.reactor = reactor
        self.backend = backend
        self.name = name
        self.rndv_threshold = DEFAULT_RNDV_THRESHOLD if rndv_threshold is None else rndv_threshold
        self.eager_shm = eager_shm
        self.parallel_copy = os.environ.get("ISTHMUS_TRANSPORT_PARALLEL_COPY", "1") != "0"
        self._copier: ThreadPoolExecutor | None = None
        self.matcher = Matcher()
        self.connections: list[Connection] = []
        self.listeners: list[socket.socket] = []
        self.closed = False
        self.on_connection_lost: Callable[[Connection, BaseException], None] | None = None
        self.spin = spin
        self._spin_until = 0.0
        self._spinning = False

    # --- spinning (opt-in) -------------------------------------------------------------------
    def activity(self) -> None:
        if self.spin > 0.0:
            self._spin_until = self.reactor.time() + self.spin
            if not self._spinning:
                self._spinning = True
                self.reactor.call_soon(self._spin_step)

    def _spin_step(self) -> None:
        # Keeps the loop polling (select with a zero timeout) for a short window after traffic
        # while receives wait, so a reply arriving in that window costs no sleep and wake-up.
        if (
            not self.closed
            and self.reactor.time() < self._spin_until
            and (self.matcher.exact or self.matcher.masked)
        ):
            self.reactor.call_soon(self._spin_step)
        else:
            self._spinning = False

    # --- receives ----------------------------------------------------------------------------
    def post_recv(self, op: RecvOp) -> None:
        if self.closed:
            op.abort(TransportClosedError("closed"))
            return
        matcher = self.matcher
        while matcher.n_unexpected:
            msg = matcher.peek_unexpected(op)
            if msg is None:
                break
            capacity = op.view.nbytes if op.view is not None else msg.length
            if msg.length > capacity:
                op.abort(MessageTruncatedError(msg.tag, msg.length, capacity))
                return
            matcher.remove_unexpected(msg)
            if msg.kind == K_DATA:
                self._fill(op, msg)
                return
            if msg.conn.closed:
                continue
            self._bind(op, msg)
            return
        for conn in self.connections:
            if conn.adopt_stream(op):
                return
        matcher.add_posted(op)
        self.activity()

    def _fill(self, op: RecvOp, msg: Msg) -> None:
        length = msg.length
        if op.view is None:
            if op.alloc is None and isinstance(msg.data, bytearray) and msg.held is None:
                op.buf = msg.data  # already our own copy: hand it over
            else:
                op.materialize(length)
        if op.view is not None and length:
            op.view[:length] = msg.data
        msg.release()
        op.finish(msg.tag, length, msg.conn)

    def _bind(self, op: RecvOp, msg: Msg) -> None:
        if op.view is None:
            op.materialize(msg.length)
        msg.conn.pull(op, msg)

    def withdraw_recv(self, op: RecvOp) -> None:
        if op.state == POSTED:
            self.matcher.remove_posted(op)
        elif op.state == ACTIVE and op.msg is not None:
            op.msg.conn.unpull(op)
        else:
            for conn in self.connections:
                conn.stream_abandon(op)

    def deliver_data(self, conn: Connection, tag: int, data: memoryview, held: Any = None) -> None:
        """A whole payload: in the connection's buffer (copied if unexpected) or, with ``held``,
        in a ring Buffer (kept as it is until matched, then released)."""
        length = data.nbytes
        matcher = self.matcher
        while True:
            op = matcher.take_posted(tag)
            if op is None:
                msg = Msg(conn, tag, length, K_DATA, data if held is not None else bytes(data))
                msg.held = held
                matcher.add_unexpected(msg)
                return
            if op.view is None:
                op.materialize(length)
            elif op.view.nbytes < length:
                op.abort(MessageTruncatedError(tag, length, op.view.nbytes))
                continue
            assert op.view is not None
            op.view[:length] = data
            if held is not None:
                data.release()
                held.release()
            op.finish(tag, length, conn)
            return

    def match_for_stream(self, conn: Connection, tag: int, length: int) -> RecvOp | None:
        """A posted receive able to take a large DATA payload in place, if any."""
        matcher = self.matcher
        while True:
            op = matcher.take_posted(tag)
            if op is None:
                return None
            if op.view is None:
                op.materialize(length)
            assert op.view is not None
            if op.view.nbytes < length:
                op.abort(MessageTruncatedError(tag, length, op.view.nbytes))
                continue
            op.state = ACTIVE
            op.view = op.view[:length]
            return op

    def deliver_msg(self, msg: Msg) -> None:
        """A message that is not a DATA payload in our buffer: match it or keep it."""
        matcher = self.matcher
        while True:
            op = matcher.take_posted(msg.tag)
            if op is None:
                matcher.add_unexpected(msg)
                return
            capacity = op.view.nbytes if op.view is not None else msg.length
            if capacity < msg.length:
                op.abort(MessageTruncatedError(msg.tag, msg.length, capacity))
                continue
            if msg.kind == K_DATA:
                self._fill(op, msg)
                return
            self._bind(op, msg)
            return

    def peer_cancelled(self, conn: Connection, ident: int) -> None:
        for q in list(self.matcher.unexpected.values()):
            for msg in q:
                if msg.conn is conn and msg.id == ident and msg.kind != K_DATA:
                    self.matcher.remove_unexpected(msg)
                    conn.drop_rndv(ident)
                    return
        entry = conn.pulling.pop(ident, None)
        if entry is not None:
            op, _msg = entry
            op.state = POSTED
            op.msg = None
            self.matcher.add_posted(op, front=True)  # the receive waits for another message
            conn.drop_rndv(ident)

    # --- connections -------------------------------------------------------------------------
    def add_connection(self, sock: socket.socket, kind: str) -> Connection:
        conn = Connection(self, sock, kind)
        self.connections.append(conn)
        conn.start()
        return conn

    def connection_lost(self, conn: Connection, exc: BaseException) -> None:
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)
        self.matcher.drop_from(conn)
        if self.on_connection_lost is not None:
            self.on_connection_lost(conn, exc)

    def fail_posted(self, exc: BaseException) -> None:
        matcher = self.matcher
        ops = list(matcher.masked)
        for q in matcher.exact.values():
            ops.extend(q)
        matcher.masked.clear()
        matcher.exact.clear()
        for op in ops:
            op.abort(exc)

    def close(self, exc: BaseException | None = None) -> None:
        """Close everything now: listeners, connections, outstanding operations."""
        if self.closed:
            return
        self.closed = True
        err = exc or TransportClosedError("closed")
        for lsock in self.listeners:
            with contextlib.suppress(ValueError, RuntimeError):
                self.reactor.remove_reader(lsock.fileno())
            lsock.close()
        self.listeners.clear()
        for conn in list(self.connections):
            conn.lost(err)
        self.fail_posted(err)
        self.matcher.unexpected.clear()
        self.matcher.n_unexpected = 0
        if self._copier is not None:
            self._copier.shutdown(wait=True)
            self._copier = None

    def copier(self) -> ThreadPoolExecutor | None:
        """The helper thread for large copies (None on one CPU or when disabled by env)."""
        if self._copier is None:
            if not self.parallel_copy or (os.cpu_count() or 1) < 2:
                return None
            self._copier = ThreadPoolExecutor(1, thread_name_prefix="isthmus-transport-copy")
        return self._copier


def timeout_error(what: str, timeout: float) -> TransportTimeoutError:
    return TransportTimeoutError(f"{what} did not complete within {timeout} s")
