"""The Ray executor against a local Ray (``nox -s ray``).

Skipped where Ray is not installed (the ``ray`` extra); ISTHMUS_REQUIRE_RAY=1 makes that a
failure.  Ray keeps its own processes and threads for as long as it runs, so this module
replaces the per-test leak check of conftest.py: after each test no actor of ours is left, and
after Ray shuts down no process it started is left.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from isthmus.pipeline import (
    EndOfStream,
    Interrupt,
    Message,
    Pipeline,
    ProcessNodeError,
    Session,
)
from isthmus.pipeline._ray import ACTOR_PREFIX, RayWorker

TESTS = str(Path(__file__).parent)
# Ray workers import the test node types (``_raynodes:...``) from this directory.
ENV = {
    "env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))}
}


def _up(w: RayWorker) -> bool:
    # A call, not the property: mypy would keep the property narrowed across awaits.
    return w.alive


def _children() -> set[int]:
    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.add(child.pid)
        except psutil.Error:
            pass
    return out


def _wait_for(what: str, done: Any, timeout: float = 30.0) -> None:
    """Ray tears actors and processes down asynchronously: wait (bounded) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"still there after {timeout} s: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def ray_mod() -> Any:
    """The ray module, or a skip (a failure with ISTHMUS_REQUIRE_RAY=1)."""
    if os.environ.get("ISTHMUS_REQUIRE_RAY") == "1":
        try:
            import ray
        except ImportError as e:
            pytest.fail(f"ISTHMUS_REQUIRE_RAY=1 but ray does not import: {e}")
        return ray
    return pytest.importorskip("ray", reason="ray is not installed (the ray extra; nox -s ray)")


@pytest.fixture(scope="module")
def ray_local(ray_mod: Any) -> Iterator[Any]:
    """One local Ray for the module's tests; nothing of it is left after it shuts down."""
    before = _children()
    ray_mod.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ENV)
    yield ray_mod
    ray_mod.shutdown()
    _wait_for("Ray's processes", lambda: not (_children() - before))


