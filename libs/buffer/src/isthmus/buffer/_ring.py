"""``Ring``: a cross-process single-producer/single-consumer ring of variable-size messages.

Layout inside a :class:`SharedSegment` (offsets in bytes; each side's words on its own cache line):

* 0: magic, capacity
* 128: ``head`` (u64, bytes ever published), producer state/pid/start time, ``skip``
* 256: ``tail`` (u64, bytes ever released), consumer state/pid/start time
* 384: ``data_seq`` futex word + consumer-is-sleeping flag
* 512: ``space_seq`` futex word + producer-is-sleeping flag
* 1024: the data area.  A record is a 64-byte header (the payload length) and the payload padded
  to 64 bytes, so payloads are 64-byte aligned and never wrap: a record that would cross the end
  starts again at offset 0, and ``skip`` (written before ``head``) tells the consumer where the
  rest of the lap was skipped.  Out of band, so a record may reuse the skipped bytes as soon as
  everything before it was released: any message up to ``capacity - 64`` bytes fits an empty ring.

The producer writes a payload, then its length, then moves ``head`` (release order); the consumer
reads ``head`` (acquire) and only then the record, so it never sees a torn message.  A waiting side
spins for ``spin`` seconds (0 by default), then sleeps on a futex; the other side only makes the
wake syscall when the sleeper flag is set.  Waits sleep in slices so a peer that died without
closing is noticed (:class:`PeerDiedError`) rather than waited for forever.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import struct
import threading
import time
import weakref
from collections import deque
from typing import Any

from ._backend import Primitives, current
from ._buffer import Buffer
from ._errors import (
    BufferInUseError,
    IsthmusBufferError,
    MessageTooLargeError,
    PeerDiedError,
    RingClosedError,
    RingUsageError,
    SizeError,
    WaitTimeoutError,
)
from ._segment import SharedSegment, _start_time, process_alive

__all__ = ["Ring"]

_make = Buffer._make

_open_rings: weakref.WeakSet[Ring] = weakref.WeakSet()


def _forget_in_child() -> None:
    # A forked child shares the parent's mapping but owns none of its rings: it must not
    # publish, release or close anything in them.
    for ring in list(_open_rings):
        ring._seg = None
        ring._role = None


os.register_at_fork(after_in_child=_forget_in_child)


@atexit.register
def _close_all() -> None:
    # Registered after the segments' handler, so it runs first (atexit is LIFO): the peer sees
    # a close, not a death, and nothing writes into a segment after it is unmapped.
    for ring in list(_open_rings):
        try:
            ring.close()
        except BufferInUseError:
            # Views of received messages outlive us: tell the peer we closed and let go of the
            # memory without releasing them (the process is ending anyway).
            with contextlib.suppress(Exception):
                ring._mark_closed()
                ring._seg = None
                ring._role = None
        except Exception:
            pass


_MAGIC = int.from_bytes(b"ISTHRNG1", "little")
_CAP = 8
_OPENS = 16  # u32: how many Ring objects ever attached (create counts as one)
_HEAD, _PSTATE, _PPID, _PSTART = 128, 136, 140, 144
_SKIP = 152  # u64: stream position where the producer last skipped to the next lap
_TAIL, _CSTATE, _CPID, _CSTART = 256, 264, 268, 272
_DSEQ, _CWAIT = 384, 388
_SSEQ, _PWAIT = 512, 516
_DATA = 1024
_REC = 64
_NONE, _ATTACHED, _CLOSED = 0, 1, 2
PRODUCER, CONSUMER = "producer", "consumer"

#: A sleeping side wakes to check that its peer is alive after this many seconds, then after
#: twice as long each time up to :data:`LIVENESS_MAX`: a dead peer is noticed within about 2 s,
#: and an idle side wakes once every 2 s.
LIVENESS_FIRST = 0.05
LIVENESS_MAX = 2.0
_PEER_PRODUCER = (_PSTATE, _PPID, _PSTART, "producer")
_PEER_CONSUMER = (_CSTATE, _CPID, _CSTART, "consumer")


def _record_size(n: int) -> int:
    return _REC + ((n + 63) & ~63)


class Ring:
    """A single-producer/single-consumer message ring between two processes.

    Create it with :meth:`create` in one process and join with :meth:`open` in the other.  The
    first side to call :meth:`loan`/:meth:`send` is the producer, the first to call :meth:`recv`
    the consumer.

    Producer: ``buf = ring.loan(n)`` gives a writable :class:`Buffer` inside the ring; write the
    message in place, then :meth:`commit`.  :meth:`send` copies ``data`` once for convenience.

    Consumer: :meth:`recv` returns a read-only :class:`Buffer` viewing the message in the ring;
    :meth:`release` (or ``buf.release()``, or dropping it) frees its space.

    Use a ``Ring`` object from one thread at a time.  Another thread may :meth:`close` it at any
    moment: close waits for an operation in progress to finish, and a blocked wait wakes with
    :class:`RingClosedError`.

    ``spin`` is how long (seconds) a waiting side busy-polls before it sleeps in the kernel;
    the default 0 sleeps at once, so an idle ring uses no CPU.  A few tens of microseconds of
    spin cut the latency to a few microseconds when messages come often.
    """

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use Ring.create(name, capacity) or Ring.open(name)")

    name: str
    capacity: int
    _seg: SharedSegment | None

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, capacity: int, *, spin: float = 0.0) -> Ring:
        """Create ring ``name`` with ``capacity`` bytes of message space (rounded up to 64)."""
        if not isinstance(capacity, int) or capacity < 2 * _REC:
            raise SizeError(f"ring capacity must be an int >= {2 * _REC}, got {capacity!r}")
        cap = (capacity + 63) & ~63

        def init(mm: Any, off: int) -> None:
            struct.pack_into("<QQ", mm, off, _MAGIC, cap)
            struct.pack_into("<I", mm, off + _OPENS, 1)

        seg = SharedSegment.create(name, _DATA + cap, _init=init)
        ring = cls._setup(seg, spin)
        ring.capacity = cap
        return ring

    @classmethod
    def open(cls, name: str, *, spin: float = 0.0, timeout: float = 0.0) -> Ring:
        """Join the ring ``name`` that another process created.

        Waits up to ``timeout`` seconds for it to be created (default: not at all).
        """
        seg = SharedSegment.open(name, timeout=timeout)
        ring = cls._setup(seg, spin)
        p = ring._p
        if seg.size < _DATA + 2 * _REC or p.load_u64(ring._base) != _MAGIC:
            seg.close()
            raise IsthmusBufferError(f"shared segment {name!r} does not hold a Ring")
        ring.capacity = p.load_u64(ring._base + _CAP)
        opens = ring._base + _OPENS
        p.store_u32(opens, p.load_u32(opens) + 1)  # two parties: no lost update to fear
        return ring

    @classmethod
    def _setup(cls, seg: SharedSegment, spin: float) -> Ring:
        ring = object.__new__(cls)
        ring.name = seg.name
        ring._seg = seg
        ring._p = current()
        ring._base = seg.buffer.address
        ring._data = ring._base + _DATA
        ring._spin_ns = max(0, int(spin * 1e9))
        ring._role = None
        ring._pid = os.getpid()
        # producer
        ring._wpos = 0
        ring._tail_cache = 0
        ring._loan = None
        # consumer
        ring._rpos = 0
        ring._head_cache = 0
        ring._skip_cache = 0
        ring._outstanding = deque()
        # Threads inside _wait (one entry each; list append/pop are atomic): close() must not
        # unmap the segment under them.
        ring._active = []
        ring._closing = False
        ring._release_lock = threading.Lock()
        ring._a_head = ring._base + _HEAD
        ring._a_tail = ring._base + _TAIL
        ring._a_dseq = ring._base + _DSEQ
        ring._a_cwait = ring._base + _CWAIT
        _open_rings.add(ring)
        return ring

    _p: Primitives
    _base: int
    _data: int
    _spin_ns: int
    _role: str | None
    _pid: int
    _wpos: int
    _tail_cache: int
    _loan: tuple[Buffer, int, int] | None
    _rpos: int
    _head_cache: int
    _skip_cache: int
    _outstanding: deque[list[Any]]
    _active: list[None]
    _closing: bool
    _release_lock: threading.Lock
    _a_head: int
    _a_tail: int
    _a_dseq: int
    _a_cwait: int

    @property
    def max_message(self) -> int:
        """The largest message the ring can hold (when empty)."""
        return self.capacity - _REC

    @property
    def role(self) -> str | None:
        """``"producer"``, ``"consumer"`` or None before the first send/recv."""
        return self._role

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._seg is None

    def _claim(self, role: str) -> None:
        if self._seg is None:
            raise RingClosedError(f"ring {self.name!r} is closed")
        if self._role == role:
            return
        if self._role is not None:
            raise RingUsageError(
                f"this Ring object is the {self._role}; open the ring again for the other side"
            )
        st, pid_off, start_off = (
            (_PSTATE, _PPID, _PSTART) if role == PRODUCER else (_CSTATE, _CPID, _CSTART)
        )
        p, b = self._p, self._base
        with self._seg._locked():  # two processes must not both take the role
            if p.load_u32(b + st) == _ATTACHED:
                other = p.load_u32(b + pid_off)
                if process_alive(other, p.load_u64(b + start_off)):
                    raise RingUsageError(
                        f"ring {self.name!r} already has a {role} (pid {other}); a Ring is "
                        "single-producer/single-consumer"
                    )
            pid = os.getpid()
            p.store_u64(b + start_off, _start_time(pid))
            p.store_u32(b + pid_off, pid)
            p.store_u32(b + st, _ATTACHED)
        self._role = role
        if role == PRODUCER:
            self._wpos = p.load_u64(b + _HEAD)
            self._tail_cache = p.load_u64(b + _TAIL)
        else:
            self._rpos = p.load_u64(b + _TAIL)
            self._head_cache = self._rpos

    def _peer_gone(self, st_off: int, pid_off: int, start_off: int, what: str) -> None:
        """Raise if the peer closed or died (only called when there is nothing to do)."""
        p, b = self._p, self._base
        st = p.load_u32(b + st_off)
        if st == _CLOSED:
            raise RingClosedError(f"the {what} closed ring {self.name!r}")
        if st == _ATTACHED:
            pid = p.load_u32(b + pid_off)
            if not process_alive(pid, p.load_u64(b + start_off)):
                raise PeerDiedError(
                    f"the {what} of ring {self.name!r} (pid {pid}) died without closing it"
                )
        elif st == _NONE and self._seg is not None and p.load_u32(b + _OPENS) >= 2:
            # The other side attached but never sent or received; has it gone since?
            others = self._seg._others()
            if any(not alive for _, alive in others) and not any(a for _, a in others):
                raise PeerDiedError(f"the other side of ring {self.name!r} died")
            if not others:
                raise RingClosedError(
                    f"the other side closed ring {self.name!r} without acting as {what}"
                )

    def _wait(
        self,
        word: int,
        value: int,
        target: int,
        seq: int,
        waiting: int,
        timeout: float | None,
        peer: tuple[int, int, int, str],
        cancel: Any = None,
    ) -> int:
        """Block until the counter at ``word`` (now ``value``) reaches ``target``.

        Spins ``spin`` seconds, then sleeps on the futex in slices that grow from
        LIVENESS_FIRST to LIVENESS_MAX, checking after each that the peer is alive.
        """
        active = self._active
        active.append(None)  # before the check: close() either sees us or we see _closing
        try:
            if self._closing:
                raise RingClosedError(f"ring {self.name!r} is closed")
            p, b = self._p, self._base
            slice_ = LIVENESS_FIRST if cancel is None else 0.05
            deadline = None
            if timeout is not None:
                deadline = time.monotonic() + timeout
                slice_ = min(slice_, max(timeout, 0.0))
            # Fast path: one native call spins and then sleeps the first slice.
            v = p.ring_wait_u64(b + word, value, b + seq, b + waiting, self._spin_ns, slice_)
            if v >= target:
                return v
            return self._wait_slices(
                word, v, target, seq, waiting, timeout, deadline, peer, cancel, slice_
            )
        finally:
            active.pop()

    def _wait_slices(
        self,
        word: int,
        value: int,
        target: int,
        seq: int,
        waiting: int,
        timeout: float | None,
        deadline: float | None,
        peer: tuple[int, int, int, str],
        cancel: Any,
        slept: float,
    ) -> int:
        p, b = self._p, self._base
        slice_ = slept
        while True:
            if self._closing:
                raise RingClosedError(f"ring {self.name!r} was closed while waiting")
            try:
                self._peer_gone(*peer)
            except IsthmusBufferError:
                v = p.load_u64(b + word)  # the last messages before a close still count
                if v >= target:
                    return v
                raise
            if cancel is not None and cancel.is_set():
                raise WaitTimeoutError(f"ring {self.name!r}: wait cancelled")
            if cancel is None:
                slice_ = min(slice_ * 2, LIVENESS_MAX)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeoutError(f"ring {self.name!r}: no progress within {timeout} s")
                slice_ = min(slice_, remaining)
            v = p.ring_wait_u64(b + word, value, b + seq, b + waiting, 0, slice_)
            if v >= target:
                return v
            value = v

    # --- producer ----------------------------------------------------------------------------
    def _room(self, n: int, timeout: float | None, cancel: Any = None) -> int:
        """Wait until an ``n``-byte message fits; returns its record's stream position."""
        if self._role != PRODUCER:
            self._claim(PRODUCER)
        rec = _record_size(n)
        cap = self.capacity
        if n < 0 or rec > cap:
            raise MessageTooLargeError(
                f"a {n}-byte message does not fit in ring {self.name!r} "
                f"(at most {cap - _REC} bytes); create the ring with a larger capacity"
            )
        p, b = self._p, self._base
        if p.load_u32(b + _CSTATE) == _CLOSED:
            raise RingClosedError(f"the consumer closed ring {self.name!r}")
        head = self._wpos
        off = head % cap
        start = head if rec <= cap - off else head + (cap - off)
        # The record must not overwrite anything unreleased: tail must reach ``start + rec - cap``,
        # or, for a record that wraps, simply ``head`` (an empty ring holds nothing to overwrite,
        # and the skipped end of the lap is announced out of band, in _SKIP).
        need = min(start + rec - cap, head)
        if self._tail_cache < need:
            tail = p.load_u64(b + _TAIL)
            if tail < need:
                tail = self._wait(_TAIL, tail, need, _SSEQ, _PWAIT, timeout, _PEER_CONSUMER, cancel)
            self._tail_cache = tail
        return start

    def _reserve(self, n: int, timeout: float | None) -> int:
        if self._loan is not None:
            raise RingUsageError("commit() or abort() the previous loan first")
        return self._room(n, timeout)

    def wait_writable(self, n: int, timeout: float | None = None, *, _cancel: Any = None) -> None:
        """Block until an ``n``-byte message fits (without reserving it)."""
        self._room(n, timeout, _cancel)

    def loan(self, n: int, timeout: float | None = None) -> Buffer:
        """Reserve ``n`` bytes in the ring and return them as a writable :class:`Buffer`.

        Blocks while the ring is full (``timeout`` seconds at most, None = forever).  Write the
        message in place, drop any views of it, then call :meth:`commit`.
        """
        active = self._active
        active.append(None)  # close() from another thread waits until we leave
        try:
            if self._closing:
                raise RingClosedError(f"ring {self.name!r} is closed")
            start = self._reserve(n, timeout)
            buf = _make(self._data + start % self.capacity + _REC, n, False, self)
            self._loan = (buf, start, n)
            return buf
        finally:
            active.pop()

    def commit(self, nbytes: int | None = None) -> None:
        """Publish the loaned message (its first ``nbytes`` bytes if given)."""
        active = self._active
        active.append(None)  # close() from another thread waits until we leave
        try:
            if self._closing:
                raise RingClosedError(f"ring {self.name!r} is closed")
            loan = self._loan
            if loan is None:
                raise RingUsageError("commit() without a loan(); call loan(n) first")
            buf, start, n = loan
            if nbytes is None:
                nbytes = n
            elif not 0 <= nbytes <= n:
                raise SizeError(f"commit({nbytes}) but the loan holds {n} bytes")
            buf.release()  # raises BufferInUseError, keeping the loan, while views are alive
            self._loan = None
            self._publish(start, nbytes)
        finally:
            active.pop()

    def abort(self) -> None:
        """Give back the loaned space without publishing anything."""
        loan = self._loan
        if loan is None:
            return
        loan[0].release()
        self._loan = None

    def _publish(self, start: int, nbytes: int) -> None:
        # Length first, then head (release order): the consumer never sees a torn record.
        if start != self._wpos:
            # The record wrapped: say where the lap was cut short, before head moves past it.
            self._p.store_u64(self._base + _SKIP, self._wpos)
        end = start + _REC + ((nbytes + 63) & ~63)
        self._wpos = end
        self._p.ring_publish(
            self._data + start % self.capacity,
            nbytes,
            self._a_head,
            end,
            self._a_dseq,
            self._a_cwait,
        )

    def send(self, data: Any, timeout: float | None = None) -> None:
        """Copy ``data`` (any buffer) into the ring as one message."""
        active = self._active
        active.append(None)  # close() from another thread waits until we leave
        try:
            if self._closing:
                raise RingClosedError(f"ring {self.name!r} is closed")
            # The export pins the source (a Buffer refuses release() meanwhile) while the copy runs
            # without the GIL.
            with memoryview(data) as keep:
                addr, n, _ = self._p.address_of(keep)
                start = self._reserve(n, timeout)
                if n:
                    self._p.memcopy(self._data + start % self.capacity + _REC, addr, n)
                self._publish(start, n)
        finally:
            active.pop()

    # --- consumer ----------------------------------------------------------------------------
    def recv(self, timeout: float | None = None) -> Buffer:
        """Wait for the next message and return a read-only :class:`Buffer` viewing it.

        Raises :class:`WaitTimeoutError` after ``timeout`` seconds (None = wait forever),
        :class:`RingClosedError` once the producer closed and every message was received, and
        :class:`PeerDiedError` if the producer died.  Release the message when done with it.
        """
        active = self._active
        active.append(None)  # close() from another thread waits until we leave
        try:
            if self._closing:
                raise RingClosedError(f"ring {self.name!r} is closed")
            if self._role != CONSUMER:
                self._claim(CONSUMER)
            p = self._p
            pos = self._rpos
            if pos == self._head_cache:
                head = p.load_u64(self._a_head)
                if head == pos:
                    head = self._wait(_HEAD, pos, pos + 1, _DSEQ, _CWAIT, timeout, _PEER_PRODUCER)
                self._head_cache = head
                # Read after head (acquire): covers any skip made before that head was published.
                self._skip_cache = p.load_u64(self._base + _SKIP)
            cap = self.capacity
            data = self._data
            off = pos % cap
            if off and pos == self._skip_cache:  # the producer went on at the next lap's start
                pos += cap - off
                off = 0
            n = p.load_u64(data + off)
            end = pos + _REC + ((n + 63) & ~63)
            self._rpos = end
            entry: list[Any] = [end, False, None]
            self._outstanding.append(entry)
            buf = _make(data + off + _REC, n, True, self, self, entry)
            entry[2] = weakref.ref(buf)
            return buf
        finally:
            active.pop()

    def wait_readable(self, timeout: float | None = None, *, _cancel: Any = None) -> None:
        """Block until a message can be received (without receiving it)."""
        if self._role != CONSUMER:
            self._claim(CONSUMER)
        pos = self._rpos
        if pos != self._head_cache:
            return
        if self._p.load_u64(self._a_head) != pos:
            return
        self._wait(_HEAD, pos, pos + 1, _DSEQ, _CWAIT, timeout, _PEER_PRODUCER, _cancel)

    def _buffer_released(self, entry: list[Any]) -> None:
        entry[1] = True
        seg = self._seg
        if seg is None or seg.closed:  # closed (or a forked copy): nothing to hand back
            return
        with self._release_lock:  # releases from two threads must not move tail backwards
            out = self._outstanding
            tail = -1
            while out and out[0][1]:
                tail = out.popleft()[0]
            if tail >= 0:
                p = self._p
                p.store_u64(self._a_tail, tail)
                p.ring_notify(self._base + _SSEQ, self._base + _PWAIT)

    def release(self) -> None:
        """Release the oldest received message that is not released yet."""
        for entry in self._outstanding:
            if not entry[1]:
                buf = entry[2]()
                if buf is not None:
                    buf.release()
                return
        raise RingUsageError("release() without a received message")

    @property
    def pending(self) -> int:
        """Bytes published but not yet released (both sides may call it)."""
        if self._seg is None:
            raise RingClosedError(f"ring {self.name!r} is closed")
        p = self._p
        return int(p.load_u64(self._base + _HEAD) - p.load_u64(self._base + _TAIL))

    # --- lifetime ----------------------------------------------------------------------------
    def unlink(self) -> None:
        """Remove the ring's name now that both sides have it open.

        Both mappings keep working; nobody else can open the ring any more, and nothing is left
        in ``/dev/shm`` even if both processes are killed.
        """
        seg = self._seg
        if seg is None:
            raise RingClosedError(f"ring {self.name!r} is closed")
        seg.unlink()

    def close(self) -> None:
        """Close this side: the peer sees :class:`RingClosedError` once it has drained.

        Received messages still held are released (raises :class:`BufferInUseError`, changing
        nothing, while views of them are alive).  The shared memory is unlinked when the last
        side closes.
        """
        seg = self._seg
        if seg is None:
            return
        if self._pid != os.getpid() or seg.closed:
            # A forked copy (the parent still owns the ring), or the segment went first:
            # nothing of ours is mapped any more.
            self._seg = None
            self._role = None
            seg.close()
            return
        # First stop other threads: new operations see _closing and raise, one in progress
        # finishes (a waiter is woken by the kick).  Their memory must stay mapped until then.
        self._closing = True
        deadline = time.monotonic() + 10.0
        while self._active:
            if time.monotonic() > deadline:
                self._closing = False
                raise RingUsageError(
                    f"cannot close ring {self.name!r}: another thread is still inside it"
                )
            self._kick()
            time.sleep(0.001)
        with self._release_lock:
            entries = list(self._outstanding)
        held = [b for e in entries if not e[1] and e[2] is not None and (b := e[2]()) is not None]
        if self._loan is not None:
            held.append(self._loan[0])
        busy = sum(1 for b in held if b._core_exports or b._children)
        if busy:
            self._closing = False  # nothing changed: the ring stays usable
            raise BufferInUseError(
                f"cannot close ring {self.name!r}: {busy} message(s) still have live views; "
                "release or delete them first"
            )
        for b in held:
            b.release()
        self._loan = None
        self._mark_closed()
        self._seg = None
        self._role = None  # every later call goes through _claim, which raises RingClosedError
        seg.close()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._seg is not None:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._seg is None else (self._role or "unattached")
        return f"<Ring {self.name!r} capacity={self.capacity} {state}>"

    def _mark_closed(self) -> None:
        """Publish that this side closed and wake the peer."""
        p, b = self._p, self._base
        if self._role == PRODUCER:
            p.store_u32(b + _PSTATE, _CLOSED)
            p.ring_notify(b + _DSEQ, b + _CWAIT)
        elif self._role == CONSUMER:
            p.store_u32(b + _CSTATE, _CLOSED)
            p.ring_notify(b + _SSEQ, b + _PWAIT)

    def _kick(self) -> None:
        """Wake this side's own sleeper (used to cancel a wait from another thread)."""
        if self._seg is None:
            return
        # Ringing our own doorbell (not just a futex wake) makes the sleeper return at once.
        b = self._base
        if self._role == PRODUCER:
            self._p.ring_notify(b + _SSEQ, b + _PWAIT)
        else:
            self._p.ring_notify(b + _DSEQ, b + _CWAIT)
