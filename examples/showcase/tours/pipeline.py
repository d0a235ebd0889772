"""The ``pipeline`` tour: many real-time voice streams through one process, one of them with its
VAD in a child process.

Each stream is its own :class:`isthmus.pipeline.Session` of the 10-node pipeline the benchmark
uses (48 kHz audio → level meter → resample 16 kHz → level meter → webrtcvad → s16 → level
meter → channel mix → output, plus the VAD's speech segments). A 20 ms chunk enters every stream
every 20 ms, in real time, as from live calls. One more stream runs its VAD with
``executor="process"``: the chunks cross to a child process written in place into an
``isthmus.buffer`` ring. The display shows chunks, speech segments, per-node latency from the
sessions' metrics and the process's CPU; the summary follows at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import time
from typing import Any

import numpy as np

TITLE = "pipeline: real-time voice streams, one with its VAD in a child process"
log = logging.getLogger("showcase.pipeline")
RATE, FRAME = 48000, 960


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--pipeline-streams",
        type=int,
        default=100,
        metavar="N",
        help="concurrent real-time streams in this process (default 100)",
    )


def _pipeline(vad_executor: str = "asyncio") -> Any:
    from isthmus.pipeline import Pipeline

    p = Pipeline("stream")
    p.add("mic", "input", caps="audio(sample_rate=48000, channels=1, format=f32, frame_ms=20)")
    p.add("meter_in", "level_meter", interval_ms=100)
    p.add("resample", "resample", sample_rate=16000)
    p.add("meter_16k", "level_meter", interval_ms=100)
    p.add("vad", "webrtcvad", executor=vad_executor, aggressiveness=2, min_silence_ms=200)
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


def _voice(k: int, stream: int) -> np.ndarray[Any, Any]:
    """Chunk ``k`` of a voice-like buzz that talks 1.2 s out of every 2 s (phase per stream)."""
    t = (k * FRAME + np.arange(FRAME)) / RATE + stream * 0.37
    on = (t % 2.0) > 0.8
    f0 = 130 + 15 * np.sin(2 * np.pi * 3 * t)
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 8))
    return (0.2 * on * x).astype(np.float32).reshape(-1, 1)


class _State:
    def __init__(self) -> None:
        self.chunks = 0
        self.out = 0
        self.segments = 0
        self.proc_out = 0
        self.proc_segments = 0
        self.late = 0


async def _main(opts: argparse.Namespace, console: Any, state: _State) -> dict[str, Any]:
    from isthmus.pipeline import AudioChunk, Session

    n = max(1, opts.pipeline_streams)
    frames = max(1, int(opts.duration / 0.02))
    bank = [_voice(k, 0) for k in range(100)]  # 2 s of audio, reused round the streams

    def counter(proc: bool) -> Any:
        def on_output(node: str, item: Any) -> None:
            if node == "audio":
                if proc:
                    state.proc_out += 1
                else:
                    state.out += 1
            elif proc:
                state.proc_segments += 1
            else:
                state.segments += 1

        return on_output

    pipeline = _pipeline()
    sessions = [
        Session(pipeline, session_id=f"call-{i}", on_output=counter(False)) for i in range(n)
    ]
    proc_session = Session(_pipeline("process"), session_id="call-proc", on_output=counter(True))
    for s in [*sessions, proc_session]:
        await s.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.1

    async def feed(i: int, s: Session) -> None:
        start = t0 + (i / (n + 1)) * 0.02
        for k in range(frames):
            delay = start + k * 0.02 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.02:
                state.late += 1
            await s.push("mic", AudioChunk(bank[(k + i * 7) % len(bank)], RATE, k * 0.02))
            state.chunks += 1
        await s.end("mic")

    live = None
    if opts.live:
        from rich.live import Live

        live = Live(console=console, refresh_per_second=4, transient=True)
        live.start()

    async def display() -> None:
        while True:
            await asyncio.sleep(0.25)
            out = state.out + state.proc_out
            segs = state.segments + state.proc_segments
            text = (
                f"[bold]pipeline[/]  {n} streams + 1 with a process VAD"
                f"   chunks in {state.chunks:,}   out {out:,}   speech segments {segs:,}"
            )
            if live is not None:
                live.update(text)

    shown = asyncio.create_task(display())
    try:
        await asyncio.gather(*(feed(i, s) for i, s in enumerate(sessions)), feed(n, proc_session))
        for s in [*sessions, proc_session]:
            await s.drain()
    finally:
        shown.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shown
        if live is not None:
            live.stop()
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - t0
        for s in [*sessions, proc_session]:
            await s.close()
    vad = sessions[0].metrics.node("vad")
    rs = sessions[0].metrics.node("resample")
    return {
        "streams": n,
        "seconds": wall,
        "chunks_in": state.chunks,
        "chunks_out": state.out + state.proc_out,
        "segments": state.segments + state.proc_segments,
        "process_stream_chunks": state.proc_out,
        "process_stream_segments": state.proc_segments,
        "late_pushes": state.late,
        "cpu_share": cpu / wall if wall > 0 else math.nan,
        "vad_p50_us": vad.p50 * 1e6,
        "vad_p99_us": vad.p99 * 1e6,
        "resample_p50_us": rs.p50 * 1e6,
        "prometheus_sample": sessions[0].metrics.prometheus().splitlines()[:3],
    }


def run(opts: argparse.Namespace, console: Any) -> dict[str, Any]:
    """Run the tour for ``opts.duration`` seconds; returns the summary (see showcase.py)."""
    try:
        import isthmus.pipeline  # noqa: F401
    except ImportError as e:
        return {
            "tour": "pipeline",
            "ok": True,
            "interrupted": False,
            "errors": [],
            "rows": [("skipped", str(e))],
            "metrics": {"skipped": str(e)},
        }
    state = _State()
    interrupted = False
    errors: list[str] = []
    metrics: dict[str, Any] = {}
    try:
        metrics = asyncio.run(_main(opts, console, state))
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:  # report, do not crash the showcase
        log.exception("pipeline tour failed")
        errors.append(repr(e))
    expected = state.chunks
    got = metrics.get("chunks_out", 0)
    return {
        "tour": "pipeline",
        "ok": not errors and got > 0,
        "interrupted": interrupted,
        "errors": errors,
        "rows": [
            ("streams", f"{metrics.get('streams', 0)} + 1 with its VAD in a child process"),
            ("chunks in / out", f"{expected:,} / {got:,}"),
            ("speech segments", f"{metrics.get('segments', 0):,}"),
            (
                "process-VAD stream",
                f"{metrics.get('process_stream_chunks', 0):,} chunks, "
                f"{metrics.get('process_stream_segments', 0):,} segments",
            ),
            (
                "VAD latency p50 / p99",
                f"{metrics.get('vad_p50_us', math.nan):.1f} / "
                f"{metrics.get('vad_p99_us', math.nan):.1f} µs",
            ),
            ("resample latency p50", f"{metrics.get('resample_p50_us', math.nan):.1f} µs"),
            ("pushes more than 20 ms late", f"{metrics.get('late_pushes', 0):,}"),
            ("CPU (one core = 100%)", f"{metrics.get('cpu_share', math.nan) * 100:.0f}%"),
        ],
        "metrics": metrics,
    }
