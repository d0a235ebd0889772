"""``Session``: a persistent per-session router that runs a pipeline's nodes.

Each node gets a *runner* that decides where it executes:

* ``direct`` — a sync node called inline by whoever delivers to it (the direct-call mode: a hop
  is a function call, no queue, no task switch).  The default for sync nodes.
* ``task`` — an asyncio task with a bounded inbox.  The default for async and async-generator
  nodes, and for nodes with a retry policy (their backoff awaits).
* ``thread`` — a task that hands each item to one worker thread of its own (for libraries that
  release the GIL).
* ``process`` / ``ray`` — the node lives in a child process (``ProcessWorker``) or a Ray actor.

Delivery never awaits on the hot path: a full ``block`` edge hands the item back as *pending*
and the nearest async caller awaits room for it, so a chain of direct nodes runs as plain calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._control import CapsChanged, Control, EndOfStream, Interrupt
from ._errors import (
    CircuitOpenError,
    NodeError,
    PipelineError,
    ProcessNodeError,
    SessionClosedError,
)
from ._graph import Connection, NodeSpec, Pipeline
from ._metrics import EdgeMetrics, Metrics, NodeMetrics
from ._node import AGEN, ASYNC, GEN, SYNC, FunctionNode, InputNode, Node, OutputNode, _form
from ._reliability import CircuitBreaker, RetryPolicy

__all__ = ["ON_ERROR", "Session", "run"]

log = logging.getLogger("isthmus.pipeline")

#: What a node's failure on one input does: ``stop`` the session (default), ``skip`` the input
#: and go on, or ``isolate`` the node (its branch stops; the other branches keep running).
ON_ERROR = ("stop", "skip", "isolate")

_now = time.perf_counter_ns
_ids = itertools.count(1)
Pending = list[tuple["_Edge", Any]]


class _Edge:
    """One connection at run time: the consumer, its port, the bound and the policy."""

    __slots__ = ("conn", "count", "dst", "maxsize", "metrics", "name", "overflow", "port", "room")

    def __init__(self, conn: Connection, dst: _Runner, metrics: EdgeMetrics) -> None:
        self.conn = conn
        self.name = str(conn)
        self.dst = dst
        self.port = conn.dst_port
        self.maxsize = conn.maxsize
        self.overflow = conn.overflow
        self.count = 0  # items of this edge queued at the consumer now
        self.metrics = metrics
        self.room: deque[asyncio.Future[None]] = deque()

    def freed(self) -> None:
        """One queued item left: wake the first producer waiting for room."""
        room = self.room
        while room:
            fut = room.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def put(self, item: Any) -> None:
        """Deliver ``item``, waiting while the edge is full (``block`` policy)."""
        loop = asyncio.get_running_loop()
        while True:
            pend: Pending = []
            self.dst.offer(self, item, pend)
            if not pend:
                return
            for edge, it in pend:
                if edge is not self or it is not item:
                    await edge.put(it)
                    continue
                fut: asyncio.Future[None] = loop.create_future()
                self.room.append(fut)
                try:
                    await fut
                except BaseException:
                    with contextlib.suppress(ValueError):
                        self.room.remove(fut)
                    if fut.done() and not fut.cancelled():
                        self.freed()  # pass the wake-up on
                    raise
                break


class _Runner:
    """Runs one node; ``offer`` is how upstream hands it an item."""

    kind = "?"

    def __init__(self, session: Session, spec: NodeSpec, node: Node) -> None:
        self.session = session
        self.id = spec.id
        self.spec = spec
        self.node = node
        self.metrics: NodeMetrics = session.metrics.node(spec.id)
        self.out: dict[str, list[_Edge]] = {p: [] for p in node.outputs}
        # A returned value goes to "out", or to the only output when it has another name.
        self.default_out = (
            "out" if "out" in self.out or len(self.out) != 1 else next(iter(self.out))
        )
        self.in_ports = set(node.inputs)
        self.ended: set[str] = set()
        self.done = False
        self.isolated = False
        opts = spec.options
        self.on_error = str(opts.get("on_error", session.on_error))
        if self.on_error not in ON_ERROR:
            raise PipelineError(f"node {spec.id!r}: on_error must be one of {ON_ERROR}")
        self.retry = RetryPolicy.from_options(opts.get("retry"))
        self.breaker = CircuitBreaker.from_options(opts.get("circuit_breaker"))
        self.timing = session.metrics_enabled

    # --- delivery ------------------------------------------------------------------------
    def offer(self, edge: _Edge, item: Any, pend: Pending) -> None:
        raise NotImplementedError

    def route(self, port: str, item: Any, pend: Pending) -> None:
        """Send one output to every edge leaving ``port``."""
        edges = self.out.get(port)
        if edges is None:
            raise NodeError(
                f"node {self.id!r} emitted on unknown output port {port!r}", node=self.id, port=port
            )
        self.metrics.items_out += 1
        for e in edges:
            e.dst.offer(e, item, pend)

    def route_result(self, result: Any, pend: Pending) -> None:
        if result is not None:
            self.route(self.default_out, result, pend)
        if self.node._emitted:
            for port, it in self.node.take_emitted():
                self.route(port, it, pend)

    # --- control messages ----------------------------------------------------------------
    def control(self, port: str, msg: Control, pend: Pending) -> None:
        """A control message arrived on ``port`` (in order with the data)."""
        if isinstance(msg, EndOfStream):
            self.ended.add(port)
            if not self.in_ports <= self.ended:
                return  # fan-in: wait for every input to end
        if not self.isolated:
            try:
                self.route_result(self.node.on_control(msg), pend)
            except Exception as exc:
                self.fail(exc, msg, port)
        if isinstance(msg, CapsChanged):
            self.caps_forward(port, msg, pend)
            return
        self.forward(msg, pend)
        if isinstance(msg, EndOfStream):
            self.finish()

    def caps_forward(self, port: str, msg: CapsChanged, pend: Pending) -> None:
        """Renegotiate for new caps on input ``port``; announce the outputs whose caps changed
        (a resampler's fixed output rate absorbs a new input rate: nothing goes further)."""
        try:
            changed = self.session._caps_changed(self, port, msg)
        except PipelineError as exc:
            err = self.fail(exc, msg, port)
            if self.on_error == "stop":
                self.session._fatal(err)
            return
        for out_port, caps in changed.items():
            for e in self.out.get(out_port, ()):
                e.dst.offer(e, CapsChanged(caps, out_port), pend)

    def forward(self, msg: Control, pend: Pending) -> None:
        for edges in self.out.values():
            for e in edges:
                e.dst.offer(e, msg, pend)

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.session._node_done(self)

    # --- failures ------------------------------------------------------------------------
    def fail(self, exc: BaseException, item: Any, port: str) -> NodeError:
        """Record a failure on ``item`` and apply the node's ``on_error`` policy."""
        if isinstance(exc, NodeError) and exc.node == self.id:
            err = exc
        else:
            err = NodeError(
                f"node {self.id!r} failed on an input from port {port!r}: "
                f"{type(exc).__name__}: {exc}",
                node=self.id,
                port=port,
                item=item,
            )
            err.__cause__ = exc
        self.metrics.errors += 1
        self.breaker.failure()
        self.session._error(self, err)
        if self.on_error == "isolate" and not self.isolated:
            self.isolated = True
            log.warning("node %r isolated after: %s", self.id, err)
            # Its branch ends here: tell downstream so the rest of the session can finish.
            pend: Pending = []
            self.forward(EndOfStream(), pend)
            self.session._spill(pend)
            self.finish()
        return err

    def check_breaker(self, item: Any, port: str) -> None:
        """CircuitOpenError while the node's circuit is open."""
        if self.breaker.threshold and not self.breaker.allow():
            raise CircuitOpenError(
                f"node {self.id!r}: circuit open after {self.breaker.failures} failures",
                node=self.id,
                port=port,
                item=item,
            )

    def call(self, item: Any, port: str) -> Any:
        """``node.process`` with timing and the circuit breaker (sync forms)."""
        self.check_breaker(item, port)
        if self.timing:
            t0 = _now()
            r = self.node.process(item, port)
            self.metrics.latency.record(_now() - t0)
        else:
            self.metrics.items_in += 1
            r = self.node.process(item, port)
        return r

    # --- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start tasks/threads (after every runner exists and is wired)."""

    def interrupt(self) -> int:
        """Flush queued data (never system messages); return how many items were dropped."""
        with contextlib.suppress(Exception):
            self.route_result(self.node.on_control(Interrupt()), self.session._spillbuf())
        return 0

    async def close(self) -> None:
        """Stop tasks and threads and close the node."""
        r = self.node.close()
        if asyncio.iscoroutine(r):
            await r


class _Direct(_Runner):
    """A sync node called inline: a hop is a function call."""

    kind = "direct"

    def __init__(self, session: Session, spec: NodeSpec, node: Node) -> None:
        super().__init__(session, spec, node)
        self.form = (
            _form(type(node).process) if not isinstance(node, FunctionNode) else spec.type.form
        )
        # Fast path: a function node with one output and no metrics is one call per item.
        self.fn: Callable[..., Any] | None = None
        if isinstance(node, FunctionNode) and self.form == SYNC and not node._params:
            self.fn = node._fn

    def offer(self, edge: _Edge, item: Any, pend: Pending) -> None:
        if isinstance(item, Control):
            self.control(edge.port, item, pend)
            return
        if self.isolated:
            return
        fn = self.fn
        if fn is not None and not self.breaker.threshold:
            # The hot path: one call, and with metrics one store into the latency window.
            try:
                if self.timing:
                    lat = self.metrics.latency
                    t0 = _now()
                    r = fn(item)
                    dt = _now() - t0
                    lat.samples[lat.count & lat.mask] = dt
                    lat.count += 1
                    lat.total_ns += dt
                else:
                    r = fn(item)
            except Exception as exc:
                self._failed(exc, item, edge.port)
                return
            if r is not None:
                self.metrics.items_out += 1
                for e in self.out[self.default_out]:
                    e.dst.offer(e, r, pend)
            return
        try:
            r = self.call(item, edge.port)
            if self.form == GEN:
                for x in r:
                    self.route(self.default_out, x, pend)
                    self.route_result(None, pend)
                return
            self.route_result(r, pend)
        except Exception as exc:
            self._failed(exc, item, edge.port)

    def _failed(self, exc: Exception, item: Any, port: str) -> None:
        err = self.fail(exc, item, port)
        if self.on_error == "stop":
            self.session._fatal(err)


class _Input(_Runner):
    """An ``input`` node: ``Session.push`` routes straight from here."""

    kind = "input"

    def offer(self, edge: _Edge, item: Any, pend: Pending) -> None:  # pragma: no cover
        raise PipelineError("an input node takes no connections")


class _Output(_Runner):
    """An ``output`` node: items go to ``Session.outputs()`` or the ``on_output`` callback."""

    kind = "output"

    def offer(self, edge: _Edge, item: Any, pend: Pending) -> None:
        s = self.session
        if isinstance(item, Control):
            if isinstance(item, EndOfStream):
                self.ended.add(edge.port)
                if self.in_ports <= self.ended:
                    self.finish()
            return
        self.metrics.items_in += 1
        if s.on_output is not None:
            try:
                s.on_output(self.id, item)
            except Exception as exc:
                err = self.fail(exc, item, edge.port)
                if self.on_error == "stop":
                    s._fatal(err)
            return
        if edge.count >= edge.maxsize and edge.overflow == "block":
            pend.append((edge, item))
            return
        edge.count += 1
        s._outq.append((edge, self.id, item))
        w = s._out_waiter
        if w is not None and not w.done():
            w.set_result(None)


class _Queued(_Runner):
    """A node with a bounded inbox, drained by its own asyncio task."""

    kind = "task"

    def __init__(self, session: Session, spec: NodeSpec, node: Node) -> None:
        super().__init__(session, spec, node)
        self.inbox: deque[tuple[_Edge, Any, int]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.form = spec.type.form if isinstance(node, FunctionNode) else _form(type(node).process)
        self.busy = False
        self.interrupting = False

    def offer(self, edge: _Edge, item: Any, pend: Pending) -> None:
        m = edge.metrics
        if edge.count >= edge.maxsize and not (isinstance(item, Control) and type(item).system):
            policy = edge.overflow
            if policy == "block":
                pend.append((edge, item))
                return
            if policy == "drop_newest":
                m.drops += 1
                return
            # drop_oldest / latest: make room by dropping this edge's queued data
            keep_one = policy == "drop_oldest"
            kept: deque[tuple[_Edge, Any, int]] = deque()
            dropped = 0
            for entry in self.inbox:
                e, it, _ = entry
                if (
                    e is edge
                    and not (isinstance(it, Control) and type(it).system)
                    and (not keep_one or dropped == 0)
                ):
                    dropped += 1
                    continue
                kept.append(entry)
            self.inbox.clear()  # in place: the loop holds a reference to this deque
            self.inbox.extend(kept)
            edge.count -= dropped
            m.drops += dropped
        self.inbox.append((edge, item, _now() if self.timing else 0))
        edge.count += 1
        if not isinstance(item, Control):
            m.items += 1
        m.depth = edge.count
        if edge.count > m.max_depth:
            m.max_depth = edge.count
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.loop(), name=f"isthmus-pipeline:{self.session.id}:{self.id}"
        )

    async def loop(self) -> None:
        loop = asyncio.get_running_loop()
        inbox = self.inbox
        fast = (
            self.form == SYNC
            and self.retry.attempts == 1
            and type(self).invoke is _Queued.invoke
            and type(self).process is _Queued.process
        )
        while True:
            if not inbox:
                self.waiter = loop.create_future()
                await self.waiter
                self.waiter = None
                continue
            edge, item, t = inbox.popleft()
            edge.count -= 1
            edge.metrics.depth = edge.count
            if t:
                edge.metrics.wait.record(_now() - t)
            if edge.room:
                edge.freed()
            pend: Pending = []
            if isinstance(item, Control):
                await self.handle_control(edge.port, item, pend)
            elif fast and not self.isolated:
                # Sync node without retries: no coroutine per item.
                try:
                    r = self.call(item, edge.port)
                except Exception as exc:
                    err = self.fail(exc, item, edge.port)
                    if self.on_error == "stop":
                        self.session._fatal(err)
                else:
                    self.breaker.success()
                    self.route_result(r, pend)
            elif not self.isolated:
                self.busy = True
                try:
                    await self.process(item, edge.port, pend)
                except asyncio.CancelledError:
                    if not self.interrupting:
                        raise
                    self.interrupting = False
                    t_ = asyncio.current_task()
                    if t_ is not None:
                        t_.uncancel()
                except Exception as exc:  # a runner bug must fail the session, not hang it
                    self.session._fatal(self.fail(exc, item, edge.port))
                finally:
                    self.busy = False
            for e, it in pend:
                await e.put(it)

    async def handle_control(self, port: str, msg: Control, pend: Pending) -> None:
        self.control(port, msg, pend)

    async def invoke(self, item: Any, port: str) -> Any:
        """One process call, in whatever form the node has; returns its result."""
        if self.form != ASYNC:
            return self.call(item, port)
        self.check_breaker(item, port)
        if self.timing:
            t0 = _now()
            r = await self.node.process(item, port)
            self.metrics.latency.record(_now() - t0)
            return r
        self.metrics.items_in += 1
        return await self.node.process(item, port)

    async def process(self, item: Any, port: str, pend: Pending) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                r = await self.invoke(item, port)
                if self.form == GEN:
                    for x in r:
                        self.route(self.default_out, x, pend)
                        self.route_result(None, pend)
                        for e, it in pend:
                            await e.put(it)
                        pend.clear()
                elif self.form == AGEN:
                    async for x in r:
                        self.route(self.default_out, x, pend)
                        self.route_result(None, pend)
                        for e, it in pend:
                            await e.put(it)
                        pend.clear()
                else:
                    self.route_result(r, pend)
                self.breaker.success()
                return
            except CircuitOpenError as exc:
                self.fail(exc, item, port)
                return
            except Exception as exc:
                if attempt < self.retry.attempts:
                    delay = self.retry.delay(attempt)
                    log.info("node %r failed (%s); retry %d in %.3fs", self.id, exc, attempt, delay)
                    self.breaker.failure()
                    await asyncio.sleep(delay)
                    continue
                err = self.fail(exc, item, port)
                if self.on_error == "stop":
                    self.session._fatal(err)
                return

    def interrupt(self) -> int:
        dropped = 0
        kept: deque[tuple[_Edge, Any, int]] = deque()
        for entry in self.inbox:
            e, it, _ = entry
            if isinstance(it, Control) and type(it).system:
                kept.append(entry)
                continue
            dropped += 1
            e.count -= 1
            e.metrics.depth = e.count
            e.freed()
        self.inbox.clear()
        self.inbox.extend(kept)
        if self.busy and self.form in (ASYNC, AGEN) and self.task is not None:
            # Barge-in: abandon the item being awaited, not only the queued ones.
            self.interrupting = True
            self.task.cancel()
        super().interrupt()
        return dropped

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None
        await super().close()


class _Thread(_Queued):
    """A sync node run on a worker thread of its own, fed from its inbox."""

    kind = "thread"

    def __init__(self, session: Session, spec: NodeSpec, node: Node) -> None:
        super().__init__(session, spec, node)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"isthmus-node-{spec.id}")

    async def invoke(self, item: Any, port: str) -> Any:
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(self.pool, self.call, item, port)
        if self.form == GEN:
            return await loop.run_in_executor(self.pool, list, r)
        return r

    async def handle_control(self, port: str, msg: Control, pend: Pending) -> None:
        # on_control runs on the node's thread too: the node sees one thread only.
        loop = asyncio.get_running_loop()
        if isinstance(msg, EndOfStream):
            self.ended.add(port)
            if not self.in_ports <= self.ended:
                return
        if not self.isolated:
            try:
                r = await loop.run_in_executor(self.pool, self.node.on_control, msg)
                self.route_result(r, pend)
            except Exception as exc:
                self.fail(exc, msg, port)
        if isinstance(msg, CapsChanged):
            self.caps_forward(port, msg, pend)
            return
        self.forward(msg, pend)
        if isinstance(msg, EndOfStream):
            self.finish()

    async def close(self) -> None:
        await super().close()
        self.pool.shutdown(wait=True)


