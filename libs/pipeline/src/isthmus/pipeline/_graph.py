"""``Pipeline``: the graph of node specs and connections, built in code or from a manifest."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import GraphError
from ._node import Node, NodeType, resolve

if TYPE_CHECKING:
    from ._negotiate import Negotiated

__all__ = ["EXECUTORS", "OVERFLOW_POLICIES", "Connection", "NodeSpec", "Pipeline"]

#: Where a node runs: inline on the loop (``direct``), as its own asyncio task (``task``), the
#: default ``asyncio`` (direct for sync nodes, a task otherwise), ``thread``, ``process``, ``ray``.
EXECUTORS = ("asyncio", "direct", "task", "thread", "process", "ray")
#: What a full edge does with a new item (system control messages are never dropped).
OVERFLOW_POLICIES = ("block", "drop_oldest", "latest", "drop_newest")


@dataclass(eq=False)
class NodeSpec:
    """One node of a pipeline: its id, type and params, and where it runs."""

    id: str
    type: NodeType
    params: dict[str, Any] = field(default_factory=dict)
    executor: str = "asyncio"
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    #: Manifest fields this library does not use (the seed's), written back by to_manifest().
    extra: dict[str, Any] = field(default_factory=dict)
    _proto: Node | None = field(default=None, repr=False)

    @property
    def prototype(self) -> Node:
        """An instance made with the params, never initialized: for ports and caps hooks."""
        if self._proto is None:
            self._proto = self.type.create(**self.params)
            self._proto.id = self.id
        return self._proto

    @property
    def inputs(self) -> dict[str, Any]:
        """The input ports (after params: a merge's N inputs)."""
        return self.prototype.inputs

    @property
    def outputs(self) -> dict[str, Any]:
        """The output ports."""
        return self.prototype.outputs

    def create(self) -> Node:
        """A fresh instance for a session."""
        inst = self.type.create(**self.params)
        inst.id = self.id
        return inst


@dataclass(frozen=True)
class Connection:
    """An edge ``src.src_port -> dst.dst_port``; ``options`` are ``maxsize`` and ``overflow``."""

    src: str
    src_port: str
    dst: str
    dst_port: str
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    line: int | None = field(default=None, compare=False, hash=False)

    def __str__(self) -> str:
        return f"{self.src}.{self.src_port} -> {self.dst}.{self.dst_port}"

    @property
    def maxsize(self) -> int:
        """Queue bound of this edge (default 64)."""
        return int(self.options.get("maxsize", 64))

    @property
    def overflow(self) -> str:
        """Overflow policy of this edge (default ``block``)."""
        return str(self.options.get("overflow", "block"))


class Pipeline:
    """A graph of nodes: ``add`` nodes, ``connect`` ports, then run it in a :class:`Session`."""

    def __init__(self, name: str = "pipeline", *, description: str = "") -> None:
        self.name = name
        self.description = description
        self.nodes: dict[str, NodeSpec] = {}
        self.connections: list[Connection] = []
        self.metadata: dict[str, Any] = {}
        #: Top-level manifest fields this library does not use, kept for to_manifest().
        self.extra: dict[str, Any] = {}
        #: The manifest's ``negotiation`` section (``auto_convert``).
        self.negotiation: dict[str, Any] = {}

    # --- building ----------------------------------------------------------------------------
    def add(
        self,
        node_id: str,
        node_type: Any,
        *,
        executor: str = "asyncio",
        options: Mapping[str, Any] | None = None,
        line: int | None = None,
        **params: Any,
    ) -> NodeSpec:
        """Add a node: ``node_type`` is a registered name, ``module:qualname``, class or
        function."""
        if not node_id or "." in node_id:
            raise GraphError(f"invalid node id {node_id!r} (non-empty, no '.')", node=node_id)
        if node_id in self.nodes:
            raise GraphError(f"duplicate node id {node_id!r}", node=node_id)
        if executor not in EXECUTORS:
            raise GraphError(
                f"unknown executor {executor!r} for node {node_id!r}: one of {EXECUTORS}",
                node=node_id,
            )
        nt = resolve(node_type)
        try:
            nt.check_params(params)
        except TypeError as e:
            raise GraphError(f"node {node_id!r} ({nt.name}): {e}", node=node_id) from None
        spec = NodeSpec(node_id, nt, dict(params), executor, dict(options or {}), line)
        self.nodes[node_id] = spec
        return spec

    def _endpoint(self, ref: str, *, output: bool) -> tuple[str, str]:
        node_id, dot, port = ref.partition(".")
        spec = self.nodes.get(node_id)
        if spec is None:
            raise GraphError(f"unknown node {node_id!r} in connection {ref!r}", node=node_id)
        ports = spec.outputs if output else spec.inputs
        kind = "output" if output else "input"
        if not dot:
            if len(ports) == 1:
                return node_id, next(iter(ports))
            default = "out" if output else "in"
            if default in ports:
                return node_id, default
            if not ports:
                raise GraphError(f"node {node_id!r} has no {kind} ports", node=node_id)
            raise GraphError(
                f"node {node_id!r} has several {kind} ports ({', '.join(ports)}): name one",
                node=node_id,
            )
        if port not in ports:
            raise GraphError(
                f"node {node_id!r} has no {kind} port {port!r} (it has: "
                f"{', '.join(ports) or 'none'})",
                node=node_id,
                port=port,
            )
        return node_id, port

    def connect(
        self,
        src: str,
        dst: str,
        *,
        maxsize: int | None = None,
        overflow: str | None = None,
        line: int | None = None,
    ) -> Connection:
        """Connect ``"a.out"`` to ``"b.in"`` (a lone or default ``out``/``in`` port may be
        omitted)."""
        s, sp = self._endpoint(src, output=True)
        d, dp = self._endpoint(dst, output=False)
        options: dict[str, Any] = {}
        if maxsize is not None:
            if maxsize < 1:
                raise GraphError(f"maxsize of {src} -> {dst} must be at least 1", node=d, port=dp)
            options["maxsize"] = int(maxsize)
        if overflow is not None:
            if overflow not in OVERFLOW_POLICIES:
                raise GraphError(
                    f"unknown overflow policy {overflow!r}: one of {OVERFLOW_POLICIES}",
                    node=d,
                    port=dp,
                )
            options["overflow"] = overflow
        for c in self.connections:
            if (c.dst, c.dst_port) == (d, dp) and (c.src, c.src_port) == (s, sp):
                raise GraphError(f"duplicate connection {c}", node=d, port=dp)
        conn = Connection(s, sp, d, dp, options, line)
        self.connections.append(conn)
        return conn

    def chain(self, *node_ids: str, **edge: Any) -> None:
        """Connect each node's default output to the next one's default input."""
        for a, b in itertools.pairwise(node_ids):
            self.connect(a, b, **edge)

    def remove(self, node_id: str) -> None:
        """Remove a node and its connections."""
        if node_id not in self.nodes:
            raise GraphError(f"unknown node {node_id!r}", node=node_id)
        del self.nodes[node_id]
        self.connections = [c for c in self.connections if node_id not in (c.src, c.dst)]

    def insert_between(
        self, conn: Connection, node_id: str, node_type: Any, **params: Any
    ) -> NodeSpec:
        """Replace ``conn`` by ``src -> node_id -> dst`` (a converter, say); options are kept."""
        if conn not in self.connections:
            raise GraphError(f"no connection {conn}", node=conn.dst, port=conn.dst_port)
        spec = self.add(node_id, node_type, **params)
        i = self.connections.index(conn)
        ins, outs = list(spec.inputs), list(spec.outputs)
        if len(ins) != 1 or len(outs) != 1:
            del self.nodes[node_id]
            raise GraphError(f"{spec.type.name} needs one input and one output to be inserted")
        first = Connection(conn.src, conn.src_port, node_id, ins[0], conn.options, conn.line)
        second = Connection(node_id, outs[0], conn.dst, conn.dst_port, conn.options, conn.line)
        self.connections[i : i + 1] = [first, second]
        return spec

    def unique_id(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``… whichever is free."""
        if base not in self.nodes:
            return base
        n = 2
        while f"{base}_{n}" in self.nodes:
            n += 1
        return f"{base}_{n}"

    # --- queries -----------------------------------------------------------------------------
    def incoming(self, node_id: str) -> list[Connection]:
        """Connections into ``node_id``."""
        return [c for c in self.connections if c.dst == node_id]

    def outgoing(self, node_id: str) -> list[Connection]:
        """Connections out of ``node_id``."""
        return [c for c in self.connections if c.src == node_id]

    def upstream(self, node_id: str) -> list[str]:
        """Ids of the nodes feeding ``node_id``."""
        return list(dict.fromkeys(c.src for c in self.incoming(node_id)))

    def downstream(self, node_id: str) -> list[str]:
        """Ids of the nodes ``node_id`` feeds."""
        return list(dict.fromkeys(c.dst for c in self.outgoing(node_id)))

    def sources(self) -> list[str]:
        """Nodes with no incoming connection."""
        fed = {c.dst for c in self.connections}
        return [n for n in self.nodes if n not in fed]

    def sinks(self) -> list[str]:
        """Nodes with no outgoing connection."""
        feeding = {c.src for c in self.connections}
        return [n for n in self.nodes if n not in feeding]

    def topological_order(self) -> list[str]:
        """Every node id, each after all that feed it; GraphError naming a cycle if there is one."""
        indeg = dict.fromkeys(self.nodes, 0)
        for c in self.connections:
            indeg[c.dst] += 1
        ready = [n for n in self.nodes if indeg[n] == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for d in self.downstream(n):
                indeg[d] -= sum(1 for c in self.connections if c.src == n and c.dst == d)
                if indeg[d] == 0:
                    ready.append(d)
        if len(order) != len(self.nodes):
            cycle = self._find_cycle({n for n in self.nodes if n not in order})
            raise GraphError("the pipeline has a cycle: " + " -> ".join(cycle), node=cycle[0])
        return order

    def _find_cycle(self, candidates: set[str]) -> list[str]:
        for start in sorted(candidates):
            path, seen = [start], {start}
            node = start
            while True:
                nxt = [d for d in self.downstream(node) if d in candidates]
                if not nxt:
                    break
                node = nxt[0]
                if node in seen:
                    return [*path[path.index(node) :], node]
                path.append(node)
                seen.add(node)
        return sorted(candidates)

    def validate(self) -> None:
        """GraphError on a cycle, a node without its inputs connected, or an empty pipeline."""
        if not self.nodes:
            raise GraphError("the pipeline has no nodes")
        self.topological_order()
        for nid, spec in self.nodes.items():
            connected = {c.dst_port for c in self.incoming(nid)}
            for port in spec.inputs:
                if port not in connected:
                    raise GraphError(
                        f"input port {port!r} of node {nid!r} is not connected",
                        node=nid,
                        port=port,
                    )
        for c in self.connections:
            for nid, port, output in ((c.src, c.src_port, True), (c.dst, c.dst_port, False)):
                self._endpoint(f"{nid}.{port}", output=output)

    def __iter__(self) -> Iterator[NodeSpec]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}: {len(self.nodes)} nodes, {len(self.connections)} edges>"

    # --- negotiation and manifests -----------------------------------------------------------
    def negotiate(self, *, auto_convert: bool = False, **kw: Any) -> Negotiated:
        """Caps negotiation over the graph (converters inserted when ``auto_convert``)."""
        from ._negotiate import negotiate

        return negotiate(self, auto_convert=auto_convert, **kw)

    def to_manifest(self) -> dict[str, Any]:
        """A manifest dict (the seed's format plus ``node.port`` addressing) that ``load`` reads."""
        from ._manifest import to_manifest

        return to_manifest(self)

    @classmethod
    def from_manifest(cls, manifest: Any) -> Pipeline:
        """A pipeline from a manifest dict, a YAML/JSON string or a file path."""
        from ._manifest import load

        return load(manifest)
