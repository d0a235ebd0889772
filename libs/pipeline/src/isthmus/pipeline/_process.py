"""``ProcessWorker``: one node in a child process, fed through ``isthmus.buffer`` rings.

Two single-producer rings in shared memory join parent and child.  Items are written in place
into the ring (one ``np.copyto`` for an array, or the producer writes straight into a loan with
:meth:`ProcessWorker.send_inplace`) and read as views of it: nothing is pickled for audio,
video, arrays or bytes.  A waiting side sleeps on a futex (no spinning unless ``spin`` is set),
and a reader thread in the parent hands what arrives to the event loop.

Flow control is by credits: at most ``credits`` inputs are in the child at once; ``send``
waits for one without blocking the loop.  The child runs with ``PR_SET_PDEATHSIG`` so it dies
with the parent, and the rings notice a dead peer, so neither side waits forever; the rings'
names are unlinked as soon as both sides have them open, so nothing is left in ``/dev/shm``
even after ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import os
import signal
import struct
import threading
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from isthmus.buffer import (
    BufferInUseError,
    IsthmusBufferError,
    PeerDiedError,
    Ring,
    RingClosedError,
    SharedSegment,
    WaitTimeoutError,
)

from . import _codec as codec
from ._control import Control, Interrupt
from ._errors import ProcessNodeError
from ._media import AudioChunk

__all__ = ["ProcessWorker"]

log = logging.getLogger("isthmus.pipeline")
_ids = itertools.count(1)
_PR_SET_PDEATHSIG = 1
_CUR = struct.Struct("<Q")


@dataclass(frozen=True)
class _Config:
    node_type: str
    params: dict[str, Any]
    name: str
    in_ring: str
    out_ring: str
    parent: int
    spin: float
    heartbeat: float
    current: str  # a shared segment whose first u64 is the input being processed


# --- the child -------------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class _Out:
    """The child's writer to the parent."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring

    def item(self, port: str, item: Any) -> None:
        pickled = None
        if codec._kind(item, port) == codec.PICKLE:
            import pickle

            pickled = pickle.dumps((port, item), protocol=5)
            n = codec.HEADER + len(pickled)
        else:
            n = codec.encoded_size(item, port)
        buf = self.ring.loan(n)
        with memoryview(buf) as mv:
            used = codec.encode_into(mv, item, port, pickled=pickled)
        self.ring.commit(used)

    def message(self, kind: int, payload: Any, a: int = 0) -> None:
        n, _ = codec.message_size(payload)
        buf = self.ring.loan(n)
        with memoryview(buf) as mv:
            used = codec.encode_message(mv, kind, payload, a)
        self.ring.commit(used)


