"""``isthmus-pipeline``: run, validate and draw manifest pipelines; list node types.

Exit status: 0 success, 1 an invalid manifest (or caps that do not negotiate), 2 any other
failure (a missing input file, a node that failed, Graphviz missing), 130 on Ctrl-C.

Flags override the environment: ``ISTHMUS_PIPELINE_AUTO_CONVERT=1`` (insert converters),
``ISTHMUS_PIPELINE_LOG_LEVEL`` (``DEBUG``/``INFO``/``WARNING``/``ERROR``),
``ISTHMUS_PIPELINE_FRAME_MS`` (chunk length fed by ``run``); the manifest is the configuration
file.
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

from ._caps import Caps, CapsSet, parse_caps
from ._errors import ManifestError, NegotiationError, PipelineError
from ._graph import Pipeline
from ._manifest import _check, load
from ._media import AudioChunk, SpeechSegment, VideoFrame
from ._node import NodeType, node_types

__all__ = ["build_parser", "main"]

log = logging.getLogger("isthmus.pipeline.cli")

_TRUE = ("1", "true", "yes", "on")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"isthmus-pipeline: {name}={raw!r} is not a number") from None


def _auto_convert(opts: argparse.Namespace, p: Pipeline) -> bool:
    return bool(opts.auto_convert or p.negotiation.get("auto_convert", False))


# --- validate ----------------------------------------------------------------------------------
def cmd_validate(opts: argparse.Namespace) -> int:
    """Check each manifest; print every problem with its line and the suggestions."""
    status = 0
    for manifest in opts.manifests:
        result = _check(manifest, True if opts.auto_convert else None)
        if result.errors:
            status = 1
            for e in result.errors:
                print(f"error: {e}")
            print(f"{manifest}: {len(result.errors)} problem(s)")
            continue
        p, n = result.pipeline, result.negotiated
        print(f"{manifest}: valid ({len(p.nodes)} nodes, {len(p.connections)} connections)")
        if n is not None and n.inserted:
            print("converters inserted: " + ", ".join(n.inserted))
        if n is not None and opts.verbose:
            print(n.describe())
    return status


# --- graph -------------------------------------------------------------------------------------
def cmd_graph(opts: argparse.Namespace) -> int:
    """DOT on stdout, or a file rendered by Graphviz."""
    from ._render import render, to_dot

    p = load(opts.manifest)
    neg = p.negotiate(auto_convert=_auto_convert(opts, p)) if opts.negotiate else None
    if opts.output is None or opts.output == "-":
        sys.stdout.write(to_dot(p, neg))
        return 0
    out = render(p, opts.output, format=opts.format, negotiated=neg)
    if not opts.quiet:
        print(f"wrote {out}", file=sys.stderr)
    return 0


# --- node-types --------------------------------------------------------------------------------
def _describe(name: str, nt: NodeType) -> list[str]:
    lines = [f"{name}  ({nt.ref})"]
    summary = (nt.doc or "").strip().splitlines()
    if summary:
        lines.append(f"    {summary[0]}")
    for kind, ports in (("in", nt.inputs), ("out", nt.outputs)):
        for pname, port in ports.items():
            extra = f" [{port.behaviour}]" if port.behaviour != "static" else ""
            frame = f" ({port.frame})" if port.frame else ""
            lines.append(f"    {kind:3} {pname}: {port.caps}{extra}{frame}")
    if nt.params:
        params = ", ".join(
            p.name + ("" if p.default is p.empty else f"={p.default!r}") for p in nt.params.values()
        )
        lines.append(f"    params: {params}")
    return lines


def cmd_node_types(opts: argparse.Namespace) -> int:
    """Every registered node type (or the named ones) with ports, caps and params."""
    types = node_types()
    names = opts.names or sorted(types)
    unknown = [n for n in names if n not in types]
    if unknown:
        print(f"error: unknown node type(s): {', '.join(unknown)}", file=sys.stderr)
        return 1
    for name in names:
        print("\n".join(_describe(name, types[name])))
    return 0


# --- run ---------------------------------------------------------------------------------------
def _number(v: Any) -> Any:
    # JSON has no infinities (a silent level meter says -inf dBFS); 3 decimals are plenty.
    if isinstance(v, float):
        return round(v, 3) if math.isfinite(v) else None
    return v


def _jsonable(node_id: str, item: Any) -> dict[str, Any]:
    """One JSON line for an item that reached an output node."""
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
            "duration": round(item.duration, 4),
            "frames": item.frames,
            "sample_rate": item.sample_rate,
            "channels": item.channels,
            "format": item.format,
        }
    if isinstance(item, VideoFrame):
        return {
            "node": node_id,
            "type": "video",
            "pts": round(item.pts, 4),
            "width": item.width,
            "height": item.height,
            "format": item.format,
        }
    as_dict = getattr(item, "as_dict", None)
    if callable(as_dict):
        fields = {k: _number(v) for k, v in as_dict().items()}
        return {"node": node_id, "type": type(item).__name__.lower(), **fields}
    if isinstance(item, str | int | float | bool) or item is None:
        return {"node": node_id, "type": type(item).__name__, "value": item}
    return {"node": node_id, "type": type(item).__name__, "value": repr(item)}


def _probe(path: str) -> tuple[float, int, int]:
    """(duration in seconds or 0, sample rate, channels) of an audio file's first stream."""
    try:
        import av
    except ImportError:  # pragma: no cover - the extra is missing
        raise PipelineError("run --input needs PyAV: pip install 'isthmus-pipeline[av]'") from None
    if not Path(path).is_file():
        raise PipelineError(f"no such audio file: {path}")
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise PipelineError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            duration = container.duration / 1_000_000 if container.duration else 0.0
            return duration, int(stream.rate), int(stream.channels)
    except av.FFmpegError as e:
        raise PipelineError(f"cannot decode {path}: {e}") from None


