"""What runs inside the child processes of the ``buffer`` benchmarks.

Every function takes one ``spec`` dict and returns something picklable.  Heavy or optional imports
(isthmus.buffer, numpy, zmq, iceoryx2) happen inside the functions, after :func:`bench._child.child_entry`
has applied the child's environment (``ISTHMUS_PUREPYTHON``).

Latency protocol, the same for every transport ("ping-pong"): the producer writes the payload (copy of
a prepared ``bytes`` object with one memoryview assignment, or for the large case fills the buffer in
place), then stores ``time.perf_counter_ns()`` in the first 8 bytes and publishes.  The consumer takes
``perf_counter_ns()`` right after its receive returns; the difference is the one-way latency (the clock is
CLOCK_MONOTONIC, system-wide).  The consumer then sends a tiny acknowledgement back on a second channel
of the same kind, and the producer waits for it before the next message, so the consumer is always
already waiting when a message arrives and the ring/queue never holds more than one message.
"""

from __future__ import annotations

import os
import struct
import time
from array import array
from typing import Any

STAMP = struct.Struct("<q")
now = time.perf_counter_ns


def _lat_array(n: int) -> array:
    return array("q", bytes(8 * n))


def _fill(view: Any, value: int, np: Any) -> None:
    """Touch every byte of ``view`` (a memset through numpy): the 'frame written in place'."""
    np.frombuffer(view, dtype=np.uint8).fill(value & 0xFF)


# --- isthmus.buffer Ring ---------------------------------------------------------------------------


