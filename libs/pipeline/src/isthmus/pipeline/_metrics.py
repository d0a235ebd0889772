"""Per-node and per-edge metrics: latency percentiles, queue depth, drops; Prometheus text.

Recording must stay well under a microsecond per message, so a latency is one store into a
preallocated ring of the last ``window`` samples (nanoseconds); percentiles are computed only
when asked for, by sorting that window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EdgeMetrics", "LatencyWindow", "Metrics", "NodeMetrics"]


class LatencyWindow:
    """The last ``window`` latencies (ns) and running count/sum; percentiles on demand."""

    __slots__ = ("count", "mask", "samples", "total_ns")

    def __init__(self, window: int = 4096) -> None:
        size = 1
        while size < window:
            size <<= 1
        self.samples = [0] * size
        self.mask = size - 1
        self.count = 0
        self.total_ns = 0

    def record(self, ns: int) -> None:
        """Add one latency in nanoseconds."""
        self.samples[self.count & self.mask] = ns
        self.count += 1
        self.total_ns += ns

    def percentile(self, q: float) -> float:
        """The ``q``-quantile (0..1) of the window, in seconds (0.0 when empty)."""
        n = min(self.count, self.mask + 1)
        if n == 0:
            return 0.0
        window = sorted(self.samples[:n])
        i = min(n - 1, max(0, round(q * (n - 1))))
        return window[i] / 1e9

    @property
    def p50(self) -> float:
        """Median latency (s)."""
        return self.percentile(0.50)

    @property
    def p95(self) -> float:
        """95th percentile latency (s)."""
        return self.percentile(0.95)

    @property
    def p99(self) -> float:
        """99th percentile latency (s)."""
        return self.percentile(0.99)

    @property
    def mean(self) -> float:
        """Mean latency over every record (s)."""
        return self.total_ns / self.count / 1e9 if self.count else 0.0


class NodeMetrics:
    """One node: ``latency`` of its process calls, items in/out, errors, restarts."""

    __slots__ = ("_items_in", "errors", "items_out", "latency", "node", "restarts")

    def __init__(self, node: str, window: int = 4096) -> None:
        self.node = node
        self.latency = LatencyWindow(window)
        self._items_in = 0
        self.items_out = 0
        self.errors = 0
        self.restarts = 0

    @property
    def items_in(self) -> int:
        """Items handed to the node (timed ones count through ``latency``)."""
        return self._items_in + self.latency.count

    @items_in.setter
    def items_in(self, value: int) -> None:
        self._items_in = value - self.latency.count

    @property
    def p50(self) -> float:
        """Median processing latency (s)."""
        return self.latency.p50

    @property
    def p95(self) -> float:
        """95th percentile processing latency (s)."""
        return self.latency.p95

    @property
    def p99(self) -> float:
        """99th percentile processing latency (s)."""
        return self.latency.p99


class EdgeMetrics:
    """One edge: items, drops, queue depth now and at most, time spent queued."""

    __slots__ = ("depth", "drops", "edge", "items", "max_depth", "wait")

    def __init__(self, edge: str, window: int = 4096) -> None:
        self.edge = edge
        self.items = 0
        self.drops = 0
        self.depth = 0
        self.max_depth = 0
        self.wait = LatencyWindow(window)


@dataclass
class _Row:
    name: str
    kind: str
    help: str


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """All metrics of a session (or several: ``Metrics.merge``)."""

    def __init__(self, session: str = "") -> None:
        self.session = session
        self.nodes: dict[str, NodeMetrics] = {}
        self.edges: dict[str, EdgeMetrics] = {}

    def node(self, node_id: str) -> NodeMetrics:
        """The metrics of ``node_id`` (created on first use)."""
        m = self.nodes.get(node_id)
        if m is None:
            m = self.nodes[node_id] = NodeMetrics(node_id)
        return m

    def edge(self, name: str) -> EdgeMetrics:
        """The metrics of the edge named ``"a.out -> b.in"``."""
        m = self.edges.get(name)
        if m is None:
            m = self.edges[name] = EdgeMetrics(name)
        return m

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "nodes": {
                n: {
                    "items_in": m.items_in,
                    "items_out": m.items_out,
                    "errors": m.errors,
                    "restarts": m.restarts,
                    "p50_s": m.p50,
                    "p95_s": m.p95,
                    "p99_s": m.p99,
                }
                for n, m in self.nodes.items()
            },
            "edges": {
                e: {
                    "items": m.items,
                    "drops": m.drops,
                    "depth": m.depth,
                    "max_depth": m.max_depth,
                    "wait_p99_s": m.wait.p99,
                }
                for e, m in self.edges.items()
            },
        }

    def prometheus(self, prefix: str = "isthmus_pipeline") -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []
        sess = f'session="{_esc(self.session)}",' if self.session else ""

        def family(name: str, kind: str, help_: str, rows: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {prefix}_{name} {help_}")
            out.append(f"# TYPE {prefix}_{name} {kind}")
            for labels, value in rows:
                out.append(f"{prefix}_{name}{{{sess}{labels}}} {value:.9g}")

        nodes = sorted(self.nodes.items())
        edges = sorted(self.edges.items())
        family(
            "node_latency_seconds",
            "summary",
            "Processing time per item.",
            [
                (f'node="{_esc(n)}",quantile="{q}"', m.latency.percentile(float(q)))
                for n, m in nodes
                for q in ("0.5", "0.95", "0.99")
            ],
        )
        out.extend(
            f'{prefix}_node_latency_seconds_count{{{sess}node="{_esc(n)}"}} {m.latency.count}'
            for n, m in nodes
        )
        out.extend(
            f'{prefix}_node_latency_seconds_sum{{{sess}node="{_esc(n)}"}} '
            f"{m.latency.total_ns / 1e9:.9g}"
            for n, m in nodes
        )
        for name, attr, help_ in (
            ("node_items_in_total", "items_in", "Items received."),
            ("node_items_out_total", "items_out", "Items sent."),
            ("node_errors_total", "errors", "Inputs that failed."),
            ("node_restarts_total", "restarts", "Restarts of a process node."),
        ):
            family(
                name, "counter", help_, [(f'node="{_esc(n)}"', getattr(m, attr)) for n, m in nodes]
            )
        family(
            "edge_items_total",
            "counter",
            "Items queued.",
            [(f'edge="{_esc(e)}"', m.items) for e, m in edges],
        )
        family(
            "edge_drops_total",
            "counter",
            "Items dropped by overflow.",
            [(f'edge="{_esc(e)}"', m.drops) for e, m in edges],
        )
        family(
            "edge_queue_depth",
            "gauge",
            "Items queued now.",
            [(f'edge="{_esc(e)}"', m.depth) for e, m in edges],
        )
        family(
            "edge_queue_depth_max",
            "gauge",
            "Most items queued at once.",
            [(f'edge="{_esc(e)}"', m.max_depth) for e, m in edges],
        )
        return "\n".join(out) + "\n"