class _Remote(_Queued):
    """A node in a child process (or Ray actor): the inbox is pumped into a worker."""

    kind = "process"

    def __init__(self, session: Session, spec: NodeSpec, node: Node, worker: Any) -> None:
        super().__init__(session, spec, node)
        self.worker = worker
        self.reader: asyncio.Task[None] | None = None
        self.restarts = int(spec.options.get("restarts", 3))
        self.inflight: deque[tuple[str, Any]] = deque()
        self.eos_sent = False
        self.caps_ports: deque[str] = deque()
        self.ready = asyncio.Event()  # cleared while the worker is being restarted
        self.ready.set()

    def start(self) -> None:
        super().start()
        self.reader = asyncio.get_running_loop().create_task(
            self.read(), name=f"isthmus-pipeline:{self.session.id}:{self.id}:reader"
        )

    async def process(self, item: Any, port: str, pend: Pending) -> None:
        if self.breaker.threshold and not self.breaker.allow():
            self.fail(
                CircuitOpenError(
                    f"node {self.id!r}: circuit open", node=self.id, port=port, item=item
                ),
                item,
                port,
            )
            return
        self.metrics.items_in += 1
        try:
            await self.worker.send(port, item)
        except ProcessNodeError as exc:
            # The child is gone (the reader restarts it): this input is reported, not lost.
            err = NodeError(
                f"node {self.id!r}: input from port {port!r} not delivered: {exc}",
                node=self.id,
                port=port,
                item=item,
            )
            self.fail(err, item, port)
            if self.on_error == "stop":
                self.session._fatal(err)
            await self.back()

    async def back(self) -> None:
        """Wait until the worker runs again (restarted by the reader) or the session failed."""
        await self.ready.wait()

    async def handle_control(self, port: str, msg: Control, pend: Pending) -> None:
        if isinstance(msg, EndOfStream):
            self.ended.add(port)
            if not self.in_ports <= self.ended:
                return
        if isinstance(msg, CapsChanged):
            self.caps_ports.append(port)
        for _ in range(2):
            try:
                await self.worker.control(msg)
                return  # the child answers with its outputs, then the control (see read())
            except ProcessNodeError:
                await self.back()
        # The node cannot take it: pass system messages on so the session can finish.
        if isinstance(msg, CapsChanged):
            self.caps_ports.pop()
        self.forward(msg, pend)
        if isinstance(msg, EndOfStream):
            self.finish()

    async def read(self) -> None:
        while True:
            try:
                port, item = await self.worker.recv()
            except ProcessNodeError as exc:
                err = self.fail(exc, exc.item, exc.port or "")
                if not self.worker.alive:
                    self.ready.clear()
                    if self.metrics.restarts >= self.restarts:
                        self.session._fatal(err)
                        self.ready.set()  # nothing more will come: let the pump go on
                        return
                    self.metrics.restarts += 1
                    log.warning("restarting process node %r: %s", self.id, exc)
                    try:
                        await self.worker.restart()
                    except ProcessNodeError as again:
                        self.session._fatal(self.fail(again, None, ""))
                        return
                    finally:
                        self.ready.set()
                elif self.on_error == "stop":
                    self.session._fatal(err)
                continue
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                self.session._fatal(self.fail(exc, None, ""))
                return
            pend: Pending = []
            if isinstance(item, Control):
                if isinstance(item, CapsChanged):
                    # Announced after the outputs the child made before it.
                    port_ = self.caps_ports.popleft() if self.caps_ports else ""
                    self.caps_forward(port_, item, pend)
                else:
                    self.forward(item, pend)
                if isinstance(item, EndOfStream):
                    self.finish()
            else:
                self.breaker.success()
                self.route(port or "out", item, pend)
            for e, it in pend:
                await e.put(it)

    def interrupt(self) -> int:
        n = super().interrupt()
        self.session._spawn(self.worker.control(Interrupt()))
        return n

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None
        await self.worker.close()


