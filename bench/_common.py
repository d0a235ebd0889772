"""Helpers shared by every library's benchmark module: child processes, cleanup, statistics, output.

Nothing here knows about a particular library.  A benchmark module (``bench/<lib>.py``) starts its
children through :class:`Children`, which uses the ``spawn`` start method, passes an environment to
each child (e.g. ``ISTHMUS_PUREPYTHON=1``) and guarantees that every child is gone when the block
exits, even on Ctrl-C or an error.  Children run :func:`bench._child.child_entry`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
SHM_DIR = Path("/dev/shm")

# Every shared-memory name a benchmark run creates contains this tag, so a run can sweep up what a
# killed child left behind without touching anybody else's segments.
RUN_TAG = f"isthmus-bench-{os.getpid()}"

_SPAWN = multiprocessing.get_context("spawn")
_ENV_LOCK = threading.Lock()
_name_counter = 0


def unique_name(kind: str) -> str:
    """A fresh name containing :data:`RUN_TAG` (valid as a POSIX shm name without the slash)."""
    global _name_counter
    _name_counter += 1
    return f"{RUN_TAG}-{kind}-{_name_counter}"


def spawn_context() -> Any:
    """The multiprocessing context benchmarks use for queues, pipes and events passed to children."""
    return _SPAWN


@contextlib.contextmanager
def environ(overrides: dict[str, str | None] | None) -> Iterator[None]:
    """Temporarily change ``os.environ`` (a spawned child copies it when it starts)."""
    if not overrides:
        yield
        return
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in overrides}
        try:
            for k, v in overrides.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class ChildError(RuntimeError):
    """A child process failed; the message carries its traceback."""


@dataclass
class Child:
    """One child process started by :class:`Children`, with the pipe its result comes back on."""

    label: str
    process: Any
    conn: Any
    result: Any = None
    done: bool = False

    @property
    def pid(self) -> int:
        return int(self.process.pid)


@dataclass
class Children:
    """Start child processes and make sure none outlives the ``with`` block.

    >>> with Children() as kids:
    ...     a = kids.start("bench.buffer_workers", "ours_consumer", spec, env={...})
    ...     results = kids.wait_all(timeout=60)
    """

    grace: float = 3.0
    children: list[Child] = field(default_factory=list)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        module: str,
        func: str,
        spec: dict[str, Any],
        *,
        env: dict[str, str | None] | None = None,
        label: str | None = None,
    ) -> Child:
        from bench._child import child_entry

        recv_end, send_end = _SPAWN.Pipe(duplex=False)
        proc = _SPAWN.Process(
            target=child_entry,
            args=(module, func, spec, send_end, env or {}),
            name=label or func,
            daemon=True,
        )
        with environ(env):
            proc.start()
        send_end.close()
        child = Child(label or func, proc, recv_end)
        self.children.append(child)
        return child

    def wait(self, child: Child, timeout: float) -> Any:
        """The child's return value; raises :class:`ChildError` if it failed or timed out."""
        if not child.done:
            deadline = time.monotonic() + timeout
            while not child.conn.poll(0.05):
                if time.monotonic() > deadline:
                    raise ChildError(f"{child.label}: no result after {timeout:.0f} s")
                if not child.process.is_alive() and not child.conn.poll(0.2):
                    code = child.process.exitcode
                    raise ChildError(f"{child.label}: exited with code {code} and no result")
            try:
                status, payload = child.conn.recv()
            except EOFError as exc:
                raise ChildError(f"{child.label}: exited without a result") from exc
            child.done = True
            if status != "ok":
                child.result = ChildError(f"{child.label} failed:\n{payload}")
            else:
                child.result = payload
            child.process.join(self.grace)
        if isinstance(child.result, ChildError):
            raise child.result
        return child.result

    def wait_all(self, timeout: float) -> list[Any]:
        """Results of every child started so far, in start order (first failure raises)."""
        deadline = time.monotonic() + timeout
        results = []
        errors: list[ChildError] = []
        for child in self.children:
            try:
                results.append(self.wait(child, max(0.1, deadline - time.monotonic())))
            except ChildError as exc:
                errors.append(exc)
                results.append(None)
                # A failed peer usually leaves the other side blocked: stop everyone now.
                self.stop_all()
        if errors:
            raise errors[0]
        return results

    def stop_all(self) -> None:
        """Terminate (then kill) every child still running; close the result pipes."""
        alive = [c for c in self.children if c.process.is_alive()]
        for c in alive:
            with contextlib.suppress(Exception):
                c.process.terminate()
        deadline = time.monotonic() + self.grace
        for c in alive:
            c.process.join(max(0.0, deadline - time.monotonic()))
        for c in alive:
            if c.process.is_alive():
                with contextlib.suppress(Exception):
                    c.process.kill()
                c.process.join(1.0)
        for c in self.children:
            with contextlib.suppress(Exception):
                c.conn.close()

    @property
    def killed_any(self) -> bool:
        return any(c.process.exitcode not in (0, None) for c in self.children)


def sweep_shm(tag: str = RUN_TAG) -> list[str]:
    """Unlink every ``/dev/shm`` entry whose name contains ``tag``; returns the names removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in SHM_DIR.iterdir():
            if tag in entry.name:
                with contextlib.suppress(FileNotFoundError, PermissionError):
                    entry.unlink()
                    removed.append(entry.name)
    return removed


def sweep_tmp(tag: str = RUN_TAG) -> None:
    """Remove leftovers in the temp dir (e.g. zmq ipc:// socket files) carrying ``tag``."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    with contextlib.suppress(FileNotFoundError):
        for entry in tmp.iterdir():
            if tag in entry.name:
                with contextlib.suppress(OSError):
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()


# --- statistics ----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, nearest-rank with interpolation."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo]) * (1 - frac) + float(sorted_values[hi]) * frac


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def spread(values: Iterable[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return (min(vals), max(vals)) if vals else (math.nan, math.nan)


# --- output --------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    """Number for a table cell: ``n/a`` for missing values, thousands separators for big ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return f"{text} {unit}".rstrip()


def targets_table(targets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The verdict table of a benchmark's targets ({target, measured, goal, met} each)."""
    rows = []
    for t in targets:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        rows.append([t["target"], fmt(t["measured"], 2), t["goal"], met])
    return {
        "title": "Targets",
        "headers": ["target", "measured", "goal", "met"],
        "rows": rows,
        "note": "",
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table; numeric-looking columns are right-aligned."""

    def numeric(col: int) -> bool:
        cells = [r[col] for r in rows if r[col] not in ("", "n/a", "—")]
        return bool(cells) and all(c[:1].isdigit() or c[:1] in "-+≤≥<>~" for c in cells)

    align = ["---:" if numeric(i) else ":---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def l3_cache() -> str | None:
    """Size of the last-level cache as the kernel reports it (e.g. ``"32768K"``), if known."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = None
    with contextlib.suppress(OSError):
        for idx in sorted(base.glob("index*")):
            if (idx / "level").read_text().strip() == "3":
                best = (idx / "size").read_text().strip()
    return best


def machine_info() -> dict[str, Any]:
    return {
        "l3_cache": l3_cache(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "argv": sys.argv,
    }
