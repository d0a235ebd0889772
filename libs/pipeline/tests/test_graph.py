"""The graph and the node model: building, validation, cycles, ordering, the registry."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.pipeline import (
    GraphError,
    Node,
    NodeType,
    Pipeline,
    Port,
    node,
    node_types,
    register,
    resolve,
)


@node(name="g_ident", register=False)
def ident(x: Any) -> Any:
    return x


@node(name="g_scale", register=False)
def scale(x: float, *, factor: float, offset: float = 0.0) -> float:
    return x * factor + offset


class TwoOut(Node):
    node_type = "g_two"
    outputs = {"a": Port(), "b": Port()}

    def process(self, item: Any, port: str) -> None:
        self.emit(item, "a")


class Merge2(Node):
    node_type = "g_merge"
    inputs = {"x": Port(), "y": Port()}

    def process(self, item: Any, port: str) -> Any:
        return item


def test_function_node_types_take_keyword_params() -> None:
    nt = resolve(scale)
    assert isinstance(nt, NodeType) and nt.name == "g_scale"
    assert set(nt.params) == {"factor", "offset"}
    n = nt.create(factor=2.0)
    assert n.process(3.0, "in") == 6.0
    with pytest.raises(TypeError, match="missing required parameter 'factor'"):
        nt.create()
    with pytest.raises(TypeError, match=r"unknown parameter 'gain' \(known: factor, offset\)"):
        nt.create(factor=1, gain=2)


def test_add_checks_params_and_executor() -> None:
    p = Pipeline()
    with pytest.raises(GraphError, match=r"node 's'.*unknown parameter 'bogus'"):
        p.add("s", scale, factor=1, bogus=2)
    with pytest.raises(GraphError, match="unknown executor 'gpu'"):
        p.add("s", scale, factor=1, executor="gpu")
    p.add("s", scale, factor=1)
    with pytest.raises(GraphError, match="duplicate node id 's'"):
        p.add("s", ident)
    with pytest.raises(GraphError, match="invalid node id"):
        p.add("a.b", ident)


def test_connect_resolves_default_ports_and_names_bad_ones() -> None:
    p = Pipeline()
    p.add("t", TwoOut)
    p.add("m", Merge2)
    p.add("i", ident)
    with pytest.raises(GraphError, match=r"node 't' has several output ports \(a, b\): name one"):
        p.connect("t", "m.x")
    with pytest.raises(GraphError, match=r"node 'm' has no input port 'z' \(it has: x, y\)"):
        p.connect("t.a", "m.z")
    with pytest.raises(GraphError, match="unknown node 'nope'"):
        p.connect("nope", "i")
    c = p.connect("t.a", "m.x", maxsize=8, overflow="drop_oldest")
    assert (c.src, c.src_port, c.dst, c.dst_port) == ("t", "a", "m", "x")
    assert c.maxsize == 8 and c.overflow == "drop_oldest"
    with pytest.raises(GraphError, match="unknown overflow policy"):
        p.connect("t.b", "m.y", overflow="spill")
    with pytest.raises(GraphError, match="duplicate connection"):
        p.connect("t.a", "m.x")


def test_topological_order_sources_sinks_fan_out_and_in() -> None:
    p = Pipeline()
    for n in ("src", "a", "b", "sink"):
        p.add(n, ident)
    p.add("m", Merge2)
    p.connect("src", "a")
    p.connect("src", "b")
    p.connect("a", "m.x")
    p.connect("b", "m.y")
    p.connect("m", "sink")
    order = p.topological_order()
    assert order.index("src") < order.index("a") < order.index("m") < order.index("sink")
    assert order.index("b") < order.index("m")
    assert p.sources() == ["src"] and p.sinks() == ["sink"]
    assert p.downstream("src") == ["a", "b"] and p.upstream("m") == ["a", "b"]


def test_cycles_are_named() -> None:
    p = Pipeline()
    for n in ("a", "b", "c"):
        p.add(n, ident)
    p.chain("a", "b", "c")
    p.connect("c", "b")
    with pytest.raises(GraphError, match="cycle: b -> c -> b"):
        p.topological_order()


def test_validate_finds_unconnected_inputs_and_empty_pipelines() -> None:
    with pytest.raises(GraphError, match="no nodes"):
        Pipeline().validate()
    p = Pipeline()
    p.add("a", ident)
    p.add("m", Merge2)
    p.connect("a", "m.x")
    with pytest.raises(GraphError, match="input port 'in' of node 'a' is not connected"):
        p.validate()


def test_insert_between_keeps_edge_options() -> None:
    p = Pipeline()
    p.add("a", ident)
    p.add("b", ident)
    c = p.connect("a", "b", maxsize=3)
    p.insert_between(c, "conv", scale, factor=2)
    assert [str(x) for x in p.connections] == ["a.out -> conv.in", "conv.out -> b.in"]
    assert all(x.maxsize == 3 for x in p.connections)
    assert p.unique_id("conv") == "conv_2"


def test_registry_names_module_paths_and_suggestions() -> None:
    register(TwoOut)
    assert resolve("g_two").factory is TwoOut
    assert resolve(f"{__name__}:Merge2").factory is Merge2
    types = node_types()
    assert {"input", "output", "g_two"} <= set(types)
    with pytest.raises(GraphError, match="unknown node type 'g_tow' \\(did you mean 'g_two'\\?\\)"):
        resolve("g_tow")
    with pytest.raises(GraphError, match="cannot import node type"):
        resolve("no.such.module:Thing")

    class Other(Node):
        node_type = "g_two"

    with pytest.raises(ValueError, match="already registered"):
        register(Other)


def test_ports_have_behaviours_and_parsed_caps() -> None:
    port = Port("audio(sample_rate=16000)", behaviour="configured")
    assert str(port.caps) == "audio(sample_rate=16000)"
    with pytest.raises(ValueError, match="unknown port behaviour"):
        Port("audio", behaviour="magic")
