"""Node types for the process-executor tests: importable by name in a spawned child."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np

from isthmus.pipeline import AudioChunk, Control, EndOfStream, Node, Port, node


@node(name="p_gain", register=False)
def gain(chunk: AudioChunk, *, factor: float = 2.0) -> AudioChunk:
    return AudioChunk(chunk.samples * np.float32(factor), chunk.sample_rate, chunk.pts)


@node(name="p_async_add", register=False)
async def async_add(x: int, *, n: int = 1) -> int:
    await asyncio.sleep(0)
    return x + n


@node(name="p_split", register=False)
def split(x: int) -> Any:
    yield from (x, x)


@node(name="p_fail_on", register=False)
def fail_on(x: int, *, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"cannot take {x}")
    return x


@node(name="p_crash_on", register=False)
def crash_on(x: int, *, bad: int = 3) -> int:
    if x == bad:
        os._exit(7)
    return x


@node(name="p_slow", register=False)
def slow(x: int, *, seconds: float = 0.01) -> int:
    time.sleep(seconds)
    return x


@node(name="p_pid", register=False)
def pid(x: Any) -> int:
    return os.getpid()


@node(name="p_checksum", register=False)
def checksum(frame: Any) -> int:
    data = frame.data if hasattr(frame, "data") else frame
    return int(np.asarray(data, dtype=np.uint64).sum())


class Tail(Node):
    """Sums what it gets; at EndOfStream it sends the sum on "total"."""

    node_type = "p_tail"
    outputs = {"out": Port(), "total": Port()}

    def __init__(self) -> None:
        self.sum = 0

    def process(self, item: int, port: str) -> int:
        self.sum += item
        return item

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream):
            self.emit(self.sum, "total")
        return None


class FailsToStart(Node):
    node_type = "p_fails_to_start"

    def initialize(self) -> None:
        raise RuntimeError("no model file")

    def process(self, item: Any, port: str) -> Any:
        return item


@node(name="p_hop", register=False)
def hop(chunk: AudioChunk) -> int:
    """How long ago (ns) the sender stamped ``pts`` with ``time.perf_counter_ns() / 1e9``."""
    return time.perf_counter_ns() - round(chunk.pts * 1e9)


class HopSink(Node):
    """Records how long ago each chunk's ``pts`` was stamped (``perf_counter_ns() / 1e9``);
    returns the sorted latencies (ns) at EndOfStream."""

    node_type = "p_hop_sink"
    outputs = {"out": Port()}

    def __init__(self) -> None:
        self.lat: list[int] = []

    def process(self, item: Any, port: str) -> None:
        self.lat.append(time.perf_counter_ns() - round(item.pts * 1e9))

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream):
            return sorted(self.lat)
        return None