def _our_actors() -> list[str]:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return []
    from ray.util import list_named_actors

    return [n for n in list_named_actors() if n.startswith(ACTOR_PREFIX)]


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Replaces conftest's check (Ray's own processes and threads live as long as Ray): no
    actor of ours outlives its test."""
    yield
    _wait_for(f"actors {_our_actors()}", lambda: not _our_actors())


# Runs first, before the module's Ray exists: a worker that finds no Ray starts one.
@pytest.mark.asyncio
async def test_workers_start_ray_when_needed_and_the_last_one_stops_it(ray_mod: Any) -> None:
    if ray_mod.is_initialized():
        pytest.skip("another test module left Ray running")
    before = _children()
    a = RayWorker("_raynodes:pid", name="a", runtime_env=ENV)
    b = RayWorker("_raynodes:add", {"n": 2}, name="b", runtime_env=ENV)
    try:
        await a.start()
        await b.start()
        assert ray_mod.is_initialized() and _up(a) and _up(b)
        await a.send("in", None)
        port, pid = await a.recv()
        assert port == "out" and pid == a.pid and pid != os.getpid()
        await a.close()
        assert not _up(a)
        assert ray_mod.is_initialized()  # b still uses it
        await b.send("in", 1)
        assert await b.recv() == ("out", 3)
    finally:
        await a.close()
        await b.close()
    assert not ray_mod.is_initialized()
    _wait_for("processes of the Ray the workers started", lambda: not (_children() - before))


@pytest.mark.asyncio
async def test_sync_async_and_generator_nodes_round_trip(ray_local: Any) -> None:
    cases: list[tuple[str, dict[str, Any], list[Any], list[tuple[str, Any]]]] = [
        ("_raynodes:add", {"n": 10}, [1, 2], [("out", 11), ("out", 12)]),
        ("_raynodes:async_add", {"n": 5}, [1], [("out", 6)]),
        ("_raynodes:repeat", {"times": 3}, ["x"], [("out", "x")] * 3),
        ("_raynodes:count_up", {}, [0, 3], [("out", 0), ("out", 1), ("out", 2)]),
        ("_raynodes:Splitter", {}, [4, 7], [("even", 4), ("odd", 7)]),
    ]
    for ref, params, sent, expected in cases:
        w = RayWorker(ref, params, name="n")
        await w.start()
        try:
            assert _up(w) and w.pid != os.getpid()
            for x in sent:
                await w.send("in", x)
            assert [await w.recv() for _ in expected] == expected, ref
            assert w.inflight == 0
        finally:
            await w.close()
        assert not _up(w)
    # The module's Ray was not started by a worker: closing workers leaves it running.
    assert ray_local.is_initialized()


@pytest.mark.asyncio
async def test_order_is_kept_with_many_in_flight_and_sends_wait_for_room(ray_local: Any) -> None:
    w = RayWorker("_raynodes:async_add", {"n": 1000}, max_inflight=4)
    await w.start()
    try:
        for i in range(4):
            await w.send("in", i)
        assert w.inflight == 4
        blocked = asyncio.create_task(w.send("in", 4))
        await asyncio.sleep(0)  # the send runs up to its wait for room
        assert not blocked.done()
        cancelled = asyncio.create_task(w.send("in", -1))
        await asyncio.sleep(0)
        cancelled.cancel()  # a sender given up while it waits sends nothing
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await w.recv() == ("out", 1000)
        await blocked
        assert w.inflight == 4

        async def feed() -> None:
            for i in range(5, 300):
                await w.send("in", i)
                assert w.inflight <= 4

        feeder = asyncio.create_task(feed())
        got = [(await w.recv())[1] for _ in range(1, 300)]
        await feeder
        assert got == [i + 1000 for i in range(1, 300)]
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_a_node_error_names_the_input_and_the_actor_goes_on(ray_local: Any) -> None:
    w = RayWorker("_raynodes:fail_on", {"bad": 1}, name="picky")
    await w.start()
    try:
        for i in range(3):
            await w.send("in", i)
        assert await w.recv() == ("out", 0)
        with pytest.raises(ProcessNodeError, match="cannot take 1") as ei:
            await w.recv()
        err = ei.value
        assert (err.node, err.port, err.item) == ("picky", "in", 1)
        assert "ValueError" in "".join(getattr(err, "__notes__", []))  # the actor's traceback
        assert _up(w)
        assert await w.recv() == ("out", 2)
        lock = threading.Lock()  # Ray cannot serialize it
        with pytest.raises(ProcessNodeError, match="cannot send a lock") as ei:
            await w.send("in", lock)
        assert ei.value.item is lock and _up(w)
        await w.send("in", 3)
        assert await w.recv() == ("out", 3)
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_controls_come_back_after_the_outputs_they_caused(ray_local: Any) -> None:
    w = RayWorker("_raynodes:Tail", name="tail")
    await w.start()
    try:
        for x in (1, 2, 3):
            await w.send("in", x)
        eos = EndOfStream()
        await w.control(eos)
        got = [await w.recv() for _ in range(5)]
        assert got == [("out", 1), ("out", 2), ("out", 3), ("total", 6), ("", eos)]
        # A failing on_control is reported, and the control still comes back.
        boom = Message("boom")
        await w.control(boom)
        with pytest.raises(ProcessNodeError, match="control went boom") as ei:
            await w.recv()
        assert ei.value.item == boom
        assert await w.recv() == ("", boom)
        # Interrupt: the outputs of inputs still in flight are dropped, the node resets, and
        # the Interrupt itself is not handed back (the session forwards it).
        for x in (100, 200, 300):
            await w.send("in", x)
        await w.control(Interrupt())
        await w.send("in", 10)
        await w.control(eos)
        got = [await w.recv() for _ in range(3)]
        assert got == [("out", 10), ("total", 10), ("", eos)]
        assert w.inflight == 0
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_a_dead_actor_is_reported_and_restart_works(ray_local: Any) -> None:
    w = RayWorker("_raynodes:crash_on", {"bad": 1}, name="fragile")
    await w.start()
    try:
        await w.send("in", 0)
        # Answered before the crash (a reply still on its way when the actor process dies is
        # lost with it: Ray reports that input as unanswered instead).
        assert await w.recv() == ("out", 0)
        await w.send("in", 1)
        with pytest.raises(ProcessNodeError, match="died") as ei:
            await w.recv()
        assert (ei.value.node, ei.value.item) == ("fragile", 1)
        assert not _up(w)
        with pytest.raises(ProcessNodeError):
            await w.send("in", 2)
        await w.restart()
        assert _up(w)
        await w.send("in", 5)
        assert await w.recv() == ("out", 5)
        # Killed from outside (the OOM killer, say): the same report.
        assert w.pid is not None
        victim = psutil.Process(w.pid)
        victim.kill()
        victim.wait(30)
        await w.send("in", 6)
        with pytest.raises(ProcessNodeError, match="died") as ei:
            await w.recv()
        assert ei.value.item == 6 and not _up(w)
        await w.restart()
        await w.send("in", 7)
        assert await w.recv() == ("out", 7)
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_controls_in_flight_when_the_actor_dies_are_not_lost(ray_local: Any) -> None:
    w = RayWorker("_raynodes:crash_on", {"bad": 1})
    await w.start()
    try:
        await w.send("in", 1)
        eos = EndOfStream()
        await w.control(eos)
        with pytest.raises(ProcessNodeError, match="died"):
            await w.recv()
        await w.restart()
        # The session relies on EndOfStream passing even though the node died with it queued.
        assert await w.recv() == ("", eos)
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_start_failures_are_typed_errors_and_leave_no_actor(ray_local: Any) -> None:
    w = RayWorker("_raynodes:NeedsModel", name="model")
    with pytest.raises(ProcessNodeError, match="no model file") as ei:
        await w.start()
    assert ei.value.node == "model" and not _up(w)
    assert "FileNotFoundError" in "".join(getattr(ei.value, "__notes__", []))
    w = RayWorker("_raynodes:no_such_node")
    with pytest.raises(ProcessNodeError, match="no_such_node"):
        await w.start()
    assert not _up(w)


@pytest.mark.asyncio
async def test_close_wakes_a_waiting_recv_and_is_idempotent(ray_local: Any) -> None:
    w = RayWorker("_raynodes:add")
    await w.start()
    waiting = asyncio.create_task(w.recv())
    await asyncio.sleep(0)  # recv waits for something to be sent
    await w.close()
    with pytest.raises(ProcessNodeError, match="closed"):
        await waiting
    with pytest.raises(ProcessNodeError, match="closed"):
        await w.send("in", 1)
    await w.close()
    assert not _up(w)


async def _collect(s: Session) -> list[tuple[str, Any]]:
    return [x async for x in s.outputs()]


@pytest.mark.asyncio
async def test_a_session_with_ray_nodes(ray_local: Any) -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add("inc", "_raynodes:async_add", executor="ray", n=1)
    p.add("tail", "_raynodes:Tail", executor="ray")
    p.add("items", "output")
    p.add("sum", "output")
    p.chain("in", "inc", "tail")
    p.connect("tail.out", "items")
    p.connect("tail.total", "sum")
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(_collect(s))
        for i in range(5):
            await s.push("in", i)
        await s.end("in")
        got = await reader
        health = s.health()
    assert [x for n, x in got if n == "items"] == [1, 2, 3, 4, 5]
    assert [x for n, x in got if n == "sum"] == [15]
    assert health["inc"]["alive"] and health["inc"]["pid"] != os.getpid()
    assert not s.errors


@pytest.mark.asyncio
async def test_a_session_restarts_a_ray_node_that_died(ray_local: Any) -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add(
        "crashy",
        "_raynodes:crash_on",
        executor="ray",
        options={"restarts": 1, "on_error": "skip"},
        bad=3,
    )
    p.add("out", "output")
    p.chain("in", "crashy", "out")
    async with Session(p, negotiate=False) as s:
        outputs = s.outputs()
        for i in range(3):
            await s.push("in", i)
        assert [(await anext(outputs))[1] for _ in range(3)] == [0, 1, 2]
        for i in (3, 4, 5):
            await s.push("in", i)
        await s.end("in")
        rest = [x async for _, x in outputs]
    # 3 kills the actor; 4 and 5 reach the restarted one, unless they were already queued in
    # the dead one (lost with it) or sent while it was down (reported as not delivered).
    assert rest in ([], [4], [5], [4, 5])
    assert s.metrics.node("crashy").restarts == 1
    assert s.errors[0].item == 3 and "died" in str(s.errors[0])
