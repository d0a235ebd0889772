"""Pipeline graphs as Graphviz DOT, and rendered to PNG/SVG/PDF by Graphviz's ``dot`` program."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import PipelineError

if TYPE_CHECKING:
    from ._graph import Pipeline
    from ._negotiate import Negotiated

__all__ = ["FORMATS", "render", "to_dot"]

#: What :func:`render` writes: ``dot``/``gv`` as text, the others through Graphviz.
FORMATS = ("png", "svg", "pdf", "dot", "gv")

_INSTALL = (
    "rendering needs Graphviz's `dot` program: install it (Debian/Ubuntu: "
    "`apt-get install graphviz`; Fedora: `dnf install graphviz`; macOS: `brew install "
    "graphviz`), or write DOT text instead (`isthmus-pipeline graph manifest.yaml -o graph.dot`)"
)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(p: Pipeline, negotiated: Negotiated | None = None) -> str:
    """DOT text of the graph.

    Nodes are labelled with their id, type and (when not the default) executor; ``input`` and
    ``output`` nodes are ellipses and converters inserted by negotiation are dashed.  Edges are
    labelled with their ports where a node has several (or they are not ``out``/``in``) and,
    given ``negotiated``, with the caps that flow on them.
    """
    lines = [
        f"digraph {_q(p.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    inserted = set(negotiated.inserted) if negotiated else set()
    for nid, spec in p.nodes.items():
        label = f"{nid}\n({spec.type.name})"
        if spec.executor != "asyncio":
            label += f"\n[{spec.executor}]"
        attrs = [f"label={_q(label)}"]
        if spec.type.name in ("input", "output"):
            attrs.append('shape=ellipse, fillcolor="#fdf1dc"')
        if nid in inserted:
            attrs.append('fillcolor="#e3f6e3", style="rounded,filled,dashed"')
        lines.append(f"  {_q(nid)} [{', '.join(attrs)}];")
    edges = dict(negotiated.edges) if negotiated else {}
    deferred = set(negotiated.deferred) if negotiated else set()
    for c in p.connections:
        parts = []
        if len(p.nodes[c.src].outputs) > 1 or c.src_port != "out":
            parts.append(c.src_port)
        if len(p.nodes[c.dst].inputs) > 1 or c.dst_port != "in":
            parts.append(f"-> {c.dst_port}")
        caps = edges.get(c)
        if caps is not None:
            parts.append(str(caps).replace(", ", ",\n  "))
        elif c in deferred:
            parts.append("(caps known at run time)")
        attrs = []
        if parts:
            attrs.append(f"label={_q(chr(10).join(parts))}")
        if c.options.get("overflow", "block") != "block":
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {_q(c.src)} -> {_q(c.dst)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(
    p: Pipeline,
    path: str | os.PathLike[str],
    format: str | None = None,
    negotiated: Negotiated | None = None,
) -> Path:
    """Write the graph to ``path``: PNG, SVG or PDF through Graphviz, or DOT text.

    ``format`` defaults to the file's suffix (PNG without one).  Raises
    :class:`PipelineError` saying how to install Graphviz when ``dot`` is not on the PATH.
    """
    out = Path(path)
    fmt = (format or out.suffix.lstrip(".") or "png").lower()
    if fmt not in FORMATS:
        raise PipelineError(f"cannot render {fmt!r}: one of {', '.join(FORMATS)}")
    text = to_dot(p, negotiated)
    if fmt in ("dot", "gv"):
        out.write_text(text, encoding="utf-8")
        return out
    dot = shutil.which("dot")
    if dot is None:
        raise PipelineError(_INSTALL)
    try:
        proc = subprocess.run(
            [dot, f"-T{fmt}", "-o", str(out)],
            input=text.encode(),
            capture_output=True,
            check=False,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        raise PipelineError("Graphviz's dot did not finish in 120 s") from None
    if proc.returncode != 0:
        raise PipelineError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return out
