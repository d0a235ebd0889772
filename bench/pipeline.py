"""Benchmarks of isthmus-pipeline against its anchors (``python bench/run.py pipeline``).

All in one run, contenders side by side; figures are medians over repeats.

1. **In-process hop.** A chain of 10 identity nodes between an ``input`` and an ``output``
   node. *Latency*: one message at a time (push, wait for it at the output, next); per-hop time
   = end to end / 11 edges, median over messages. *Throughput*: N messages back to back; total /
   (N x 11). Contenders: ours with the default executor (sync nodes are called directly), with
   and without metrics; ours with every node an asyncio task (``executor="task"``); ours on
   threads; a plain chain of asyncio tasks joined by ``asyncio.Queue``; a chain of threads
   joined by ``queue.Queue``.
2. **Metrics overhead**: ours direct with metrics minus without, per message per node.
3. **Process hop.** One-way latency of an item into a node in a child process: the producer
   stamps ``time.perf_counter_ns()`` just before sending, the child takes the difference on
   arrival (CLOCK_MONOTONIC is shared). 20 ms of 48 kHz mono f32 (3,840 B), and a 6.2 MB
   1080p RGB frame (written in place with ``send_inplace``; the others copy it once). Paced
   at one item per 2 ms (a realistic media rate: the consumer sleeps between items) and per
   200 µs. Contenders: ours (``ProcessWorker``, the process executor) with ``spin=0`` (the
   default: sleep on a futex at once) and with 200 µs of spin; a bare ``isthmus.buffer.Ring``;
   ``multiprocessing.Queue``; pyzmq PUSH/PULL over ``ipc://``.
4. **Concurrent real-time streams.** A 10-node pipeline per stream (input 48 kHz f32 →
   level_meter → resample 16 kHz → level_meter → webrtcvad → sample_format s16 → level_meter →
   channel_mix → output, and the VAD's segments to a second output). N sessions are spread over
   two worker processes, one per core (pinned), each hosting N/2 sessions in one event loop.
   Each stream gets a 20 ms chunk every 20 ms in real time (streams staggered across the 20 ms)
   for ``--seconds``. Latency = from when the stream's newest chunk was due to the arrival of
   an output at the audio output (so event-loop lag counts, the resampler's look-ahead not). A stream count is
   *sustained* when every chunk came out and p99 < 20 ms. Contender: the same node kernels as
   plain asyncio tasks joined by ``asyncio.Queue`` (one task per node per stream).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import statistics
import threading
import time
from typing import Any

import numpy as np

from bench._common import fmt, package_version, spawn_context, targets_table

DESCRIPTION = "isthmus-pipeline: in-process hop, metrics cost, process hop, concurrent streams"
HOPS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=5000, help="messages per hop measurement")
    parser.add_argument("--streams", default="100,200,400,600", help="stream counts to try")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per stream run")
    parser.add_argument(
        "--only", default="hop,process,streams", help="sections to run: hop, process, streams"
    )


# --- 1. in-process hop -----------------------------------------------------------------------
def _identity(x: Any) -> Any:
    return x


async def _identity_async(x: Any) -> Any:
    return x


def _chain(executor: str, fn: Any = _identity) -> Any:
    from isthmus.pipeline import Pipeline, node

    nt = node(fn, name=f"bench_{fn.__name__}", register=False)
    p = Pipeline("hop")
    p.add("in", "input")
    ids = ["in"]
    for i in range(HOPS):
        p.add(f"n{i}", nt, executor=executor)
        ids.append(f"n{i}")
    p.add("out", "output")
    ids.append("out")
    p.chain(*ids, maxsize=1024)
    return p


async def _ours(executor: str, metrics: bool, n: int, latency: bool) -> float:
    from isthmus.pipeline import Session

    loop = asyncio.get_running_loop()
    waiter: list[asyncio.Future[None] | None] = [None]
    count = [0]

    def sink(_node: str, _x: Any) -> None:
        count[0] += 1
        w = waiter[0]
        if w is not None and not w.done():
            w.set_result(None)

    async with Session(_chain(executor), negotiate=False, metrics=metrics, on_output=sink) as s:
        if latency:
            lat = []
            for i in range(n):
                fut = waiter[0] = loop.create_future()
                t = time.perf_counter_ns()
                await s.push("in", i)
                if not fut.done():
                    await fut
                lat.append(time.perf_counter_ns() - t)
            return statistics.median(lat) / 1000 / (HOPS + 1)
        t0 = time.perf_counter()
        for i in range(n):
            await s.push("in", i)
        await s.end("in")
        await s.wait()
        assert count[0] == n
        return (time.perf_counter() - t0) / n / (HOPS + 1) * 1e6


async def _asyncio_queue(n: int, latency: bool) -> float:
    qs: list[asyncio.Queue[Any]] = [asyncio.Queue(1024) for _ in range(HOPS + 1)]

    async def stage(a: asyncio.Queue[Any], b: asyncio.Queue[Any]) -> None:
        while True:
            await b.put(_identity(await a.get()))

    tasks = [asyncio.create_task(stage(qs[i], qs[i + 1])) for i in range(HOPS)]
    try:
        if latency:
            lat = []
            for i in range(n):
                t = time.perf_counter_ns()
                await qs[0].put(i)
                await qs[-1].get()
                lat.append(time.perf_counter_ns() - t)
            return statistics.median(lat) / 1000 / HOPS
        t0 = time.perf_counter()

        async def prod() -> None:
            for i in range(n):
                await qs[0].put(i)

        pt = asyncio.create_task(prod())
        for _ in range(n):
            await qs[-1].get()
        await pt
        return (time.perf_counter() - t0) / n / HOPS * 1e6
    finally:
        for t in tasks:
            t.cancel()


def _thread_queue(n: int, latency: bool) -> float:
    qs: list[queue.Queue[Any]] = [queue.Queue(1024) for _ in range(HOPS + 1)]
    stop = object()

    def stage(a: queue.Queue[Any], b: queue.Queue[Any]) -> None:
        while True:
            x = a.get()
            b.put(x)
            if x is stop:
                return

    threads = [threading.Thread(target=stage, args=(qs[i], qs[i + 1])) for i in range(HOPS)]
    for t in threads:
        t.start()
    try:
        if latency:
            lat = []
            for i in range(n):
                t0 = time.perf_counter_ns()
                qs[0].put(i)
                qs[-1].get()
                lat.append(time.perf_counter_ns() - t0)
            return statistics.median(lat) / 1000 / HOPS
        t1 = time.perf_counter()
        feeder = threading.Thread(target=lambda: [qs[0].put(i) for i in range(n)])
        feeder.start()
        for _ in range(n):
            qs[-1].get()
        feeder.join()
        return (time.perf_counter() - t1) / n / HOPS * 1e6
    finally:
        qs[0].put(stop)
        for t in threads:
            t.join()


HOP_CONTENDERS = [
    ("ours, direct (default), metrics off", lambda n, lat: _ours("asyncio", False, n, lat)),
    ("ours, direct (default), metrics on", lambda n, lat: _ours("asyncio", True, n, lat)),
    ("ours, executor=task", lambda n, lat: _ours("task", True, n, lat)),
    ("ours, executor=thread", lambda n, lat: _ours("thread", True, n // 5, lat)),
    ("asyncio.Queue chain", lambda n, lat: _asyncio_queue(n, lat)),
    ("queue.Queue thread chain", lambda n, lat: asyncio.to_thread(_thread_queue, n // 5, lat)),
]


def _run_hops(opts: argparse.Namespace, ui: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    with ui.task("in-process hop", len(HOP_CONTENDERS) * 2 * opts.repeats) as advance:
        for r in range(opts.repeats):
            order = (
                HOP_CONTENDERS[r % len(HOP_CONTENDERS) :]
                + HOP_CONTENDERS[: r % len(HOP_CONTENDERS)]
            )
            for name, fn in order:
                for mode, lat in (("latency", True), ("throughput", False)):
                    n = opts.messages // 5 if lat else opts.messages
                    v = asyncio.run(fn(n, lat))
                    res.setdefault(name, {}).setdefault(mode, []).append(v)
                    advance(f"{name} {mode}")
    return {
        k: {m: statistics.median(v) for m, v in d.items()} | {"runs": d} for k, d in res.items()
    }


# --- 3. process hop --------------------------------------------------------------------------
FRAME = (1080, 1920, 3)


async def _ours_process(n: int, pace: float, spin: float, big: bool) -> float:
    from isthmus.pipeline import AudioChunk, EndOfStream
    from isthmus.pipeline._process import ProcessWorker

    w = ProcessWorker(
        "bench.pipeline_workers:HopSink", {}, spin=spin, credits=256, ring_bytes=64 << 20
    )
    await w.start()
    try:
        x = np.zeros((960, 1), np.float32)
        for _ in range(n):
            _pace(pace)
            if big:
                await w.send_inplace(
                    "in",
                    FRAME,
                    np.uint8,
                    _touch,
                    video_format="rgb24",
                    pts=time.perf_counter_ns() / 1e9,
                )
            else:
                await w.send("in", AudioChunk(x, 48000, time.perf_counter_ns() / 1e9))
        await w.control(EndOfStream())
        _, lat = await w.recv()
        return float(statistics.median(lat)) / 1000
    finally:
        await w.close()


def _touch(view: np.ndarray[Any, Any]) -> None:
    view[0, 0, 0] = 1  # the producer writes its frame here, in place


def _pace(pace: float) -> None:
    # Sleep, not spin: a spinning producer would hold the GIL that the queues' feeder and
    # reader threads need, and charge that to their latency.
    time.sleep(pace)


def _payload(big: bool) -> np.ndarray[Any, Any]:
    return np.zeros(int(np.prod(FRAME)) if big else 3840, np.uint8)


def _stamp(buf: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    buf[:8] = np.frombuffer(np.int64(time.perf_counter_ns()).tobytes(), np.uint8)
    return buf


def _mpqueue(n: int, pace: float, big: bool) -> float:
    from bench.pipeline_workers import mpqueue_child

    ctx = spawn_context()
    q, out = ctx.Queue(64), ctx.Queue()
    p = ctx.Process(target=mpqueue_child, args=(q, out, n))
    p.start()
    buf = _payload(big)
    time.sleep(0.5)
    for _ in range(n):
        _pace(pace)
        q.put(_stamp(buf).tobytes() if not big else _stamp(buf))
    lat = out.get(timeout=120)
    p.join()
    return float(statistics.median(lat)) / 1000


def _zmq(n: int, pace: float, big: bool) -> float:
    import zmq

    from bench.pipeline_workers import zmq_child

    ctx = spawn_context()
    addr = f"ipc:///tmp/isthmus-bench-pipeline-{os.getpid()}.sock"
    zc = zmq.Context()
    s = zc.socket(zmq.PUSH)
    s.bind(addr)
    out = ctx.Queue()
    p = ctx.Process(target=zmq_child, args=(addr, out, n))
    p.start()
    time.sleep(0.5)
    buf = _payload(big)
    for _ in range(n):
        _pace(pace)
        s.send(_stamp(buf), copy=big)
    lat = out.get(timeout=120)
    p.join()
    s.close(0)
    zc.term()
    return float(statistics.median(lat)) / 1000


def _ring(n: int, pace: float, big: bool, spin: float = 0.0) -> float:
    from bench.pipeline_workers import ring_child
    from isthmus.buffer import Ring

    ctx = spawn_context()
    ring = Ring.create(f"bench-pl-{os.getpid()}", 64 << 20, spin=spin)
    out = ctx.Queue()
    p = ctx.Process(target=ring_child, args=(ring.name, out, n, spin))
    p.start()
    time.sleep(0.5)
    size = int(np.prod(FRAME)) if big else 3840
    for _ in range(n):
        _pace(pace)
        b = ring.loan(size)
        with memoryview(b) as mv:
            view = np.frombuffer(mv, np.uint8)
            _stamp(view)
            del view
        ring.commit()
    lat = out.get(timeout=120)
    p.join()
    ring.close()
    return float(statistics.median(lat)) / 1000


def _run_process(opts: argparse.Namespace, ui: Any) -> dict[str, Any]:
    cases = []
    for big in (False, True):
        for pace in (2e-3, 200e-6):
            n = (150 if big else 600) if not opts.quick else (40 if big else 200)
            cases += [
                (
                    "ours, spin=0 (default)",
                    big,
                    pace,
                    lambda n=n, p=pace, b=big: asyncio.run(_ours_process(n, p, 0.0, b)),
                ),
                (
                    "ours, spin=200 µs",
                    big,
                    pace,
                    lambda n=n, p=pace, b=big: asyncio.run(_ours_process(n, p, 200e-6, b)),
                ),
                (
                    "ours, spin=5 ms (consumer awake)",
                    big,
                    pace,
                    lambda n=n, p=pace, b=big: asyncio.run(_ours_process(n, p, 5e-3, b)),
                ),
                (
                    "isthmus.buffer Ring, spin=0",
                    big,
                    pace,
                    lambda n=n, p=pace, b=big: _ring(n, p, b),
                ),
                (
                    "isthmus.buffer Ring, spin=200 µs",
                    big,
                    pace,
                    lambda n=n, p=pace, b=big: _ring(n, p, b, 200e-6),
                ),
                ("multiprocessing.Queue", big, pace, lambda n=n, p=pace, b=big: _mpqueue(n, p, b)),
                ("pyzmq ipc://", big, pace, lambda n=n, p=pace, b=big: _zmq(n, p, b)),
            ]
    reps = 1 if opts.quick else 3
    res: dict[str, list[float]] = {}
    with ui.task("process hop", len(cases) * reps) as advance:
        for _ in range(reps):
            for name, big, pace, fn in cases:
                key = f"{name}|{'6.2 MB frame' if big else '3,840 B chunk'}|{pace * 1e6:.0f} µs"
                try:
                    res.setdefault(key, []).append(fn())
                except Exception as e:  # a missing contender must not sink the run
                    ui.log(f"{key}: {e!r}")
                advance(key)
    return {k: statistics.median(v) for k, v in res.items()}


# --- 4. concurrent streams -------------------------------------------------------------------
def _streams_once(kind: str, n: int, seconds: float) -> dict[str, Any]:
    from bench.pipeline_workers import streams_child

    ctx = spawn_context()
    outs = [ctx.Queue() for _ in range(2)]
    procs = [
        ctx.Process(
            target=streams_child,
            args=(kind, n // 2 + (n % 2 if i == 0 else 0), seconds, i, outs[i]),
        )
        for i in range(2)
    ]
    for p in procs:
        p.start()
    got = [q.get(timeout=seconds + 120) for q in outs]
    for p in procs:
        p.join()
    errors = [g["error"] for g in got if "error" in g]
    if errors:
        return {"error": errors[0]}
    lat = sorted(x for g in got for x in g["latencies"])
    pct = lambda q: lat[min(len(lat) - 1, int(q * (len(lat) - 1)))] * 1000 if lat else float("nan")  # noqa: E731
    missing = sum(g["missing"] for g in got)
    p99 = pct(0.99)
    return {
        "p50_ms": pct(0.5),
        "p99_ms": p99,
        "missing": missing,
        "cpu_per_core": max(g["cpu"] / g["wall"] for g in got),
        "sustained": missing == 0 and p99 < 20.0,
    }


def _run_streams(opts: argparse.Namespace, ui: Any) -> dict[str, Any]:
    counts = [int(x) for x in opts.streams.split(",") if x.strip()]
    seconds = 4.0 if opts.quick else opts.seconds
    res: dict[str, dict[str, Any]] = {}
    with ui.task("concurrent streams", len(counts) * 2) as advance:
        for n in counts:
            for kind in ("ours", "asyncio-queue"):
                r = _streams_once(kind, n, seconds)
                res.setdefault(kind, {})[str(n)] = r
                advance(f"{kind} x{n}: " + ("ok" if r.get("sustained") else "not sustained"))
    return res


# --- harness ---------------------------------------------------------------------------------
def run(opts: argparse.Namespace, ui: Any) -> dict[str, Any]:
    if opts.repeats is None:
        opts.repeats = 3 if opts.quick else 5
    if opts.quick:
        opts.messages = min(opts.messages, 2000)
    only = {s.strip() for s in opts.only.split(",")}
    out: dict[str, Any] = {
        "versions": {
            n: package_version(n)
            for n in ("isthmus-pipeline", "isthmus-buffer", "pyzmq", "soxr", "webrtcvad-wheels")
        },
        "options": {
            "repeats": opts.repeats,
            "messages": opts.messages,
            "streams": opts.streams,
            "seconds": opts.seconds,
            "quick": opts.quick,
        },
    }
    if "hop" in only:
        out["hop"] = _run_hops(opts, ui)
    if "process" in only:
        out["process"] = _run_process(opts, ui)
    if "streams" in only:
        out["streams"] = _run_streams(opts, ui)
    return out


def _ratio(value: float, ref: float) -> str:
    if not value or not ref or value != value or ref != ref:
        return "n/a"
    return f"{ref / value:.1f}x"


def target_checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    t: list[dict[str, Any]] = []
    hop = r.get("hop", {})
    if hop:
        ours = hop["ours, direct (default), metrics on"]["latency"]
        t.append(
            {
                "target": "in-process hop, median per message (µs)",
                "measured": ours,
                "goal": "≤ 2",
                "met": ours <= 2,
            }
        )
        off = hop["ours, direct (default), metrics off"]["throughput"]
        on = hop["ours, direct (default), metrics on"]["throughput"]
        t.append(
            {
                "target": "metrics overhead per message per node (µs)",
                "measured": on - off,
                "goal": "≤ 0.5",
                "met": on - off <= 0.5,
            }
        )
    proc = r.get("process", {})
    for size in ("3,840 B chunk", "6.2 MB frame"):
        v = proc.get(f"ours, spin=0 (default)|{size}|2000 µs")
        if v is not None:
            t.append(
                {
                    "target": f"process hop, {size}, one item per 2 ms (µs)",
                    "measured": v,
                    "goal": "≤ 10",
                    "met": v <= 10,
                }
            )
        v = proc.get(f"ours, spin=200 µs|{size}|200 µs")
        if v is not None:
            t.append(
                {
                    "target": f"process hop, {size}, spin 200 µs, one per 200 µs (µs)",
                    "measured": v,
                    "goal": "≤ 10",
                    "met": v <= 10,
                }
            )
    st = r.get("streams", {}).get("ours", {})
    if st:
        best = max((int(n) for n, x in st.items() if x.get("sustained")), default=0)
        t.append(
            {
                "target": "concurrent real-time streams sustained (10 nodes)",
                "measured": best,
                "goal": "≥ 400",
                "met": best >= 400,
            }
        )
    return t


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    hop = r.get("hop")
    if hop:
        ref_l = hop["asyncio.Queue chain"]["latency"]
        ref_t = hop["asyncio.Queue chain"]["throughput"]
        rows = [
            [
                name,
                fmt(d["latency"], 2),
                _ratio(d["latency"], ref_l),
                fmt(d["throughput"], 2),
                _ratio(d["throughput"], ref_t),
            ]
            for name, d in hop.items()
        ]
        out.append(
            {
                "title": f"In-process hop: µs per message per hop, {HOPS} nodes (median of repeats)",
                "headers": [
                    "contender",
                    "latency mode",
                    "vs asyncio.Queue",
                    "throughput mode",
                    "vs asyncio.Queue",
                ],
                "rows": rows,
                "note": "latency: one message in flight; throughput: back to back. Ratios > 1x: ours is faster.",
            }
        )
    proc = r.get("process")
    if proc:
        rows = []
        for key, v in proc.items():
            name, size, pace = key.split("|")
            mpq = proc.get(f"multiprocessing.Queue|{size}|{pace}")
            zq = proc.get(f"pyzmq ipc://|{size}|{pace}")
            rows.append([name, size, pace, fmt(v, 1), _ratio(v, mpq or 0), _ratio(v, zq or 0)])
        out.append(
            {
                "title": "Process hop: one-way latency into a child process, µs (median)",
                "headers": ["contender", "item", "one item per", "µs", "vs mp.Queue", "vs pyzmq"],
                "rows": rows,
                "note": "Stamped before the send, read on arrival in the child. Ratios > 1x: faster than the rival.",
            }
        )
    st = r.get("streams")
    if st:
        rows = []
        for kind, per in st.items():
            for n, x in per.items():
                if "error" in x:
                    rows.append([kind, n, "error", x["error"], "", "", ""])
                    continue
                rows.append(
                    [
                        kind,
                        n,
                        fmt(x["p50_ms"], 2),
                        fmt(x["p99_ms"], 2),
                        str(x["missing"]),
                        f"{x['cpu_per_core'] * 100:.0f}%",
                        "yes" if x["sustained"] else "**no**",
                    ]
                )
        out.append(
            {
                "title": "Concurrent real-time streams (10-node audio pipeline, 2 processes, 20 ms chunks)",
                "headers": [
                    "contender",
                    "streams",
                    "p50 ms",
                    "p99 ms",
                    "chunks missing",
                    "CPU per core",
                    "sustained",
                ],
                "rows": rows,
                "note": "Sustained: every chunk came out and p99 < 20 ms.",
            }
        )
    checks = target_checks(r)
    if checks:
        out.append(targets_table(checks))
    return out