def _feed_caps(p: Pipeline, node_id: str, rate: int, channels: int, frame_ms: float) -> Caps:
    """The concrete audio caps to decode into: what the input node declares, preferring the
    file's own rate and channels where the declaration allows them."""
    declared = parse_caps(str(p.nodes[node_id].params.get("caps", "audio")))
    first = declared.first() if isinstance(declared, CapsSet) else declared
    if first.media not in ("audio", "any"):
        raise PipelineError(f"input node {node_id!r} takes {first.media}: --input feeds audio")
    base = Caps.of("audio", sample_rate=rate, channels=channels, format="f32", frame_ms=frame_ms)
    fields = {**base.fields, **first.fields}
    prefer = {"sample_rate": rate, "channels": channels, "format": "f32", "frame_ms": frame_ms}
    return Caps("audio", fields).fixate(prefer)


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
    feed = opts.input_node or (inputs[0] if inputs else None)
    if opts.input and feed is None:
        raise PipelineError("--input needs an `input` node in the manifest")
    if feed is not None and feed not in inputs:
        raise PipelineError(
            f"{feed!r} is not an input node (inputs: {', '.join(inputs) or 'none'})"
        )
    if inputs and not opts.input:
        raise PipelineError(
            f"the manifest has input node(s) {', '.join(inputs)}: give --input FILE"
        )

    source: AudioFileSource | None = None
    duration = 0.0
    if opts.input and feed is not None:
        duration, rate, channels = _probe(opts.input)
        caps = _feed_caps(p, feed, rate, channels, opts.frame_ms)
        log.info("feeding %s into %r as %s", opts.input, feed, caps)
        source = AudioFileSource(
            path=opts.input,
            sample_rate=int(caps.get("sample_rate")),
            channels=int(caps.get("channels")),
            format=str(caps.get("format")),
            frame_ms=caps.get("frame_ms"),
            realtime=opts.realtime,
        )

    to_file = opts.output not in (None, "-")
    out: TextIO = open(opts.output, "w", encoding="utf-8") if to_file else sys.stdout  # noqa: SIM115
    counts: dict[str, int] = {}

    def emit(node_id: str, item: Any) -> None:
        counts[node_id] = counts.get(node_id, 0) + 1
        out.write(json.dumps(_jsonable(node_id, item), default=str) + "\n")

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
        # Only on a terminal, and not over JSON lines printed to that same terminal.
        disable=opts.quiet
        or opts.no_progress
        or not duration
        or not console.is_terminal
        or (not to_file and sys.stdout.isatty()),
    )
    errors: list[Any] = []
    try:
        if source is not None:
            source.initialize()
        async with Session(p, auto_convert=opts.auto_convert or None, on_output=emit) as s:
            if source is not None and feed is not None:
                with progress:
                    task = progress.add_task(Path(opts.input).name, total=duration)
                    async for chunk in source.generate():
                        await s.push(feed, chunk)
                        progress.update(task, completed=min(duration, chunk.pts + chunk.duration))
                await s.end(feed)
            await s.drain()
            errors = list(s.errors)
    finally:
        if source is not None:
            source.close()
        if to_file:
            out.close()
        else:
            out.flush()
    for e in errors:
        log.warning("%s", e)
    summary = ", ".join(f"{n}: {c}" for n, c in sorted(counts.items())) or "no output"
    if errors:
        summary += f"; {len(errors)} node error(s)"
    if not opts.quiet:
        console.print(f"done ({summary})", highlight=False)
    return 0


def cmd_run(opts: argparse.Namespace) -> int:
    """Run the pipeline (see :func:`_run`)."""
    return asyncio.run(_run(opts))


