"""The ``transport`` tour: tagged messages between two processes, on every backend, timed.

For each backend (``auto``, ``cma``, ``shm``, ``tcp`` by default) this process opens an
``isthmus.transport.Server`` and spawns a receiving process whose ``Client`` connects to it; then,
over that one connection, it runs ``examples/bulk-transfer/bulk_transfer.py``'s ``send_run``:

* 8-byte messages in ping-pong (the receiver echoes each one): the round-trip latency;
* 64 KiB, 1 MiB and 64 MiB messages streamed with two in flight: GB/s and messages/s, every
  message checked (order and checksum) by the receiver.

The table fills in live, one cell at a time; each cell gets an equal share of ``--duration``.  A
row says which transports each connection picked (``Client.transports()``): a Unix socket for
control and small messages, the shared-memory ring for same-host messages from 8 KiB, one-copy
``process_vm_readv`` (CMA) from 4 MiB, TCP when forced.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

TITLE = "transport: tagged messages between two processes over CMA, shared memory and TCP"
log = logging.getLogger("showcase.transport")

EXAMPLE = Path(__file__).resolve().parents[2] / "bulk-transfer"
LATENCY_SIZE = 8


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--transport-backends",
        default="auto,cma,shm,tcp",
        metavar="LIST",
        help="backends to compare, comma-separated (default auto,cma,shm,tcp)",
    )
    group.add_argument(
        "--transport-sizes",
        default="64KiB,1MiB,64MiB",
        metavar="LIST",
        help="message sizes streamed for GB/s, after the 8 B round trip (default 64KiB,1MiB,64MiB)",
    )
    group.add_argument(
        "--transport-depth",
        type=int,
        default=2,
        metavar="N",
        help="messages in flight while streaming (default 2)",
    )
    group.add_argument(
        "--transport-spin-us",
        type=float,
        metavar="µs",
        help="after traffic, keep polling this long before sleeping "
        "(default: the library's; 0: never poll)",
    )


def _example() -> ModuleType:
    """The bulk-transfer example, imported from its folder (its name has a dash, so it is not a
    package); the receiving process it spawns finds it through the same ``sys.path``."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return importlib.import_module("bulk_transfer")


@dataclass
class Cell:
    backend: str
    size: int
    pingpong: bool  # the round-trip row; the others stream
    run: Any = None  # a bulk_transfer.Run once measured

    def value(self) -> str:
        r = self.run
        if r is None:
            return ""
        if not r.ok:
            return "bad data"
        if self.pingpong:
            rtt = r.rtt_us()
            return f"{rtt['p50']:,.1f} µs" if rtt else "—"
        return f"{r.gbps:,.2f} GB/s"

    def text(self) -> str:
        r = self.run
        if r is None:
            return "[dim]…[/dim]"
        if not r.ok:
            return "[red]bad data[/red]"
        if self.pingpong or self.size > 1 << 20:
            return self.value()
        return f"{self.value()} [dim]{r.rate:,.0f}/s[/dim]"  # small messages: the rate too


class _State:
    def __init__(self, bt: ModuleType, backends: list[str], sizes: list[int]) -> None:
        self.bt = bt
        self.backends = backends
        self.rows = [(LATENCY_SIZE, True), *((size, False) for size in sizes)]
        self.cells = {
            (b, i): Cell(b, size, pingpong)
            for b in backends
            for i, (size, pingpong) in enumerate(self.rows)
        }
        self.transports: dict[str, str] = {}

    def label(self, cell: Cell) -> str:
        size = self.bt.human(cell.size)
        return f"{size} round trip p50" if cell.pingpong else size

    def table(self, title: str) -> Any:
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        table.add_column("message", style="bold")
        for b in self.backends:
            table.add_column(b, justify="right")
        for i in range(len(self.rows)):
            cells = [self.cells[(b, i)] for b in self.backends]
            table.add_row(self.label(cells[0]), *(c.text() for c in cells))
        table.add_row(
            "[dim]eager; rendezvous[/dim]", *(self.transports.get(b, "") for b in self.backends)
        )
        return table


TABLE_TITLE = "two processes, one host: 8 B round trip, then streaming"


