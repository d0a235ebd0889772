"""The Ray executor, against a local Ray (``nox -s ray``; skipped where Ray is not installed,
required with ISTHMUS_REQUIRE_RAY=1)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.pipeline import EndOfStream, Pipeline, ProcessNodeError, Session

TESTS = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    try:
        import ray
    except ImportError:
        if os.environ.get("ISTHMUS_REQUIRE_RAY") == "1":
            pytest.fail("ray is required (ISTHMUS_REQUIRE_RAY=1) but not installed")
        pytest.skip("ray is not installed (the ray extra; nox -s ray)")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": TESTS}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Ray keeps its own processes and threads for the module: check our actors instead."""
    yield


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_items_round_trip_in_order_with_many_in_flight(ray_local: Any) -> None:
    from isthmus.pipeline._ray import RayWorker

    async def main() -> list[Any]:
        w = RayWorker("_pnodes:async_add", {"n": 10}, max_inflight=8)
        await w.start()
        try:

            async def feed() -> None:
                for i in range(40):
                    await w.send("in", i)

            f = asyncio.create_task(feed())
            got = [(await w.recv())[1] for _ in range(40)]
            await f
            return got
        finally:
            await w.close()

    assert _run(main()) == [i + 10 for i in range(40)]


def test_node_errors_name_the_item_and_controls_come_back(ray_local: Any) -> None:
    from isthmus.pipeline._ray import RayWorker

    async def main() -> None:
        w = RayWorker("_pnodes:fail_on", {"bad": 1})
        await w.start()
        try:
            for i in range(3):
                await w.send("in", i)
            assert await w.recv() == ("out", 0)
            with pytest.raises(ProcessNodeError) as ei:
                await w.recv()
            assert ei.value.item == 1 and "cannot take 1" in str(ei.value)
            assert await w.recv() == ("out", 2)
        finally:
            await w.close()
        t = RayWorker("_pnodes:Tail", {})
        await t.start()
        try:
            await t.send("in", 5)
            await t.control(EndOfStream())
            got = [await t.recv() for _ in range(3)]
            assert got[:2] == [("out", 5), ("total", 5)] and isinstance(got[2][1], EndOfStream)
        finally:
            await t.close()

    _run(main())


def test_a_killed_actor_is_reported_and_restart_works(ray_local: Any) -> None:
    from isthmus.pipeline._ray import RayWorker

    async def main() -> None:
        w = RayWorker("_pnodes:crash_on", {"bad": 2})
        await w.start()
        try:
            await w.send("in", 2)
            with pytest.raises(ProcessNodeError, match="died") as ei:
                await w.recv()
            assert ei.value.item == 2 and not w.alive
            await w.restart()
            await w.send("in", 7)
            assert await w.recv() == ("out", 7)
        finally:
            await w.close()

    _run(main())


def test_a_session_with_a_ray_node(ray_local: Any) -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add("x", "_pnodes:async_add", executor="ray", n=1)
    p.add("out", "output")
    p.chain("in", "x", "out")

    async def main() -> list[Any]:
        async with Session(p, negotiate=False) as s:
            reader = asyncio.create_task(_collect(s))
            for i in range(5):
                await s.push("in", i)
            await s.end("in")
            return await reader

    assert _run(main()) == [1, 2, 3, 4, 5]


async def _collect(s: Session) -> list[Any]:
    return [x async for _, x in s.outputs()]