# --- the parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``isthmus-pipeline`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="isthmus-pipeline",
        description="Run, validate and draw isthmus pipelines described by YAML/JSON manifests "
        "(the RemoteMedia SDK's format with node.port addressing).",
        epilog="Exit status: 0 ok, 1 invalid manifest, 2 other errors. Environment: "
        "ISTHMUS_PIPELINE_AUTO_CONVERT, ISTHMUS_PIPELINE_LOG_LEVEL, ISTHMUS_PIPELINE_FRAME_MS.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bar")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def logging_flags(sp: argparse.ArgumentParser) -> None:
        # -v/-q also after the command (SUPPRESS keeps the top-level value when absent).
        sp.add_argument(
            "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging"
        )
        sp.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only errors"
        )

    def convert_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--auto-convert",
            action="store_true",
            default=_env_flag("ISTHMUS_PIPELINE_AUTO_CONVERT"),
            help="insert converters (sample format, channel mix, resample, rechunk) where caps "
            "differ, as the manifest's `negotiation: {auto_convert: true}` does "
            "(env ISTHMUS_PIPELINE_AUTO_CONVERT=1)",
        )

    r = sub.add_parser(
        "run",
        help="run a pipeline over an audio file",
        description="Run a pipeline: decode --input (any format FFmpeg reads) in chunks into "
        "the manifest's `input` node, and print what reaches its `output` nodes as JSON lines "
        '(speech segments as {"start", "end"}, audio as a summary).',
    )
    logging_flags(r)
    r.add_argument("manifest", help="the pipeline manifest (.yaml, .yml or .json)")
    r.add_argument("--input", "-i", metavar="FILE", help="audio file to feed")
    r.add_argument("--input-node", metavar="ID", help="the input node to feed (default: the first)")
    r.add_argument(
        "--output", "-o", metavar="FILE", help="write the JSON lines here (default: stdout)"
    )
    r.add_argument("--realtime", action="store_true", help="feed at the audio's own pace")
    r.add_argument(
        "--frame-ms",
        type=float,
        default=_env_float("ISTHMUS_PIPELINE_FRAME_MS", 20.0),
        help="chunk length when the input node's caps do not fix it "
        "(default 20; env ISTHMUS_PIPELINE_FRAME_MS)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    convert_flag(r)
    r.set_defaults(func=cmd_run)

    v = sub.add_parser(
        "validate",
        help="check manifests; exit 0 when valid",
        description="Check manifests: structure, node types, params, options, ports, cycles, "
        "unconnected inputs and caps negotiation. Exit status 0 when all are valid, 1 with "
        "every error (file:line, node, port) and the negotiation suggestions otherwise. "
        "With -v, print the caps negotiated on each connection.",
    )
    logging_flags(v)
    v.add_argument("manifests", nargs="+", metavar="manifest", help="manifest file(s)")
    convert_flag(v)
    v.set_defaults(func=cmd_validate)

    g = sub.add_parser(
        "graph",
        help="draw the pipeline (DOT, PNG, SVG, PDF)",
        description="Print the pipeline as Graphviz DOT, or render it with -o (PNG, SVG and "
        "PDF need Graphviz's `dot` program).",
    )
    logging_flags(g)
    g.add_argument("manifest", help="the pipeline manifest (.yaml, .yml or .json)")
    g.add_argument(
        "--output", "-o", metavar="FILE", help="graph.png, graph.svg, graph.pdf or graph.dot"
    )
    g.add_argument(
        "--format", "-T", choices=("png", "svg", "pdf", "dot"), help="default: from -o's suffix"
    )
    g.add_argument(
        "--negotiate",
        action="store_true",
        help="negotiate caps first: label edges with them and show inserted converters",
    )
    convert_flag(g)
    g.set_defaults(func=cmd_graph)

    n = sub.add_parser(
        "node-types",
        help="list node types with their ports, caps and params",
        description="List the registered node types (built-ins included) with their input "
        "and output ports, caps, port behaviours, frame constraints and params.",
    )
    logging_flags(n)
    n.add_argument("names", nargs="*", metavar="NAME", help="only these node types")
    n.set_defaults(func=cmd_node_types)
    return parser


def _setup_logging(opts: argparse.Namespace) -> None:
    level_name = os.environ.get("ISTHMUS_PIPELINE_LOG_LEVEL", "WARNING").strip().upper()
    level = getattr(logging, level_name, logging.WARNING)
    if opts.verbose:
        level = logging.DEBUG if opts.verbose > 1 else logging.INFO
    if opts.quiet:
        level = logging.ERROR
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("isthmus").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    opts = build_parser().parse_args(argv)
    _setup_logging(opts)
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
