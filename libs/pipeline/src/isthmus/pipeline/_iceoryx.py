"""iceoryx2 channels (the ``iceoryx2`` extra): exchange items with iceoryx2 services that may be
written in other languages (C, C++, Rust), with the same write-in-place discipline as the rings.

Each channel is a publish-subscribe service ``<name>`` with ``u8``-slice payloads plus an event
service ``<name>/event`` whose notifications wake a sleeping subscriber (no polling).  A payload
is one record in the layout documented in :mod:`isthmus.pipeline._codec` (a 64-byte
little-endian header, then the samples): for audio, byte 0 is ``1``, bytes 4..8 the sample rate
(u32), 8..16 the frame count (u64), 16..24 the pts in seconds (f64), 24..26 the channel count
(u16), byte 26 the sample format (0 f32, 1 f64, 2 s16, 3 s32, 4 u8), and the interleaved samples
start at byte 64.  ``EndOfStream`` travels as a pickled record (kind 5), which other languages
can treat as "the stream ended".

The publisher loans the sample, writes the record into it with one ``np.copyto`` and sends it:
no per-byte loops.  The subscriber copies what it received once and releases the sample at once,
so iceoryx2's loans are never held by the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from . import _codec as codec
from ._control import Control, EndOfStream
from ._errors import PipelineError
from ._node import Node, Port, register

__all__ = ["IceoryxPublisher", "IceoryxSink", "IceoryxSource", "IceoryxSubscriber"]


def _iox() -> Any:
    try:
        import iceoryx2 as iox
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise PipelineError(
            "iceoryx2 channels need iceoryx2: pip install 'isthmus-pipeline[iceoryx2]'"
        ) from e
    iox.set_log_level(iox.LogLevel.Error)
    return iox


class _Endpoint:
    #: Samples a subscriber may have waiting; with safe overflow off and a publisher that
    #: retries, a slow subscriber back-pressures the publisher instead of losing samples.
    BUFFER = 64

    def __init__(self, service: str) -> None:
        import ctypes

        iox = self.iox = _iox()
        self.service = service
        self.node = (
            iox.NodeBuilder.new()
            .signal_handling_mode(iox.SignalHandlingMode.Disabled)
            .create(iox.ServiceType.Ipc)
        )
        self.pubsub = (
            self.node.service_builder(iox.ServiceName.new(service))
            .publish_subscribe(iox.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(self.BUFFER)
            .open_or_create()
        )
        self.events = (
            self.node.service_builder(iox.ServiceName.new(service + "/event"))
            .event()
            .open_or_create()
        )

    def _close(self, *ports: Any) -> None:
        for p in ports:
            if p is not None:
                with contextlib.suppress(Exception):
                    p.delete()
        # Dropping the services and the node releases their files and shared memory.
        self.pubsub = self.events = self.node = None


class IceoryxPublisher(_Endpoint):
    """Publishes items (audio, video, arrays, bytes, controls) on an iceoryx2 service."""

    def __init__(self, service: str, max_bytes: int = 1 << 20) -> None:
        super().__init__(service)
        self.max_bytes = max_bytes
        self.pub = (
            self.pubsub.publisher_builder()
            .initial_max_slice_len(max_bytes)
            .backpressure_strategy(self.iox.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        self.notifier = self.events.notifier_builder().create()

    def wait_for_subscribers(self, n: int = 1, timeout: float = 10.0) -> None:
        """Block until ``n`` subscribers are connected (a late subscriber misses samples)."""
        deadline = time.monotonic() + timeout
        while self.pubsub.dynamic_config.number_of_subscribers < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on iceoryx2 service {self.service!r}")
            time.sleep(0.005)
        self.pub.update_connections()

    def wait_until_unsubscribed(self, timeout: float = 10.0) -> bool:
        """Block until every subscriber left (samples a publisher still holds go with it when it
        closes, so a last message should be read first); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.pubsub.dynamic_config.number_of_subscribers > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def publish(self, item: Any, port: str = "out") -> None:
        """Write ``item`` straight into a loaned sample and send it."""
        pickled = None
        if codec._kind(item, port) == codec.PICKLE:
            import pickle

            pickled = pickle.dumps((port, item), protocol=5)
            n = codec.HEADER + len(pickled)
        else:
            n = codec.encoded_size(item, port)
        if n > self.max_bytes:
            raise PipelineError(f"an item of {n} bytes exceeds max_bytes={self.max_bytes}")
        sample = self.pub.loan_slice_uninit(n)
        mv = sample.payload().as_memory_view().cast("B")
        try:
            codec.encode_into(mv, item, port, pickled=pickled)
        finally:
            mv.release()
        sample.assume_init().send()
        self.notifier.notify()

    def close(self) -> None:
        """Release the ports and the node."""
        self._close(self.pub, self.notifier)
        self.pub = self.notifier = None


