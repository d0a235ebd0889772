"""Caps negotiation over a pipeline graph, with converter insertion and fix-it suggestions.

1. Forward pass, in topological order: each node's output caps follow from its inputs by port
   behaviour (``static``/``configured`` as declared or from the node's ``output_caps`` hook,
   ``passthrough``/``adaptive`` follow the input, ``runtime`` from what ``initialize()``
   discovered).  Each edge's caps are the upstream output caps meet the downstream input caps.
2. Reverse pass, from the sinks: what a downstream port accepts narrows the input of nodes
   whose outputs follow their inputs, so an adaptive chain produces what the sink takes.
3. Fixation: a second forward pass picks one concrete format per edge, and frame constraints
   (webrtcvad's 10/20/30 ms) are checked.

An empty meet is a mismatch: with ``auto_convert`` the converters ``sample_format``,
``channel_mix``, ``resample`` and ``rechunk`` are inserted and negotiation starts again;
otherwise :class:`NegotiationError` lists a suggestion per mismatching field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._caps import Caps, CapsSet, _value_str
from ._errors import NegotiationError
from ._graph import Connection, Pipeline

__all__ = ["CONVERTERS", "Negotiated", "negotiate", "renegotiate"]

#: Field -> (converter node type, its param, how a suggestion names it), in insertion order.
CONVERTERS: tuple[tuple[str, str, str, str], ...] = (
    ("format", "sample_format", "format", "a sample format converter"),
    ("channels", "channel_mix", "channels", "a channel mixer"),
    ("sample_rate", "resample", "sample_rate", "a resampler"),
)
_FOLLOWING = ("passthrough", "adaptive")
_ROUNDS = 8  # converter insertion rounds before giving up


@dataclass(frozen=True)
class Negotiated:
    """The result: fixed caps per connection, inserted converters, edges left for runtime."""

    edges: Mapping[Connection, Caps]
    inserted: tuple[str, ...] = ()
    deferred: tuple[Connection, ...] = ()
    discovered: Mapping[str, Mapping[str, Caps]] = field(default_factory=dict)

    def caps(self, src: str, dst: str | None = None) -> Caps:
        """The caps of the (first) edge leaving ``src`` (``"node"`` or ``"node.port"``)."""
        node, _, port = src.partition(".")
        for c, caps in self.edges.items():
            if c.src == node and (not port or c.src_port == port) and (dst is None or c.dst == dst):
                return caps
        raise KeyError(src)

    def describe(self) -> str:
        """One line per edge: ``a.out -> b.in  audio(...)``."""
        width = max((len(str(c)) for c in self.edges), default=0)
        lines = [f"{c!s:<{width}}  {caps}" for c, caps in self.edges.items()]
        lines += [f"{c!s:<{width}}  (known at run time)" for c in self.deferred]
        if self.inserted:
            lines.append("inserted: " + ", ".join(self.inserted))
        return "\n".join(lines)


def _as_caps(x: Any) -> Caps | CapsSet:
    if isinstance(x, Caps | CapsSet):
        return x
    from ._caps import parse_caps

    return parse_caps(str(x))


def _meet(a: Caps | CapsSet | None, b: Caps | CapsSet) -> Caps | CapsSet | None:
    if a is None:
        return None
    return a.intersect(b)


def _first(c: Caps | CapsSet) -> Caps:
    return c.first() if isinstance(c, CapsSet) else c


class _Pass:
    """One negotiation attempt over the current graph."""

    def __init__(self, p: Pipeline, discovered: Mapping[str, Mapping[str, Any]]) -> None:
        self.p = p
        self.discovered = discovered
        self.order = p.topological_order()
        self.edge: dict[Connection, Caps | CapsSet] = {}
        self.deferred: set[str] = set()  # nodes whose runtime outputs are not known yet
        self.narrow: dict[Connection, Caps | CapsSet] = {}

    def outputs(self, nid: str, inputs: dict[str, Caps | CapsSet]) -> dict[str, Caps | CapsSet]:
        spec = self.p.nodes[nid]
        node = spec.prototype
        found = self.discovered.get(nid, {})
        hooked = (
            node.output_caps({k: _first(v) for k, v in inputs.items()})
            if all(isinstance(v, Caps | CapsSet) for v in inputs.values())
            else None
        )
        first_in = next(iter(inputs.values()), None)
        out: dict[str, Caps | CapsSet] = {}
        for port, decl in spec.outputs.items():
            declared = decl.caps
            if hooked and port in hooked:
                out[port] = _as_caps(hooked[port])
            elif decl.behaviour == "runtime":
                if port in found:
                    out[port] = _as_caps(found[port])
                else:
                    self.deferred.add(nid)
                    out[port] = declared
            elif decl.behaviour in _FOLLOWING and first_in is not None:
                m = first_in.intersect(declared)
                out[port] = m if m is not None else declared
            elif first_in is not None and (
                decl.behaviour == "configured"
                or (
                    decl.behaviour == "static"
                    and len(inputs) == 1
                    and _first(declared).media == _first(first_in).media != "any"
                )
            ):
                # A static declaration on a one-input node of the same media
                # (``audio(format=f32)``) fixes the fields it names; the rest follow the input.
                # Fields the declaration fixes come from it; the rest follow the input.
                base = _first(first_in)
                d = _first(declared)
                merged = base.with_fields(**dict(d.fields)) if d.media in (base.media, "any") else d
                out[port] = merged
            else:
                out[port] = declared
        return out

    def forward(
        self, fix: bool, prefer: Mapping[str, Any] | None
    ) -> list[tuple[Connection, Caps | CapsSet, Caps | CapsSet]]:
        """Compute every edge; returns the mismatches (connection, upstream, downstream)."""
        bad: list[tuple[Connection, Caps | CapsSet, Caps | CapsSet]] = []
        ins: dict[str, dict[str, Caps | CapsSet]] = {n: {} for n in self.order}
        for nid in self.order:
            outs = self.outputs(nid, ins[nid])
            for c in self.p.outgoing(nid):
                up = outs[c.src_port]
                down: Caps | CapsSet = self.p.nodes[c.dst].inputs[c.dst_port].caps
                if c in self.narrow:
                    down = _meet(down, self.narrow[c]) or down
                m = up.intersect(down)
                if m is None:
                    bad.append((c, up, down))
                    m = up
                if fix and nid not in self.deferred:
                    m = m.fixate(prefer)
                self.edge[c] = m
                prev = ins[c.dst].get(c.dst_port)
                ins[c.dst][c.dst_port] = m if prev is None else (prev.intersect(m) or m)
            if nid in self.deferred:
                for d in self.p.downstream(nid):
                    if all(
                        port.behaviour in _FOLLOWING for port in self.p.nodes[d].outputs.values()
                    ):
                        self.deferred.add(d)
        return bad

    def reverse(self) -> None:
        """Narrow the inputs of following nodes by what their outputs may carry."""
        for nid in reversed(self.order):
            spec = self.p.nodes[nid]
            outs = list(self.p.outgoing(nid))
            if not outs or not spec.inputs:
                continue
            behaviours = {spec.outputs[c.src_port].behaviour for c in outs}
            if not behaviours <= set(_FOLLOWING):
                continue  # configured and static outputs do not say what the input must be
            want: Caps | CapsSet | None = None
            for c in outs:
                e = self.edge.get(c)
                if e is None:
                    continue
                e = _first(e)
                want = e if want is None else (want.intersect(e) or want)
            if want is None:
                continue
            for c in self.p.incoming(nid):
                have = self.narrow.get(c)
                self.narrow[c] = want if have is None else (have.intersect(want) or have)


def _frame_problem(p: Pipeline, c: Connection, caps: Caps) -> tuple[str, Any] | None:
    """A frame constraint the edge breaks: (param, value) for the rechunker, else None."""
    fc = p.nodes[c.dst].inputs[c.dst_port].frame
    if fc is None:
        return None
    ms, rate = caps.get("frame_ms"), caps.get("sample_rate")
    if not isinstance(ms, int | float) or not isinstance(rate, int | float):
        return None
    frames = round(ms * rate / 1000)
    if fc.accepts(frames, int(rate)):
        return None
    if fc.samples:
        return ("samples", fc.samples[0])
    good = [m for m in fc.frame_ms if m >= ms] or list(fc.frame_ms)
    return ("frame_ms", good[0] if ms not in fc.frame_ms else fc.frame_ms[0])


def _target(have: Any, want: Any) -> Any:
    """The value a converter should produce: for numbers the nearest allowed one at or above
    what comes in (no needless loss), else the largest; for names the first allowed."""
    from ._caps import Range

    if isinstance(want, Range):
        if isinstance(have, int | float):
            v = min(max(have, want.lo), want.hi)
            return int(v) if float(v).is_integer() else v
        return want.lo
    options = list(want) if isinstance(want, tuple) else [want]
    nums = [o for o in options if isinstance(o, int | float)]
    if isinstance(have, int | float) and len(nums) == len(options):
        above = sorted(o for o in nums if o >= have)
        return above[0] if above else max(nums)
    return options[0]


def _suggest(
    c: Connection, up: Caps | CapsSet, down: Caps | CapsSet
) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Human suggestions and the converters (type, params) that would fix one edge."""
    u, d = _first(up), _first(down)
    between = f"between '{c.src}' and '{c.dst}'"
    if u.conflicts(d) == ["media"]:
        return [
            f"'{c.src}.{c.src_port}' gives {u.media} but '{c.dst}.{c.dst_port}' takes "
            f"{d.media}: connect a node that converts {u.media} to {d.media} {between}"
        ], []
    tips: list[str] = []
    fixes: list[tuple[str, dict[str, Any]]] = []
    conflicts = set(u.conflicts(d))
    for fld, ntype, param, what in CONVERTERS:
        if fld not in conflicts:
            continue
        target = _target(u.get(fld), d.get(fld))
        have = _value_str(u.get(fld))
        if fld == "sample_rate":
            change = f"{have} Hz to {target} Hz"
        elif fld == "channels":
            change = f"{have} channels to {target}"
        else:
            change = f"{have} to {target}"
        tips.append(f"insert {what} {between} to convert {change}")
        fixes.append((ntype, {param: target}))
    if "frame_ms" in conflicts:
        target = Caps("x", {"frame_ms": d.get("frame_ms")}).fixate().get("frame_ms")
        tips.append(
            f"insert a rechunker {between} to cut {_value_str(u.get('frame_ms'))} ms chunks "
            f"into {target} ms"
        )
        fixes.append(("rechunk", {"frame_ms": target}))
    other = conflicts - {"frame_ms", *(f for f, *_ in CONVERTERS)}
    for fld in sorted(other):
        tips.append(
            f"'{c.src}.{c.src_port}' gives {fld}={_value_str(u.get(fld))} but "
            f"'{c.dst}.{c.dst_port}' takes {fld}={_value_str(d.get(fld))}"
        )
    return tips, fixes


