"""Fixtures shared by the isthmus-buffer tests.

``impl`` runs a test once per implementation importable here ("python" always, "native" when the
accel core is installed); nox also runs the whole suite with ISTHMUS_PUREPYTHON=1.  Every test is
checked for leaked /dev/shm entries and child processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid
from collections.abc import Iterator

import pytest

from isthmus.buffer import _backend

SHM = "/dev/shm"


_names: list[str] = []


def _ours() -> set[str]:
    """/dev/shm entries made under the names this test was given (other runs may share /dev/shm)."""
    return {n for n in os.listdir(SHM) for m in _names if n.startswith("isthmus." + m)}


@pytest.fixture(params=_backend.available())
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    with _backend.use(request.param):
        yield request.param


@pytest.fixture
def name() -> str:
    n = f"t-{uuid.uuid4().hex[:12]}"
    _names.append(n)
    return n


@pytest.fixture
def ctx() -> mp.context.SpawnContext:
    return mp.get_context("spawn")


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    _names.clear()
    yield
    leaked = _ours()
    children = mp.active_children()
    for c in children:
        c.kill()
        c.join(5)
    assert not leaked, f"test left shared memory behind: {sorted(leaked)}"
    assert not children, f"test left child processes running: {children}"
