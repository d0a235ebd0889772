"""Child-process side of ``bench/pipeline.py`` (importable by spawned children).

* ``HopSink``: a node that records, for each item, how long ago its ``pts`` was stamped with
  ``time.perf_counter_ns() / 1e9`` (CLOCK_MONOTONIC is shared by every process on Linux) and
  returns the sorted latencies at EndOfStream.
* ``mpqueue_child`` / ``zmq_child`` / ``ring_child``: the same measurement for
  multiprocessing.Queue, pyzmq ``ipc://`` and a bare ``isthmus.buffer.Ring``.
* ``streams_child``: hosts N real-time stream sessions (ours, or plain asyncio tasks joined by
  asyncio.Queue) and reports per-chunk latencies and CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import numpy as np

from isthmus.pipeline import AudioChunk, Control, EndOfStream, Node, Port


class HopSink(Node):
    """Latency (ns) from the stamp in ``pts`` to arrival here; sorted list at EndOfStream."""

    node_type = "bench_hop_sink"
    outputs = {"out": Port()}  # noqa: RUF012

    def __init__(self) -> None:
        self.lat: list[int] = []

    def process(self, item: Any, port: str) -> None:
        now = time.perf_counter_ns()
        pts = item.pts if hasattr(item, "pts") else 0.0
        self.lat.append(now - round(pts * 1e9))

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream):
            return sorted(self.lat)
        return None


def _stamp_of(x: Any) -> int:
    return int(np.frombuffer(x, np.int64, 1)[0])


def mpqueue_child(q: Any, out: Any, n: int) -> None:
    lat = []
    for _ in range(n):
        x = q.get()
        lat.append(time.perf_counter_ns() - _stamp_of(x))
    out.put(sorted(lat))


def zmq_child(addr: str, out: Any, n: int) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.connect(addr)
    lat = []
    for _ in range(n):
        x = s.recv(copy=False)
        lat.append(time.perf_counter_ns() - _stamp_of(x.buffer))
    out.put(sorted(lat))
    s.close(0)
    ctx.term()


def ring_child(name: str, out: Any, n: int, spin: float) -> None:
    from isthmus.buffer import Ring

    r = Ring.open(name, spin=spin, timeout=10)
    lat = []
    for _ in range(n):
        b = r.recv()
        lat.append(time.perf_counter_ns() - _stamp_of(b))
        b.release()
    r.close()
    out.put(sorted(lat))


# --- concurrent streams ----------------------------------------------------------------------
def build_stream_pipeline() -> Any:
    """The 10-node audio pipeline of one stream."""
    from isthmus.pipeline import Pipeline

    p = Pipeline("stream")
    p.add("mic", "input", caps="audio(sample_rate=48000, channels=1, format=f32, frame_ms=20)")
    p.add("meter_in", "level_meter", interval_ms=100)
    p.add("resample", "resample", sample_rate=16000)
    p.add("meter_16k", "level_meter", interval_ms=100)
    p.add("vad", "webrtcvad", aggressiveness=2)
    p.add("to_s16", "sample_format", format="s16")
    p.add("meter_out", "level_meter", interval_ms=100)
    p.add("mono", "channel_mix", channels=1)
    p.add("audio", "output")
    p.add("segments", "output")
    p.chain("mic", "meter_in", "resample", "meter_16k", "vad")
    p.connect("vad.out", "to_s16")
    p.chain("to_s16", "meter_out", "mono", "audio")
    p.connect("vad.segments", "segments")
    return p


def _signal(n: int) -> np.ndarray[Any, Any]:
    t = np.arange(n * 960) / 48000
    env = (np.sin(2 * np.pi * 0.5 * t) > 0).astype(np.float32)  # 1 s on, 1 s off
    return (0.3 * env * np.sin(2 * np.pi * 220 * t)).astype(np.float32).reshape(-1, 1)


async def _streams(kind: str, n: int, seconds: float, offset: float = 0.0) -> dict[str, Any]:
    from isthmus.pipeline import Session

    frames = int(seconds / 0.02)
    audio = _signal(frames)
    due = [0.0] * n
    lat: list[float] = []
    received = [0] * n

    def on_output(i: int) -> Any:
        def cb(node: str, item: Any) -> None:
            if node == "audio":
                # From when the newest input of this stream was due (so event-loop lag counts)
                # to this output: the resampler's own look-ahead is not charged as latency.
                lat.append(time.perf_counter() - due[i])
                received[i] += 1

        return cb

    sessions: list[Any] = []
    baseline_tasks: list[asyncio.Task[Any]] = []
    feeders: list[Any] = []
    if kind == "ours":
        p = build_stream_pipeline()
        p.negotiate()
        for i in range(n):
            s = Session(p, session_id=f"s{i}", on_output=on_output(i), metrics=True)
            await s.start()
            sessions.append(s)
            feeders.append(lambda x, s=s: s.push("mic", x))
    else:
        from isthmus.pipeline import resolve

        for i in range(n):
            specs = [
                ("level_meter", {"interval_ms": 100}),
                ("resample", {"sample_rate": 16000}),
                ("level_meter", {"interval_ms": 100}),
                ("webrtcvad", {}),
                ("sample_format", {"format": "s16"}),
                ("level_meter", {"interval_ms": 100}),
                ("channel_mix", {"channels": 1}),
            ]
            nodes = [resolve(t).create(**kw) for t, kw in specs]
            qs: list[asyncio.Queue[Any]] = [asyncio.Queue(64) for _ in range(len(nodes) + 1)]
            cb = on_output(i)

            async def stage(node: Any, qin: asyncio.Queue[Any], qout: asyncio.Queue[Any]) -> None:
                while True:
                    x = await qin.get()
                    r = node.process(x, "in")
                    outs = [it for port, it in node.take_emitted() if port == "out"]
                    if r is not None:
                        outs.insert(0, r)
                    for o in outs:
                        await qout.put(o)

            async def sink(q: asyncio.Queue[Any], cb: Any = cb) -> None:
                while True:
                    cb("audio", await q.get())

            for j, node in enumerate(nodes):
                baseline_tasks.append(asyncio.create_task(stage(node, qs[j], qs[j + 1])))
            baseline_tasks.append(asyncio.create_task(sink(qs[-1])))
            feeders.append(qs[0].put)

    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.2

    async def feed(i: int) -> None:
        start = t0 + offset + (i / n) * 0.02
        for k in range(frames):
            delay = start + k * 0.02 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            due[i] = start + k * 0.02
            await feeders[i](AudioChunk(audio[k * 960 : (k + 1) * 960], 48000, k * 0.02))

    await asyncio.gather(*(feed(i) for i in range(n)))
    # Grace: whatever is still in flight gets 0.5 s to come out.
    deadline = time.perf_counter() + 0.5
    expected = frames - 3  # the resampler holds back a few ms until the stream ends
    while time.perf_counter() < deadline and min(received) < expected:
        await asyncio.sleep(0.01)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - t0
    for s in sessions:
        await s.close()
    for t in baseline_tasks:
        t.cancel()
    lat.sort()
    return {
        "latencies": lat[:: max(1, len(lat) // 20000)],
        "missing": sum(max(0, expected - r) for r in received),
        "cpu": cpu,
        "wall": wall,
        "chunks": sum(received),
    }


def streams_child(kind: str, n: int, seconds: float, cpu: int, out: Any) -> None:
    with contextlib.suppress(Exception):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})
    try:
        out.put(asyncio.run(_streams(kind, n, seconds, 0.0)))
    except BaseException as e:  # report, do not hang the parent
        out.put({"error": repr(e)})