def negotiate(
    pipeline: Pipeline,
    *,
    auto_convert: bool = False,
    discovered: Mapping[str, Mapping[str, Any]] | None = None,
    prefer: Mapping[str, Any] | None = None,
) -> Negotiated:
    """Negotiate caps on every connection of ``pipeline`` (inserting converters if asked)."""
    p = pipeline
    found = {k: dict(v) for k, v in (discovered or {}).items()}
    inserted: list[str] = []
    for _ in range(_ROUNDS):
        run = _Pass(p, found)
        run.forward(False, prefer)
        run.reverse()
        bad = run.forward(True, prefer)
        fixes: list[tuple[Connection, list[tuple[str, dict[str, Any]]]]] = []
        tips: list[str] = []
        for c, up, down in bad:
            t, f = _suggest(c, up, down)
            tips += t
            fixes.append((c, f))
            if not f and not t:
                tips.append(f"'{c}' carries {up} but the input takes {down}")
        for c, caps in run.edge.items():
            if c.src in run.deferred or any(c == b[0] for b in bad):
                continue
            prob = _frame_problem(p, c, _first(caps))
            if prob is not None:
                param, value = prob
                fc = p.nodes[c.dst].inputs[c.dst_port].frame
                tips.append(
                    f"insert a rechunker between '{c.src}' and '{c.dst}' to cut "
                    f"{_value_str(_first(caps).get('frame_ms'))} ms chunks into "
                    + (f"{value} ms" if param == "frame_ms" else f"{value}-sample")
                    + f" chunks ('{c.dst}.{c.dst_port}' needs {fc})"
                )
                fixes.append((c, [("rechunk", {param: value})]))
        if not tips:
            edges = {c: _first(v) for c, v in run.edge.items() if c.src not in run.deferred}
            deferred = tuple(c for c in p.connections if c.src in run.deferred)
            return Negotiated(edges, tuple(inserted), deferred, found)
        if not auto_convert or any(not f for _, f in fixes):
            raise NegotiationError(
                "caps negotiation failed: "
                + "; ".join(tips[:1])
                + (f" (and {len(tips) - 1} more)" if len(tips) > 1 else ""),
                tips,
            )
        for c, conv in fixes:
            cur = c
            for ntype, params in conv:
                nid = p.unique_id(f"{c.dst}_{ntype}")
                p.insert_between(cur, nid, ntype, **params)
                inserted.append(nid)
                cur = p.outgoing(nid)[0]
    raise NegotiationError("caps negotiation did not settle after inserting converters")