class _Source(_Runner):
    """A node without inputs: its ``generate()`` is iterated by a task of its own."""

    kind = "source"

    def __init__(self, session: Session, spec: NodeSpec, node: Node) -> None:
        super().__init__(session, spec, node)
        self.task: asyncio.Task[None] | None = None

    def offer(self, edge: _Edge, item: Any, pend: Pending) -> None:  # pragma: no cover
        raise PipelineError(f"source {self.id!r} takes no input")

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.loop(), name=f"isthmus-pipeline:{self.session.id}:{self.id}"
        )

    async def loop(self) -> None:
        pend: Pending = []
        try:
            gen = self.node.generate()
            if hasattr(gen, "__aiter__"):
                async for x in gen:
                    if self.session._fatal_error is not None:
                        return
                    self.route(self.default_out, x, pend)
                    self.route_result(None, pend)
                    for e, it in pend:
                        await e.put(it)
                    pend.clear()
            else:
                for i, x in enumerate(gen):
                    if self.session._fatal_error is not None:
                        return
                    self.route(self.default_out, x, pend)
                    self.route_result(None, pend)
                    for e, it in pend:
                        await e.put(it)
                    pend.clear()
                    if i % 64 == 63:
                        await asyncio.sleep(0)  # a sync generator must not starve the loop
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = self.fail(exc, None, "")
            if self.on_error == "stop":
                self.session._fatal(err)
                return
        self.forward(EndOfStream(), pend)
        for e, it in pend:
            await e.put(it)
        self.finish()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None
        await super().close()


