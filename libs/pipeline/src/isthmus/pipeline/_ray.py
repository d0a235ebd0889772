"""``RayWorker``: one node as a Ray actor (the ``ray`` executor, the ``ray`` extra).

The actor creates the node from its type reference and params, runs ``initialize()`` and
answers each input with the list of ``(port, item)`` outputs the node made for it.  The worker
keeps the answers in input order and bounds the calls in flight.  Ray is started locally unless
it already runs or ``address`` names a cluster; the last worker that relies on a Ray it started
shuts it down again.

Outputs come back through Ray's object store: a large numpy array may arrive read-only (a
zero-copy view of the store), like the process executor's ``copy_outputs=False`` views.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import os
import threading
import traceback
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from ._control import Control, Interrupt
from ._errors import ProcessNodeError

__all__ = ["ACTOR_PREFIX", "RayWorker"]

#: Every actor of this module is named ``ACTOR_PREFIX + <node name> + "/" + <unique id>``.
ACTOR_PREFIX = "isthmus-pipeline/"

_ids = itertools.count(1)
# Ray is process-wide: starting it and counting the workers that rely on a Ray we started
# happen under one lock (workers may start in several event loops or threads at once).
_lock = threading.Lock()
_users = 0  # workers holding the Ray this module started
_ours = False  # whether the running Ray was started here

_INPUT, _CONTROL = 0, 1


_ray_module: Any = None


def _ray() -> Any:
    global _ray_module
    if _ray_module is None:
        try:
            _ray_module = importlib.import_module("ray")
        except ImportError as e:
            raise ProcessNodeError(
                "the ray executor needs Ray: pip install 'isthmus-pipeline[ray]'"
            ) from e
    return _ray_module


def _quiet_sigterm(record: logging.LogRecord) -> bool:
    return "SIGTERM handler is not set" not in record.getMessage()


def _acquire(address: str | None) -> bool:
    """Make sure Ray runs (start it if not); True if the caller now holds our Ray."""
    global _users, _ours
    ray = _ray()
    with _lock:
        if not ray.is_initialized():
            # Started off the main thread on purpose: Ray then leaves the application's SIGTERM
            # handler alone (and says so in a warning, which is noise here).
            worker_log = logging.getLogger("ray._private.worker")
            worker_log.addFilter(_quiet_sigterm)
            try:
                # "local" starts a fresh instance: without an address Ray would attach to
                # whatever `ray start` left running on this machine.
                ray.init(
                    address=address or "local",
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            finally:
                worker_log.removeFilter(_quiet_sigterm)
            _ours, _users = True, 0
        if _ours:
            _users += 1
            return True
        return False


def _release() -> None:
    """One worker fewer relies on our Ray: the last one shuts it down."""
    global _users, _ours
    with _lock:
        _users -= 1
        if _users <= 0 and _ours:
            _ours, _users = False, 0
            ray = _ray()
            if ray.is_initialized():
                ray.shutdown()


def _error_text(e: BaseException) -> tuple[str, str]:
    return f"{type(e).__name__}: {e}", "".join(traceback.format_exception(e))


class _NodeActor:
    """The actor's body, in a Ray worker process: one node instance, called one input at a time.

    Node failures come back as data (``(outputs, error)``), so an exception in the node never
    looks like a dead actor.
    """

    def __init__(self) -> None:
        self.node: Any = None
        self.loop = asyncio.new_event_loop()  # async nodes run here, one call at a time
        self.form = "sync"
        self.default = "out"

    def _run(self, x: Any) -> Any:
        return self.loop.run_until_complete(x) if asyncio.iscoroutine(x) else x

    def setup(self, node_type: str, params: dict[str, Any], name: str) -> tuple[int, Any]:
        """Create and initialize the node: ``(pid, None)`` or ``(pid, (message, traceback))``."""
        from ._node import FunctionNode, _form, resolve

        try:
            node = resolve(node_type).create(**params)
            node.id = name
            self.form = (
                node._ntype.form if isinstance(node, FunctionNode) else _form(type(node).process)
            )
            outs = node.outputs
            self.default = "out" if "out" in outs or len(outs) != 1 else next(iter(outs))
            self._run(node.initialize())
            self.node = node
        except Exception as e:
            return os.getpid(), _error_text(e)
        return os.getpid(), None

    def _collect(self, result: Any, out: list[tuple[str, Any]]) -> None:
        if result is not None:
            out.append((self.default, result))
        out += self.node.take_emitted()

    def process(self, port: str, item: Any) -> tuple[list[tuple[str, Any]], Any]:
        """The outputs for one input, and the failure (message, traceback) if it raised."""
        from ._node import AGEN, ASYNC, GEN

        out: list[tuple[str, Any]] = []
        try:
            r = self.node.process(item, port)
            if self.form == ASYNC:
                r = self._run(r)
            if self.form == GEN:
                for x in r:
                    self._collect(x, out)
            elif self.form == AGEN:

                async def drain() -> None:
                    async for x in r:
                        self._collect(x, out)

                self._run(drain())
            else:
                self._collect(r, out)
        except Exception as e:
            out += self.node.take_emitted()  # what it emitted before failing still counts
            return out, _error_text(e)
        return out, None

    def control(self, msg: Control) -> tuple[list[tuple[str, Any]], Any]:
        """``on_control``'s outputs, and its failure if it raised."""
        out: list[tuple[str, Any]] = []
        try:
            self._collect(self._run(self.node.on_control(msg)), out)
        except Exception as e:
            out += self.node.take_emitted()
            return out, _error_text(e)
        return out, None

    def close(self) -> None:
        try:
            if self.node is not None:
                self._run(self.node.close())
        finally:
            self.node = None
            self.loop.close()


