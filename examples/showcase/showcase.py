#!/usr/bin/env python3
"""Isthmus showcase: a guided tour of the libraries, one part per library.

    python examples/showcase/showcase.py                 # every tour, 10 s each, live display
    python examples/showcase/showcase.py buffer --spin 50 --duration 5
    python examples/showcase/showcase.py --no-live       # log lines instead of a live display

Each tour prints a summary table at the end; the exit code is 0 when every tour ran and moved data,
130 after Ctrl-C (which stops the tour cleanly and still prints what it measured).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so `tours` imports from anywhere

from tours import TOURS, load

log = logging.getLogger("showcase")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    modules = {name: load(name) for name in TOURS}
    parser = argparse.ArgumentParser(
        prog="showcase.py",
        description="A tour of the Isthmus libraries. Tours: "
        + "; ".join(f"{n} ({m.TITLE})" for n, m in modules.items()),
    )
    parser.add_argument(
        "tours",
        nargs="*",
        metavar="TOUR",
        default=[],
        help=f"tours to run, in order (default: all of {', '.join(TOURS)})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds each tour runs (default 10)",
    )
    parser.add_argument(
        "--no-live",
        dest="live",
        action="store_false",
        help="no live display: log progress lines instead",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the summaries as JSON to PATH"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    for name, mod in modules.items():
        mod.add_arguments(parser.add_argument_group(f"{name} tour"))
    return parser, modules


def print_summary(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    status = "interrupted" if summary["interrupted"] else ("ok" if summary["ok"] else "FAILED")
    table = Table(title=f"Summary: {summary['tour']} tour ({status})", title_justify="left")
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    for label, value in summary["rows"]:
        table.add_row(label, str(value))
    console.print(table)
    for err in summary.get("errors", []):
        console.print(f"[red]error:[/red] {err}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    opts = parser.parse_args(argv)
    unknown = [t for t in opts.tours if t not in TOURS]
    if unknown:
        parser.error(f"unknown tour(s) {', '.join(unknown)}; choose from {', '.join(TOURS)}")
    if opts.duration <= 0:
        parser.error("--duration must be positive")

    from rich.console import Console
    from rich.logging import RichHandler

    console = Console()
    logging.basicConfig(
        level=opts.log_level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )

    summaries = []
    code = 0
    for name in opts.tours or list(TOURS):
        mod = modules[name]
        console.rule(f"[bold]{mod.TITLE}")
        try:
            summary = mod.run(opts, console)
        except KeyboardInterrupt:  # a tour normally handles this itself
            log.warning("interrupted")
            code = 130
            break
        summaries.append(summary)
        print_summary(console, summary)
        if summary["interrupted"]:
            code = 130
            break
        if not summary["ok"]:
            code = 1
    if opts.json:
        opts.json.write_text(json.dumps(_jsonable(summaries), indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
