"""What runs inside the child processes of the isthmus-wire keyframe-interference benchmark.

Kept import-light at module level (children are started with ``spawn`` and import this afresh).

A *sender* process (the server end: it streams video, like a render server) and a *receiver*
process (the client end) are joined by a TCP connection over 127.0.0.1 with ``TCP_NODELAY``;
both use blocking sockets. The sender has three threads:

* the **application** thread produces, on a fixed schedule, 1080p H.264-sized video packets (a
  P-frame every 1/60 s, a keyframe every second) and ``Ping(time_ns=time.monotonic_ns())``
  control messages at 1 kHz, and hands them to the transport;
* the **writer** thread writes scatter-gather with ``socket.sendmsg``;
* the **reader** thread reads the receiver's acks (``recv_into(conn.get_buffer())`` then
  ``conn.buffer_updated(n)``), which return video credits.

How the writer schedules is what the scenarios compare:

* ``control``: pings only, no video (the reference);
* ``ours``: ``conn.queue(msg)`` in the application thread; the writer calls
  ``conn.data_to_send(max_bytes=…)`` before every write, so a ping queued while a keyframe is
  being written goes out after the current 16 KiB chunk;
* ``fifo``: the naive baseline: the same ``Connection`` and the same frames, but the video
  stream's ``chunk_size`` is 0 (a keyframe is one 360 KiB frame) and every message is turned
  into bytes by ``conn.send(msg)`` the moment it is produced and written whole, first in first
  out (a plain length-prefixed stream, as a websocket sends it);
* ``two-socket``: napari-cuda's layout: JSON control messages (length-prefixed ``json.dumps``) on
  one socket, video (length-prefixed, whole) on a second socket, each written by a writer thread
  of its own fed like the others (the same hand-off from the application thread); no credits.

The receiver is one thread: it reads, decodes, takes ``time.monotonic_ns()`` as soon as a ping
comes out of ``next_event()`` (same host, same monotonic clock as the sender's stamp), and acks
every video packet with ``conn.ack(2)``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from array import array
from collections import deque
from typing import Any

NS = 1_000_000_000


# --- sockets -----------------------------------------------------------------------------------


def sendmsg_all(sock: socket.socket, bufs: list[Any]) -> int:
    """Write every buffer of ``bufs`` in order with ``sendmsg`` (scatter-gather), however many
    calls a partial write takes; returns the bytes written."""
    views = [b if isinstance(b, memoryview) else memoryview(b) for b in bufs]
    views = [v.cast("B") if v.format != "B" or v.ndim != 1 else v for v in views]
    total = 0
    while views:
        n = sock.sendmsg(views[:1024])
        total += n
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if n:
            views[0] = views[0][n:]
    return total


def tune(sock: socket.socket, spec: dict[str, Any], side: str) -> None:
    sock.setblocking(True)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if side == "receiver" and spec.get("rcvbuf"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, spec["rcvbuf"])
    if side == "sender" and spec.get("notsent_lowat"):
        opt = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
        sock.setsockopt(socket.IPPROTO_TCP, opt, spec["notsent_lowat"])


def sock_info(sock: socket.socket) -> dict[str, int]:
    info = {
        "sndbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    }
    with contextlib.suppress(OSError):
        info["notsent_lowat"] = sock.getsockopt(
            socket.IPPROTO_TCP, getattr(socket, "TCP_NOTSENT_LOWAT", 25)
        )
    return info


# --- the sender --------------------------------------------------------------------------------


def _payload(n: int, seed: int) -> bytes:
    # Incompressible-looking bytes (content does not matter to the wire, only its size).
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


class _Schedule:
    """The application's timeline: pings at ``ping_hz``, video frames at ``fps``, a keyframe
    every ``gop`` frames (frame ``k`` is a keyframe when ``k % gop == gop // 2``, so that the
    first keyframe comes after the warm-up)."""

    def __init__(self, spec: dict[str, Any], t0: int) -> None:
        self.t0 = t0
        self.end = t0 + int(spec["duration"] * NS)
        self.ping_ns = NS // spec["ping_hz"]
        self.frame_ns = NS // spec["fps"]
        self.gop = spec["gop"]
        self.video = spec["scenario"] != "control"
        self.j = 0  # pings produced
        self.k = 0  # frames produced

    def run(self, emit_ping: Any, emit_frame: Any, stop: threading.Event) -> None:
        now_ns, sleep = time.monotonic_ns, time.sleep
        next_ping = self.t0
        next_frame = self.t0 if self.video else 1 << 62
        while not stop.is_set():
            now = now_ns()
            if now >= self.end:
                return
            due = min(next_ping, next_frame)
            if due > now:
                sleep((due - now) / NS)
                continue
            if next_frame <= now:
                emit_frame(self.k, self.k % self.gop == self.gop // 2)
                self.k += 1
                next_frame = self.t0 + self.k * self.frame_ns
            if next_ping <= now:
                emit_ping(self.j)
                self.j += 1
                next_ping = self.t0 + self.j * self.ping_ns


def _streams(scenario: str) -> Any:
    from msgspec.structs import replace

    from isthmus.wire import default_streams

    if scenario != "fifo":
        return default_streams()
    # Naive: a keyframe is one whole frame (chunk_size 0 = as large as the maximum frame size).
    return [replace(s, chunk_size=0) if s.kind == "video" else s for s in default_streams()]


def sender(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["scenario"] == "two-socket":
        return _two_socket_sender(spec)
    from isthmus.wire import (
        Connection,
        ConnectionClosed,
        FramesDropped,
        Goodbye,
        Hello,
        Ping,
        Role,
        VideoPacket,
    )

    scenario = spec["scenario"]
    sock: socket.socket = spec["sock"]
    tune(sock, spec, "sender")
    conn = Connection(Role.SERVER, codecs=("h264",), streams=_streams(scenario))
    # Handshake (before any thread starts).
    while True:
        n = sock.recv_into(conn.get_buffer())
        if not n:
            raise RuntimeError("receiver closed before its hello")
        conn.buffer_updated(n)
        ev = conn.next_event()
        if isinstance(ev, Hello):
            sendmsg_all(sock, conn.accept(ev))
            break

    pframe, keyframe = _payload(spec["p_bytes"], 1), _payload(spec["key_bytes"], 2)
    config = b"\x00\x00\x00\x01\x67\x64\x00\x28" + bytes(24)  # an SPS/PPS-sized blob
    cond = threading.Condition()
    fifo: deque[list[Any]] = deque()
    stop = threading.Event()
    state = {"closing": False, "dropped": 0, "drop_events": 0, "acks": 0, "peer_closed": False}
    max_bytes = spec["max_bytes"] if scenario != "fifo" else None
    counters = {"writes": 0, "bytes": 0}
    errors: list[str] = []

    def submit(msg: Any) -> None:
        with cond:
            if scenario == "fifo":
                bufs = conn.send(msg)
                if bufs:
                    fifo.append(bufs)
            else:
                conn.queue(msg)
            cond.notify()

    def emit_ping(j: int) -> None:
        submit(Ping(nonce=j, time_ns=time.monotonic_ns()))

    def emit_frame(k: int, key: bool) -> None:
        submit(
            VideoPacket(
                codec="h264",
                width=1920,
                height=1080,
                keyframe=key,
                pts=k * (NS // spec["fps"]),
                data=keyframe if key else pframe,
                config=config if key else b"",
            )
        )

    def writer() -> None:
        try:
            while True:
                with cond:
                    while True:
                        if scenario == "fifo":
                            if fifo:
                                bufs = [b for item in fifo for b in item]
                                fifo.clear()
                                break
                        elif conn.has_data_to_send:
                            bufs = conn.data_to_send(max_bytes)
                            break
                        if state["closing"]:
                            return
                        cond.wait()
                counters["bytes"] += sendmsg_all(sock, bufs)
                counters["writes"] += 1
        except OSError as exc:
            if not state["peer_closed"]:
                errors.append(f"writer: {exc!r}")
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    def reader() -> None:
        try:
            while True:
                with cond:
                    buf = conn.get_buffer()
                n = sock.recv_into(buf)
                with cond:
                    if n:
                        conn.buffer_updated(n)
                    else:
                        conn.receive_data(b"")
                    for ev in conn.events():
                        t = type(ev)
                        if t is FramesDropped:
                            state["dropped"] += ev.count
                            state["drop_events"] += 1
                        elif t is Goodbye or t is ConnectionClosed:
                            state["peer_closed"] = True
                        else:
                            state["acks"] += 1
                    if scenario == "fifo":  # an ack may have released a held packet
                        bufs = conn.data_to_send()
                        if bufs:
                            fifo.append(bufs)
                    cond.notify()
                if not n:
                    return
        except OSError as exc:
            if not state["peer_closed"]:
                errors.append(f"reader: {exc!r}")

    threads = [threading.Thread(target=f, name=f.__name__, daemon=True) for f in (writer, reader)]
    for t in threads:
        t.start()
    sched = _Schedule(spec, time.monotonic_ns() + 20_000_000)
    try:
        sched.run(emit_ping, emit_frame, stop)
    finally:
        with cond:
            if scenario == "fifo":
                fifo.append(conn.close("done"))
            else:  # the writer drains the queue, goodbye last
                conn.queue(Goodbye(code=1000, reason="done"))
            state["closing"] = True
            cond.notify_all()
        threads[0].join(30)
        threads[1].join(30)
    stats = conn.stream_stats(2)
    return {
        "pings": sched.j,
        "frames": sched.k,
        "keyframes": sum(1 for k in range(sched.k) if k % sched.gop == sched.gop // 2),
        # Every frame the credits dropped, including the non-key frames dropped silently while
        # the stream waits for a keyframe (FramesDropped reports those once).
        "dropped": stats.dropped,
        "drop_events": state["drop_events"],
        "video_sent": stats.sent,
        "acks": state["acks"],
        "writes": counters["writes"],
        "bytes": counters["bytes"],
        "t0": sched.t0,
        "sock": sock_info(sock),
        "errors": errors,
    }


# --- the receiver ------------------------------------------------------------------------------


def receiver(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["scenario"] == "two-socket":
        return _two_socket_receiver(spec)
    from isthmus.wire import (
        Connection,
        ConnectionClosed,
        Goodbye,
        Hello,
        Ping,
        Role,
        VideoPacket,
        Welcome,
    )

    sock: socket.socket = spec["sock"]
    tune(sock, spec, "receiver")
    conn = Connection(Role.CLIENT, codecs=("h264",))
    sendmsg_all(sock, conn.send(Hello(codecs=["h264"])))
    created, lat = array("q"), array("q")
    kf_queued, kf_done = array("q"), array("q")
    frames = keyframes = nbytes = reads = 0
    now_ns = time.monotonic_ns
    done = False
    while not done:
        n = sock.recv_into(conn.get_buffer())
        reads += 1
        if n:
            conn.buffer_updated(n)
        else:
            conn.receive_data(b"")
        while (ev := conn.next_event()) is not None:
            t = now_ns()
            cls = type(ev)
            if cls is Ping:
                created.append(ev.time_ns)
                lat.append(t - ev.time_ns)
            elif cls is VideoPacket:
                frames += 1
                nbytes += ev.data.nbytes
                if ev.keyframe:
                    keyframes += 1
                    kf_queued.append(conn.last_header.timestamp_ns)
                    kf_done.append(t)
                sendmsg_all(sock, conn.ack(2))
            elif cls is Goodbye:
                with contextlib.suppress(OSError):
                    sendmsg_all(sock, conn.close())
                    sock.shutdown(socket.SHUT_WR)
                done = True
            elif cls is ConnectionClosed:
                done = True
            elif cls is Welcome:
                pass
    # Wait for the sender's end of stream so that it never writes into a closed socket.
    with contextlib.suppress(OSError):
        sock.settimeout(5.0)
        while sock.recv(65536):
            pass
    sock.close()
    return {
        "created": created.tobytes(),
        "lat": lat.tobytes(),
        "kf_queued": kf_queued.tobytes(),
        "kf_done": kf_done.tobytes(),
        "frames": frames,
        "keyframes": keyframes,
        "video_bytes": nbytes,
        "reads": reads,
        "sock": sock_info(sock) if sock.fileno() >= 0 else {},
    }


# --- napari-cuda's layout: two sockets, JSON control, whole video packets ------------------------

_LEN = struct.Struct("<I")
_VHDR = struct.Struct("<IqB")  # length, queued-at (monotonic ns), keyframe


class _LengthPrefixed:
    """Reads length-prefixed messages from a socket: header into a small buffer, the payload
    straight into its own buffer (``recv_into``), no more than one message per read."""

    def __init__(self, sock: socket.socket, header: struct.Struct) -> None:
        self.sock = sock
        self.header = header
        self.hbuf = bytearray(header.size)
        self.hfill = 0
        self.fields: tuple[Any, ...] | None = None
        self.body: memoryview | None = None
        self.fill = 0

    def read(self) -> tuple[tuple[Any, ...], memoryview] | bool | None:
        """One ``recv_into``; a complete message, None if incomplete, False at end of stream."""
        if self.fields is None:
            n = self.sock.recv_into(memoryview(self.hbuf)[self.hfill :])
            if not n:
                return False
            self.hfill += n
            if self.hfill < self.header.size:
                return None
            self.hfill = 0
            self.fields = self.header.unpack(self.hbuf)
            self.body = memoryview(bytearray(self.fields[0]))
            self.fill = 0
            if self.fields[0]:
                return None
        else:
            assert self.body is not None
            n = self.sock.recv_into(self.body[self.fill :])
            if not n:
                return False
            self.fill += n
            if self.fill < self.body.nbytes:
                return None
        fields, body = self.fields, self.body
        self.fields = self.body = None
        assert body is not None
        return fields, body


def _two_socket_sender(spec: dict[str, Any]) -> dict[str, Any]:
    import json

    ctl: socket.socket = spec["sock"]
    vid: socket.socket = spec["sock2"]
    tune(ctl, spec, "sender")
    tune(vid, spec, "sender")
    pframe, keyframe = _payload(spec["p_bytes"], 1), _payload(spec["key_bytes"], 2)
    # One writer thread per socket, fed like ours (the same hand-off from the application
    # thread), each writing whole messages first in first out.
    cond = threading.Condition()
    queues: dict[Any, deque[list[Any]]] = {ctl: deque(), vid: deque()}
    state = {"closing": False}
    counters = {"writes": 0, "bytes": 0}
    errors: list[str] = []
    fps = spec["fps"]

    def emit_ping(j: int) -> None:
        body = json.dumps({"type": "ping", "nonce": j, "time_ns": time.monotonic_ns()}).encode()
        with cond:
            queues[ctl].append([_LEN.pack(len(body)) + body])
            cond.notify_all()

    def emit_frame(k: int, key: bool) -> None:
        data = keyframe if key else pframe
        meta = json.dumps(
            {"codec": "h264", "width": 1920, "height": 1080, "pts": k * (NS // fps), "key": key}
        ).encode()
        body_len = _LEN.size + len(meta) + len(data)
        head = _VHDR.pack(body_len, time.monotonic_ns(), 1 if key else 0)
        with cond:
            queues[vid].append([head + _LEN.pack(len(meta)) + meta, data])
            cond.notify_all()

    def writer(sock: socket.socket) -> None:
        fifo = queues[sock]
        try:
            while True:
                with cond:
                    while not fifo:
                        if state["closing"]:
                            return
                        cond.wait()
                    bufs = [b for item in fifo for b in item]
                    fifo.clear()
                counters["bytes"] += sendmsg_all(sock, bufs)
                counters["writes"] += 1
        except OSError as exc:
            errors.append(f"writer: {exc!r}")

    threads = [threading.Thread(target=writer, args=(s,), daemon=True) for s in (ctl, vid)]
    for t in threads:
        t.start()
    sched = _Schedule(spec, time.monotonic_ns() + 20_000_000)
    try:
        sched.run(emit_ping, emit_frame, threading.Event())
    finally:
        bye = json.dumps({"type": "goodbye"}).encode()
        with cond:
            queues[ctl].append([_LEN.pack(len(bye)) + bye])
            state["closing"] = True
            cond.notify_all()
        for t in threads:
            t.join(30)
        for s in (ctl, vid):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_WR)
        for s in (ctl, vid):
            with contextlib.suppress(OSError):
                s.settimeout(5.0)
                while s.recv(65536):
                    pass
    return {
        "pings": sched.j,
        "frames": sched.k,
        "keyframes": sum(1 for k in range(sched.k) if k % sched.gop == sched.gop // 2),
        "dropped": 0,
        "drop_events": 0,
        "writes": counters["writes"],
        "bytes": counters["bytes"],
        "t0": sched.t0,
        "sock": sock_info(vid),
        "errors": errors,
    }


def _two_socket_receiver(spec: dict[str, Any]) -> dict[str, Any]:
    import json
    import selectors

    ctl: socket.socket = spec["sock"]
    vid: socket.socket = spec["sock2"]
    tune(ctl, spec, "receiver")
    tune(vid, spec, "receiver")
    readers = {ctl: _LengthPrefixed(ctl, _LEN), vid: _LengthPrefixed(vid, _VHDR)}
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ)
    sel.register(vid, selectors.EVENT_READ)
    created, lat = array("q"), array("q")
    kf_queued, kf_done = array("q"), array("q")
    frames = keyframes = nbytes = reads = 0
    now_ns = time.monotonic_ns
    open_socks = 2
    while open_socks:
        for key, _ in sel.select():
            s = key.fileobj
            got = readers[s].read()  # type: ignore[index]
            reads += 1
            if got is False:
                sel.unregister(s)
                open_socks -= 1
                continue
            if got is None:
                continue
            t = now_ns()
            fields, body = got
            if s is ctl:
                msg = json.loads(bytes(body))
                if msg.get("type") == "ping":
                    created.append(msg["time_ns"])
                    lat.append(t - msg["time_ns"])
            else:
                meta_len = _LEN.unpack_from(body)[0]
                json.loads(bytes(body[_LEN.size : _LEN.size + meta_len]))
                frames += 1
                nbytes += body.nbytes - _LEN.size - meta_len
                if fields[2]:
                    keyframes += 1
                    kf_queued.append(fields[1])
                    kf_done.append(t)
    sel.close()
    for s in (ctl, vid):
        s.close()
    return {
        "created": created.tobytes(),
        "lat": lat.tobytes(),
        "kf_queued": kf_queued.tobytes(),
        "kf_done": kf_done.tobytes(),
        "frames": frames,
        "keyframes": keyframes,
        "video_bytes": nbytes,
        "reads": reads,
        "sock": {},
    }