_actor_class: Any = None


def _actor_cls(ray: Any) -> Any:
    global _actor_class
    if _actor_class is None:
        _actor_class = ray.remote(_NodeActor)
    return _actor_class


class _Call:
    """One call in flight: what was sent (for error reports) and its result reference."""

    __slots__ = ("discard", "fut", "item", "kind", "port", "ref")

    def __init__(self, kind: int, port: str, item: Any, ref: Any) -> None:
        self.kind = kind
        self.port = port
        self.item = item
        self.ref = ref
        self.fut: asyncio.Future[Any] | None = None
        self.discard = False  # an input from before an Interrupt: its outputs are dropped


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # An answer nobody waits for any more (closed, restarted) must not log "never retrieved".
    if not fut.cancelled():
        fut.exception()


def _future(ref: Any) -> asyncio.Future[Any]:
    """An asyncio future for a Ray object ref (awaited shielded: cancelling a wait on it must
    not cancel Ray's own future under it)."""
    fut = asyncio.wrap_future(ref.future())
    fut.add_done_callback(_retrieve)
    return fut


class RayWorker:
    """Runs one node as a Ray actor; the same interface as ``ProcessWorker``.

    ``node_type`` is a registered name or ``"module:qualname"`` the Ray workers can import;
    ``params`` are the node's params.  ``address`` is the Ray cluster to join when this worker
    starts Ray (default: a new local instance; ``"auto"`` finds a running one); ``num_cpus`` is
    the actor's CPU reservation; ``max_inflight`` bounds the inputs sent and not yet received;
    ``runtime_env`` is the actor's Ray runtime environment (``{"env_vars": {...}}``, say);
    ``start_timeout`` bounds the wait for the actor to be scheduled and initialized.
    """

    def __init__(
        self,
        node_type: str,
        params: dict[str, Any] | None = None,
        *,
        name: str = "",
        address: str | None = None,
        num_cpus: float = 0.5,
        max_inflight: int = 64,
        runtime_env: dict[str, Any] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.node_type = node_type
        self.params = dict(params or {})
        self.name = name or node_type
        self.address = address
        self.num_cpus = num_cpus
        self.max_inflight = max_inflight
        self.runtime_env = runtime_env
        self.start_timeout = start_timeout
        self.actor_name = ""
        self.pid: int | None = None
        self._actor: Any = None
        self._holds_ray = False
        self._calls: deque[_Call] = deque()
        self._inputs = 0  # inputs in self._calls (controls are not counted)
        self._ready: deque[tuple[str, Any] | ProcessNodeError] = deque()
        # Controls that were queued in an actor that died: handed back after the restart, so
        # an EndOfStream still passes (the dead node's state is gone anyway).
        self._orphans: deque[Control] = deque()
        self._dead: ProcessNodeError | None = None
        self._closed = False
        self._sent: asyncio.Future[None] | None = None  # recv waits for a call
        self._room: asyncio.Future[None] | None = None  # send waits for room

    # --- life cycle ----------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Whether the actor is up (False after it died or was closed)."""
        return self._actor is not None and self._dead is None

    @property
    def inflight(self) -> int:
        """Inputs sent whose outputs :meth:`recv` has not taken yet."""
        return self._inputs

    async def start(self) -> None:
        """Start Ray if needed, create the actor and create and initialize the node in it."""
        ray = _ray()
        if not self._holds_ray:
            try:
                self._holds_ray = await asyncio.to_thread(_acquire, self.address)
            except ProcessNodeError:
                raise
            except Exception as e:  # no cluster at ``address``, say
                raise ProcessNodeError(
                    f"ray node {self.name!r}: cannot start or join Ray: {e}", node=self.name
                ) from e
        self._dead = None
        self._closed = False
        self.actor_name = f"{ACTOR_PREFIX}{self.name}/{os.getpid()}-{next(_ids)}"
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "name": self.actor_name}
        if self.runtime_env:
            opts["runtime_env"] = self.runtime_env
        try:
            self._actor = _actor_cls(ray).options(**opts).remote()
            ref = self._actor.setup.remote(self.node_type, self.params, self.name)
            try:
                pid, failure = await asyncio.wait_for(
                    asyncio.shield(_future(ref)), self.start_timeout
                )
            except TimeoutError:
                raise ProcessNodeError(
                    f"ray node {self.name!r} did not start within {self.start_timeout} s "
                    "(not enough free CPUs in the Ray cluster?)",
                    node=self.name,
                ) from None
            except ProcessNodeError:
                raise
            except Exception as e:
                raise ProcessNodeError(
                    f"ray node {self.name!r} failed to start: {e}", node=self.name
                ) from e
            if failure is not None:
                err = ProcessNodeError(
                    f"ray node {self.name!r} failed to start: {failure[0]}", node=self.name
                )
                err.add_note(failure[1])
                raise err
            self.pid = pid
        except BaseException:
            await self._teardown()
            if self._holds_ray:
                self._holds_ray = False
                await asyncio.to_thread(_release)
            raise

    async def restart(self) -> None:
        """A new actor with the same node and params (after a crash, say)."""
        await self._teardown()
        await self.start()

    async def close(self, timeout: float = 5.0) -> None:
        """Close the node in the actor, kill the actor, and stop Ray if this was its last user."""
        if self._closed:
            return
        self._closed = True
        actor = self._actor
        if actor is not None and self._dead is None:
            # Queued after the calls in flight: the node finishes them, then closes.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(_future(actor.close.remote())), timeout)
        await self._teardown()
        if self._holds_ray:
            self._holds_ray = False
            await asyncio.to_thread(_release)

    async def _teardown(self) -> None:
        actor, self._actor = self._actor, None
        if actor is not None:
            with contextlib.suppress(Exception):
                _ray().kill(actor, no_restart=True)
        self._calls.clear()
        self._inputs = 0
        self._ready.clear()
        self.pid = None
        if self._dead is None:
            self._dead = ProcessNodeError(f"ray node {self.name!r} is closed", node=self.name)
        if self._closed:
            self._orphans.clear()
        self._wake()

    def _wake(self) -> None:
        for w in (self._sent, self._room):
            if w is not None and not w.done():
                w.set_result(None)

    # --- sending -------------------------------------------------------------------------
    def _check(self) -> Any:
        if self._dead is not None:
            raise self._dead
        if self._actor is None:
            raise ProcessNodeError(f"ray node {self.name!r} is not running", node=self.name)
        return self._actor

    async def send(self, port: str, item: Any) -> None:
        """Call the node on ``item`` from input ``port`` (waits while ``max_inflight`` inputs
        are unanswered)."""
        while self._inputs >= self.max_inflight:
            self._check()
            room = self._room
            if room is None or room.done():
                room = self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(room)  # shared by every waiting sender; one may be cancelled
        actor = self._check()
        self._push(_Call(_INPUT, port, item, self._call(actor.process, port, port, item)))

    def _call(self, method: Any, port: str, *args: Any) -> Any:
        try:
            return method.remote(*args)
        except Exception as e:  # the item does not serialize, say
            raise ProcessNodeError(
                f"ray node {self.name!r}: cannot send a {type(args[-1]).__name__} "
                f"(port {port!r}): {e}",
                node=self.name,
                port=port or None,
                item=args[-1],
            ) from e

    async def control(self, msg: Control) -> None:
        """Run ``on_control(msg)`` in the actor; its outputs come back, then ``("", msg)`` (not
        for :class:`Interrupt`, which also drops the outputs of the inputs still in flight)."""
        actor = self._check()
        if isinstance(msg, Interrupt):
            # The actor still runs the inputs queued before it (Ray cannot cancel queued actor
            # calls without stalling the actor), but their outputs are not delivered.
            for c in self._calls:
                if c.kind == _INPUT:
                    c.discard = True
            # Outputs not yet taken go too; errors and answered controls stay.
            self._ready = deque(
                x for x in self._ready if isinstance(x, ProcessNodeError) or x[0] == ""
            )
        self._push(_Call(_CONTROL, "", msg, self._call(actor.control, "", msg)))

    def _push(self, call: _Call) -> None:
        self._calls.append(call)
        if call.kind == _INPUT:
            self._inputs += 1
        w = self._sent
        if w is not None and not w.done():
            w.set_result(None)

    # --- receiving -----------------------------------------------------------------------
    async def recv(self) -> tuple[str, Any]:
        """The next output ``(port, item)`` in input order; a control comes back as ``("",
        msg)``.

        Raises :class:`ProcessNodeError` for an input the node failed on (the actor goes on)
        and when the actor died (``alive`` is then False).
        """
        ray = _ray()
        while True:
            if self._ready:
                x = self._ready.popleft()
                if isinstance(x, ProcessNodeError):
                    raise x
                return x
            if self._dead is not None:
                raise self._dead
            if self._orphans:
                return "", self._orphans.popleft()
            if not self._calls:
                self._sent = asyncio.get_running_loop().create_future()
                try:
                    await self._sent
                finally:
                    self._sent = None
                continue
            call = self._calls[0]
            if call.fut is None:
                call.fut = _future(call.ref)
            try:
                # Shielded: a cancelled recv leaves the call at the head, to be awaited again.
                result = await asyncio.shield(call.fut)
            except asyncio.CancelledError:
                if call.fut.cancelled():  # not our cancellation: Ray gave the call up
                    self._finish(call)
                    continue
                raise
            except ray.exceptions.RayActorError as e:
                if self._calls and self._calls[0] is call:
                    self._died(call, e)
                continue  # raises self._dead (unless closed meanwhile)
            except Exception as e:  # Ray failed the call itself (an output did not serialize)
                if self._finish(call) and not call.discard:
                    self._answer(call, [], (f"{type(e).__name__}: {e}", None))
                continue
            if self._finish(call) and not call.discard:
                self._answer(call, *result)

    def _answer(self, call: _Call, outputs: list[tuple[str, Any]], failure: Any) -> None:
        """Queue a call's outputs, its failure, and for a control the control itself."""
        self._ready.extend(outputs)
        if failure is not None:
            what = f"an input from port {call.port!r}" if call.kind == _INPUT else "a control"
            err = ProcessNodeError(
                f"node {self.name!r} (a Ray actor) failed on {what}: {failure[0]}",
                node=self.name,
                port=call.port or None,
                item=call.item,
            )
            if failure[1]:
                err.add_note(failure[1])
            self._ready.append(err)
        if call.kind == _CONTROL and not isinstance(call.item, Interrupt):
            self._ready.append(("", call.item))

    def _finish(self, call: _Call) -> bool:
        """Take the head call off the queue (False if it is no longer there)."""
        if not self._calls or self._calls[0] is not call:
            return False
        self._calls.popleft()
        if call.kind == _INPUT:
            self._inputs -= 1
            w = self._room
            if w is not None and not w.done():
                w.set_result(None)
        return True

    def _died(self, call: _Call, e: BaseException) -> None:
        what = f" (an input from port {call.port!r} unanswered)" if call.kind == _INPUT else ""
        self._dead = ProcessNodeError(
            f"ray node {self.name!r} died{what}: {e}",
            node=self.name,
            port=call.port or None,
            item=call.item,
        )
        self._orphans.extend(
            c.item for c in self._calls if c.kind == _CONTROL and not isinstance(c.item, Interrupt)
        )
        self._calls.clear()
        self._inputs = 0
        self._wake()

    async def outputs(self) -> AsyncIterator[tuple[str, Any]]:
        """:meth:`recv` until the actor is closed or died."""
        while True:
            try:
                yield await self.recv()
            except ProcessNodeError:
                if not self.alive:
                    return
                raise

    def health(self) -> dict[str, Any]:
        """``alive``, the actor's pid and name, inputs in flight."""
        return {
            "alive": self.alive,
            "pid": self.pid,
            "actor": self.actor_name,
            "inflight": self._inputs,
        }
