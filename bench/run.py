"""Benchmark harness of the Isthmus libraries: ``python bench/run.py LIB [options]``.

Each library has a module ``bench/<lib>.py`` (found automatically) that defines:

* ``DESCRIPTION``: one line for ``--help``;
* ``add_arguments(parser)`` (optional): options of its own;
* ``run(opts, ui) -> dict``: runs everything, returns JSON-able results; ``ui.task(text, total)`` is a
  context manager giving an ``advance(status="")`` callable (a rich progress bar) and ``ui.log(text)``
  prints above the bars;
* ``tables(results) -> list[dict]``: ``{"title", "headers", "rows", "note"}`` for the terminal and
  the markdown report.

Results go to ``bench/results/<lib>.json`` (``--json`` to change) and ``bench/results/<lib>.md``; the
markdown tables are also printed on stdout, the rich tables and progress bars on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

# Run as a script: make the repository root importable (``bench`` as a package) instead of bench/
# itself, whose module names must not shadow anything.
_ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == _ROOT / "bench":
    sys.path[0] = str(_ROOT)
elif str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

_NOT_LIBS = {"run", "conftest"}


def discover() -> dict[str, str]:
    """Library name -> module name, for every ``bench/<lib>.py``."""
    libs = {}
    for path in sorted((_ROOT / "bench").glob("*.py")):
        name = path.stem
        if name.startswith("_") or name in _NOT_LIBS or name.endswith("_workers"):
            continue
        libs[name] = f"bench.{name}"
    return libs


class UI:
    """Progress bars and log lines on a rich console (stderr)."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[status]}"),
            console=console,
        )

    def __enter__(self) -> UI:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        tid = self.progress.add_task(description, total=total, status="")

        def advance(status: str = "") -> None:
            self.progress.update(tid, advance=1, status=status)

        try:
            yield advance
        finally:
            self.progress.update(tid, status="done")

    def log(self, text: str) -> None:
        self.progress.console.log(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, (bytes, bytearray)):
        return None
    return str(obj)


def _clean_nan(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nan(v) for v in obj]
    return obj


def render_markdown(
    lib: str, results: dict[str, Any], tables: list[dict[str, Any]], command: str
) -> str:
    from bench._common import markdown_table

    m = results["machine"]
    nox_command = "nox -s bench -- " + command.split("bench/run.py ", 1)[-1]
    lines = [
        f"## isthmus-{lib}",
        "",
        f"Measured {m['date'][:10]} on {m['cores']} cores ({m['cpu']}, Linux {m['kernel']}, "
        f"Python {m['python']}) with `{command}` (`{nox_command}`); the machine is shared, so every contender runs "
        "side by side in the same run, interleaved within each repeat.",
        "",
    ]
    for t in tables:
        lines += [f"### {t['title']}", "", markdown_table(t["headers"], t["rows"]), ""]
        if t.get("note"):
            lines += [t["note"], ""]
    return "\n".join(lines).rstrip() + "\n"


def print_rich(console: Any, tables: list[dict[str, Any]]) -> None:
    from rich.table import Table

    for t in tables:
        table = Table(
            title=t["title"],
            title_justify="left",
            caption=t.get("note") or None,
            caption_justify="left",
        )
        for i, h in enumerate(t["headers"]):
            table.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
        for row in t["rows"]:
            table.add_row(*[str(c) for c in row])
        console.print(table)
        console.print()


def build_parser(libs: dict[str, str]) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmarks of the Isthmus libraries against their anchors.",
    )
    sub = parser.add_subparsers(dest="lib", metavar="LIB", required=True)
    modules: dict[str, ModuleType] = {}
    for name, modname in libs.items():
        try:
            mod = importlib.import_module(modname)
        except Exception as exc:
            print(f"warning: cannot import {modname}: {exc}", file=sys.stderr)
            continue
        modules[name] = mod
        p = sub.add_parser(
            name,
            help=getattr(mod, "DESCRIPTION", ""),
            description=getattr(mod, "DESCRIPTION", None),
        )
        p.add_argument(
            "--repeats",
            type=int,
            default=None,
            help="repeats of every measurement (default 5, 3 with --quick)",
        )
        p.add_argument(
            "--quick", action="store_true", help="smoke test: fewer messages and 3 repeats"
        )
        p.add_argument(
            "--json",
            metavar="PATH",
            type=Path,
            default=None,
            help=f"where to write the results (default bench/results/{name}.json)",
        )
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
    return parser, modules


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, modules = build_parser(discover())
    opts = parser.parse_args(argv)
    if opts.repeats is not None and opts.repeats < 1:
        parser.error("--repeats must be at least 1")
    mod = modules[opts.lib]

    from rich.console import Console

    from bench._common import RESULTS_DIR, machine_info

    signal.signal(signal.SIGTERM, _sigterm)
    console = Console(stderr=True)
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in argv)
    console.rule(f"[bold]isthmus-{opts.lib} benchmarks")
    try:
        with UI(console) as ui:
            results = mod.run(opts, ui)
    except KeyboardInterrupt:
        console.print("[red]interrupted: child processes stopped and shared memory removed")
        return 130
    results = {"lib": opts.lib, "machine": machine_info(), "command": command, **results}
    tables = mod.tables(results)
    print_rich(console, tables)

    out_json = opts.json or RESULTS_DIR / f"{opts.lib}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(_clean_nan(results), indent=2, default=_json_default) + "\n")
    markdown = render_markdown(opts.lib, results, tables, command)
    out_md = out_json.with_suffix(".md")
    out_md.write_text(markdown)
    sys.stdout.write(markdown)
    sys.stdout.flush()
    console.print(f"results: {out_json} and {out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
