"""``BufferPool``: fixed-size aligned slots with O(1) acquire and release."""

from __future__ import annotations

import mmap
import threading
import time
from collections.abc import Callable
from typing import Literal

from ._backend import current
from ._buffer import Buffer
from ._errors import (
    BufferInUseError,
    PoolClosedError,
    PoolExhaustedError,
    SizeError,
    WaitTimeoutError,
)

__all__ = ["BufferPool"]

Exhaustion = Literal["wait", "raise", "grow"]


def _pinned_alloc(nbytes: int) -> object:
    from ._device import pinned_host_memory

    return pinned_host_memory(nbytes)


class BufferPool:
    """A pool of ``slots`` buffers of ``slot_size`` bytes each, carved from one aligned arena.

    :meth:`acquire` hands out a writable :class:`Buffer`; the slot returns to the pool when the
    buffer is released or when it and every view made from it have been garbage collected.

    ``alignment`` is 64 (a cache line) by default, or ``"page"``.  ``exhaustion`` says what
    :meth:`acquire` does when every slot is taken: ``"wait"`` (for ``timeout`` seconds, then
    :class:`WaitTimeoutError`), ``"raise"`` (:class:`PoolExhaustedError` at once) or ``"grow"``
    (add another arena of ``slots`` slots).  ``pinned=True`` allocates page-locked host memory
    through CuPy (for fast host/device copies); ``"auto"`` does so only when CUDA is usable.
    """

    def __init__(
        self,
        slot_size: int,
        slots: int,
        *,
        alignment: int | Literal["page"] = 64,
        exhaustion: Exhaustion = "wait",
        timeout: float | None = None,
        pinned: bool | Literal["auto"] = False,
    ) -> None:
        if not isinstance(slot_size, int) or slot_size <= 0:
            raise SizeError(f"slot_size must be a positive int, got {slot_size!r}")
        if not isinstance(slots, int) or slots <= 0:
            raise SizeError(f"slots must be a positive int, got {slots!r}")
        align = mmap.PAGESIZE if alignment == "page" else alignment
        if not isinstance(align, int) or align < 8 or align & (align - 1):
            raise SizeError(f"alignment must be a power of two >= 8 or 'page', got {alignment!r}")
        if exhaustion not in ("wait", "raise", "grow"):
            raise ValueError(f"exhaustion must be 'wait', 'raise' or 'grow', got {exhaustion!r}")
        self.slot_size = slot_size
        self.alignment = align
        self.exhaustion: Exhaustion = exhaustion
        self.timeout = timeout
        self._stride = (slot_size + align - 1) & ~(align - 1)
        self._per_arena = slots
        self._p = current()
        if pinned == "auto":
            from ._device import cuda_available

            pinned = cuda_available()
        self.pinned = bool(pinned)
        self._arenas: list[tuple[object, memoryview]] = []
        self._free: list[int] = []
        self._cond = threading.Condition(threading.RLock())
        self._waiters = 0
        self._closed = False
        self._out_after_close = 0  # slots still out once closed; counted under the lock
        self._add_arena()

    def _add_arena(self) -> None:
        nbytes = self._stride * self._per_arena
        if self.pinned:
            mem = _pinned_alloc(nbytes + self.alignment)
        else:
            mem = self._p.alloc(nbytes, self.alignment)
        mv = memoryview(mem).cast("B")  # type: ignore[arg-type]
        base = self._p.address_of(mv, True)[0]
        base = (base + self.alignment - 1) & ~(self.alignment - 1)
        self._arenas.append((mem, mv))
        self._free.extend(base + i * self._stride for i in range(self._per_arena - 1, -1, -1))

    @property
    def capacity(self) -> int:
        """Total number of slots (grows with ``exhaustion="grow"``)."""
        return self._per_arena * len(self._arenas)

    @property
    def available(self) -> int:
        """Slots free right now."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """Slots handed out and not yet returned."""
        if self._closed:
            return self._out_after_close
        return self.capacity - len(self._free)

    def acquire(self, timeout: float | None = None) -> Buffer:
        """Take a free slot as a writable ``slot_size``-byte :class:`Buffer` (contents undefined).

        ``timeout`` overrides the pool's for the ``"wait"`` policy.
        """
        try:
            addr = self._free.pop()  # atomic under the GIL: the fast path takes no lock
        except IndexError:
            addr = self._acquire_slow(self.timeout if timeout is None else timeout)
        return Buffer._make(addr, self.slot_size, False, self, self, addr)

    def _acquire_slow(self, timeout: float | None) -> int:
        if self._closed:
            raise PoolClosedError("the pool is closed")
        if self.exhaustion == "raise":
            raise PoolExhaustedError(
                f"all {self.capacity} slots are in use; release buffers, enlarge the pool, or "
                "use exhaustion='wait' or 'grow'"
            )
        with self._cond:
            if self._closed:  # close() may have run since the check above
                raise PoolClosedError("the pool is closed")
            if self.exhaustion == "grow":
                while True:  # lock-free fast-path callers may take the new slots first
                    try:
                        return self._free.pop()
                    except IndexError:
                        self._add_arena()
            deadline = None if timeout is None else time.monotonic() + timeout
            self._waiters += 1
            try:
                while not self._free:
                    if self._closed:
                        raise PoolClosedError("the pool was closed while waiting")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise WaitTimeoutError(
                            f"no slot of the pool became free within {timeout} s"
                        )
                    self._cond.wait(remaining)
                return self._free.pop()
            finally:
                self._waiters -= 1

    def _buffer_released(self, addr: int) -> None:
        if self._closed:
            with self._cond:
                self._out_after_close -= 1
                if not self._out_after_close:
                    self._free_arenas()
            return
        self._free.append(addr)
        if self._waiters:
            with self._cond:
                self._cond.notify()

    def close(self) -> None:
        """Free the arenas; with buffers still out, they are freed when the last one returns."""
        if self._closed:
            return
        with self._cond:
            self._out_after_close = self.capacity - len(self._free)
            self._closed = True
            self._free.clear()
            self._cond.notify_all()
            if not self._out_after_close:
                self._free_arenas()

    def _free_arenas(self) -> None:
        arenas, self._arenas = self._arenas, []
        for mem, mv in arenas:
            mv.release()
            closer: Callable[[], None] | None = getattr(mem, "close", None)
            if closer is not None:
                try:
                    closer()
                except BufferError:  # pragma: no cover - views of slots hold our buffers
                    raise BufferInUseError("a view of a pool slot outlived its buffer") from None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def __enter__(self) -> BufferPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<BufferPool slot_size={self.slot_size} capacity={self.capacity} "
            f"available={self.available} alignment={self.alignment}>"
        )