def _make_worker(spec: NodeSpec, session: Session) -> Any:
    opts = spec.options
    if spec.executor == "ray":
        from ._ray import RayWorker

        keys = ("address", "num_cpus", "max_inflight", "runtime_env", "start_timeout")
        return RayWorker(
            spec.type.ref,
            dict(spec.params),
            name=spec.id,
            **{k: opts[k] for k in keys if k in opts},
        )
    from ._process import ProcessWorker

    kw = {k: opts[k] for k in ("ring_bytes", "credits", "spin", "start_method") if k in opts}
    return ProcessWorker(spec.type.ref, dict(spec.params), name=spec.id, **kw)


class Session:
    """One run of a pipeline: its own node instances, queues, metrics and errors.

    ``async with Session(pipeline) as s`` negotiates caps (inserting converters when
    ``auto_convert``), creates and initializes every node, and starts the runners; leaving the
    block closes everything.  Many sessions of one pipeline run side by side without sharing
    state.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        session_id: str | None = None,
        auto_convert: bool | None = None,
        negotiate: bool = True,
        metrics: bool = True,
        on_error: str = "stop",
        on_output: Callable[[str, Any], None] | None = None,
        output_maxsize: int = 1024,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}")
        self.pipeline = pipeline
        self.id = session_id or f"s{next(_ids)}"
        if auto_convert is None:  # as the manifest's `negotiation: {auto_convert: ...}` says
            auto_convert = bool(pipeline.negotiation.get("auto_convert", False))
        self.auto_convert = auto_convert
        self.negotiate = negotiate
        self.metrics_enabled = metrics
        self.metrics = Metrics(self.id)
        self.on_error = on_error
        self.on_output = on_output
        self.output_maxsize = output_maxsize
        self.errors: list[NodeError] = []
        self.negotiated: Any = None
        self.runners: dict[str, _Runner] = {}
        self.interrupted = 0
        self._outq: deque[tuple[_Edge, str, Any]] = deque()
        self._out_waiter: asyncio.Future[None] | None = None
        self._done: asyncio.Event | None = None
        self._fatal_error: BaseException | None = None
        self._state = "new"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._spill_pending: Pending = []

    # --- life cycle --------------------------------------------------------------------------
    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Negotiate, create and initialize the nodes, start the runners."""
        if self._state != "new":
            raise PipelineError("a session starts once")
        self._state = "starting"
        self._done = asyncio.Event()
        p = self.pipeline
        p.validate()
        nodes: dict[str, Node] = {}
        initialized: list[Node] = []
        try:
            # Runtime-discovered caps (a file's format) are known only after initialize(), so
            # those nodes start first and negotiation uses what they found.
            discovered: dict[str, dict[str, Any]] = {}
            for nid, spec in p.nodes.items():
                if any(
                    getattr(port, "behaviour", "") == "runtime" for port in spec.outputs.values()
                ):
                    if spec.executor in ("process", "ray"):
                        continue
                    n = nodes[nid] = spec.create()
                    await _maybe_await(n.initialize())
                    initialized.append(n)
                    found = n.discovered_caps()
                    if found:
                        discovered[nid] = dict(found)
            if self.negotiate:
                self.negotiated = p.negotiate(
                    auto_convert=self.auto_convert, discovered=discovered or None
                )
            for nid, spec in p.nodes.items():
                if nid not in nodes:
                    nodes[nid] = spec.create()
            for nid in p.topological_order():
                spec = p.nodes[nid]
                n = nodes[nid]
                if n in initialized:
                    continue
                if spec.executor in ("process", "ray"):
                    worker = _make_worker(spec, self)
                    await worker.start()
                    self.runners[nid] = _Remote(self, spec, n, worker)
                    continue
                await _maybe_await(n.initialize())
                initialized.append(n)
            for nid in p.topological_order():
                if nid not in self.runners:
                    self.runners[nid] = self._runner(p.nodes[nid], nodes[nid])
        except BaseException:
            for r in self.runners.values():
                with contextlib.suppress(Exception):
                    await r.close()
            for n in initialized:
                if not any(r.node is n for r in self.runners.values()):
                    with contextlib.suppress(Exception):
                        await _maybe_await(n.close())
            self._state = "closed"
            raise
        for c in p.connections:
            dst = self.runners[c.dst]
            edge = _Edge(c, dst, self.metrics.edge(str(c)))
            if isinstance(dst, _Output):
                edge.maxsize = (
                    min(edge.maxsize, self.output_maxsize)
                    if c.options.get("maxsize")
                    else self.output_maxsize
                )
            self.runners[c.src].out[c.src_port].append(edge)
        self._state = "running"
        for r in self.runners.values():
            r.start()
        self._check_done()

    def _runner(self, spec: NodeSpec, node: Node) -> _Runner:
        if isinstance(node, InputNode):
            return _Input(self, spec, node)
        if isinstance(node, OutputNode):
            return _Output(self, spec, node)
        if not node.inputs:
            return _Source(self, spec, node)
        ex = spec.executor
        form = spec.type.form if isinstance(node, FunctionNode) else _form(type(node).process)
        if ex == "thread":
            if form not in (SYNC, GEN):
                raise PipelineError(f"node {spec.id!r}: the thread executor runs sync nodes only")
            return _Thread(self, spec, node)
        if ex == "direct" or (ex == "asyncio" and form in (SYNC, GEN)):
            if form not in (SYNC, GEN):
                raise PipelineError(f"node {spec.id!r}: only sync nodes can be called directly")
            if not spec.options.get("retry"):
                return _Direct(self, spec, node)
        return _Queued(self, spec, node)

    async def close(self) -> None:
        """Stop every runner and close every node (also after errors); idempotent."""
        if self._state in ("closed", "closing"):
            return
        self._state = "closing"
        for t in list(self._tasks):
            t.cancel()
        for r in reversed(list(self.runners.values())):
            try:
                await r.close()
            except Exception:  # one node's close must not keep the others open
                log.exception("closing node %r", r.id)
        self._state = "closed"
        if self._done is not None:
            self._done.set()
        w = self._out_waiter
        if w is not None and not w.done():
            w.set_result(None)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._state == "closed"

    # --- feeding and reading -----------------------------------------------------------------
    def _input(self, node_id: str) -> _Runner:
        if self._state != "running":
            raise SessionClosedError(f"session {self.id!r} is {self._state}")
        self._raise_fatal()
        r = self.runners.get(node_id)
        if not isinstance(r, _Input):
            inputs = [n for n, x in self.runners.items() if isinstance(x, _Input)]
            raise PipelineError(f"{node_id!r} is not an input node (inputs: {', '.join(inputs)})")
        return r

    async def push(self, node_id: str, item: Any) -> None:
        """Feed ``item`` into the ``input`` node ``node_id``; waits while the pipeline is full."""
        r = self._input(node_id)
        if r.done:
            raise SessionClosedError(f"input {node_id!r} has ended")
        pend: Pending = []
        if isinstance(item, Control):
            r.forward(item, pend)
        else:
            r.route("out", item, pend)
        for e, it in pend:
            await e.put(it)
        self._raise_fatal()

    def push_nowait(self, node_id: str, item: Any) -> bool:
        """Feed ``item`` if nothing is full; False (item not taken) when it would wait."""
        r = self._input(node_id)
        pend: Pending = []
        r.route("out", item, pend)
        if pend:
            self._spill(pend)
            return False
        return True

    async def end(self, node_id: str) -> None:
        """End of stream on input ``node_id``: nodes flush, and the session can complete."""
        r = self._input(node_id)
        if r.done:
            return
        pend: Pending = []
        r.forward(EndOfStream(), pend)
        for e, it in pend:
            await e.put(it)
        r.finish()

    async def outputs(self) -> AsyncIterator[tuple[str, Any]]:
        """``(output node id, item)`` as they arrive, until the session completes."""
        loop = asyncio.get_running_loop()
        while True:
            while self._outq:
                edge, nid, item = self._outq.popleft()
                edge.count -= 1
                if edge.room:
                    edge.freed()
                yield nid, item
            self._raise_fatal()
            assert self._done is not None
            if self._done.is_set():
                return
            self._out_waiter = loop.create_future()
            done: asyncio.Future[Any] = loop.create_task(self._done.wait())
            try:
                waiters: set[asyncio.Future[Any]] = {self._out_waiter, done}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
                self._out_waiter = None

    async def wait(self) -> None:
        """Until every source and input ended and everything drained (raises a fatal error)."""
        assert self._done is not None
        await self._done.wait()
        self._raise_fatal()

    async def drain(self) -> None:
        """End every input, then wait for completion."""
        for nid, r in list(self.runners.items()):
            if isinstance(r, _Input) and not r.done:
                await self.end(nid)
        await self.wait()

    def health(self) -> dict[str, dict[str, Any]]:
        """Per node: ``alive``, ``errors``, ``restarts``, ``isolated``, ``done``, and for process
        and Ray nodes the worker's own report (pid, inputs in flight, heartbeat age)."""
        out: dict[str, dict[str, Any]] = {}
        for nid, r in self.runners.items():
            m = r.metrics
            h: dict[str, Any] = {
                "kind": r.kind,
                "alive": True,
                "done": r.done,
                "isolated": r.isolated,
                "errors": m.errors,
                "restarts": m.restarts,
            }
            if isinstance(r, _Remote):
                report = getattr(r.worker, "health", None)
                h.update(report() if callable(report) else {"alive": r.worker.alive})
            out[nid] = h
        return out

    def interrupt(self, reason: str = "") -> int:
        """Barge-in: flush queued data everywhere (system messages stay), reset nodes."""
        flushed = 0
        for r in self.runners.values():
            flushed += r.interrupt()
        self.interrupted += flushed
        return flushed

    # --- internals ---------------------------------------------------------------------------
    def _spillbuf(self) -> Pending:
        return self._spill_pending

    def _spill(self, pend: Pending) -> None:
        """Deliver pending items from a context that cannot await."""
        if pend:
            items = list(pend)
            pend.clear()

            async def later() -> None:
                for e, it in items:
                    await e.put(it)

            self._spawn(later())

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _error(self, runner: _Runner, err: NodeError) -> None:
        self.errors.append(err)
        log.warning("%s", err)

    def _fatal(self, err: BaseException) -> None:
        if self._fatal_error is None:
            self._fatal_error = err
            # Stop the sources: nothing more should enter a failed session.
            for r in self.runners.values():
                if (
                    isinstance(r, _Source)
                    and r.task is not None
                    and r.task is not asyncio.current_task()
                ):
                    r.task.cancel()
        if self._done is not None:
            self._done.set()
        w = self._out_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _raise_fatal(self) -> None:
        if self._fatal_error is not None:
            raise self._fatal_error

    def _node_done(self, runner: _Runner) -> None:
        self._check_done()

    def _check_done(self) -> None:
        if self._done is not None and all(r.done for r in self.runners.values()):
            self._done.set()
            w = self._out_waiter
            if w is not None and not w.done():
                w.set_result(None)

    def _caps_changed(self, runner: _Runner, port: str, msg: CapsChanged) -> dict[str, Any]:
        """New caps arrived on ``runner``'s input ``port``: renegotiate the pipeline from the
        node feeding it and return ``runner``'s outputs whose caps changed."""
        if msg.caps is None:
            return {}
        if not self.negotiate or self.negotiated is None:
            return dict.fromkeys(runner.out, msg.caps)  # no negotiation: pass the news on
        from ._negotiate import renegotiate

        feeding = [c for c in self.pipeline.incoming(runner.id) if c.dst_port == port]
        if not feeding:
            return {}
        src = feeding[0]
        before = self.negotiated
        after = renegotiate(self.pipeline, before, src.src, src.src_port, msg.caps)
        self.negotiated = after
        changed: dict[str, Any] = {}
        for c in self.pipeline.outgoing(runner.id):
            new = after.edges.get(c)
            if new is not None and new != before.edges.get(c):
                changed[c.src_port] = new
        return changed


async def _maybe_await(x: Any) -> Any:
    if asyncio.iscoroutine(x) or isinstance(x, asyncio.Future):
        return await x
    return x


def run(
    pipeline: Pipeline,
    inputs: Mapping[str, Iterable[Any]] | None = None,
    **session_options: Any,
) -> dict[str, list[Any]]:
    """Run ``pipeline`` to completion without an event loop of your own.

    ``inputs`` maps ``input`` node ids to iterables of items; returns every ``output`` node's
    items in order.
    """

    async def main() -> dict[str, list[Any]]:
        got: dict[str, list[Any]] = {}

        def collect(nid: str, item: Any) -> None:
            got.setdefault(nid, []).append(item)

        async with Session(pipeline, on_output=collect, **session_options) as s:
            for nid in pipeline.nodes:
                if isinstance(s.runners[nid], _Output):
                    got.setdefault(nid, [])
            for nid, items in (inputs or {}).items():
                for it in items:
                    await s.push(nid, it)
                await s.end(nid)
            await s.drain()
        return got

    return asyncio.run(main())
