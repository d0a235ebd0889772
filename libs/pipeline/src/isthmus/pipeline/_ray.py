"""``RayWorker``: one node as a Ray actor (the ``ray`` executor, the ``ray`` extra).

The actor creates the node from its type name and params, runs ``initialize()``, and answers
each input with the outputs it produced; the worker keeps results in input order and bounds
the calls in flight.  Ray is started locally (``ray.init()``) unless it already runs or
``address`` points at a cluster, and shut down again by the last worker that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from ._control import Control, Interrupt
from ._errors import ProcessNodeError

__all__ = ["RayWorker"]

_started_by_us = 0  # workers alive that rely on a Ray we started


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise ProcessNodeError(
            "the ray executor needs Ray: pip install 'isthmus-pipeline[ray]'"
        ) from e
    return ray


class _NodeActor:
    """Runs in the Ray worker: one node instance."""

    def __init__(self, node_type: str, params: dict[str, Any], name: str) -> None:
        from ._node import FunctionNode, _form, resolve

        self.node = resolve(node_type).create(**params)
        self.node.id = name
        nt = self.node
        self.form = nt._ntype.form if isinstance(nt, FunctionNode) else _form(type(nt).process)
        outs = self.node.outputs
        self.default = "out" if "out" in outs or len(outs) != 1 else next(iter(outs))
        self.loop = asyncio.new_event_loop()

    def _run(self, x: Any) -> Any:
        return self.loop.run_until_complete(x) if asyncio.iscoroutine(x) else x

    def initialize(self) -> bool:
        self._run(self.node.initialize())
        return True

    def _collect(self, result: Any) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if result is not None:
            out.append((self.default, result))
        out += self.node.take_emitted()
        return out

    def process(self, port: str, item: Any) -> tuple[bool, Any]:
        """``(True, outputs)`` or ``(False, error text)``: a node error is data, not a crash."""
        from ._node import AGEN, ASYNC, GEN

        try:
            r = self.node.process(item, port)
            if self.form == ASYNC:
                r = self._run(r)
            out: list[tuple[str, Any]] = []
            if self.form == GEN:
                for x in r:
                    out += self._collect(x)
            elif self.form == AGEN:

                async def drain() -> None:
                    async for x in r:
                        out.extend(self._collect(x))

                self._run(drain())
            else:
                out = self._collect(r)
            return True, out
        except Exception as e:
            return False, f"{type(e).__name__}: {e}"

    def control(self, msg: Any) -> list[tuple[str, Any]]:
        return self._collect(self._run(self.node.on_control(msg)))

    def close(self) -> bool:
        self._run(self.node.close())
        return True


class RayWorker:
    """Runs one node as a Ray actor, with the same interface as ``ProcessWorker``."""

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
    ) -> None:
        self.node_type = node_type
        self.params = dict(params or {})
        self.name = name or node_type
        self.address = address
        self.num_cpus = num_cpus
        self.max_inflight = max_inflight
        self.runtime_env = runtime_env
        self._actor: Any = None
        self._pending: deque[tuple[str, Any, Any]] = deque()  # (port, item, ref) in order
        self._ready: deque[tuple[str, Any]] = deque()
        self._dead: ProcessNodeError | None = None
        self._uses_ours = False
        self._sent = asyncio.Event()

    @property
    def alive(self) -> bool:
        """Whether the actor is up."""
        return self._actor is not None and self._dead is None

    async def start(self) -> None:
        """Start Ray if needed, create the actor and initialize the node in it."""
        global _started_by_us
        ray = _ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.runtime_env:
                kw["runtime_env"] = self.runtime_env
            await asyncio.to_thread(ray.init, address=self.address, **kw)
            _started_by_us += 1
            self._uses_ours = True
        elif _started_by_us:
            _started_by_us += 1
            self._uses_ours = True
        cls = ray.remote(num_cpus=self.num_cpus)(_NodeActor)
        self._actor = cls.remote(self.node_type, self.params, self.name)
        self._dead = None
        try:
            await self._actor.initialize.remote()
        except Exception as e:
            await self._kill()
            raise ProcessNodeError(
                f"ray node {self.name!r} failed to start: {e}", node=self.name
            ) from e

    async def send(self, port: str, item: Any) -> None:
        """Call the actor on ``item`` (waits while ``max_inflight`` calls are pending)."""
        if self._dead is not None:
            raise self._dead
        while len(self._pending) >= self.max_inflight:
            await self._settle_one()
        self._pending.append((port, item, self._actor.process.remote(port, item)))
        self._sent.set()

    async def control(self, msg: Control) -> None:
        """Run ``on_control`` in the actor; its outputs then ``msg`` itself come back."""
        if self._dead is not None:
            raise self._dead
        self._pending.append(("", msg, self._actor.control.remote(msg)))
        self._sent.set()

    async def _settle_one(self) -> None:
        port, item, ref = self._pending.popleft()
        try:
            result = await ref
        except Exception as e:
            ray = _ray()
            if isinstance(e, ray.exceptions.RayActorError | ray.exceptions.ActorDiedError):
                self._dead = ProcessNodeError(
                    f"ray node {self.name!r} died while handling an input from port {port!r}: {e}",
                    node=self.name,
                    port=port or None,
                    item=item,
                )
                self._pending.clear()
                raise self._dead from e
            raise ProcessNodeError(
                f"ray node {self.name!r}: {e}", node=self.name, port=port, item=item
            ) from e
        if isinstance(item, Control) and not port:
            self._ready.extend(result)
            if not isinstance(item, Interrupt):
                self._ready.append(("", item))
            return
        ok, payload = result
        if not ok:
            raise ProcessNodeError(
                f"node {self.name!r} (a Ray actor) failed on an input from port {port!r}: "
                f"{payload}",
                node=self.name,
                port=port,
                item=item,
            )
        self._ready.extend(payload)

    async def recv(self) -> tuple[str, Any]:
        """The next output in input order; a control comes back as ``("", msg)``."""
        while not self._ready:
            if self._dead is not None:
                raise self._dead
            if not self._pending:
                # Nothing in flight: sleep until send() or control() has something (no polling).
                self._sent.clear()
                await self._sent.wait()
                continue
            await self._settle_one()
        return self._ready.popleft()

    async def outputs(self) -> AsyncIterator[tuple[str, Any]]:
        """:meth:`recv` until the actor is gone."""
        while self.alive:
            yield await self.recv()

    async def restart(self) -> None:
        """A new actor with the same node and params."""
        await self._kill()
        self._pending.clear()
        self._ready.clear()
        await self.start()

    async def _kill(self) -> None:
        if self._actor is not None:
            with contextlib.suppress(Exception):
                _ray().kill(self._actor)
            self._actor = None

    async def close(self, timeout: float = 5.0) -> None:
        """Close the node in the actor, kill it, and stop Ray if we started it and we are last."""
        global _started_by_us
        if self._actor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._actor.close.remote(), timeout)
        await self._kill()
        if self._dead is None:
            self._dead = ProcessNodeError(f"ray node {self.name!r} is closed", node=self.name)
        self._sent.set()
        if self._uses_ours:
            self._uses_ours = False
            _started_by_us -= 1
            if _started_by_us == 0:
                ray = _ray()
                await asyncio.to_thread(ray.shutdown)