def _open_ring(name: str, spin: float, timeout: float = 20.0) -> Any:
    """Join a ring another child is creating (retries until it exists and is initialised)."""
    from isthmus.buffer import IsthmusBufferError, Ring

    deadline = time.monotonic() + timeout
    while True:
        try:
            return Ring.open(name, spin=spin)
        except (FileNotFoundError, IsthmusBufferError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def ours_latency_producer(spec: dict[str, Any]) -> dict[str, Any]:
    from isthmus.buffer import IMPLEMENTATION, Ring

    size, n, warm, mode = spec["size"], spec["n"], spec["warm"], spec["mode"]
    tmo = spec.get("timeout", 30.0)
    spin = spec["spin"]
    np = None
    if mode != "copy":
        import numpy as np
    payload = os.urandom(size)
    src = bytearray(payload)  # for mode == "send": stamped, then copied in by send()
    prod = Ring.create(spec["data"], spec["capacity"], spin=spin)
    try:
        ack = _open_ring(spec["ack"], spin)
        try:
            loan, commit, send = prod.loan, prod.commit, prod.send
            recv = ack.recv
            pack = STAMP.pack_into
            t_start = time.perf_counter()
            for i in range(warm + n):
                if mode == "copy":
                    buf = loan(size, timeout=tmo)
                    memoryview(buf)[:] = payload
                    pack(buf, 0, now())
                    del buf
                    commit()
                elif mode == "fill":
                    buf = loan(size, timeout=tmo)
                    _fill(buf, i, np)
                    pack(buf, 0, now())
                    del buf
                    commit()
                else:  # "send": one copy of a ready message, stamped before the copy
                    pack(src, 0, now())
                    send(src, timeout=tmo)
                recv(timeout=tmo).release()
            elapsed = time.perf_counter() - t_start
        finally:
            ack.close()
    finally:
        prod.close()
    return {"implementation": IMPLEMENTATION, "round_trip_us": elapsed / (warm + n) * 1e6}


def ours_latency_consumer(spec: dict[str, Any]) -> dict[str, Any]:
    from isthmus.buffer import IMPLEMENTATION, Ring

    n, warm, spin = spec["n"], spec["warm"], spec["spin"]
    tmo = spec.get("timeout", 30.0)
    lat = _lat_array(n)
    ackmsg = b"\x01" * 8
    ack = Ring.create(spec["ack"], 4096, spin=spin)
    try:
        cons = _open_ring(spec["data"], spin)
        try:
            recv, send = cons.recv, ack.send
            unpack = STAMP.unpack_from
            for i in range(warm + n):
                m = recv(timeout=tmo)
                t = now()
                stamp = unpack(m, 0)[0]
                m.release()
                if i >= warm:
                    lat[i - warm] = t - stamp
                send(ackmsg, timeout=tmo)
        finally:
            cons.close()
    finally:
        ack.close()
    return {"implementation": IMPLEMENTATION, "lat_ns": lat.tobytes()}


# --- stdlib shared_memory + pipe doorbell ----------------------------------------------------------


def stdlib_latency_producer(spec: dict[str, Any]) -> dict[str, Any]:
    from multiprocessing import shared_memory

    size, n, warm, mode = spec["size"], spec["n"], spec["warm"], spec["mode"]
    np = None
    if mode != "copy":
        import numpy as np
    payload = os.urandom(size)
    shm = shared_memory.SharedMemory(spec["shm"])
    door = spec["door_w"].fileno()
    ackfd = spec["ack_r"].fileno()
    write, read, pack = os.write, os.read, STAMP.pack_into
    mv = shm.buf[:size]
    try:
        for i in range(warm + n):
            if mode == "copy":
                mv[:] = payload
            else:
                _fill(mv, i, np)
            pack(mv, 0, now())
            write(door, b"\x01")
            read(ackfd, 1)
    finally:
        mv.release()
        shm.close()
    return {}


def stdlib_latency_consumer(spec: dict[str, Any]) -> dict[str, Any]:
    from multiprocessing import shared_memory

    n, warm = spec["n"], spec["warm"]
    lat = _lat_array(n)
    shm = shared_memory.SharedMemory(spec["shm"])
    door = spec["door_r"].fileno()
    ackfd = spec["ack_w"].fileno()
    write, read, unpack = os.write, os.read, STAMP.unpack_from
    buf = shm.buf
    try:
        for i in range(warm + n):
            read(door, 1)
            t = now()
            stamp = unpack(buf, 0)[0]
            if i >= warm:
                lat[i - warm] = t - stamp
            write(ackfd, b"\x01")
    finally:
        del buf
        shm.close()
    return {"lat_ns": lat.tobytes()}


# --- multiprocessing.Queue -------------------------------------------------------------------------


def queue_latency_producer(spec: dict[str, Any]) -> dict[str, Any]:
    size, n, warm, mode = spec["size"], spec["n"], spec["warm"], spec["mode"]
    np = None
    if mode != "copy":
        import numpy as np
    q, ackq = spec["q"], spec["ack_q"]
    msg = bytearray(os.urandom(size))
    pack, put, get = STAMP.pack_into, q.put, ackq.get
    tmo = spec.get("timeout", 30.0)
    for i in range(warm + n):
        if mode != "copy":
            _fill(msg, i, np)
        pack(msg, 0, now())
        put(msg)
        get(timeout=tmo)
    return {}


def queue_latency_consumer(spec: dict[str, Any]) -> dict[str, Any]:
    n, warm = spec["n"], spec["warm"]
    lat = _lat_array(n)
    q, ackq = spec["q"], spec["ack_q"]
    get, put, unpack = q.get, ackq.put, STAMP.unpack_from
    tmo = spec.get("timeout", 30.0)
    for i in range(warm + n):
        m = get(timeout=tmo)
        t = now()
        stamp = unpack(m, 0)[0]
        if i >= warm:
            lat[i - warm] = t - stamp
        put(1)
    return {"lat_ns": lat.tobytes()}


# --- pyzmq PAIR over ipc:// ------------------------------------------------------------------------


def zmq_latency_producer(spec: dict[str, Any]) -> dict[str, Any]:
    import zmq

    size, n, warm = spec["size"], spec["n"], spec["warm"]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 0
    sock.rcvtimeo = int(spec.get("timeout", 30.0) * 1000)
    try:
        sock.bind(spec["addr"])
        msg = bytearray(os.urandom(size))
        pack, send, recv = STAMP.pack_into, sock.send, sock.recv
        recv()  # the consumer says hello once it is connected
        for _ in range(warm + n):
            pack(msg, 0, now())
            send(msg)
            recv()
    finally:
        sock.close()
        ctx.term()
    return {}


def zmq_latency_consumer(spec: dict[str, Any]) -> dict[str, Any]:
    import zmq

    n, warm = spec["n"], spec["warm"]
    lat = _lat_array(n)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 0
    sock.rcvtimeo = int(spec.get("timeout", 30.0) * 1000)
    try:
        sock.connect(spec["addr"])
        sock.send(b"hello")
        send, recv, unpack = sock.send, sock.recv, STAMP.unpack_from
        for i in range(warm + n):
            m = recv()
            t = now()
            stamp = unpack(m, 0)[0]
            if i >= warm:
                lat[i - warm] = t - stamp
            send(b"k")
    finally:
        sock.close()
        ctx.term()
    return {"lat_ns": lat.tobytes()}


# --- iceoryx2 publish-subscribe --------------------------------------------------------------------
# Two publish-subscribe services (data, ack) with u8-slice payloads.  wait == "poll": the receiver
# busy-polls Subscriber.receive() (100% of a core, like a spinning ring).  wait == "event": the sender
# also notifies an event service and the receiver sleeps in Listener.blocking_wait() until then.


class _Iox:
    def __init__(self, spec: dict[str, Any], role: str) -> None:
        import ctypes

        import iceoryx2 as iox

        iox.set_log_level(iox.LogLevel.Error)
        self.iox = iox
        self.ctypes = ctypes
        self.node = (
            iox.NodeBuilder.new()
            .signal_handling_mode(iox.SignalHandlingMode.Disabled)
            .create(iox.ServiceType.Ipc)
        )
        base = spec["service"]
        self.event = spec["wait"] == "event"
        data = self._pubsub(base + "/data")
        ack = self._pubsub(base + "/ack")
        if role == "producer":
            out_svc, in_svc, out_len = data, ack, spec["size"]
            out_ev, in_ev = base + "/data-ev", base + "/ack-ev"
        else:
            out_svc, in_svc, out_len = ack, data, 8
            out_ev, in_ev = base + "/ack-ev", base + "/data-ev"
        self.out_svc, self.in_svc = out_svc, in_svc
        self.pub = out_svc.publisher_builder().initial_max_slice_len(out_len).create()
        self.sub = in_svc.subscriber_builder().create()
        self.notifier = self.listener = None
        if self.event:
            self.notifier = self._event(out_ev).notifier_builder().create()
            self.listener = self._event(in_ev).listener_builder().create()
        deadline = time.monotonic() + 20
        while (
            out_svc.dynamic_config.number_of_subscribers < 1
            or in_svc.dynamic_config.number_of_publishers < 1
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("iceoryx2 peer did not connect")
            time.sleep(0.001)
        self.pub.update_connections()

    def _pubsub(self, name: str) -> Any:
        iox = self.iox
        return (
            self.node.service_builder(iox.ServiceName.new(name))
            .publish_subscribe(iox.Slice[self.ctypes.c_uint8])
            .open_or_create()
        )

    def _event(self, name: str) -> Any:
        return self.node.service_builder(self.iox.ServiceName.new(name)).event().open_or_create()

    def receive(self) -> Any:
        sub = self.sub
        s = sub.receive()
        if self.event:
            wait = self.listener.blocking_wait
            while s is None:
                wait()
                s = sub.receive()
        else:
            while s is None:
                s = sub.receive()
        return s

    def close(self) -> None:
        for attr in ("pub", "sub", "notifier", "listener"):
            obj = getattr(self, attr, None)
            if obj is not None:
                obj.delete()
        del self.node  # a Node has no delete(); dropping it removes its resources


def iox_latency_producer(spec: dict[str, Any]) -> dict[str, Any]:
    size, n, warm, mode = spec["size"], spec["n"], spec["warm"], spec["mode"]
    np = None
    if mode != "copy":
        import numpy as np
    io = _Iox(spec, "producer")
    try:
        payload = os.urandom(size)
        loan = io.pub.loan_slice_uninit
        notify = io.notifier.notify if io.notifier is not None else None
        pack = STAMP.pack_into
        for i in range(warm + n):
            sample = loan(size)
            mv = sample.payload().as_memory_view().cast("B")
            if mode == "copy":
                mv[:] = payload
            else:
                _fill(mv, i, np)
            pack(mv, 0, now())
            mv.release()
            sample.assume_init().send()
            if notify is not None:
                notify()
            io.receive().delete()
    finally:
        io.close()
    return {}


def iox_latency_consumer(spec: dict[str, Any]) -> dict[str, Any]:
    n, warm = spec["n"], spec["warm"]
    lat = _lat_array(n)
    io = _Iox(spec, "consumer")
    try:
        from_address = io.ctypes.c_int64.from_address
        loan = io.pub.loan_slice_uninit
        notify = io.notifier.notify if io.notifier is not None else None
        receive = io.receive
        for i in range(warm + n):
            s = receive()
            t = now()
            stamp = from_address(s.payload_ptr).value
            s.delete()
            if i >= warm:
                lat[i - warm] = t - stamp
            loan(8).assume_init().send()
            if notify is not None:
                notify()
    finally:
        io.close()
    return {"lat_ns": lat.tobytes()}


# --- 1 MiB stream throughput ----------------------------------------------------------------------


def ours_stream_producer(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from isthmus.buffer import IMPLEMENTATION, Ring

    size, count, mode, spin = spec["size"], spec["count"], spec["mode"], spec["spin"]
    src = np.frombuffer(os.urandom(size), dtype=np.uint8).copy()
    prod = Ring.create(spec["data"], spec["capacity"], spin=spin)
    try:
        if not spec["ready"].wait(30):
            raise TimeoutError("consumer did not open the ring")
        loan, commit, send, copyto, asarray = (
            prod.loan,
            prod.commit,
            prod.send,
            np.copyto,
            np.asarray,
        )
        t0 = now()
        if mode == "send":
            for _ in range(count):
                send(src)
        else:
            for _ in range(count):
                buf = loan(size)
                copyto(asarray(buf), src)
                del buf
                commit()
        t1 = now()
    finally:
        prod.close()
    return {"implementation": IMPLEMENTATION, "t0": t0, "t_sent": t1}


def ours_stream_consumer(spec: dict[str, Any]) -> dict[str, Any]:
    from isthmus.buffer import RingClosedError

    count = 0
    nbytes = 0
    cons = _open_ring(spec["data"], spec["spin"])
    try:
        spec["ready"].set()
        recv = cons.recv
        t_end = now()
        while True:
            try:
                m = recv(timeout=30.0)
            except RingClosedError:
                break
            nbytes += m.nbytes
            m.release()
            t_end = now()
            count += 1
    finally:
        cons.close()
    return {"t_end": t_end, "count": count, "bytes": nbytes}


# --- BufferPool ------------------------------------------------------------------------------------


def pool_bench(spec: dict[str, Any]) -> dict[str, Any]:
    from isthmus.buffer import IMPLEMENTATION, BufferPool

    pool = BufferPool(spec["slot_size"], spec["slots"])
    n = spec["n"]
    acquire = pool.acquire
    for _ in range(min(n, 2000)):
        b = acquire()
        b.release()
    per_pair = []
    for _ in range(spec["repeats"]):
        t0 = now()
        for _ in range(n):
            b = acquire()
            b.release()
        per_pair.append((now() - t0) / n)
    t0 = now()
    for _ in range(n):
        pass
    loop_ns = (now() - t0) / n
    close = getattr(pool, "close", None)
    if close is not None:
        close()
    return {"implementation": IMPLEMENTATION, "ns_per_pair": per_pair, "empty_loop_ns": loop_ns}


# --- idle consumer CPU -----------------------------------------------------------------------------


def idle_producer(spec: dict[str, Any]) -> dict[str, Any]:
    from isthmus.buffer import IMPLEMENTATION, Ring

    prod = Ring.create(spec["data"], 65536)
    try:
        # Become the producer without sending anything, so the consumer sees our close().
        prod.wait_writable(1, timeout=0)
        spec["created"].set()
        if not spec["stop"].wait(spec.get("timeout", 60.0)):
            raise TimeoutError("parent never said stop")
    finally:
        prod.close()
    return {"implementation": IMPLEMENTATION}


def idle_consumer(spec: dict[str, Any]) -> dict[str, Any]:
    from isthmus.buffer import IMPLEMENTATION, PeerDiedError, RingClosedError

    if not spec["created"].wait(30):
        raise TimeoutError("producer did not create the ring")
    cons = _open_ring(spec["data"], spec["spin"])
    outcome = "message"
    try:
        spec["blocking"].set()
        try:
            cons.recv(timeout=None).release()
        except RingClosedError:
            outcome = "closed"
        except PeerDiedError:
            outcome = "peer died"
    finally:
        cons.close()
    return {"implementation": IMPLEMENTATION, "outcome": outcome}
