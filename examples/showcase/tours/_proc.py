"""Child processes for the tours: spawn, report errors back, and never outlive the showcase.

Children use the ``spawn`` start method (a fresh interpreter, nothing inherited by accident),
ignore Ctrl-C (the parent stops them in order, so rings are closed and nothing is left in
/dev/shm) and turn SIGTERM into ``SystemExit`` so their ``finally`` blocks still run.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger("showcase")

CTX = multiprocessing.get_context("spawn")


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _child_main(module: str, func: str, args: dict[str, Any], conn: Any, log_level: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(level=log_level, format="%(processName)s %(levelname)s %(message)s")
    try:
        result = getattr(importlib.import_module(module), func)(args)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        if isinstance(exc, SystemExit):
            raise
        sys.exit(1)
    conn.send(("ok", result, ""))


class Worker:
    """One child process running ``module.func(args)``; its return value comes back on a pipe."""

    def __init__(self, name: str, module: str, func: str, args: dict[str, Any]) -> None:
        self.name = name
        self._conn, child_conn = CTX.Pipe(duplex=False)
        level = logging.getLogger().getEffectiveLevel()
        self.process = CTX.Process(
            target=_child_main, args=(module, func, args, child_conn, level), name=name, daemon=True
        )
        self.process.start()
        child_conn.close()
        self._outcome: tuple[str, Any, str] | None = None

    def poll_outcome(self) -> tuple[str, Any, str] | None:
        """``("ok", result, "")`` or ``("error", message, traceback)`` once the child finished."""
        if self._outcome is None and self._conn.poll():
            try:
                self._outcome = self._conn.recv()
            except EOFError:
                self._outcome = (
                    "error",
                    f"{self.name} exited with code {self.process.exitcode}",
                    "",
                )
        if self._outcome is None and not self.process.is_alive() and not self._conn.poll(0.1):
            self._outcome = ("error", f"{self.name} exited with code {self.process.exitcode}", "")
        return self._outcome

    def join(self, timeout: float) -> tuple[str, Any, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcome = self.poll_outcome()
            if outcome is not None:
                self.process.join(max(0.1, deadline - time.monotonic()))
                return outcome
            time.sleep(0.02)
        return self.poll_outcome()

    def stop(self, grace: float = 2.0) -> bool:
        """Terminate, then kill, if still running; True if it had to be forced."""
        if not self.process.is_alive():
            self.process.join(0.1)
            return False
        log.warning("%s did not stop by itself; terminating it", self.name)
        self.process.terminate()
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        return True


def start_live(opts: Any, console: Any, state: Any) -> Any:
    """A started ``rich.live.Live`` showing ``state.live_table`` (None without ``--live``)."""
    if not opts.live:
        return None
    from rich.live import Live

    live = Live(state.live_table(opts, 0.0), console=console, refresh_per_second=4, transient=False)
    live.start()
    return live


def watch(
    opts: Any,
    state: Any,
    workers: tuple[Worker, ...],
    pump: Callable[[float], None],
    live: Any,
    ready: Callable[[], bool],
    not_ready: str,
) -> None:
    """Feed reports into ``state`` and refresh the display until ``opts.duration`` seconds after
    ``ready()`` first holds. Raises RuntimeError when a worker fails or when ``ready()`` does not
    hold within 30 s (``not_ready`` says what did not happen); Ctrl-C propagates."""
    last_draw = last_log = 0.0
    deadline = None
    while True:
        pump(0.05)
        for w in workers:
            outcome = w.poll_outcome()
            if outcome is not None and outcome[0] == "error":
                raise RuntimeError(f"{w.name} failed: {outcome[1]}\n{outcome[2]}")
        now = time.monotonic()
        if deadline is None and ready():
            deadline = now + opts.duration
        elif deadline is None and now - state.started > 30:
            raise RuntimeError(f"{not_ready} within 30 s")
        elapsed = 0.0 if deadline is None else opts.duration - (deadline - now)
        if live is not None and now - last_draw >= 0.25:
            live.update(state.live_table(opts, max(elapsed, 0.0)))
            last_draw = now
        if live is None and deadline is not None and now - last_log >= 1.0 and elapsed > 0.5:
            state.log_line(elapsed)
            last_log = now
        if deadline is not None and now >= deadline:
            return
