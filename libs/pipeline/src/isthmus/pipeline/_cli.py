"""``isthmus-pipeline``: run, validate and draw manifest pipelines; list node types.

Flags override the environment (``ISTHMUS_PIPELINE_AUTO_CONVERT``,
``ISTHMUS_PIPELINE_LOG_LEVEL``); the manifest is the configuration file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ._caps import Caps, parse_caps
from ._errors import ManifestError, NegotiationError, PipelineError
from ._manifest import load, validate_manifest
from ._media import AudioChunk, SpeechSegment, VideoFrame
from ._node import node_types

__all__ = ["main"]

log = logging.getLogger("isthmus.pipeline")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _jsonable(node_id: str, item: Any) -> dict[str, Any]:
    if isinstance(item, SpeechSegment):
        return {
            "node": node_id,
            "type": "speech",
            "start": round(item.start, 3),
            "end": round(item.end, 3),
        }
    if isinstance(item, AudioChunk):
        return {
            "node": node_id,
            "type": "audio",
            "pts": round(item.pts, 4),
            "frames": item.frames,
            "sample_rate": item.sample_rate,
            "channels": item.channels,
        }
    if isinstance(item, VideoFrame):
        return {
            "node": node_id,
            "type": "video",
            "pts": item.pts,
            "width": item.width,
            "height": item.height,
        }
    as_dict = getattr(item, "as_dict", None)
    if callable(as_dict):
        d = as_dict()
        return {
            "node": node_id,
            "type": type(item).__name__.lower(),
            **{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()},
        }
    return {"node": node_id, "type": type(item).__name__, "value": repr(item)}


def _print_errors(errors: Sequence[Exception], out: TextIO) -> None:
    for e in errors:
        print(f"error: {e}", file=out)


def cmd_validate(opts: argparse.Namespace) -> int:
    errors = validate_manifest(opts.manifest, auto_convert=opts.auto_convert or None)
    if errors:
        _print_errors(errors, sys.stdout)
        print(f"{opts.manifest}: {len(errors)} problem(s)")
        return 1
    p = load(opts.manifest)
    n = p.negotiate(auto_convert=bool(opts.auto_convert or p.negotiation.get("auto_convert")))
    print(f"{opts.manifest}: valid ({len(p.nodes)} nodes, {len(p.connections)} connections)")
    if n.inserted:
        print("converters inserted: " + ", ".join(n.inserted))
    if opts.verbose:
        print(n.describe())
    return 0


def cmd_graph(opts: argparse.Namespace) -> int:
    from ._render import render, to_dot

    p = load(opts.manifest)
    neg = (
        p.negotiate(auto_convert=bool(opts.auto_convert or p.negotiation.get("auto_convert")))
        if opts.negotiate
        else None
    )
    if opts.output is None:
        sys.stdout.write(to_dot(p, neg))
        return 0
    out = render(p, opts.output, negotiated=neg)
    print(f"wrote {out}")
    return 0


def cmd_node_types(opts: argparse.Namespace) -> int:
    for name, nt in sorted(node_types().items()):
        print(name)
        summary = (nt.doc or "").strip().splitlines()
        if summary:
            print(f"    {summary[0]}")
        for kind, ports in (("in", nt.inputs), ("out", nt.outputs)):
            for pname, port in ports.items():
                extra = f" [{port.behaviour}]" if port.behaviour != "static" else ""
                frame = f" ({port.frame})" if port.frame else ""
                print(f"    {kind:3} {pname}: {port.caps}{extra}{frame}")
        if nt.params:
            params = ", ".join(
                p.name + ("" if p.default is p.empty else f"={p.default!r}")
                for p in nt.params.values()
            )
            print(f"    params: {params}")
    return 0


def _input_caps(p: Any, node_id: str) -> Caps:
    caps = p.nodes[node_id].params.get("caps", "audio")
    parsed = parse_caps(str(caps))
    return parsed if isinstance(parsed, Caps) else parsed.first()


async def _run(opts: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ._session import Session
    from .nodes import AudioFileSource

    p = load(opts.manifest)
    inputs = [nid for nid, s in p.nodes.items() if s.type.name == "input"]
    feed_node = opts.input_node or (inputs[0] if inputs else None)
    if opts.input and feed_node is None:
        raise PipelineError("--input needs an `input` node in the manifest")
    if feed_node is not None and feed_node not in inputs:
        raise PipelineError(
            f"{feed_node!r} is not an input node (inputs: {', '.join(inputs) or 'none'})"
        )
    if inputs and not opts.input:
        raise PipelineError(
            f"the manifest has input node(s) {', '.join(inputs)}: give --input FILE"
        )
    source: AudioFileSource | None = None
    duration = 0.0
    if opts.input:
        assert feed_node is not None
        caps = _input_caps(p, feed_node)
        fixed = caps.fixate()

        def num(name: str) -> Any:
            v = caps.get(name)
            return v if isinstance(v, int | float) else None

        source = AudioFileSource(
            path=opts.input,
            sample_rate=num("sample_rate"),
            channels=num("channels"),
            format=str(fixed.get("format", "f32")),
            frame_ms=num("frame_ms") or opts.frame_ms,
            realtime=opts.realtime,
        )
        source.initialize()
        assert source._container is not None
        if source._container.duration:
            duration = source._container.duration / 1_000_000
    out: TextIO = open(opts.output, "w", encoding="utf-8") if opts.output else sys.stdout  # noqa: SIM115
    counts: dict[str, int] = {}

    def emit(node_id: str, item: Any) -> None:
        counts[node_id] = counts.get(node_id, 0) + 1
        out.write(json.dumps(_jsonable(node_id, item)) + "\n")

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=opts.quiet or not duration,
    )
    try:
        auto = bool(opts.auto_convert) or None
        async with Session(p, auto_convert=auto, on_output=emit) as s:
            if source is not None and feed_node is not None:
                with progress:
                    task = progress.add_task(Path(opts.input).name, total=duration or None)
                    async for chunk in source.generate():
                        await s.push(feed_node, chunk)
                        progress.update(task, completed=min(duration, chunk.pts + chunk.duration))
                await s.end(feed_node)
            await s.drain()
        if s.errors:
            for e in s.errors:
                log.warning("%s", e)
    finally:
        if source is not None:
            source.close()
        if opts.output:
            out.close()
    summary = ", ".join(f"{n}: {c}" for n, c in sorted(counts.items())) or "no output"
    if not opts.quiet:
        console.print(f"done ({summary})")
    return 0


def cmd_run(opts: argparse.Namespace) -> int:
    return asyncio.run(_run(opts))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isthmus-pipeline",
        description="Run, validate and draw isthmus pipelines described by YAML/JSON manifests.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bar")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        # -v/-q also after the command (SUPPRESS keeps the top-level value when absent).
        sp.add_argument(
            "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging"
        )
        sp.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only errors"
        )
        sp.add_argument("manifest", help="the pipeline manifest (.yaml, .yml or .json)")
        sp.add_argument(
            "--auto-convert",
            action="store_true",
            default=_env_flag("ISTHMUS_PIPELINE_AUTO_CONVERT"),
            help="insert converters (resample, channel mix, format, rechunk) where caps differ "
            "(env ISTHMUS_PIPELINE_AUTO_CONVERT=1)",
        )

    r = sub.add_parser(
        "run",
        help="run a pipeline over an input file",
        description="Run a pipeline: "
        "decode --input into the manifest's `input` node and print what reaches its "
        "`output` nodes as JSON lines.",
    )
    common(r)
    r.add_argument("--input", "-i", help="audio file to feed (any format FFmpeg reads)")
    r.add_argument("--input-node", help="the input node to feed (default: the first)")
    r.add_argument("--output", "-o", help="write JSON lines here instead of stdout")
    r.add_argument("--realtime", action="store_true", help="feed at the audio's own pace")
    r.add_argument(
        "--frame-ms",
        type=float,
        default=20.0,
        help="chunk length when the input caps do not fix it (default 20)",
    )
    r.set_defaults(func=cmd_run)

    v = sub.add_parser(
        "validate",
        help="check a manifest; exit 0 when valid",
        description="Check a manifest: structure, node types, params, ports, cycles "
        "and caps negotiation. Exit status 0 when valid, 1 with every error and "
        "suggestion otherwise.",
    )
    common(v)
    v.set_defaults(func=cmd_validate)

    g = sub.add_parser(
        "graph",
        help="draw the pipeline (DOT, PNG, SVG)",
        description="Print the pipeline as Graphviz DOT, or render it with -o.",
    )
    common(g)
    g.add_argument("--output", "-o", help="graph.png, graph.svg, graph.pdf or graph.dot")
    g.add_argument("--negotiate", action="store_true", help="label edges with negotiated caps")
    g.set_defaults(func=cmd_graph)

    n = sub.add_parser("node-types", help="list node types with their ports, caps and params")
    n.set_defaults(func=cmd_node_types)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    level = os.environ.get("ISTHMUS_PIPELINE_LOG_LEVEL", "WARNING").upper()
    if opts.verbose:
        level = "DEBUG" if opts.verbose > 1 else "INFO"
    if opts.quiet:
        level = "ERROR"
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(opts.func(opts))
    except (ManifestError, NegotiationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (PipelineError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
