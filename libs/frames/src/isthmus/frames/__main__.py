"""``isthmus-frames`` command line: which capture, convert, encode and decode paths work here.

``isthmus-frames probe`` makes the real one-frame probes of every backend and prints what is
usable and why the others are not (``--json`` for machines).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

__all__ = ["main"]


def _probe() -> dict[str, Any]:
    from . import available_converters, probe_decoders, probe_encoders

    encoders = [
        {"backend": r.backend, "ok": r.ok, "ms": round(r.seconds * 1e3, 3), "reason": r.reason}
        for r in probe_encoders()
    ]
    decoders = [{"backend": k, "ok": not v, "reason": v} for k, v in probe_decoders().items()]
    return {"converters": available_converters(), "encoders": encoders, "decoders": decoders}


def _print(report: dict[str, Any]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is optional: plain lines
        print("converters:", ", ".join(report["converters"]))
        for kind in ("encoders", "decoders"):
            for row in report[kind]:
                state = "ok" if row["ok"] else f"unavailable ({row['reason']})"
                print(f"{kind[:-1]} {row['backend']}: {state}")
        return
    console = Console()
    console.print(f"colour converters: {', '.join(report['converters'])}")
    for kind in ("encoders", "decoders"):
        table = Table(title=f"{kind}, in the order they are tried")
        table.add_column("backend")
        table.add_column("usable")
        if kind == "encoders":
            table.add_column("probe ms", justify="right")
        table.add_column("why not")
        for row in report[kind]:
            cells = [row["backend"], "yes" if row["ok"] else "no"]
            if kind == "encoders":
                cells.append(f"{row['ms']:.2f}")
            cells.append(row["reason"])
            table.add_row(*cells)
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``isthmus-frames`` (also ``python -m isthmus.frames``)."""
    parser = argparse.ArgumentParser(prog="isthmus-frames", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every probe")
    sub = parser.add_subparsers(dest="command", required=True)
    probe = sub.add_parser("probe", help="probe every backend and show what works here")
    probe.add_argument("--json", action="store_true", help="print JSON instead of tables")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if opts.verbose else logging.WARNING)
    report = _probe()
    if opts.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print(report)
    usable = any(row["ok"] for row in report["encoders"])
    return 0 if usable else 1


if __name__ == "__main__":
    sys.exit(main())