class IceoryxSubscriber(_Endpoint):
    """Receives items from an iceoryx2 service; sleeps on its event service while idle."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
        self.sub = self.pubsub.subscriber_builder().buffer_size(self.BUFFER).create()
        self.listener = self.events.listener_builder().create()
        self._stop = False
        self.busy = False

    def stop(self) -> None:
        """Make a waiting :meth:`receive` return None within 100 ms (from any thread)."""
        self._stop = True

    def receive(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next ``(port, item)`` (copied out of the sample), or None after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.busy = True
        try:
            while not self._stop:
                s = self.sub.receive()
                if s is not None:
                    try:
                        return codec.decode(s.payload().as_memory_view().cast("B"), copy=True)
                    finally:
                        s.delete()
                # Sleep on the event service, in slices so stop() and timeouts are noticed.
                left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if left <= 0:
                    return None
                self.listener.timed_wait(self.iox.Duration.from_secs_f64(left))
            return None
        finally:
            self.busy = False

    def close(self) -> None:
        """Release the ports and the node."""
        self._close(self.sub, self.listener)
        self.sub = self.listener = None


class IceoryxSink(Node):
    """Publishes what it gets on the iceoryx2 service ``service`` (and EndOfStream at the end)."""

    node_type = "iceoryx_sink"
    inputs = {"in": Port("any", behaviour="adaptive")}  # noqa: RUF012
    outputs: dict[str, Port] = {}  # noqa: RUF012

    def __init__(self, *, service: str, max_bytes: int = 1 << 20, subscribers: int = 0) -> None:
        self.service, self.max_bytes, self.subscribers = service, max_bytes, subscribers
        self._pub: IceoryxPublisher | None = None

    def initialize(self) -> None:
        self._pub = IceoryxPublisher(self.service, self.max_bytes)
        if self.subscribers:
            self._pub.wait_for_subscribers(self.subscribers)

    def process(self, item: Any, port: str) -> None:
        assert self._pub is not None
        self._pub.publish(item)

    def on_control(self, msg: Control) -> Any:
        if isinstance(msg, EndOfStream) and self._pub is not None:
            self._pub.publish(msg)
        return None

    def close(self) -> None:
        if self._pub is not None:
            self._pub.close()
            self._pub = None


class IceoryxSource(Node):
    """Yields what arrives on the iceoryx2 service ``service`` until an EndOfStream record
    (or ``idle_timeout`` seconds without data, if set).  Waits in a thread on the event
    service, so the event loop stays free and nothing polls."""

    node_type = "iceoryx_source"
    inputs: dict[str, Port] = {}  # noqa: RUF012
    outputs = {"out": Port("any")}  # noqa: RUF012

    def __init__(self, *, service: str, idle_timeout: float | None = None) -> None:
        self.service, self.idle_timeout = service, idle_timeout
        self._sub: IceoryxSubscriber | None = None

    def initialize(self) -> None:
        self._sub = IceoryxSubscriber(self.service)

    async def generate(self) -> AsyncIterator[Any]:
        sub = self._sub
        assert sub is not None
        while True:
            got = await asyncio.to_thread(sub.receive, self.idle_timeout)
            if got is None or isinstance(got[1], EndOfStream):
                # Leave the service now: a publisher may wait for its last reader to go.
                self.close()
                return
            yield got[1]

    def close(self) -> None:
        sub = self._sub
        if sub is not None:
            sub.stop()
            deadline = time.monotonic() + 1.0
            while sub.busy and time.monotonic() < deadline:  # the waiting thread leaves first
                time.sleep(0.005)
            sub.close()
            self._sub = None


register(IceoryxSink)
register(IceoryxSource)
