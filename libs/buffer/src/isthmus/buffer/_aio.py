"""Async wrappers for :class:`Ring`: ``await ring.recv()`` in asyncio or trio.

The fast path (a message or space is there) runs inline; otherwise one worker thread sleeps on the
ring's futex and the event loop resumes when it returns.  Nothing polls.
"""

from __future__ import annotations

import threading
from typing import Any

from ._buffer import Buffer
from ._errors import WaitTimeoutError
from ._ring import Ring

__all__ = ["AsyncRing"]


def _library() -> str:
    try:
        import sniffio

        return str(sniffio.current_async_library())
    except Exception:
        return "asyncio"


async def _in_thread(fn: Any, cancel: threading.Event, kick: Any) -> Any:
    if _library() == "trio":
        import trio

        try:
            return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except trio.Cancelled:
            cancel.set()
            kick()
            raise
    import asyncio

    try:
        return await asyncio.to_thread(fn)
    except asyncio.CancelledError:
        cancel.set()
        kick()
        raise


class AsyncRing:
    """Wrap a :class:`Ring` for ``async`` code (asyncio or trio, detected with sniffio).

    ``await recv()`` / ``await send()`` / ``await loan()`` behave like the blocking calls and
    can be cancelled; :meth:`commit`, :meth:`release` and :meth:`close` never block.
    """

    def __init__(self, ring: Ring) -> None:
        self.ring = ring

    async def _wait(self, wait: Any, timeout: float | None) -> None:
        cancel = threading.Event()
        await _in_thread(lambda: wait(timeout, _cancel=cancel), cancel, self.ring._kick)

    async def recv(self, timeout: float | None = None) -> Buffer:
        """Await the next message (see :meth:`Ring.recv`)."""
        # The worker thread only waits; the message is taken here, so a cancelled await
        # never loses one.
        try:
            return self.ring.recv(timeout=0)
        except WaitTimeoutError:
            if timeout == 0:
                raise
        await self._wait(self.ring.wait_readable, timeout)
        return self.ring.recv(timeout=0)

    async def loan(self, n: int, timeout: float | None = None) -> Buffer:
        """Await ``n`` bytes of space and loan them (see :meth:`Ring.loan`)."""
        try:
            return self.ring.loan(n, timeout=0)
        except WaitTimeoutError:
            if timeout == 0:
                raise
        await self._wait(lambda t, _cancel: self.ring.wait_writable(n, t, _cancel=_cancel), timeout)
        return self.ring.loan(n, timeout=0)

    async def send(self, data: Any, timeout: float | None = None) -> None:
        """Await space and copy ``data`` in as one message (see :meth:`Ring.send`)."""
        try:
            self.ring.send(data, timeout=0)
            return
        except WaitTimeoutError:
            if timeout == 0:
                raise
        n = memoryview(data).nbytes
        await self._wait(lambda t, _cancel: self.ring.wait_writable(n, t, _cancel=_cancel), timeout)
        self.ring.send(data, timeout=0)

    def commit(self, nbytes: int | None = None) -> None:
        """Publish the loaned message."""
        self.ring.commit(nbytes)

    def release(self) -> None:
        """Release the oldest received message."""
        self.ring.release()

    def close(self) -> None:
        """Close the ring."""
        self.ring.close()

    async def __aenter__(self) -> AsyncRing:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
