"""The ``buffer`` tour: two processes stream audio-like messages through an ``isthmus.buffer.Ring``.

* The producer loans space in the ring, writes a message in place (by default 3,840 bytes: 20 ms of
  48 kHz float32 audio, a 440 Hz tone), stamps ``time.perf_counter_ns()`` and a sequence number into
  its first 16 bytes, and commits.  ``--rate`` paces it; by default it goes as fast as it can.
* The consumer receives each message as a zero-copy, read-only view of the ring, computes the
  one-way latency from the stamp (the clock is system-wide), checks the sequence, releases it, and
  reports to this process a few times a second.
* This process draws the live figures and prints the summary.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import struct
import time
from array import array
from typing import Any

from ._proc import CTX, Worker, start_live, watch
from ._stats import Batch, LatencyHistogram, Window

TITLE = "buffer: a zero-copy shared-memory ring between two processes"
log = logging.getLogger("showcase.buffer")

HEADER = struct.Struct("<qQ")  # stamp (perf_counter_ns), sequence number
REPORT_EVERY_NS = 250_000_000  # consumer -> parent reports
STOP_CHECK_EVERY = 64  # producer looks at the stop flag every N messages


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--size",
        type=int,
        default=3840,
        metavar="BYTES",
        help="message size (default 3840: 20 ms of 48 kHz float32 audio; >= 16)",
    )
    group.add_argument(
        "--spin",
        type=float,
        default=0.0,
        metavar="µs",
        help="busy-wait this many microseconds before sleeping on the futex "
        "(default 0: sleep at once; try 50 for lower latency)",
    )
    group.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="MSGS/S",
        help="pace the producer (e.g. 50 for real-time 20 ms audio); "
        "default 0: as fast as possible",
    )
    group.add_argument(
        "--capacity",
        type=int,
        default=256 * 1024,
        metavar="BYTES",
        help="ring capacity (default 256 KiB)",
    )


# --- the two child processes ---------------------------------------------------------------------


def _audio_payload(size: int) -> bytes:
    """``size`` bytes of a 440 Hz float32 tone at 48 kHz (what a 20 ms audio chunk looks like)."""
    n = max(1, size // 4)
    tone = array("f", (0.25 * math.sin(2 * math.pi * 440 * i / 48000) for i in range(n))).tobytes()
    return (tone * (size // len(tone) + 1))[:size]


def producer(args: dict[str, Any]) -> dict[str, Any]:
    from isthmus.buffer import IMPLEMENTATION, Ring, RingClosedError, WaitTimeoutError

    size, rate = args["size"], args["rate"]
    payload = _audio_payload(size)
    stop, ready = args["stop"], args["ready"]
    ring = Ring.create(args["ring"], args["capacity"], spin=args["spin"])
    sent = 0
    try:
        if not ready.wait(30):
            raise TimeoutError("the consumer did not open the ring within 30 s")
        loan, commit, pack, now = ring.loan, ring.commit, HEADER.pack_into, time.perf_counter_ns
        interval = 1.0 / rate if rate > 0 else 0.0
        next_t = time.perf_counter()
        while True:
            if sent % STOP_CHECK_EVERY == 0 and stop.is_set():
                break
            try:
                buf = loan(size, timeout=0.2)
            except WaitTimeoutError:  # ring full: the consumer is behind; look at the stop flag
                if stop.is_set():
                    break
                continue
            memoryview(buf)[:] = payload
            pack(buf, 0, now(), sent)
            del buf
            commit()
            sent += 1
            if interval:
                next_t += interval
                delay = next_t - time.perf_counter()
                if delay > 0:
                    if stop.wait(delay):
                        break
                else:
                    next_t = time.perf_counter()  # fell behind: don't burst to catch up
    except RingClosedError:
        log.warning("the consumer closed the ring")
    finally:
        ring.close()
    return {"sent": sent, "implementation": IMPLEMENTATION}


def consumer(args: dict[str, Any]) -> dict[str, Any]:
    from isthmus.buffer import IMPLEMENTATION, Ring, RingClosedError, WaitTimeoutError

    report = args["report"]
    ring = Ring.open(args["ring"], spin=args["spin"], timeout=30.0)
    try:
        args["ready"].set()
        report.send(("hello", IMPLEMENTATION))
        recv, unpack, now = ring.recv, HEADER.unpack_from, time.perf_counter_ns
        lat = array("q")
        count = nbytes = lost = 0
        expected = 0
        last_report = now()
        while True:
            try:
                m = recv(timeout=0.25)
            except WaitTimeoutError:
                m = None
            except RingClosedError:
                break
            t = now()
            if m is not None:
                stamp, seq = unpack(m, 0)
                nbytes += m.nbytes
                m.release()
                lat.append(t - stamp)
                count += 1
                if seq != expected:
                    lost += max(0, seq - expected)
                expected = seq + 1
            if t - last_report >= REPORT_EVERY_NS:
                report.send(("batch", count, nbytes, lost, lat.tobytes(), ring.pending))
                lat = array("q")
                count = nbytes = lost = 0
                last_report = t
        report.send(("batch", count, nbytes, lost, lat.tobytes(), 0))
    finally:
        ring.close()
    report.send(("done",))
    return {"implementation": IMPLEMENTATION}


# --- this process: display and summary -----------------------------------------------------------


def _us(ns: float) -> str:
    return "n/a" if math.isnan(ns) else f"{ns / 1000:,.1f} µs"


class _State:
    def __init__(self, capacity: int) -> None:
        self.hist = LatencyHistogram()
        self.window = Window(1.0)
        self.messages = 0
        self.nbytes = 0
        self.lost = 0
        self.pending = 0
        self.capacity = capacity
        self.implementation = "?"
        self.started = time.monotonic()
        self.done = False

    def take(self, msg: tuple[Any, ...]) -> None:
        import numpy as np

        kind = msg[0]
        if kind == "hello":
            self.implementation = msg[1]
            self.started = self.window.started = time.monotonic()
        elif kind == "batch":
            _, count, nbytes, lost, raw, pending = msg
            lat = np.frombuffer(raw, dtype=np.int64)
            self.window.add(Batch(time.monotonic(), count, nbytes, lat))
            self.hist.add(lat)
            self.messages += count
            self.nbytes += nbytes
            self.lost += lost
            self.pending = pending
        elif kind == "done":
            self.done = True

    def live_table(self, opts: argparse.Namespace, elapsed: float) -> Any:
        from rich.panel import Panel
        from rich.table import Table

        mps, bps = self.window.rates()
        p50, p99 = self.window.percentiles_ns(50, 99)
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold")
        t.add_column(justify="right")
        t.add_row("elapsed", f"{elapsed:5.1f} / {opts.duration:g} s")
        t.add_row("throughput", f"{mps:,.0f} msgs/s   {bps / 1e6:,.1f} MB/s")
        t.add_row("latency (last 1 s)", f"p50 {_us(p50)}   p99 {_us(p99)}")
        t.add_row("messages", f"{self.messages:,}   ({self.nbytes / 1e6:,.1f} MB)")
        fill = 100.0 * self.pending / self.capacity if self.capacity else 0.0
        t.add_row("ring fill", f"{fill:4.0f} % of {self.capacity // 1024:,} KiB")
        t.add_row("lost / out of order", f"{self.lost}")
        return Panel(
            t,
            title=f"[b]buffer tour[/b] · {self.implementation} · "
            f"{opts.size:,} B messages · spin {opts.spin:g} µs",
            expand=False,
        )

    def log_line(self, elapsed: float) -> None:
        mps, bps = self.window.rates()
        p50, p99 = self.window.percentiles_ns(50, 99)
        log.info(
            "%5.1f s: %s msgs/s, %.1f MB/s, latency p50 %s p99 %s, %s messages",
            elapsed,
            f"{mps:,.0f}",
            bps / 1e6,
            _us(p50),
            _us(p99),
            f"{self.messages:,}",
        )


def run(opts: argparse.Namespace, console: Any) -> dict[str, Any]:
    """Run the tour for ``opts.duration`` seconds; returns the summary (see showcase.py)."""
    from isthmus.buffer import sweep_stale_segments

    if opts.size < HEADER.size:
        raise SystemExit(f"--size must be at least {HEADER.size} bytes")
    ring_name = f"showcase-{os.getpid()}-buffer"
    stop, ready = CTX.Event(), CTX.Event()
    report_r, report_w = CTX.Pipe(duplex=False)
    common = {"ring": ring_name, "spin": opts.spin * 1e-6, "ready": ready}
    state = _State(opts.capacity)
    interrupted = False
    errors: list[str] = []

    log.info(
        "starting producer and consumer over ring %r (%d-byte messages, spin %g µs, %s)",
        ring_name,
        opts.size,
        opts.spin,
        f"{opts.rate:g} msgs/s" if opts.rate else "as fast as possible",
    )
    cons = Worker("consumer", __name__, "consumer", {**common, "report": report_w})
    prod = Worker(
        "producer",
        __name__,
        "producer",
        {**common, "stop": stop, "size": opts.size, "rate": opts.rate, "capacity": opts.capacity},
    )
    report_w.close()
    workers = (prod, cons)

    def pump(timeout: float) -> None:
        if report_r.poll(timeout):
            while report_r.poll():
                try:
                    state.take(report_r.recv())
                except EOFError:
                    return

    live = start_live(opts, console, state)
    try:
        watch(
            opts,
            state,
            workers,
            pump,
            live,
            lambda: state.implementation != "?",
            "the consumer did not start",
        )
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: stopping the producer and draining the ring")
    except RuntimeError as exc:
        errors.append(str(exc).splitlines()[0])
        log.error("%s", exc)
    finally:
        elapsed = time.monotonic() - state.started
        stop.set()
        try:
            # The producer stops and closes the ring; the consumer drains it, reports, and exits.
            t_end = time.monotonic() + 10
            while not state.done and time.monotonic() < t_end:
                if not cons.process.is_alive() and not report_r.poll():
                    break
                pump(0.1)
            for w in workers:
                outcome = w.join(5.0)
                if outcome is not None and outcome[0] == "error" and not errors:
                    errors.append(f"{w.name}: {outcome[1]}")
        except KeyboardInterrupt:
            log.warning("interrupted again: terminating the children")
        forced = [w.stop() for w in workers]
        if live is not None:
            live.update(state.live_table(opts, min(elapsed, opts.duration)))
            live.stop()
        report_r.close()
        if any(forced):
            removed = sweep_stale_segments(only=ring_name)
            if removed:
                log.warning("removed the shared memory the stopped children left: %s", removed)

    h = state.hist
    return {
        "tour": "buffer",
        "ok": not errors and h.total > 0,
        "interrupted": interrupted,
        "errors": errors,
        "rows": [
            ("implementation", state.implementation),
            ("message size", f"{opts.size:,} B"),
            ("spin", f"{opts.spin:g} µs"),
            ("pacing", f"{opts.rate:g} msgs/s" if opts.rate else "as fast as possible"),
            ("duration", f"{elapsed:.1f} s"),
            ("messages", f"{state.messages:,}"),
            ("bytes", f"{state.nbytes:,} ({state.nbytes / 1e6:,.1f} MB)"),
            (
                "throughput",
                f"{state.messages / elapsed:,.0f} msgs/s, {state.nbytes / elapsed / 1e6:,.1f} MB/s"
                if elapsed > 0
                else "n/a",
            ),
            ("latency p50", _us(h.percentile_ns(50))),
            ("latency p90", _us(h.percentile_ns(90))),
            ("latency p99", _us(h.percentile_ns(99))),
            ("latency max", _us(h.max_ns if h.total else math.nan)),
            ("lost / out of order", f"{state.lost}"),
        ],
        "metrics": {
            "messages": state.messages,
            "bytes": state.nbytes,
            "seconds": elapsed,
            "latency_p50_us": h.percentile_ns(50) / 1000,
            "latency_p90_us": h.percentile_ns(90) / 1000,
            "latency_p99_us": h.percentile_ns(99) / 1000,
            "latency_max_us": (h.max_ns / 1000) if h.total else math.nan,
            "lost": state.lost,
            "implementation": state.implementation,
        },
    }
