"""Node types for the Ray executor tests: importable as ``_raynodes:<name>`` by Ray workers
(the tests put this directory on their PYTHONPATH)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from isthmus.pipeline import Control, EndOfStream, Interrupt, Node, Port, node


@node(name="r_add", register=False)
def add(x: int, *, n: int = 1) -> int:
    return x + n


@node(name="r_async_add", register=False)
async def async_add(x: int, *, n: int = 1) -> int:
    await asyncio.sleep(0)
    return x + n


@node(name="r_repeat", register=False)
def repeat(x: Any, *, times: int = 2) -> Iterator[Any]:
    for _ in range(times):
        yield x


@node(name="r_count_up", register=False)
async def count_up(x: int) -> AsyncIterator[int]:
    for i in range(x):
        await asyncio.sleep(0)
        yield i


@node(name="r_fail_on", register=False)
def fail_on(x: int, *, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"cannot take {x}")
    return x


@node(name="r_crash_on", register=False)
def crash_on(x: int, *, bad: int = 3) -> int:
    if x == bad:
        os._exit(7)  # the actor's process dies, as with a segfault in a native library
    return x


@node(name="r_pid", register=False)
def pid(x: Any) -> int:
    return os.getpid()


class Tail(Node):
    """Sums what it gets and says the sum on "total" at EndOfStream; Interrupt resets it;
    ``Message`` controls with name "boom" make ``on_control`` fail."""

    node_type = "r_tail"
    outputs = {"out": Port(), "total": Port()}

    def __init__(self) -> None:
        self.sum = 0

    def process(self, item: int, port: str) -> int:
        self.sum += item
        return item

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream):
            self.emit(self.sum, "total")
        elif isinstance(msg, Interrupt):
            self.sum = 0
        elif getattr(msg, "name", "") == "boom":
            raise RuntimeError("control went boom")
        return None


class Splitter(Node):
    """Async: even numbers to "even", odd ones to "odd" (by ``emit``), nothing on "out"."""

    node_type = "r_splitter"
    outputs = {"even": Port(), "odd": Port()}

    async def process(self, item: int, port: str) -> None:
        await asyncio.sleep(0)
        self.emit(item, "even" if item % 2 == 0 else "odd")


class NeedsModel(Node):
    """Fails in initialize(), as a node whose model file is missing."""

    node_type = "r_needs_model"

    async def initialize(self) -> None:
        raise FileNotFoundError("no model file at /nonexistent/model.onnx")

    def process(self, item: Any, port: str) -> Any:
        return item