def _child_main(cfg: _Config) -> None:  # pragma: no cover - runs in the child (tested end to end)
    _die_with_parent(cfg.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from ._node import AGEN, ASYNC, GEN, _form, resolve

    seg = SharedSegment.open(cfg.current, timeout=10.0)
    cur = memoryview(seg.buffer)
    inr = Ring.open(cfg.in_ring, spin=cfg.spin, timeout=10.0)
    outr = Ring.open(cfg.out_ring, spin=cfg.spin, timeout=10.0)
    out = _Out(outr)
    loop = asyncio.new_event_loop()

    def run(x: Any) -> Any:
        if asyncio.iscoroutine(x):
            return loop.run_until_complete(x)
        return x

    try:
        node = resolve(cfg.node_type).create(**cfg.params)
        node.id = cfg.name
        run(node.initialize())
        from ._node import FunctionNode

        form = node._ntype.form if isinstance(node, FunctionNode) else _form(type(node).process)
        default = (
            "out" if "out" in node.outputs or len(node.outputs) != 1 else next(iter(node.outputs))
        )
        out.message(codec.READY, os.getpid())
    except BaseException as e:
        out.message(codec.FAILED, "".join(traceback.format_exception(e)))
        outr.close()
        inr.close()
        return

    def emit_all(result: Any) -> None:
        if result is not None:
            out.item(default, result)
        for port, it in node.take_emitted():
            out.item(port, it)

    async def agen(r: Any) -> None:
        async for x in r:
            out.item(default, x)
            emit_all(None)

    held: deque[Any] = deque()
    done: list[int] = []
    seq = 0
    last = time.monotonic()
    while True:
        try:
            b = inr.recv(timeout=cfg.heartbeat)
        except WaitTimeoutError:
            out.message(codec.HEARTBEAT, None)
            continue
        except (RingClosedError, PeerDiedError):
            break
        seq += 1
        kind, a = codec.peek(b)
        if kind == codec.CONTROL:
            _, msg = codec.decode(b)
            b.release()
            try:
                emit_all(run(node.on_control(msg)))
            except Exception as e:
                out.message(
                    codec.ERROR,
                    ("", f"{type(e).__name__}: {e}", "".join(traceback.format_exception(e))),
                    a,
                )
            if not isinstance(msg, Interrupt):
                out.message(codec.CONTROL, msg)
            continue
        port, item = codec.decode(b)
        _CUR.pack_into(cur, 0, a)
        r = None
        try:
            r = node.process(item, port)
            if form == ASYNC:
                r = run(r)
            if form == GEN:
                for x in r:
                    out.item(default, x)
                    emit_all(None)
            elif form == AGEN:
                run(agen(r))
            else:
                emit_all(r)
        except Exception as e:
            out.message(
                codec.ERROR,
                (port, f"{type(e).__name__}: {e}", "".join(traceback.format_exception(e))),
                a,
            )
        del item, r
        # Credits go back in batches: when the input ring is empty (before the child would
        # sleep) or every 16 inputs, so a busy stream does not wake the parent per input.
        done.append(a)
        if len(done) >= 16 or not _pending(inr):
            out.message(codec.DONE, done)
            done = []
        # Free the input's ring space; a node that kept a view of it holds it until it lets go.
        held.append(b)
        while held:
            try:
                held[0].release()
            except BufferInUseError:
                break
            held.popleft()
        now = time.monotonic()
        if now - last > cfg.heartbeat:
            last = now
            out.message(codec.HEARTBEAT, None)
    with contextlib.suppress(Exception):
        run(node.close())
    loop.close()
    held.clear()
    with contextlib.suppress(Exception):
        outr.close()
    with contextlib.suppress(Exception):
        inr.close()
    cur.release()
    with contextlib.suppress(Exception):
        seg.close()


def _pending(ring: Ring) -> bool:
    """Whether another message is waiting to be received (without waiting)."""
    try:
        ring.wait_readable(timeout=0)
    except WaitTimeoutError:
        return False
    except Exception:
        return False
    return True


# --- the parent ------------------------------------------------------------------------------
class ProcessWorker:
    """Runs one node in a child process (the ``process`` executor).

    ``node_type`` is a registered name or ``"module:qualname"`` that the child can import;
    ``params`` are the node's params.  ``ring_bytes`` sizes each ring (an item must fit in
    half of it), ``credits`` bounds the inputs in flight, ``spin`` (seconds) lets a waiting side
    busy-poll before it sleeps (0: never), ``heartbeat`` is how often an idle child says it is
    alive.
    """

    def __init__(
        self,
        node_type: str,
        params: dict[str, Any] | None = None,
        *,
        name: str = "",
        ring_bytes: int = 8 << 20,
        credits: int = 64,
        spin: float = 0.0,
        start_method: str = "spawn",
        heartbeat: float = 5.0,
        copy_outputs: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        self.node_type = node_type
        self.params = dict(params or {})
        self.name = name or node_type
        self.ring_bytes = ring_bytes
        self.credits = credits
        self.spin = spin
        self.start_method = start_method
        self.heartbeat = heartbeat
        self.copy_outputs = copy_outputs
        self.start_timeout = start_timeout
        self.last_heartbeat = 0.0
        self._proc: Any = None
        self._in: Ring | None = None
        self._out: Ring | None = None
        self._reader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: deque[tuple[int, Any, Any]] = deque()
        self._event_waiter: asyncio.Future[None] | None = None
        self._credit_waiter: asyncio.Future[None] | None = None
        self._free = credits
        self._seq = 0
        self._inflight: dict[int, tuple[str, Any]] = {}
        self._ready: asyncio.Future[Any] | None = None
        self._dead: BaseException | None = None
        self._closed = False
        self._current: Any = None

    # --- life cycle ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """Whether the child runs and answers."""
        return self._proc is not None and self._proc.is_alive() and self._dead is None

    @property
    def inflight(self) -> int:
        """Inputs sent and not yet finished by the child."""
        return len(self._inflight)

    async def start(self) -> None:
        """Spawn the child, create the node there and run its ``initialize()``."""
        self._loop = asyncio.get_running_loop()
        tag = f"pl{os.getpid()}-{next(_ids)}"
        self._in = Ring.create(f"{tag}-i", self.ring_bytes, spin=self.spin)
        self._out = Ring.create(f"{tag}-o", self.ring_bytes, spin=self.spin)
        self._dead = None
        self._free = self.credits
        self._events.clear()
        self._inflight.clear()
        ctx = multiprocessing.get_context(self.start_method)
        self._current = SharedSegment.create(f"{tag}-c", 64)
        cfg = _Config(
            self.node_type,
            self.params,
            self.name,
            self._in.name,
            self._out.name,
            os.getpid(),
            self.spin,
            self.heartbeat,
            self._current.name,
        )
        self._proc = ctx.Process(  # type: ignore[attr-defined]
            target=_child_main, args=(cfg,), name=f"isthmus-node-{self.name}", daemon=True
        )
        self._ready = self._loop.create_future()
        try:
            self._proc.start()
            self._reader = threading.Thread(
                target=self._read, name=f"isthmus-node-{self.name}-reader", daemon=True
            )
            self._reader.start()
            try:
                await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout)
            except TimeoutError:
                raise ProcessNodeError(
                    f"process node {self.name!r} did not start within {self.start_timeout} s",
                    node=self.name,
                ) from None
            # Both sides have the rings open: take the names away so nothing can leak.
            with contextlib.suppress(Exception):
                self._in.unlink()
            with contextlib.suppress(Exception):
                self._out.unlink()
            with contextlib.suppress(Exception):
                self._current.unlink()
        except BaseException:
            await self._teardown(kill=True)
            raise

    async def restart(self) -> None:
        """A new child with the same node and params (after a crash, say)."""
        await self._teardown(kill=True)
        self._closed = False
        await self.start()

    async def close(self, timeout: float = 5.0) -> None:
        """Close the node in the child, wait for it to exit (kill it after ``timeout``)."""
        if self._closed:
            return
        self._closed = True
        await self._teardown(kill=False, timeout=timeout)

    async def _teardown(self, *, kill: bool, timeout: float = 5.0) -> None:
        for ring in (self._in, self._out):
            if ring is not None:
                with contextlib.suppress(Exception):
                    ring.unlink()  # no name left behind, whoever closes last
        if self._in is not None:
            with contextlib.suppress(Exception):
                self._in.close()  # the child drains what is queued, then sees the close
        proc = self._proc
        if proc is not None and getattr(proc, "_popen", None) is None:
            proc = None  # never started
        if proc is not None:
            if kill and proc.is_alive():
                proc.kill()
            deadline = time.monotonic() + timeout
            while proc.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if proc.is_alive():
                proc.kill()
            await asyncio.to_thread(proc.join, 5.0)
            with contextlib.suppress(Exception):
                proc.close()
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 5.0)
            self._reader = None
        if self._out is not None:
            with contextlib.suppress(Exception):
                self._out.close()
        if self._current is not None:
            with contextlib.suppress(Exception):
                self._current.unlink()
            with contextlib.suppress(Exception):
                self._current.close()
            self._current = None
        self._proc = self._in = self._out = None
        if self._dead is None:
            self._dead = ProcessNodeError(f"process node {self.name!r} is closed", node=self.name)
        self._wake()
        w = self._credit_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # --- the reader thread ---------------------------------------------------------------
    def _read(self) -> None:
        ring = self._out
        loop = self._loop
        assert ring is not None and loop is not None
        while True:
            batch: list[tuple[int, Any, Any]] = []
            try:
                b = ring.recv()
                while True:
                    batch.append(self._decode(b))
                    try:
                        b = ring.recv(timeout=0)
                    except WaitTimeoutError:
                        break
            except (RingClosedError, PeerDiedError) as e:
                batch.append((-1, e, self._exitcode()))
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._deliver, batch)
                return
            except Exception as e:  # pragma: no cover - a bug: report, do not hang
                batch.append((-1, e, None))
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._deliver, batch)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._deliver, batch)

    def _current_seq(self) -> int:
        seg = self._current
        if seg is None or seg.closed:
            return 0
        with memoryview(seg.buffer) as mv:
            return int(_CUR.unpack_from(mv, 0)[0])

    def _exitcode(self) -> int | None:
        proc = self._proc
        try:
            return proc.exitcode if proc is not None else None
        except (ValueError, AssertionError):  # closed, or never started
            return None

    def _decode(self, b: Any) -> tuple[int, Any, Any]:
        kind, a = codec.peek(b)
        if kind in (codec.AUDIO, codec.VIDEO, codec.ARRAY, codec.BYTES, codec.PICKLE):
            port, item = codec.decode(b, copy=self.copy_outputs)
            if self.copy_outputs or kind == codec.PICKLE:
                b.release()
            return (0, port, item)  # a zero-copy view keeps the buffer until it is dropped
        _, payload = codec.decode(b)
        b.release()
        return (kind, a, payload)

    def _deliver(self, batch: list[tuple[int, Any, Any]]) -> None:
        for ev in batch:
            kind = ev[0]
            if kind == codec.DONE:
                for seq in ev[2]:
                    self._inflight.pop(seq, None)
                self._free += len(ev[2])
                w = self._credit_waiter
                if w is not None and not w.done():
                    w.set_result(None)
                continue
            if kind == codec.HEARTBEAT:
                self.last_heartbeat = time.monotonic()
                continue
            if kind == codec.READY:
                self.last_heartbeat = time.monotonic()
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(ev[2])
                continue
            if kind == codec.FAILED:
                err = ProcessNodeError(
                    f"process node {self.name!r} failed to start:\n{ev[2]}", node=self.name
                )
                self._dead = err
                if self._ready is not None and not self._ready.done():
                    self._ready.set_exception(err)
                continue
            if kind == -1:
                exc, code = ev[1], ev[2]
                if self._dead is None and not self._closed:
                    current = self._current_seq()
                    item = self._inflight.get(current) or next(
                        iter(self._inflight.values()), ("", None)
                    )
                    self._dead = ProcessNodeError(
                        f"process node {self.name!r} died (exit code {code}) "
                        + (
                            f"while handling an input from port {item[0]!r}"
                            if item[1] is not None
                            else ""
                        )
                        + f": {exc}",
                        node=self.name,
                        port=item[0] or None,
                        item=item[1],
                    )
                    self._events.append((codec.FAILED, None, self._dead))
                if self._ready is not None and not self._ready.done():
                    self._ready.set_exception(
                        self._dead or ProcessNodeError("child exited", node=self.name)
                    )
                w = self._credit_waiter
                if w is not None and not w.done():
                    w.set_result(None)
                continue
            if kind == codec.ERROR:
                # Name the input now: its DONE may be handled before recv() sees the error.
                ev = (kind, ev[1], (*ev[2], self._inflight.get(ev[1], ("", None))[1]))
            self._events.append(ev)
        self._wake()

    def _wake(self) -> None:
        w = self._event_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # --- sending -------------------------------------------------------------------------
    async def _credit(self) -> None:
        while self._free <= 0:
            if self._dead is not None:
                raise self._dead
            assert self._loop is not None
            self._credit_waiter = self._loop.create_future()
            try:
                await self._credit_waiter
            finally:
                self._credit_waiter = None
        if self._dead is not None:
            raise self._dead

    async def _loan(self, n: int) -> Any:
        ring = self._in
        if ring is None:
            raise ProcessNodeError(f"process node {self.name!r} is not running", node=self.name)
        if n > ring.max_message:
            raise ProcessNodeError(
                f"an item of {n} bytes does not fit process node {self.name!r}'s ring "
                f"(ring_bytes={self.ring_bytes})",
                node=self.name,
            )
        try:
            try:
                return ring.loan(n, timeout=0)
            except WaitTimeoutError:
                await asyncio.to_thread(ring.wait_writable, n)
                return ring.loan(n, timeout=0)
        except IsthmusBufferError as e:  # the child died or the ring closed meanwhile
            raise self._dead or ProcessNodeError(
                f"process node {self.name!r} is gone: {e}", node=self.name
            ) from e

    async def send(self, port: str, item: Any) -> None:
        """Write ``item`` for the node's input ``port`` into the ring (waits for a credit)."""
        await self._credit()
        import pickle

        pickled = None
        if codec._kind(item, port) == codec.PICKLE:
            pickled = pickle.dumps((port, item), protocol=5)
            n = codec.HEADER + len(pickled)
        else:
            n = codec.encoded_size(item, port)
        buf = await self._loan(n)
        self._seq += 1
        seq = self._seq
        with memoryview(buf) as mv:
            used = codec.encode_into(mv, item, port, pickled=pickled)
            codec.set_seq(mv, seq)
        self._free -= 1
        self._inflight[seq] = (port, item)
        self._commit(used)

    async def send_inplace(
        self,
        port: str,
        shape: tuple[int, ...],
        dtype: Any,
        write: Callable[[np.ndarray[Any, Any]], None],
        *,
        sample_rate: int | None = None,
        video_format: str | None = None,
        pts: float = 0.0,
    ) -> None:
        """Produce an item straight into the ring: ``write`` fills the array view it is given.

        With ``sample_rate`` the child gets an :class:`AudioChunk` (shape ``(frames,
        channels)``), with ``video_format`` a :class:`VideoFrame`, else the bare array.  A
        6 MB frame costs the same hop as a small chunk: nothing is copied after ``write``.
        """
        await self._credit()
        dt = np.dtype(dtype)
        size = int(np.prod(shape)) * dt.itemsize
        buf = await self._loan(codec.HEADER + size)
        self._seq += 1
        seq = self._seq
        with memoryview(buf) as mv:
            view = np.frombuffer(mv, dt, int(np.prod(shape)), codec.HEADER).reshape(shape)
            # Describe it with a zero-size stand-in of the right kind: the header only.
            if sample_rate is not None:
                stub: Any = AudioChunk(np.empty((0, shape[1]), dt), sample_rate, pts)
                codec._header(mv, codec.AUDIO, port, sample_rate, shape[0], pts)
                codec._AUDIO.pack_into(mv, 24, shape[1], codec._FORMAT_CODE[stub.format])
            elif video_format is not None:
                h, w = shape[:2]
                codec._header(mv, codec.VIDEO, port, flags=dt.itemsize, pts=pts)
                codec._VIDEO.pack_into(
                    mv, 24, h, w, shape[2] if len(shape) == 3 else 0, video_format.encode()
                )
            else:
                dims = list(shape) + [0] * (3 - len(shape))
                codec._header(mv, codec.ARRAY, port)
                codec._ARRAY.pack_into(mv, 24, dt.str.encode(), len(shape), *dims)
            codec.set_seq(mv, seq)
            try:
                write(view)
            finally:
                del view
        self._free -= 1
        self._inflight[seq] = (port, None)
        self._commit(codec.HEADER + size)

    async def control(self, msg: Control) -> None:
        """Send a control message; the child answers with its outputs, then ``msg`` itself
        (not for :class:`Interrupt`)."""
        if self._in is None:
            raise ProcessNodeError(f"process node {self.name!r} is not running", node=self.name)
        n, _data = codec.message_size(msg)
        buf = await self._loan(n)
        with memoryview(buf) as mv:
            used = codec.encode_message(mv, codec.CONTROL, msg)
        self._commit(used)

    def _commit(self, nbytes: int) -> None:
        ring = self._in
        try:
            if ring is None:
                raise RingClosedError("the ring is closed")
            ring.commit(nbytes)
        except IsthmusBufferError as e:
            raise self._dead or ProcessNodeError(
                f"process node {self.name!r} is gone: {e}", node=self.name
            ) from e

    # --- receiving -----------------------------------------------------------------------
    async def recv(self) -> tuple[str, Any]:
        """The next output ``(port, item)``; a control message comes back as ``("", msg)``.

        Raises :class:`ProcessNodeError` for an input the node failed on (the child goes on)
        and when the child died (``alive`` is then False).
        """
        assert self._loop is not None
        while True:
            while self._events:
                kind, a, payload = self._events.popleft()
                if kind == 0:
                    return a, payload
                if kind == codec.CONTROL:
                    return "", payload
                if kind == codec.ERROR:
                    port, message, tb, item = payload
                    err = ProcessNodeError(
                        f"node {self.name!r} (in a child process) failed on an input from port "
                        f"{port!r}: {message}",
                        node=self.name,
                        port=port or None,
                        item=item,
                    )
                    err.__notes__ = [tb]
                    raise err
                if kind == codec.FAILED:
                    raise payload
            if self._dead is not None and not self._events:
                raise self._dead
            self._event_waiter = self._loop.create_future()
            try:
                await self._event_waiter
            finally:
                self._event_waiter = None

    async def outputs(self) -> AsyncIterator[tuple[str, Any]]:
        """:meth:`recv` until the child is closed."""
        while True:
            try:
                yield await self.recv()
            except ProcessNodeError:
                if not self.alive:
                    return
                raise

    def health(self) -> dict[str, Any]:
        """``alive``, pid, inputs in flight, seconds since the child last said it was alive."""
        return {
            "alive": self.alive,
            "pid": self.pid,
            "inflight": len(self._inflight),
            "heartbeat_age": time.monotonic() - self.last_heartbeat
            if self.last_heartbeat
            else None,
        }