def renegotiate(
    pipeline: Pipeline,
    previous: Negotiated,
    node_id: str,
    port: str,
    caps: Caps | str,
) -> Negotiated:
    """A node's output ``port`` changed to ``caps`` mid-stream: negotiate again from there.

    No converter is inserted into a running pipeline: a format that cannot flow raises
    :class:`NegotiationError`.
    """
    found: dict[str, dict[str, Any]] = {k: dict(v) for k, v in previous.discovered.items()}
    # The announced caps are what the port gives from now on, whatever its behaviour.
    found.setdefault(node_id, {})[port] = _as_caps(caps)
    result = _negotiate_with_override(pipeline, found, previous)
    return result


def _negotiate_with_override(
    p: Pipeline, found: dict[str, dict[str, Any]], previous: Negotiated
) -> Negotiated:
    class _Override(_Pass):
        def outputs(self, nid: str, inputs: dict[str, Caps | CapsSet]) -> dict[str, Caps | CapsSet]:
            out = super().outputs(nid, inputs)
            for port, caps in self.discovered.get(nid, {}).items():
                out[port] = _as_caps(caps)
            return out

    run = _Override(p, found)
    run.forward(False, None)
    run.reverse()
    bad = run.forward(True, None)
    if bad:
        tips: list[str] = []
        for c, up, down in bad:
            tips += _suggest(c, up, down)[0] or [f"'{c}' carries {up} but the input takes {down}"]
        raise NegotiationError("renegotiation failed: " + tips[0], tips)
    edges = {c: _first(v) for c, v in run.edge.items() if c.src not in run.deferred}
    return Negotiated(edges, previous.inserted, (), found)