async def _tour(state: _State, opts: argparse.Namespace, live: Any) -> bool:
    """Measure every cell, one backend (one receiving process) at a time; True if interrupted."""
    bt = state.bt
    share = opts.duration / max(1, len(state.cells))
    try:
        for backend in state.backends:
            log.info("backend %s: starting a receiving process", backend)
            spin = None if opts.transport_spin_us is None else opts.transport_spin_us * 1e-6
            async with bt.connected(backend, spin=spin) as (server, ep):
                # Warm-up, not shown: the first same-host message opens the shared-memory ring.
                await bt.send_run(server, ep, bt.Run(bt.Settings(size=64 << 10, count=4)))
                for i in range(len(state.rows)):
                    cell = state.cells[(backend, i)]
                    settings = bt.Settings(
                        size=cell.size,
                        count=None,
                        duration=share,
                        depth=opts.transport_depth,
                        pingpong=cell.pingpong,
                    )
                    cell.run = await bt.send_run(server, ep, bt.Run(settings))
                    state.transports[backend] = _paths(cell.run.receiver["transports"])
                    if live is not None:
                        live.update(state.table(TABLE_TITLE))
                    else:
                        log.info("%s, %s: %s", backend, state.label(cell), cell.value())
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us
        return True
    return False


def _paths(pairs: list[list[str]]) -> str:
    """The receiver's ``Client.transports()`` in short: ``unix+shm-ring; cma``."""
    eager = "+".join(t for p, t in pairs if p == "eager") or "?"
    rendezvous = "+".join(t for p, t in pairs if p == "rendezvous") or "—"
    return f"{eager}; {rendezvous}"


def _sizes(bt: ModuleType, text: str) -> list[int]:
    try:
        sizes = [bt.parse_size(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"--transport-sizes: {exc}") from None
    if not sizes or min(sizes) < 8:
        raise SystemExit(f"--transport-sizes: sizes of at least 8 bytes, not {text!r}")
    return sizes


def run(opts: argparse.Namespace, console: Any) -> dict[str, Any]:
    """Measure every backend and size; returns the summary (see showcase.py)."""
    if not sys.platform.startswith("linux"):
        return _skipped("isthmus.transport runs on Linux only")
    try:
        bt = _example()
        from isthmus.transport import TransportError
    except ImportError as exc:
        return _skipped(f"{exc} (pip install -e libs/transport)")
    backends = [b.strip() for b in opts.transport_backends.split(",") if b.strip()]
    if not backends or any(b not in bt.BACKENDS for b in backends):
        raise SystemExit(f"--transport-backends: choose from {', '.join(bt.BACKENDS)}")
    if opts.transport_depth < 1:
        raise SystemExit("--transport-depth must be at least 1")
    state = _State(bt, backends, _sizes(bt, opts.transport_sizes))

    live = None
    if opts.live:
        from rich.live import Live

        live = Live(state.table(TABLE_TITLE), console=console, refresh_per_second=4, transient=True)
        live.start()
    errors: list[str] = []
    interrupted = False
    try:
        interrupted = asyncio.run(_tour(state, opts, live))
    except KeyboardInterrupt:
        interrupted = True
    except (OSError, TransportError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        log.error("%s", exc)
    finally:
        if live is not None:
            live.stop()
    if interrupted:
        log.warning("interrupted: the connections are closed and the receivers have exited")
    console.print(state.table(TABLE_TITLE))
    return _summary(state, interrupted, errors)


def _summary(state: _State, interrupted: bool, errors: list[str]) -> dict[str, Any]:
    rows: list[tuple[str, Any]] = []
    measured = []
    for cell in state.cells.values():
        r = cell.run
        if r is None:
            continue
        rows.append((f"{cell.backend} {state.label(cell)}", cell.value()))
        rtt = r.rtt_us()
        measured.append(
            {
                "backend": cell.backend,
                "size": cell.size,
                "pingpong": cell.pingpong,
                "ok": r.ok,
                "messages": r.messages,
                "seconds": r.seconds,
                "gb_per_s": r.gbps,
                "messages_per_s": r.rate,
                "rtt_p50_us": rtt["p50"] if rtt else math.nan,
                "rtt_p99_us": rtt["p99"] if rtt else math.nan,
                "transports": r.receiver.get("transports", []),
            }
        )
    for backend, transports in state.transports.items():
        rows.append((f"{backend}: eager; rendezvous transports", transports))
    errors = errors + [
        f"{m['backend']}, {m['size']} B messages: the data did not check out"
        for m in measured
        if not m["ok"]
    ]
    return {
        "tour": "transport",
        "ok": bool(measured) and not errors,
        "interrupted": interrupted,
        "errors": errors,
        "rows": rows,
        "metrics": {"runs": measured, "messages": sum(m["messages"] for m in measured)},
    }


def _skipped(reason: str) -> dict[str, Any]:
    log.warning("transport tour skipped: %s", reason)
    return {
        "tour": "transport",
        "ok": True,  # nothing failed: this machine lacks the library
        "interrupted": False,
        "errors": [],
        "rows": [("skipped", reason[:200])],
        "metrics": {"skipped": reason},
    }
