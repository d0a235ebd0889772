"""``python -m isthmus.wire schema``: print the JSON Schema of the control messages."""

from __future__ import annotations

import argparse
import json
import sys

from ._schema import json_schema


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m isthmus.wire``."""
    parser = argparse.ArgumentParser(prog="python -m isthmus.wire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    schema = sub.add_parser("schema", help="print the JSON Schema of the control messages")
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
