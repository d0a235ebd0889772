"""Choose between the native core (``isthmus_buffer_accel``) and the pure-Python fallback.

``ISTHMUS_PUREPYTHON=1`` forces the fallback.  The buffer-protocol base class is fixed at import;
the ring, pool and copy primitives are looked up through :func:`current` when an object is
created, so tests can run both implementations in one process with :func:`use`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from . import _errors
from ._pure import PurePrimitives, PyBufferCoreBase

__all__ = ["IMPLEMENTATION", "CoreBase", "Primitives", "available", "current", "use"]


class Primitives(Protocol):
    """What a ring, pool or copy needs from an implementation."""

    name: str

    def address_of(self, obj: object, writable: bool = False) -> tuple[int, int, bool]: ...
    def memcopy(self, dst: int, src: int, nbytes: int) -> None: ...
    def alloc(self, nbytes: int, alignment: int) -> object: ...
    def load_u64(self, addr: int) -> int: ...
    def store_u64(self, addr: int, value: int) -> None: ...
    def load_u32(self, addr: int) -> int: ...
    def store_u32(self, addr: int, value: int) -> None: ...
    def futex_wait(self, addr: int, expected: int, timeout: float | None = None) -> int: ...
    def futex_wake(self, addr: int, n: int = 1) -> int: ...
    def ring_notify(self, seq_addr: int, waiting_addr: int) -> bool: ...
    def ring_publish(
        self,
        len_addr: int,
        nbytes: int,
        head_addr: int,
        head: int,
        seq_addr: int,
        waiting_addr: int,
    ) -> bool: ...
    def ring_wait_u64(
        self,
        addr: int,
        value: int,
        seq_addr: int,
        waiting_addr: int,
        spin_ns: int,
        timeout: float | None,
    ) -> int: ...


def _forced_pure() -> bool:
    return os.environ.get("ISTHMUS_PUREPYTHON", "").strip().lower() not in ("", "0", "false", "no")


_native: Any = None
if not _forced_pure():
    try:
        import isthmus_buffer_accel as _native
    except ImportError:
        _native = None


class NativePrimitives:
    """The native core's functions, exposed under the :class:`Primitives` names."""

    name = "native"

    def __init__(self, mod: Any) -> None:
        self.address_of = mod.address_of
        self.memcopy = mod.memcopy
        self.load_u64 = mod.load_u64
        self.store_u64 = mod.store_u64
        self.load_u32 = mod.load_u32
        self.store_u32 = mod.store_u32
        self.futex_wait = mod.futex_wait
        self.futex_wake = mod.futex_wake
        self.ring_notify = mod.ring_notify
        self.ring_publish = mod.ring_publish
        self.ring_wait_u64 = mod.ring_wait_u64
        self._aligned = mod.AlignedMemory

    def alloc(self, nbytes: int, alignment: int) -> object:
        return self._aligned(max(nbytes, 1), alignment)


_IMPLS: dict[str, Primitives] = {"python": PurePrimitives()}
CoreBase: type
if _native is not None:
    _native.register_errors(
        _errors.BufferReleasedError, _errors.ReadOnlyBufferError, _errors.BufferInUseError
    )
    _IMPLS["native"] = NativePrimitives(_native)
    CoreBase = _native.BufferCore
    IMPLEMENTATION = "native"
else:
    CoreBase = PyBufferCoreBase
    IMPLEMENTATION = "python"

_current: Primitives = _IMPLS[IMPLEMENTATION]


def current() -> Primitives:
    """The primitives new rings, pools and copies use."""
    return _current


def available() -> tuple[str, ...]:
    """Names of the implementations importable here (``"python"`` always is)."""
    return tuple(_IMPLS)


@contextmanager
def use(name: str) -> Iterator[Primitives]:
    """Temporarily make ``name`` the implementation new objects use (for tests and benchmarks)."""
    global _current
    if name not in _IMPLS:
        raise LookupError(f"implementation {name!r} is not available here (have {available()})")
    saved, _current = _current, _IMPLS[name]
    try:
        yield _current
    finally:
        _current = saved
