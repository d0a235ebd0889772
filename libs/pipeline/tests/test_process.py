"""The process executor: nodes in child processes over isthmus.buffer rings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from isthmus.pipeline import (
    AudioChunk,
    EndOfStream,
    Pipeline,
    ProcessNodeError,
    Session,
    VideoFrame,
)
from isthmus.pipeline._process import ProcessWorker

TESTS = str(Path(__file__).parent)


@pytest.mark.asyncio
async def test_audio_round_trips_through_a_child_and_arrives_as_a_view() -> None:
    w = ProcessWorker("_pnodes:gain", {"factor": 3.0}, name="gain", copy_outputs=False)
    await w.start()
    try:
        assert w.alive and w.pid != os.getpid()
        x = np.random.default_rng(0).standard_normal((960, 2)).astype(np.float32)
        await w.send("in", AudioChunk(x, 48000, 1.25))
        port, out = await w.recv()
        assert port == "out" and out.sample_rate == 48000 and out.pts == 1.25
        assert np.array_equal(out.samples, x * np.float32(3.0))
        assert not out.samples.flags.writeable  # a view of the ring, not a copy
        del out
    finally:
        await w.close()
    assert not w.alive


@pytest.mark.asyncio
async def test_sync_async_generator_forms_and_controls_in_the_child() -> None:
    for ref, params, sent, expected in [
        ("_pnodes:async_add", {"n": 5}, [1, 2], [6, 7]),
        ("_pnodes:split", {}, [4], [4, 4]),
    ]:
        w = ProcessWorker(ref, params)
        await w.start()
        try:
            for x in sent:
                await w.send("in", x)
            assert [(await w.recv())[1] for _ in expected] == expected
        finally:
            await w.close()
    w = ProcessWorker("_pnodes:Tail", {})
    await w.start()
    try:
        for x in (1, 2, 3):
            await w.send("in", x)
        await w.control(EndOfStream())
        got = [await w.recv() for _ in range(5)]
        assert got[:3] == [("out", 1), ("out", 2), ("out", 3)]
        assert got[3] == ("total", 6) and isinstance(got[4][1], EndOfStream)
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_a_node_error_names_the_input_and_the_child_goes_on() -> None:
    w = ProcessWorker("_pnodes:fail_on", {"bad": 2}, name="picky")
    await w.start()
    try:
        for i in range(4):
            await w.send("in", i)
        assert await w.recv() == ("out", 0)
        assert await w.recv() == ("out", 1)
        with pytest.raises(ProcessNodeError) as ei:
            await w.recv()
        assert ei.value.item == 2 and ei.value.node == "picky" and "cannot take 2" in str(ei.value)
        assert await w.recv() == ("out", 3)
        assert w.alive
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_a_crash_is_reported_with_its_input_and_restart_works() -> None:
    w = ProcessWorker("_pnodes:crash_on", {"bad": 1}, name="fragile")
    await w.start()
    try:
        await w.send("in", 0)
        await w.send("in", 1)
        assert await w.recv() == ("out", 0)
        with pytest.raises(ProcessNodeError, match="died") as ei:
            await w.recv()
        assert ei.value.item == 1 and not w.alive
        await w.restart()
        await w.send("in", 5)
        assert await w.recv() == ("out", 5)
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_start_failure_is_a_typed_error_with_the_child_traceback() -> None:
    w = ProcessWorker("_pnodes:FailsToStart", {})
    with pytest.raises(ProcessNodeError, match="no model file"):
        await w.start()
    assert not w.alive


@pytest.mark.asyncio
async def test_credits_backpressure_a_fast_producer_and_nothing_is_lost() -> None:
    w = ProcessWorker("_pnodes:slow", {"seconds": 0.01}, credits=2)
    await w.start()
    try:
        t0 = time.monotonic()
        for i in range(6):
            await w.send("in", i)
        # Six sends into two credits wait for about four of the child's 10 ms steps.
        assert time.monotonic() - t0 > 0.03
        assert w.inflight <= 2
        assert [(await w.recv())[1] for _ in range(6)] == list(range(6))
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_cancelling_a_waiting_send_leaves_nothing_behind() -> None:
    w = ProcessWorker("_pnodes:slow", {"seconds": 0.2}, credits=1)
    await w.start()
    try:
        await w.send("in", 1)
        blocked = asyncio.create_task(w.send("in", 2))
        await asyncio.sleep(0.05)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert await w.recv() == ("out", 1)
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_a_6mb_frame_is_written_in_place() -> None:
    w = ProcessWorker("_pnodes:checksum", {}, ring_bytes=32 << 20)
    await w.start()
    try:
        shape = (1080, 1920, 3)

        def fill(view: np.ndarray[Any, Any]) -> None:
            view[...] = 1
            view[0, 0, 0] = 7

        await w.send_inplace("in", shape, np.uint8, fill, video_format="rgb24")
        assert (await w.recv())[1] == 1080 * 1920 * 3 + 6
        frame = VideoFrame(np.full(shape, 2, np.uint8))
        await w.send("in", frame)
        assert (await w.recv())[1] == 2 * 1080 * 1920 * 3
    finally:
        await w.close()


@pytest.mark.asyncio
async def test_a_process_node_in_a_session_with_restart_and_health() -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add(
        "crashy",
        "_pnodes:crash_on",
        executor="process",
        options={"restarts": 1, "on_error": "skip"},
        bad=3,
    )
    p.add("out", "output")
    p.chain("in", "crashy", "out")
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(_collect(s))
        for i in range(4):
            await s.push("in", i)
        # 3 kills the child: wait for the restart before sending more (inputs sent while it is
        # down are reported as not delivered, which is another test).
        for _ in range(500):
            h = s.health()["crashy"]
            if h["restarts"] == 1 and h["alive"]:
                break
            await asyncio.sleep(0.01)
        assert s.health()["crashy"]["restarts"] == 1
        for i in (4, 5):
            await s.push("in", i)
        await s.end("in")
        got = await reader
    assert 3 not in got and {0, 1, 2, 4, 5} <= set(got)
    assert s.metrics.node("crashy").restarts == 1
    assert s.errors and s.errors[0].item == 3


async def _collect(s: Session) -> list[Any]:
    return [x async for _, x in s.outputs()]


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {TESTS!r})
        from isthmus.pipeline._process import ProcessWorker
        async def main():
            w = ProcessWorker("_pnodes:pid", {{}})
            await w.start()
            print(w.pid, flush=True)
            await asyncio.sleep(60)
        if __name__ == "__main__":
            asyncio.run(main())
    """)
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert psutil.pid_exists(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(child) and time.monotonic() < deadline:
            try:
                if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        alive = psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE
        assert not alive
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"isthmus.pl{parent.pid}-")]
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
