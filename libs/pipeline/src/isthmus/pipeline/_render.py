"""Pipeline graphs as Graphviz DOT, and rendered to PNG/SVG by the ``dot`` program."""

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

__all__ = ["render", "to_dot"]


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(p: Pipeline, negotiated: Negotiated | None = None) -> str:
    """DOT text: nodes labelled with id, type and executor; edges with ports and caps."""
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
    for c in p.connections:
        parts = []
        if len(p.nodes[c.src].outputs) > 1 or c.src_port != "out":
            parts.append(c.src_port)
        if len(p.nodes[c.dst].inputs) > 1 or c.dst_port != "in":
            parts.append(f"-> {c.dst_port}")
        caps = edges.get(c)
        if caps is not None:
            parts.append(str(caps).replace(", ", ",\n  "))
        label = f" [label={_q(chr(10).join(parts))}]" if parts else ""
        lines.append(f"  {_q(c.src)} -> {_q(c.dst)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(
    p: Pipeline,
    path: str | os.PathLike[str],
    format: str | None = None,
    negotiated: Negotiated | None = None,
) -> Path:
    """Write the graph to ``path`` as PNG or SVG (from the suffix), or DOT for ``.dot``."""
    out = Path(path)
    fmt = format or out.suffix.lstrip(".").lower() or "png"
    text = to_dot(p, negotiated)
    if fmt in ("dot", "gv"):
        out.write_text(text, encoding="utf-8")
        return out
    if fmt not in ("png", "svg", "pdf"):
        raise PipelineError(f"cannot render {fmt!r}: png, svg, pdf or dot")
    dot = shutil.which("dot")
    if dot is None:
        raise PipelineError(
            "rendering needs Graphviz's `dot` program (Debian/Ubuntu: apt-get install graphviz; "
            "macOS: brew install graphviz); `graph -o graph.dot` writes DOT without it"
        )
    proc = subprocess.run(
        [dot, f"-T{fmt}", "-o", str(out)], input=text.encode(), capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise PipelineError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return out
