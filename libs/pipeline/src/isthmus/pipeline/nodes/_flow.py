"""Flow nodes: ``tee`` (one input to N outputs) and ``merge`` (N inputs to one output)."""

from __future__ import annotations

from typing import Any

from .._node import Node, Port, register

__all__ = ["Merge", "Tee"]


class Tee(Node):
    """Sends each item to ``out0``..``out{N-1}`` (the same object: no copies; a node that
    changes items in place should come after a copy)."""

    node_type = "tee"

    def __init__(self, *, outputs: int = 2) -> None:
        if outputs < 1:
            raise ValueError("a tee needs at least one output")
        self.inputs = {"in": Port("any", behaviour="adaptive")}
        self.outputs = {f"out{i}": Port("any", behaviour="passthrough") for i in range(outputs)}
        self._ports = list(self.outputs)

    def process(self, item: Any, port: str) -> None:
        for p in self._ports:
            self.emit(item, p)


class Merge(Node):
    """Interleaves ``in0``..``in{N-1}`` onto ``out`` in arrival order; ends when all ended."""

    node_type = "merge"

    def __init__(self, *, inputs: int = 2) -> None:
        if inputs < 1:
            raise ValueError("a merge needs at least one input")
        self.inputs = {f"in{i}": Port("any", behaviour="adaptive") for i in range(inputs)}
        self.outputs = {"out": Port("any", behaviour="passthrough")}

    def process(self, item: Any, port: str) -> Any:
        return item


register(Tee)
register(Merge)
