"""Entry point of every benchmark child process (kept import-light: stdlib only at module level)."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from typing import Any


def _terminate(signum: int, frame: object) -> None:
    # Turn SIGTERM into SystemExit so ``finally`` blocks close rings and unlink segments.
    raise SystemExit(128 + signum)


def child_entry(
    module: str, func: str, spec: dict[str, Any], conn: Any, env: dict[str, Any]
) -> None:
    """Run ``module.func(spec)`` and send ``("ok", result)`` or ``("error", traceback)`` back.

    Ctrl-C is left to the parent (which stops the children in order), so SIGINT is ignored here.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate)
    for key, value in env.items():  # before the benchmark module imports the library
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    cpu = os.environ.pop("ISTHMUS_BENCH_CPU", "")
    if cpu:  # --pin: run on this CPU only
        os.sched_setaffinity(0, {int(c) for c in cpu.split(",")})
    try:
        fn = getattr(importlib.import_module(module), func)
        result = fn(spec)
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:
            traceback.print_exc(file=sys.stderr)
        if isinstance(sys.exc_info()[1], SystemExit):
            raise
        return
    finally:
        sys.stdout.flush()
    conn.send(("ok", result))
    conn.close()
