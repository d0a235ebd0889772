"""Sessions: routing, executors, bounded edges, interruption, errors, metrics, completion."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from isthmus.pipeline import (
    AudioChunk,
    Control,
    EndOfStream,
    Interrupt,
    Message,
    Node,
    NodeError,
    Pipeline,
    Port,
    Session,
    SessionClosedError,
    node,
    run,
)

pytestmark = pytest.mark.asyncio


@node(name="t_double", register=False)
def double(x: int) -> int:
    return x * 2


@node(name="t_add", register=False)
def add(x: int, *, n: int = 1) -> int:
    return x + n


@node(name="t_async_add", register=False)
async def async_add(x: int, *, n: int = 1) -> int:
    await asyncio.sleep(0)
    return x + n


@node(name="t_split", register=False)
def split(x: int, *, times: int = 3) -> Any:
    for i in range(times):
        yield (x, i)


@node(name="t_async_split", register=False)
async def async_split(x: int) -> Any:
    for i in range(2):
        await asyncio.sleep(0)
        yield (x, i)


@node(name="t_count", inputs={}, register=False)
def count(*, n: int = 5) -> Any:
    yield from range(n)


@node(name="t_fail_on", register=False)
def fail_on(x: int, *, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"cannot take {x}")
    return x


class Router(Node):
    """Evens to "even", odds to "odd"."""

    node_type = "t_router"
    outputs = {"even": Port(), "odd": Port()}

    def process(self, item: int, port: str) -> None:
        self.emit(item, "even" if item % 2 == 0 else "odd")


class Zip(Node):
    """Pairs items from inputs a and b in order (fan-in)."""

    node_type = "t_zip"
    inputs = {"a": Port(), "b": Port()}

    def __init__(self) -> None:
        self.pending: dict[str, list[int]] = {"a": [], "b": []}

    def process(self, item: int, port: str) -> Any:
        self.pending[port].append(item)
        if self.pending["a"] and self.pending["b"]:
            return (self.pending["a"].pop(0), self.pending["b"].pop(0))
        return None


class Lifecycle(Node):
    """Records its life cycle."""

    node_type = "t_life"
    log: list[str] = []

    def __init__(self, *, tag: str = "x") -> None:
        self.tag = tag

    async def initialize(self) -> None:
        Lifecycle.log.append(f"init {self.tag}")

    def process(self, item: Any, port: str) -> Any:
        return item

    def on_control(self, msg: Control) -> Any:
        Lifecycle.log.append(f"{type(msg).__name__} {self.tag}")
        if isinstance(msg, EndOfStream):
            return "tail"
        return None

    async def close(self) -> None:
        Lifecycle.log.append(f"close {self.tag}")


def chain(*types: Any, executor: str = "asyncio", **edge: Any) -> Pipeline:
    p = Pipeline("t")
    p.add("in", "input")
    ids = ["in"]
    for i, t in enumerate(types):
        nid = f"n{i}"
        if isinstance(t, tuple):
            p.add(nid, t[0], executor=executor, **t[1])
        else:
            p.add(nid, t, executor=executor)
        ids.append(nid)
    p.add("out", "output")
    ids.append("out")
    p.chain(*ids, **edge)
    return p


async def collect(s: Session) -> list[Any]:
    return [item async for _, item in s.outputs()]


@pytest.mark.parametrize("executor", ["asyncio", "direct", "task", "thread"])
async def test_items_flow_through_a_chain_in_order(executor: str) -> None:
    p = chain(double, (add, {"n": 3}), double, executor=executor)
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(collect(s))
        for i in range(100):
            await s.push("in", i)
        await s.end("in")
        await s.wait()
        got = await reader
    assert got == [(i * 2 + 3) * 2 for i in range(100)]


async def test_async_and_streaming_forms() -> None:
    p = chain((async_add, {"n": 10}), split, async_split)
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(collect(s))
        await s.push("in", 1)
        await s.end("in")
        got = await reader
    assert got == [((11, i), j) for i in range(3) for j in range(2)]


async def test_a_source_runs_to_completion_and_the_session_completes() -> None:
    p = Pipeline()
    p.add("src", count, n=200)
    p.add("d", double)
    p.add("out", "output")
    p.chain("src", "d", "out")
    got: list[int] = []
    async with Session(p, negotiate=False, on_output=lambda _n, x: got.append(x)) as s:
        await s.wait()
    assert got == [2 * i for i in range(200)]


async def test_fan_out_and_fan_in() -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add("r", Router)
    p.add("z", Zip)
    p.add("out", "output")
    p.connect("in", "r")
    p.connect("r.even", "z.a")
    p.connect("r.odd", "z.b")
    p.connect("z", "out")
    assert await asyncio.to_thread(run, p, {"in": range(10)}, negotiate=False) == {
        "out": [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    }


async def test_fan_out_to_two_outputs() -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add("a", double)
    p.add("b", add, n=100)
    p.add("oa", "output")
    p.add("ob", "output")
    p.connect("in", "a")
    p.connect("in", "b")
    p.connect("a", "oa")
    p.connect("b", "ob")
    out = await asyncio.to_thread(run, p, {"in": [1, 2]}, negotiate=False)
    assert out == {"oa": [2, 4], "ob": [101, 102]}


async def test_lifecycle_initialize_control_and_close_in_order() -> None:
    Lifecycle.log.clear()
    p = chain((Lifecycle, {"tag": "a"}), (Lifecycle, {"tag": "b"}))
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(collect(s))
        await s.push("in", 1)
        await s.push("in", Message("hello"))
        await s.end("in")
        got = await reader
    assert got == [1, "tail", "tail"]
    assert Lifecycle.log == [
        "init a",
        "init b",
        "Message a",
        "Message b",
        "EndOfStream a",
        "EndOfStream b",
        "close b",
        "close a",
    ]


async def test_many_sessions_of_one_pipeline_do_not_cross_talk() -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add("z", Zip)
    p.add("out", "output")
    p.connect("in", "z.a")
    p.connect("in", "z.b")
    p.connect("z", "out")

    async def one(k: int) -> list[Any]:
        async with Session(p, negotiate=False) as s:
            reader = asyncio.create_task(collect(s))
            for i in range(20):
                await s.push("in", (k, i))
                await asyncio.sleep(0)
            await s.end("in")
            return await reader

    results = await asyncio.gather(*(one(k) for k in range(50)))
    for k, got in enumerate(results):
        assert got == [((k, i), (k, i)) for i in range(20)]


class Gate(Node):
    """An async node that waits for a gate to open before passing each item."""

    node_type = "t_gate"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.seen: list[Any] = []
        self.controls: list[Any] = []

    async def process(self, item: Any, port: str) -> Any:
        await self.gate.wait()
        self.seen.append(item)
        return item

    def on_control(self, msg: Control) -> Any:
        self.controls.append(msg)
        return None


def gate_of(s: Session, nid: str = "n0") -> Gate:
    n = s.runners[nid].node
    assert isinstance(n, Gate)
    return n


async def test_block_policy_backpressures_the_producer_and_loses_nothing() -> None:
    p = chain(Gate, maxsize=4)
    async with Session(p, negotiate=False) as s:
        g = gate_of(s)
        for i in range(5):  # 1 taken by the node (waiting at the gate), 4 queued
            await s.push("in", i)
        blocked = asyncio.create_task(s.push("in", 5))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        assert s.metrics.edge("in.out -> n0.in").depth == 4
        g.gate.set()
        await blocked
        reader = asyncio.create_task(collect(s))
        await s.end("in")
        assert await reader == list(range(6))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("drop_oldest", [0, 2, 3, 4, 5]), ("latest", [0, 5]), ("drop_newest", [0, 1, 2, 3, 4])],
)
async def test_overflow_policies(policy: str, expected: list[int]) -> None:
    p = chain(Gate, maxsize=4, overflow=policy)
    async with Session(p, negotiate=False) as s:
        g = gate_of(s)
        await s.push("in", 0)
        await asyncio.sleep(0)  # the node takes 0 and waits at the gate
        for i in range(1, 6):
            await s.push("in", i)
        g.gate.set()
        reader = asyncio.create_task(collect(s))
        await s.end("in")
        assert await reader == expected
        assert s.metrics.edge("in.out -> n0.in").drops == 5 - len(expected) + 1


async def test_interrupt_flushes_data_but_never_system_messages() -> None:
    p = chain(Gate, Lifecycle)
    Lifecycle.log.clear()
    async with Session(p, negotiate=False) as s:
        g = gate_of(s)
        for i in range(5):
            await s.push("in", i)
        await asyncio.sleep(0)
        reader = asyncio.create_task(collect(s))
        await s.end("in")  # EndOfStream is queued behind the data
        flushed = s.interrupt("barge-in")
        assert flushed == 4  # items 1..4 were queued; 0 was being awaited and is abandoned
        g.gate.set()
        got = await reader
    assert got == ["tail"]  # no data survived, the EndOfStream did
    assert any(isinstance(c, Interrupt) for c in g.controls)
    assert any(isinstance(c, EndOfStream) for c in g.controls)
    assert "Interrupt x" in Lifecycle.log


async def test_a_failing_node_names_the_input_and_stops_the_session_by_default() -> None:
    p = chain((fail_on, {"bad": 3}))
    async with Session(p, negotiate=False) as s:
        for i in range(3):
            await s.push("in", i)
        with pytest.raises(NodeError) as ei:
            await s.push("in", 3)
        with pytest.raises(NodeError):
            await s.wait()
    err = ei.value
    assert err.node == "n0" and err.port == "in" and err.item == 3
    assert isinstance(err.__cause__, ValueError)
    assert "n0" in str(err) and "cannot take 3" in str(err)


async def test_skip_policy_records_the_error_and_goes_on() -> None:
    p = chain((fail_on, {"bad": 3}))
    p.nodes["n0"].options["on_error"] = "skip"
    got = await asyncio.to_thread(run, p, {"in": range(6)}, negotiate=False)
    assert got == {"out": [0, 1, 2, 4, 5]}


async def test_isolate_policy_keeps_the_other_branches_running() -> None:
    p = Pipeline()
    p.add("in", "input")
    p.add("bad", fail_on, bad=2, options={"on_error": "isolate"})
    p.add("good", double)
    p.add("ob", "output")
    p.add("og", "output")
    p.connect("in", "bad")
    p.connect("in", "good")
    p.connect("bad", "ob")
    p.connect("good", "og")
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(collect_by_node(s))
        for i in range(5):
            await s.push("in", i)
        await s.end("in")
        await s.wait()
        got = await reader
    assert got == {"ob": [0, 1], "og": [0, 2, 4, 6, 8]}
    assert [e.item for e in s.errors] == [2]


async def collect_by_node(s: Session) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    async for nid, item in s.outputs():
        out.setdefault(nid, []).append(item)
    return out


class Flaky(Node):
    """Fails the first ``failures`` calls on each item, then succeeds."""

    node_type = "t_flaky"

    def __init__(self, *, failures: int = 2) -> None:
        self.failures = failures
        self.calls = 0

    def process(self, item: Any, port: str) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("transient")
        return item


async def test_retry_with_backoff_recovers_from_transient_failures() -> None:
    p = chain((Flaky, {"failures": 2}))
    p.nodes["n0"].options["retry"] = {"attempts": 3, "base": 0.001}
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(collect(s))
        await s.push("in", "x")
        await s.end("in")
        assert await reader == ["x"]
        assert s.runners["n0"].node.calls == 3  # type: ignore[attr-defined]
        assert s.errors == []


async def test_circuit_breaker_opens_after_consecutive_failures() -> None:
    p = chain((Flaky, {"failures": 100}))
    p.nodes["n0"].options.update(
        on_error="skip", circuit_breaker={"threshold": 3, "reset_after": 60}
    )
    p.nodes["n0"].executor = "task"
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(collect(s))
        for i in range(6):
            await s.push("in", i)
        await s.end("in")
        assert await reader == []
        node_ = s.runners["n0"].node
        assert node_.calls == 3  # type: ignore[attr-defined]
    kinds = [type(e).__name__ for e in s.errors]
    assert kinds == ["NodeError"] * 3 + ["CircuitOpenError"] * 3


async def test_thread_executor_runs_the_node_off_the_loop_thread() -> None:
    seen: set[int] = set()

    def where(x: int) -> int:
        seen.add(threading.get_ident())
        return x

    p = chain(node(where, name="t_where", register=False), executor="thread")
    async with Session(p, negotiate=False) as s:
        reader = asyncio.create_task(collect(s))
        for i in range(10):
            await s.push("in", i)
        await s.end("in")
        assert await reader == list(range(10))
    assert seen and threading.get_ident() not in seen and len(seen) == 1


async def test_metrics_and_prometheus_export() -> None:
    p = chain(double, (async_add, {"n": 1}))
    async with Session(p, negotiate=False, session_id="abc") as s:
        reader = asyncio.create_task(collect(s))
        for i in range(50):
            await s.push("in", i)
        await s.end("in")
        await reader
    m = s.metrics
    assert m.node("n0").items_in == 50 and m.node("n1").items_out == 50
    assert 0 < m.node("n0").p50 <= m.node("n0").p99
    assert m.edge("n0.out -> n1.in").items == 50
    text = m.prometheus()
    assert 'isthmus_pipeline_node_latency_seconds{session="abc",node="n0",quantile="0.5"}' in text
    assert 'isthmus_pipeline_edge_items_total{session="abc",edge="n0.out -> n1.in"} 50' in text
    assert "# TYPE isthmus_pipeline_edge_drops_total counter" in text


async def test_closed_session_refuses_input() -> None:
    p = chain(double)
    s = Session(p, negotiate=False)
    await s.start()
    await s.close()
    with pytest.raises(SessionClosedError):
        await s.push("in", 1)


async def test_audio_chunks_flow_without_copies_through_direct_nodes() -> None:
    @node(name="t_gain", register=False)
    def gain(c: AudioChunk) -> AudioChunk:
        np.multiply(c.samples, 0.5, out=c.samples)
        return c

    p = chain(gain)
    chunk = AudioChunk(np.ones((320, 1), np.float32), 16000)
    got = await asyncio.to_thread(run, p, {"in": [chunk]}, negotiate=False)
    assert got["out"][0] is chunk and float(chunk.samples[0, 0]) == 0.5


class RateSwitcher(Node):
    """A source that changes its sample rate mid-stream and says so with CapsChanged."""

    node_type = "t_rate_switch"
    inputs: dict[str, Port] = {}
    outputs = {"out": Port("audio(sample_rate=48000, channels=1, format=f32, frame_ms=20)")}

    def generate(self) -> Any:
        from isthmus.pipeline import Caps, CapsChanged

        for k in range(5):
            yield AudioChunk(np.zeros((960, 1), np.float32), 48000, k * 0.02)
        yield CapsChanged(
            Caps.parse("audio(sample_rate=44100, channels=1, format=f32, frame_ms=20)"), "out"
        )
        for k in range(5, 10):
            yield AudioChunk(np.zeros((882, 1), np.float32), 44100, k * 0.02)


async def test_renegotiation_when_a_source_changes_format_mid_stream() -> None:
    p = Pipeline()
    p.add("src", RateSwitcher)
    p.add("rs", "resample", sample_rate=16000)
    p.add("vad", "webrtcvad")
    p.add("out", "output")
    p.chain("src", "rs", "vad")
    p.connect("vad.out", "out")
    got: list[AudioChunk] = []
    async with Session(p, on_output=lambda _n, x: got.append(x)) as s:
        assert s.negotiated.caps("src").get("sample_rate") == 48000
        await s.wait()
        assert s.negotiated.caps("src").get("sample_rate") == 44100
        assert s.negotiated.caps("rs").get("sample_rate") == 16000
    assert got and all(c.sample_rate == 16000 and c.frames == 320 for c in got)
    assert s.errors == []


async def test_health_reports_every_node() -> None:
    p = chain((fail_on, {"bad": 1}))
    p.nodes["n0"].options["on_error"] = "skip"
    async with Session(p, negotiate=False) as s:
        await s.push("in", 1)
        h = s.health()
    assert h["n0"]["errors"] == 1 and h["n0"]["kind"] == "direct" and h["n0"]["alive"]
