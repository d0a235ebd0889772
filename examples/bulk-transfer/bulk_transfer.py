#!/usr/bin/env python3
"""Move numpy arrays from one process to another with isthmus.transport, check them, time them.

    python examples/bulk-transfer/bulk_transfer.py                  # 100 x 64 MiB to a child
    python examples/bulk-transfer/bulk_transfer.py --size 1MiB --count 5000 --backend shm
    python examples/bulk-transfer/bulk_transfer.py --size 8 --count 10000 --pingpong
    python examples/bulk-transfer/bulk_transfer.py --json           # one JSON object on stdout

On two machines (the sender listens, prints the figures and exits; the receiver connects):

    A$ python bulk_transfer.py --role server --host 0.0.0.0 --port 5555 --size 64MiB --count 100
    B$ python bulk_transfer.py --role client --host A --port 5555

The sender is an ``isthmus.transport.Server``, the receiver a ``Client``.  Each run starts with
a START message (size, depth, options); the receiver posts ``--depth`` receives into arrays it
allocated beforehand and answers READY; the sender then sends ``--count`` messages from
``--depth`` arrays of its own, never changing one while its send is in flight; END says how many
were sent and the receiver answers with a REPORT (what arrived, its checksum, its transports).

Checksum: the payload is random; the first 8 bytes of message ``i`` are ``i`` (the receiver checks
the order with them).  :func:`fingerprint` sums the 64-bit words of every 4 KiB block and weights
each block sum by its position: one pass over memory, and a lost, zeroed, stale, truncated or
misplaced block, or any changed word, changes it.

Exit status: 0 when every message arrived intact and in order; 1 when not or on an error; 2 for bad
options; 130 after Ctrl-C or SIGTERM (what was measured is still printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isthmus.transport import (
    BACKENDS,
    Client,
    ConnectionLostError,
    Server,
    ServerEndpoint,
    TransportClosedError,
)

log = logging.getLogger("bulk_transfer")

# Tags: one per kind of message, matched with the full mask (the default).
T_START, T_READY, T_DATA, T_END, T_REPORT, T_ECHO = range(1, 7)
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
BLOCK_WORDS = 512  # 4 KiB blocks for the fingerprint
MASK64 = (1 << 64) - 1


# ------------------------------------------------------------------------------------------
# payload and checksum
# ------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``65536``, ``64KiB``, ``64K`` (binary), ``64KB`` (decimal), likewise M and G."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(i?B?)\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8, 64KiB, 1MB, 64MiB)")
    number, prefix, suffix = m.groups()
    power = " KMG".index(prefix.upper() or " ")
    base = 1000 if suffix.upper() == "B" and prefix else 1024
    return int(float(number) * base**power)


def human(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


def payload(size: int, seed: int = 0) -> np.ndarray:
    """Random bytes whose first 8 (the message number) are zero."""
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    data[:8] = 0
    return data


def fingerprint(data: np.ndarray) -> int:
    """Position-weighted sum of the 64-bit words, mod 2**64 (block ``b`` weighs ``b + 1``)."""
    n = data.nbytes - data.nbytes % 8
    words = data[:n].view("<u8")
    full = len(words) // BLOCK_WORDS * BLOCK_WORDS
    sums = words[:full].reshape(-1, BLOCK_WORDS).sum(axis=1, dtype=np.uint64)
    weights = np.arange(1, len(sums) + 1, dtype=np.uint64)
    total = int((sums * weights).sum(dtype=np.uint64))
    tail = int(words[full:].sum(dtype=np.uint64)) + int.from_bytes(data[n:].tobytes(), "little")
    return (total + (len(sums) + 1) * tail) & MASK64


# ------------------------------------------------------------------------------------------
# what one run is and what it measured
# ------------------------------------------------------------------------------------------


@dataclass
class Settings:
    size: int = 64 << 20
    count: int | None = 100  # stop after this many messages ...
    duration: float | None = None  # ... or after this many seconds (at least one message)
    depth: int = 2  # messages in flight (sender) and receives posted ahead (receiver)
    pingpong: bool = False  # the receiver echoes each message; one in flight; round-trip times
    verify: bool = True  # checksum every message (one extra pass over memory per message)
    seed: int = 0


@dataclass
class Run:
    settings: Settings
    messages: int = 0  # sent (and, once the report is in, received)
    seconds: float = 0.0
    checksum_sent: int = 0
    receiver: dict[str, Any] = field(default_factory=dict)  # its READY: pid, transports
    report: dict[str, Any] = field(default_factory=dict)  # its REPORT: what arrived
    rtt_ns: list[int] = field(default_factory=list)
    sender_transports: list[tuple[str, str]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return self.messages * self.settings.size

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9 if self.seconds else 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def checksum_ok(self) -> bool:
        return bool(self.report) and self.report["checksum"] == self.checksum_sent

    @property
    def ok(self) -> bool:
        r = self.report
        return (
            self.messages > 0
            and r.get("messages") == self.messages
            and r.get("bytes") == self.nbytes
            and bool(r.get("in_order"))
            and (self.checksum_ok or not self.settings.verify)
        )

    def rtt_us(self) -> dict[str, float] | None:
        if not self.rtt_ns:
            return None
        q = np.percentile(np.asarray(self.rtt_ns) / 1e3, [0, 50, 99])
        return {"min": float(q[0]), "p50": float(q[1]), "p99": float(q[2])}

    def to_dict(self) -> dict[str, Any]:
        s, r = self.settings, self.report
        return {
            "ok": self.ok,
            "size": s.size,
            "messages": self.messages,
            "bytes": self.nbytes,
            "seconds": self.seconds,
            "gb_per_s": self.gbps,
            "messages_per_s": self.rate,
            "depth": s.depth,
            "pingpong": s.pingpong,
            "rtt_us": self.rtt_us(),
            "checksum": {
                "verified": s.verify,
                "sent": self.checksum_sent,
                "received": r.get("checksum"),
                "ok": self.checksum_ok,
            },
            "received": {k: r.get(k) for k in ("messages", "bytes", "in_order")},
            "transports": {
                "receiver": self.receiver.get("transports", []),  # its Client.transports()
                "sender": self.sender_transports,  # ServerEndpoint.view_transports()
            },
            "receiver_pid": self.receiver.get("pid"),
        }


# ------------------------------------------------------------------------------------------
# the receiver: an isthmus.transport Client
# ------------------------------------------------------------------------------------------


async def receive(client: Client) -> int:
    """Take part in runs until the sender closes the connection; returns how many there were.

    Raises ConnectionLostError when the sender goes away in the middle of a run."""
    ctrl = bytearray(4096)
    runs = 0
    while True:
        try:
            _, n = await client.arecv(ctrl, T_START)
        except (ConnectionLostError, TransportClosedError):
            return runs  # the sender is done (closed) or gone: so are we
        report = await _receive_run(client, json.loads(ctrl[:n]))
        await client.asend(json.dumps(report).encode(), T_REPORT)
        runs += 1


async def _receive_run(client: Client, start: dict[str, Any]) -> dict[str, Any]:
    size: int = start["size"]
    bufs = [np.empty(size, np.uint8) for _ in range(start["depth"])]
    for buf in bufs:
        buf.fill(0)  # touch every page now rather than during the run
    ctrl = bytearray(4096)
    end = client.arecv(ctrl, T_END)
    # Receives posted before the messages arrive: the bytes land in these arrays directly.
    posted = deque((buf, client.arecv(buf, T_DATA)) for buf in bufs)
    ready = {"pid": os.getpid(), "transports": client.transports()}
    await client.asend(json.dumps(ready).encode(), T_READY)
    received = checksum = 0
    in_order = True
    count: int | None = None  # known once END arrives
    try:
        while count is None or received < count:
            buf, fut = posted[0]
            waiting = {fut} if count is not None else {fut, end}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if count is None and end.done():
                count = json.loads(ctrl[: end.result()[1]])["count"]
            if not fut.done():
                continue
            posted.popleft()
            _, n = fut.result()  # raises ConnectionLostError if the sender went away
            in_order &= n == size and int(buf[:8].view("<u8")[0]) == received
            if start["verify"]:
                checksum = (checksum + fingerprint(buf)) & MASK64
            if start["pingpong"]:
                await client.asend(buf, T_ECHO)
            received += 1
            posted.append((buf, client.arecv(buf, T_DATA)))
    finally:
        # Receives left over: cancelled, their buffers are never written to again.
        for _, fut in posted:
            fut.cancel()
        end.cancel()
    return {
        "messages": received,
        "bytes": received * size,
        "checksum": checksum,
        "in_order": in_order,
    }


async def run_receiver(
    host: str, port: int, backend: str, spin: float | None, timeout: float
) -> int:
    """Connect (retrying for ``timeout`` s while the sender starts) and receive until it closes."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # so that the Client is closed
    client = Client(backend=backend, spin=spin)
    try:
        deadline = time.monotonic() + timeout
        while not client.connected:
            try:
                await client.aconnect(host, port)
            except ConnectionLostError as exc:
                if time.monotonic() > deadline:
                    log.error("%s", exc)
                    return EXIT_FAILED
                await asyncio.sleep(0.2)
        log.info("connected to %s:%d; transports %s", host, port, client.transports())
        runs = await receive(client)
        log.info("the sender closed the connection after %d run(s)", runs)
        return 0
    except ConnectionLostError as exc:
        log.warning("the sender stopped in the middle of a run: %s", exc)
        return EXIT_FAILED
    except asyncio.CancelledError:  # SIGTERM (or Ctrl-C with --role client)
        return EXIT_INTERRUPTED
    finally:
        await client.aclose(drain=False)


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGTERM when the parent dies, even by SIGKILL; a lost connection covers the
    rest (the receiver's receives fail with ConnectionLostError and it exits)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        raise SystemExit(1)


def receiver_main(
    host: str, port: int, backend: str, spin: float | None, parent: int, level: int
) -> None:
    """Entry point of the spawned receiving process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sender's: it closes, we follow
    logging.basicConfig(level=level, format="receiver %(levelname)s %(name)s: %(message)s")
    _die_with_parent(parent)
    sys.exit(asyncio.run(run_receiver(host, port, backend, spin, timeout=10.0)))


# ------------------------------------------------------------------------------------------
# the sender: an isthmus.transport Server
# ------------------------------------------------------------------------------------------


async def wait_for(fut: asyncio.Future[Any], ep: ServerEndpoint, what: str) -> Any:
    """Await a Server-side receive, failing if the receiver goes away meanwhile (a Server's
    receive takes a message from any client, so losing one client does not fail it)."""
    loop = asyncio.get_running_loop()
    gone = False
    timer: asyncio.TimerHandle

    def check() -> None:
        nonlocal gone, timer
        if ep.connected:
            timer = loop.call_later(0.25, check)
        else:
            gone = True
            fut.cancel()  # withdraws the receive

    timer = loop.call_later(0.25, check)
    try:
        return await fut
    except asyncio.CancelledError:
        if gone:
            raise ConnectionLostError(f"the receiver went away before {what}") from None
        raise
    finally:
        timer.cancel()


async def send_run(
    server: Server,
    ep: ServerEndpoint,
    run: Run,
    progress: Callable[[Run], None] | None = None,
) -> Run:
    """Send one run of messages to the receiver at ``ep`` and collect its report into ``run``."""
    s = run.settings
    depth = 1 if s.pingpong else s.depth
    first = payload(s.size, s.seed)
    base = fingerprint(first) if s.verify else 0
    bufs = [first] + [first.copy() for _ in range(depth - 1)]
    stamps = [buf[:8].view("<u8") for buf in bufs]
    ctrl = bytearray(4096)
    echo = np.empty(s.size if s.pingpong else 0, np.uint8)
    start = {"size": s.size, "depth": s.depth, "verify": s.verify, "pingpong": s.pingpong}
    await server.asend(ep, json.dumps(start).encode(), T_START)
    _, length = await wait_for(server.arecv(ctrl, T_READY), ep, "READY")
    run.receiver = json.loads(ctrl[:length])
    run.sender_transports = ep.view_transports()
    pending: list[asyncio.Future[None] | None] = [None] * depth
    t0 = time.perf_counter()
    try:
        while s.count is None or run.messages < s.count:
            if s.duration is not None and run.messages and time.perf_counter() - t0 >= s.duration:
                break
            i = run.messages
            slot = i % depth
            previous = pending[slot]
            if previous is not None:
                await previous  # that send completed: its array may change now
            stamps[slot][0] = i
            if s.pingpong:
                echoed = server.arecv(echo, T_ECHO)  # posted first: the echo lands in `echo`
            sent_ns = time.perf_counter_ns()
            pending[slot] = server.asend(ep, bufs[slot], T_DATA)
            if s.pingpong:
                await wait_for(echoed, ep, "an echo")
                run.rtt_ns.append(time.perf_counter_ns() - sent_ns)
            run.messages = i + 1
            run.seconds = time.perf_counter() - t0
            if progress is not None:
                progress(run)
        for fut in pending:
            if fut is not None:
                await fut
    finally:
        for fut in pending:  # after an error or Ctrl-C: withdraw the sends still in flight
            if fut is not None and not fut.cancel() and not fut.cancelled():
                fut.exception()  # retrieved: no "exception was never retrieved" at exit
    n = run.messages
    run.checksum_sent = (n * base + n * (n - 1) // 2) & MASK64 if s.verify else 0  # word 0 = i
    await server.asend(ep, json.dumps({"count": n}).encode(), T_END)
    _, length = await wait_for(server.arecv(ctrl, T_REPORT), ep, "the REPORT")
    run.seconds = time.perf_counter() - t0  # until the receiver confirmed the last message
    run.report = json.loads(ctrl[:length])
    return run


def start_receiver(host: str, port: int, backend: str, spin: float | None) -> Any:
    """Spawn the receiving process (a fresh interpreter: nothing inherited by accident)."""
    mp = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    child = mp.Process(
        target=receiver_main,
        args=(host, port, backend, spin, os.getpid(), level),
        name="bulk-transfer-receiver",
        daemon=True,  # terminated at interpreter exit whatever happens here
    )
    child.start()
    return child


def reap(child: Any, grace: float = 10.0) -> None:
    """Join the receiver; terminate, then kill it, if it does not exit by itself."""
    child.join(grace)
    if child.is_alive():
        log.warning("the receiver did not exit; terminating it")
        child.terminate()
        child.join(2.0)
    if child.is_alive():
        child.kill()
        child.join(2.0)


@contextlib.asynccontextmanager
async def connected(
    backend: str,
    *,
    spin: float | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    spawn: bool = True,
    timeout: float = 30.0,
) -> AsyncIterator[tuple[Server, ServerEndpoint]]:
    """A listening Server and its one receiver, spawned here unless ``spawn`` is false (then it
    is started by hand: ``--role client``).  On exit the Server closes, after its in-flight sends;
    the receiver's next receive fails with ConnectionLostError, and it exits."""
    server = Server(backend=backend, spin=spin)
    server.listen(host, port)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    child = start_receiver(local, server.port, backend, spin) if spawn else None
    accepted: asyncio.Future[ServerEndpoint] = asyncio.get_running_loop().create_future()

    def on_accept(ep: ServerEndpoint) -> None:
        if not accepted.done():
            accepted.set_result(ep)

    server.set_accept_cb(on_accept)
    try:
        if child is None:
            log.info("listening on %s:%d; waiting for the receiver", *server.address)
        deadline = time.monotonic() + timeout
        while not accepted.done():
            await asyncio.wait({accepted}, timeout=0.1)
            if child is not None and child.exitcode is not None:
                raise ConnectionLostError(f"the receiver exited with code {child.exitcode}")
            if child is not None and time.monotonic() > deadline:
                raise ConnectionLostError(f"the receiver did not connect within {timeout:g} s")
        yield server, accepted.result()
    finally:
        await server.aclose(timeout=5.0)
        if child is not None:
            await asyncio.get_running_loop().run_in_executor(None, reap, child)


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


async def run_sender(opts: argparse.Namespace, settings: Settings) -> tuple[Run, bool]:
    """The sending side of the command line: (what was measured, interrupted?)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    run = Run(settings)
    bar = _progress_bar(opts, settings)
    try:
        async with connected(
            opts.backend,
            spin=_seconds(opts.spin_us),
            host=opts.host,
            port=opts.port,
            spawn=opts.role is None,
            timeout=opts.timeout,
        ) as (server, ep):
            log.info(
                "sending %s x %s to pid %d, backend %s",
                settings.count if settings.count is not None else "∞",
                human(settings.size),
                ep.peer_pid,
                opts.backend,
            )
            with bar or contextlib.nullcontext():
                await send_run(server, ep, run, bar.update if bar else None)
    except asyncio.CancelledError:  # Ctrl-C (asyncio.run cancels us) or SIGTERM
        return run, True
    return run, False


class _Bar:
    """A rich progress bar on stderr, refreshed at most ten times a second."""

    def __init__(self, settings: Settings) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} / {task.total:,.0f} messages  {task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("sending", total=settings.count, rate="")
        self.last = time.monotonic()

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, run: Run) -> None:
        now = time.monotonic()
        if now - self.last >= 0.1:
            self.last = now
            rate = f"{run.gbps:.2f} GB/s" if run.settings.size >= 4096 else f"{run.rate:,.0f}/s"
            self.progress.update(self.task, completed=run.messages, rate=rate)


def _progress_bar(opts: argparse.Namespace, s: Settings) -> _Bar | None:
    """A bar for long runs (1 GiB or more) when stderr is a terminal."""
    long_run = s.count is not None and s.count * s.size >= 1 << 30
    return _Bar(s) if long_run and sys.stderr.isatty() and not opts.json else None


def print_report(run: Run, interrupted: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    s, d = run.settings, run.to_dict()
    table = Table(title=f"bulk transfer, {human(s.size)} messages", title_justify="left")
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    table.add_row("messages", f"{run.messages:,} ({run.nbytes / 1e9:,.3f} GB)")
    table.add_row("time", f"{run.seconds:,.3f} s")
    table.add_row("throughput", f"{run.gbps:,.2f} GB/s, {run.rate:,.0f} messages/s")
    rtt = run.rtt_us()
    if rtt is not None:
        table.add_row("round trip", f"p50 {rtt['p50']:,.1f} µs, p99 {rtt['p99']:,.1f} µs")
    if interrupted:
        table.add_row("checksum", "not compared (interrupted)")
    elif s.verify:
        verdict = "ok" if run.checksum_ok else "MISMATCH"
        table.add_row("checksum", f"{d['checksum']['received']:#018x} ({verdict})")
    else:
        table.add_row("checksum", "not verified (--no-verify)")
    if not interrupted:
        table.add_row("in order", "yes" if d["received"]["in_order"] else "NO")
    receiver, sender = d["transports"]["receiver"], d["transports"]["sender"]
    table.add_row("transports", describe_transports(receiver))
    if [list(p) for p in sender] != [list(p) for p in receiver]:
        table.add_row("sender's transports", describe_transports(sender))
    Console().print(table)


def describe_transports(pairs: list[Any]) -> str:
    """``[("eager", "unix"), ("eager", "shm-ring"), ...]`` as ``eager unix+shm-ring; ...``."""
    by_purpose: dict[str, list[str]] = {}
    for purpose, transport in pairs:
        by_purpose.setdefault(purpose, []).append(transport)
    return "; ".join(f"{p} {'+'.join(t)}" for p, t in by_purpose.items()) or "—"


EPILOG = """\
examples:
  bulk_transfer.py                                     # 100 x 64 MiB to a child process
  bulk_transfer.py --size 1MiB --count 5000 --backend shm
  bulk_transfer.py --size 8 --count 10000 --pingpong   # round-trip latency
  two machines (start either first):
    A$ bulk_transfer.py --role server --host 0.0.0.0 --port 5555 --count 100
    B$ bulk_transfer.py --role client --host A --port 5555

exit status: 0 every message arrived intact and in order, 1 not (or an error),
2 bad options, 130 Ctrl-C or SIGTERM (what was measured is still printed).
"""


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="bulk_transfer.py",
        description="Move numpy arrays from this process to another with isthmus.transport, "
        "check every one, and print the throughput and the transports in use.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=d.size,
        help="bytes per message, e.g. 8, 64KiB, 1MB, 64MiB (default 64MiB)",
    )
    p.add_argument("--count", type=int, default=d.count, help=f"messages to send ({d.count})")
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds even if some remain"
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("ISTHMUS_TRANSPORT_BACKEND", "auto"),
        help="auto: CMA or shared memory on one host, TCP across hosts (default auto)",
    )
    p.add_argument(
        "--depth", type=int, default=d.depth, help=f"messages in flight (default {d.depth})"
    )
    p.add_argument(
        "--pingpong",
        action="store_true",
        help="the receiver echoes every message back: one in flight, round-trip times",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the checksum (an extra pass over every message in the receiver)",
    )
    p.add_argument(
        "--spin-us",
        type=float,
        metavar="US",
        help="after traffic, keep polling this long before sleeping "
        "(default: the library's, or ISTHMUS_TRANSPORT_SPIN_US; 0: never poll)",
    )
    p.add_argument(
        "--role",
        choices=["server", "client"],
        help="run one half: server = sender (listens), client = receiver (connects); "
        "default: both, the receiver in a child process",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen on / connect to (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default: any free one; 5555 with --role)")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long the receiver keeps trying to connect (default 30; --role server waits "
        "for its receiver until Ctrl-C)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(INFO)"
    )
    return p


def _seconds(us: float | None) -> float | None:
    return None if us is None else us * 1e-6


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.size < 8 or opts.count < 1 or opts.depth < 1:
        parser.error("--size must be at least 8 bytes, --count and --depth at least 1")
    if opts.port is None:
        opts.port = 5555 if opts.role else 0
    logging.basicConfig(
        level=opts.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    if opts.role == "client":
        return asyncio.run(
            run_receiver(opts.host, opts.port, opts.backend, _seconds(opts.spin_us), opts.timeout)
        )
    settings = Settings(
        size=opts.size,
        count=opts.count,
        duration=opts.duration,
        depth=opts.depth,
        pingpong=opts.pingpong,
        verify=opts.verify,
    )
    try:
        run, interrupted = asyncio.run(run_sender(opts, settings))
    except (ConnectionLostError, TransportClosedError, OSError) as exc:
        log.error("%s", exc)
        if opts.json:
            print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return EXIT_FAILED
    if interrupted:
        log.warning("interrupted after %d messages", run.messages)
    if opts.json:
        print(json.dumps({**run.to_dict(), "backend": opts.backend, "interrupted": interrupted}))
    else:
        print_report(run, interrupted)
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if run.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
