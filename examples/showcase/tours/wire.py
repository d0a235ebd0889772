"""The ``wire`` tour: one ``isthmus.wire`` connection carries video, control and state over TCP.

Two processes, joined by a TCP connection on 127.0.0.1 (``TCP_NODELAY``, blocking sockets):

* the **server** (a render server) speaks first after the client's hello (``accept``), then sends
  1080p H.264-sized video packets at 60 fps (12 KiB P-frames, a 360 KiB keyframe every second or
  whenever one is needed), ``Ping(time_ns=…)`` control messages (1,000 a second by default), a
  ``StatePatch`` for every pointer event it receives (the camera follows the pointer) and a
  ``Stats`` message every second. An application thread ``queue()``s messages; a writer thread
  calls ``data_to_send(max_bytes=16 KiB)`` before every ``socket.sendmsg``, so a ping queued
  while a keyframe is being written overtakes the rest of it; a reader thread takes the client's
  acks and input (``recv_into(conn.get_buffer())`` + ``buffer_updated``).
* the **viewer** (the client) sends ``Pointer`` moves at 120 Hz, measures the one-way latency of
  every ping (same host, same monotonic clock), applies the state patches, and acknowledges video
  (``conn.ack(2)``), which returns the server's credits. Every few seconds it stops acknowledging
  for a moment, like a decoder that falls behind: the server runs out of credits, drops frames
  (latest wins), learns from ``FramesDropped(keyframe_needed=True)`` that the H.264 chain is
  broken, and sends a fresh keyframe as soon as credits come back.
* this process shows messages/s, bytes/s, control latency and dropped frames live, and prints a
  summary at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import socket
import threading
import time
from array import array
from collections import Counter
from typing import Any

from ._proc import CTX, Worker, start_live, watch
from ._stats import Batch, LatencyHistogram, Window

TITLE = "wire: video, control and state patches over one TCP connection"
log = logging.getLogger("showcase.wire")

KIB = 1024
P_BYTES = 12 * KIB
KEY_BYTES = 360 * KIB
MAX_BYTES = 16 * KIB  # data_to_send(max_bytes=...): about one video chunk per write
POINTER_HZ = 120.0
REPORT_EVERY_NS = 250_000_000
NS = 1_000_000_000


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--wire-ping-hz",
        type=float,
        default=1000.0,
        metavar="HZ",
        help="control messages (pings) per second from the server (default 1000)",
    )
    group.add_argument(
        "--wire-fps", type=float, default=60.0, metavar="FPS", help="video frame rate (default 60)"
    )
    group.add_argument(
        "--wire-credits",
        type=int,
        default=4,
        metavar="N",
        help="video frames in flight before the server drops (default 4)",
    )
    group.add_argument(
        "--wire-stall-every",
        type=float,
        default=3.0,
        metavar="S",
        help="every S seconds the viewer stops acknowledging video for a while, so the server "
        "runs out of credits and drops frames (default 3; 0: never)",
    )
    group.add_argument(
        "--wire-stall-ms",
        type=float,
        default=250.0,
        metavar="MS",
        help="how long each viewer stall lasts (default 250 ms)",
    )


# --- shared by both processes ---------------------------------------------------------------------


def _sendmsg_all(sock: socket.socket, bufs: list[Any]) -> int:
    """Write ``bufs`` in order, scatter-gather, however many ``sendmsg`` calls it takes."""
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


def _streams(credits: int) -> list[Any]:
    from msgspec.structs import replace

    from isthmus.wire import default_streams

    return [replace(s, credits=credits) if s.credits else s for s in default_streams()]


def _noise(n: int, seed: int) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# --- the server process ---------------------------------------------------------------------------


def server(args: dict[str, Any]) -> dict[str, Any]:
    from isthmus.wire import (
        Ack,
        Connection,
        ConnectionClosed,
        FramesDropped,
        Goodbye,
        Hello,
        Ping,
        Pointer,
        RequestKeyframe,
        Role,
        StatePatch,
        Stats,
        VideoPacket,
    )

    sock: socket.socket = args["sock"]
    report, stop = args["report"], args["stop"]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    credits = args["credits"]
    conn = Connection(Role.SERVER, codecs=("h264",), credits=credits, streams=_streams(credits))
    while True:  # the handshake, before any thread starts
        n = sock.recv_into(conn.get_buffer())
        if not n:
            raise ConnectionError("the viewer left before saying hello")
        conn.buffer_updated(n)
        hello = conn.next_event()
        if isinstance(hello, Hello):
            _sendmsg_all(sock, conn.accept(hello, session="showcase", name="isthmus showcase"))
            break

    pframe, keyframe = _noise(P_BYTES, 1), _noise(KEY_BYTES, 2)
    config = b"\x00\x00\x00\x01\x67\x64\x00\x28" + bytes(24)  # SPS/PPS-sized
    cond = threading.Condition()
    st: dict[str, Any] = {
        "closing": False,
        "force_key": False,
        "dropped": 0,
        "drop_events": 0,
        "keyframes": 0,
        "forced_keyframes": 0,
        "frames": 0,
        "patches": 0,
        "pointer": 0,
        "acks": 0,
        "sent_bytes": 0,
        "writes": 0,
        "peer_closed": False,
    }
    input_lat = array("q")
    errors: list[str] = []

    def queue(msg: Any) -> None:
        with cond:
            conn.queue(msg)
            cond.notify()

    def writer() -> None:
        try:
            while True:
                with cond:
                    while not conn.has_data_to_send:
                        if st["closing"]:
                            return
                        cond.wait()
                    bufs = conn.data_to_send(MAX_BYTES)
                st["sent_bytes"] += _sendmsg_all(sock, bufs)
                st["writes"] += 1
        except OSError as exc:
            if not st["peer_closed"]:
                errors.append(f"writer: {exc!r}")
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    def reader() -> None:
        rev = 0
        try:
            while True:
                with cond:
                    buf = conn.get_buffer()
                n = sock.recv_into(buf)
                now = time.monotonic_ns()
                with cond:
                    if n:
                        conn.buffer_updated(n)
                    else:
                        conn.receive_data(b"")
                    for ev in conn.events():
                        cls = type(ev)
                        if cls is Pointer:
                            # The frame header carries the sender's monotonic timestamp.
                            assert conn.last_header is not None
                            input_lat.append(now - conn.last_header.timestamp_ns)
                            st["pointer"] += 1
                            rev += 1
                            if not st["closing"]:
                                conn.queue(
                                    StatePatch(
                                        path="/camera",
                                        op="merge",
                                        value={"center": [ev.x, ev.y], "zoom": 1.0 + ev.y / 1080},
                                        rev=rev,
                                    )
                                )
                                st["patches"] += 1
                        elif cls is Ack:
                            st["acks"] += 1
                        elif cls is FramesDropped:
                            st["drop_events"] += 1
                            if ev.keyframe_needed:
                                st["force_key"] = True
                        elif cls is RequestKeyframe:
                            st["force_key"] = True
                        elif cls is Goodbye or cls is ConnectionClosed:
                            st["peer_closed"] = True
                    cond.notify()
                if not n:
                    return
        except OSError as exc:
            if not st["peer_closed"]:
                errors.append(f"reader: {exc!r}")

    threads = [threading.Thread(target=f, name=f.__name__, daemon=True) for f in (writer, reader)]
    for t in threads:
        t.start()

    ping_ns = int(NS / args["ping_hz"]) if args["ping_hz"] > 0 else 1 << 62
    frame_ns = int(NS / args["fps"])
    gop = max(1, round(args["fps"]))
    t0 = time.monotonic_ns()
    next_ping = next_frame = t0
    next_stats = next_report = t0 + REPORT_EVERY_NS
    pings = k = since_key = 0
    last_stats = (t0, 0, 0)
    try:
        while not stop.is_set() and not st["peer_closed"]:
            now = time.monotonic_ns()
            due = min(next_ping, next_frame, next_stats, next_report)
            if due > now:
                time.sleep(min(due - now, 20_000_000) / NS)
                continue
            if next_frame <= now:
                with cond:
                    # A keyframe every second, and one more when a drop broke the H.264 chain,
                    # but not while a frame is already held back for lack of credits (it would
                    # only replace the held one).
                    forced = st["force_key"] and not conn.stream_stats(2).pending
                    key = since_key >= gop or k == 0 or forced
                    if forced and since_key < gop and k:
                        st["forced_keyframes"] += 1
                    if key:
                        st["force_key"] = False
                        since_key = 0
                        st["keyframes"] += 1
                    conn.queue(
                        VideoPacket(
                            codec="h264",
                            width=1920,
                            height=1080,
                            keyframe=key,
                            pts=k * frame_ns,
                            data=keyframe if key else pframe,
                            config=config if key else b"",
                        )
                    )
                    cond.notify()
                k += 1
                since_key += 1
                st["frames"] = k
                next_frame = t0 + k * frame_ns
            if next_ping <= now:
                queue(Ping(nonce=pings, time_ns=time.monotonic_ns()))
                pings += 1
                next_ping = t0 + pings * ping_ns
            if next_stats <= now:
                t_prev, f_prev, b_prev = last_stats
                secs = max((now - t_prev) / NS, 1e-9)
                sent = conn.stream_stats(2).sent
                queue(
                    Stats(
                        stream=2,
                        fps=(sent - f_prev) / secs,
                        kbps=(st["sent_bytes"] - b_prev) * 8 / 1000 / secs,
                        frames=sent,
                        dropped=conn.stream_stats(2).dropped,
                    )
                )
                last_stats = (now, sent, st["sent_bytes"])
                next_stats = now + NS
            if next_report <= now:
                with cond:
                    lat, input_lat[:] = input_lat.tobytes(), array("q")
                    # Every drop, including the non-key frames dropped silently while the
                    # stream waits for a keyframe (FramesDropped reports those once).
                    st["dropped"] = conn.stream_stats(2).dropped
                    snap = {k_: v for k_, v in st.items() if isinstance(v, int)}
                report.send(("server", snap, pings, lat))
                next_report = now + REPORT_EVERY_NS
    finally:
        with cond:
            if not st["peer_closed"]:
                with contextlib.suppress(Exception):
                    conn.queue(Goodbye(code=1000, reason="the tour is over"))
            st["closing"] = True
            cond.notify_all()
        for t in threads:
            t.join(10)
        with cond:
            st["dropped"] = conn.stream_stats(2).dropped
            snap = {k_: v for k_, v in st.items() if isinstance(v, int)}
            lat = input_lat.tobytes()
        report.send(("server", snap, pings, lat))
        report.send(("server-done",))
    return {"errors": errors}


# --- the viewer process ---------------------------------------------------------------------------


def viewer(args: dict[str, Any]) -> dict[str, Any]:
    from isthmus.wire import (
        Connection,
        ConnectionClosed,
        Goodbye,
        Hello,
        Ping,
        Pointer,
        Role,
        StatePatch,
        Stats,
        VideoPacket,
        Welcome,
    )

    sock: socket.socket = args["sock"]
    report = args["report"]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    credits = args["credits"]
    conn = Connection(Role.CLIENT, codecs=("h264",), credits=credits)
    lock = threading.Lock()  # the connection and the socket's write side
    closing = threading.Event()
    _sendmsg_all(sock, conn.send(Hello(codecs=["h264"], credits=credits, name="showcase viewer")))

    def pointer_loop() -> None:
        period = 1.0 / POINTER_HZ
        i = 0
        t = time.monotonic()
        while not closing.is_set():
            a = 2 * math.pi * i / (POINTER_HZ * 4)  # one circle every 4 s
            x, y = 960 + 400 * math.cos(a), 540 + 300 * math.sin(a)
            with lock:
                if closing.is_set():
                    return
                try:
                    _sendmsg_all(sock, conn.send(Pointer(kind="move", x=x, y=y, buttons=1)))
                except OSError:
                    return
            i += 1
            t += period
            time.sleep(max(0.0, t - time.monotonic()))

    kinds: Counter[str] = Counter()
    nbytes = frames = keyframes = 0  # nbytes: everything read from the socket
    lat = array("q")
    camera: dict[str, Any] = {}
    server_stats: dict[str, Any] = {}
    stall_every = int(args["stall_every"] * NS)
    stall_ns = int(args["stall_ms"] * 1e6)
    stalls = 0
    stalled = False
    unacked = False
    started = 0
    last_report = time.monotonic_ns()
    pointer = threading.Thread(target=pointer_loop, name="pointer", daemon=True)
    done = False
    while not done:
        n = sock.recv_into(conn.get_buffer())
        now = time.monotonic_ns()
        nbytes += n
        with lock:
            if n:
                conn.buffer_updated(n)
            else:
                conn.receive_data(b"")
            while (ev := conn.next_event()) is not None:
                t = time.monotonic_ns()
                cls = type(ev)
                if cls is not ConnectionClosed:  # an event, not a message
                    kinds[cls.__name__] += 1
                if cls is Ping:
                    lat.append(t - ev.time_ns)
                elif cls is VideoPacket:
                    frames += 1
                    keyframes += ev.keyframe
                    unacked = True
                elif cls is StatePatch:
                    if ev.op == "merge" and isinstance(ev.value, dict):
                        camera.update(ev.value)
                elif cls is Stats:
                    server_stats = {"fps": ev.fps, "kbps": ev.kbps, "dropped": ev.dropped}
                elif cls is Welcome:
                    started = t
                    report.send(("hello", ev.name, ev.encoding, ev.credits, list(ev.codecs)))
                    pointer.start()
                elif cls is Goodbye:
                    closing.set()
                    with contextlib.suppress(OSError):
                        _sendmsg_all(sock, conn.close())
                        sock.shutdown(socket.SHUT_WR)
                elif cls is ConnectionClosed:
                    done = True
            # A decoder that falls behind now and then: no acks for a while.
            if stall_every and stall_ns and started:
                phase = (now - started) % stall_every
                in_stall = now - started >= stall_every and phase < stall_ns
                if in_stall and not stalled:
                    stalls += 1
                stalled = in_stall
            if unacked and not stalled and not closing.is_set():
                _sendmsg_all(sock, conn.ack(2))
                unacked = False
        if now - last_report >= REPORT_EVERY_NS or done:
            report.send(
                (
                    "viewer",
                    dict(kinds),
                    frames,
                    keyframes,
                    nbytes,
                    lat.tobytes(),
                    stalls,
                    stalled,
                    dict(camera),
                    dict(server_stats),
                )
            )
            kinds.clear()
            frames = keyframes = nbytes = 0
            lat = array("q")
            last_report = now
    closing.set()
    if pointer.is_alive():
        pointer.join(2)
    sock.close()
    report.send(("viewer-done",))
    return {}


# --- this process: display and summary ------------------------------------------------------------


def _us(ns: float) -> str:
    return "n/a" if math.isnan(ns) else f"{ns / 1000:,.0f} µs"


class _State:
    def __init__(self) -> None:
        self.lat = LatencyHistogram()
        self.input_lat = LatencyHistogram()
        self.window = Window(1.0)  # every message the viewer received
        self.video = Window(1.0)  # video packets
        self.kinds: Counter[str] = Counter()
        self.messages = self.nbytes = self.frames = self.keyframes = 0
        self.stalls = 0
        self.stalled = False
        self.camera: dict[str, Any] = {}
        self.server_stats: dict[str, Any] = {}
        self.server: dict[str, int] = {}
        self.pings_sent = 0
        self.welcome: tuple[Any, ...] | None = None
        self.started = time.monotonic()
        self.done = {"server": False, "viewer": False}

    def take(self, msg: tuple[Any, ...]) -> None:
        import numpy as np

        kind = msg[0]
        if kind == "hello":
            self.welcome = msg[1:]
            self.started = self.window.started = self.video.started = time.monotonic()
        elif kind == "viewer":
            _, kinds, frames, keyframes, nbytes, raw, stalls, stalled, camera, stats = msg
            now = time.monotonic()
            lat = np.frombuffer(raw, dtype=np.int64)
            count = sum(kinds.values())
            self.window.add(Batch(now, count, nbytes, lat))
            self.video.add(Batch(now, frames, 0, np.empty(0, dtype=np.int64)))
            self.lat.add(lat)
            self.kinds.update(kinds)
            self.messages += count
            self.nbytes += nbytes
            self.frames += frames
            self.keyframes += keyframes
            self.stalls, self.stalled = stalls, stalled
            self.camera = camera or self.camera
            self.server_stats = stats or self.server_stats
        elif kind == "server":
            _, snap, pings, raw = msg
            self.server, self.pings_sent = snap, pings
            self.input_lat.add(np.frombuffer(raw, dtype=np.int64))
        elif kind == "viewer-done":
            self.done["viewer"] = True
        elif kind == "server-done":
            self.done["server"] = True

    def camera_text(self) -> str:
        c = self.camera.get("center")
        if not c:
            return "n/a"
        return f"center ({c[0]:,.0f}, {c[1]:,.0f}), zoom {self.camera.get('zoom', 0):.2f}"

    def live_table(self, opts: argparse.Namespace, elapsed: float) -> Any:
        from rich.panel import Panel
        from rich.table import Table

        mps, bps = self.window.rates()
        fps, _ = self.video.rates()
        p50, p99 = self.window.percentiles_ns(50, 99)
        srv = self.server
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold")
        t.add_column(justify="right")
        t.add_row("elapsed", f"{elapsed:5.1f} / {opts.duration:g} s")
        t.add_row("received", f"{mps:,.0f} msgs/s   {bps / 1e6:,.2f} MB/s")
        t.add_row("video", f"{fps:,.1f} frames/s   {self.keyframes:,} keyframes")
        t.add_row("control latency (last 1 s)", f"p50 {_us(p50)}   p99 {_us(p99)}")
        t.add_row(
            "pointer → server (all)",
            f"p50 {_us(self.input_lat.percentile_ns(50))}   "
            f"p99 {_us(self.input_lat.percentile_ns(99))}",
        )
        t.add_row(
            "frames dropped by credits",
            f"{srv.get('dropped', 0):,}   (keyframes forced: {srv.get('forced_keyframes', 0)})",
        )
        t.add_row(
            "viewer stalls (no acks)",
            f"{self.stalls}" + ("   [yellow]stalled now[/yellow]" if self.stalled else ""),
        )
        t.add_row("state patches applied", f"{self.kinds.get('StatePatch', 0):,}")
        t.add_row("camera (from patches)", self.camera_text())
        mix = ", ".join(f"{k} {v:,}" for k, v in self.kinds.most_common())
        t.add_row("messages by type", mix or "—")
        enc = self.welcome[1] if self.welcome else "?"
        return Panel(
            t,
            title=f"[b]wire tour[/b] · one TCP connection · {enc} control bodies · "
            f"{opts.wire_credits} video credits",
            expand=False,
        )

    def log_line(self, elapsed: float) -> None:
        mps, bps = self.window.rates()
        fps, _ = self.video.rates()
        p50, p99 = self.window.percentiles_ns(50, 99)
        log.info(
            "%5.1f s: %s msgs/s, %.2f MB/s, video %.1f fps, control latency p50 %s p99 %s, "
            "%d frames dropped by credits",
            elapsed,
            f"{mps:,.0f}",
            bps / 1e6,
            fps,
            _us(p50),
            _us(p99),
            self.server.get("dropped", 0),
        )


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname()[:2])
        b, _ = listener.accept()
    return a, b


def run(opts: argparse.Namespace, console: Any) -> dict[str, Any]:
    """Run the tour for ``opts.duration`` seconds; returns the summary (see showcase.py)."""
    if opts.wire_credits < 1:
        raise SystemExit("--wire-credits must be at least 1")
    if opts.wire_fps <= 0:
        raise SystemExit("--wire-fps must be positive")
    stop = CTX.Event()
    srv_r, srv_w = CTX.Pipe(duplex=False)
    view_r, view_w = CTX.Pipe(duplex=False)
    state = _State()
    interrupted = False
    errors: list[str] = []
    viewer_sock, server_sock = _tcp_pair()
    common = {"credits": opts.wire_credits}
    log.info(
        "server and viewer over TCP %s:%d (video %g fps, %d pings/s, %d credits)",
        *server_sock.getsockname()[:2],
        opts.wire_fps,
        round(opts.wire_ping_hz),
        opts.wire_credits,
    )
    srv = Worker(
        "server",
        __name__,
        "server",
        {
            **common,
            "sock": server_sock,
            "report": srv_w,
            "stop": stop,
            "ping_hz": opts.wire_ping_hz,
            "fps": opts.wire_fps,
        },
    )
    view = Worker(
        "viewer",
        __name__,
        "viewer",
        {
            **common,
            "sock": viewer_sock,
            "report": view_w,
            "stall_every": opts.wire_stall_every,
            "stall_ms": opts.wire_stall_ms,
        },
    )
    for obj in (server_sock, viewer_sock, srv_w, view_w):
        obj.close()  # the children have their own copies
    workers = (srv, view)
    pipes = (srv_r, view_r)

    def pump(timeout: float) -> None:
        from multiprocessing.connection import wait

        for conn in wait(list(pipes), timeout):
            while True:
                try:
                    if not conn.poll():
                        break
                    state.take(conn.recv())
                except (EOFError, OSError):
                    break

    live = start_live(opts, console, state)
    try:
        watch(
            opts,
            state,
            workers,
            pump,
            live,
            lambda: state.welcome is not None,
            "the handshake did not complete",
        )
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: the server says goodbye and both ends close")
    except RuntimeError as exc:
        errors.append(str(exc).splitlines()[0])
        log.error("%s", exc)
    finally:
        elapsed = time.monotonic() - state.started
        stop.set()
        try:
            t_end = time.monotonic() + 10
            while not all(state.done.values()) and time.monotonic() < t_end:
                if not any(w.process.is_alive() for w in workers) and not any(
                    p.poll() for p in pipes
                ):
                    break
                pump(0.1)
            for w in workers:
                outcome = w.join(5.0)
                if outcome is not None and outcome[0] == "error" and not errors:
                    errors.append(f"{w.name}: {outcome[1]}")
                elif outcome is not None and outcome[0] == "ok":
                    errors += [f"{w.name}: {e}" for e in (outcome[1] or {}).get("errors", [])]
        except KeyboardInterrupt:
            log.warning("interrupted again: terminating the children")
        for w in workers:
            w.stop()
        if live is not None:
            live.update(state.live_table(opts, min(elapsed, opts.duration)))
            live.stop()
        for p in pipes:
            p.close()

    h, hi = state.lat, state.input_lat
    srv_st = state.server
    secs = min(elapsed, opts.duration) if elapsed > 0 else math.nan
    mix = ", ".join(f"{k} {v:,}" for k, v in state.kinds.most_common())
    return {
        "tour": "wire",
        "ok": not errors and state.frames > 0 and (h.total > 0 or opts.wire_ping_hz <= 0),
        "interrupted": interrupted,
        "errors": errors,
        "rows": [
            ("transport", "one TCP connection on 127.0.0.1, TCP_NODELAY, blocking sockets"),
            (
                "handshake",
                f"{state.welcome[1]} bodies, {state.welcome[2]} credits, codecs "
                f"{', '.join(state.welcome[3])}"
                if state.welcome
                else "n/a",
            ),
            ("duration", f"{elapsed:.1f} s"),
            ("messages received by the viewer", f"{state.messages:,}"),
            ("by type", mix or "—"),
            (
                "throughput",
                f"{state.messages / secs:,.0f} msgs/s, {state.nbytes / secs / 1e6:,.2f} MB/s",
            ),
            (
                "video frames",
                f"{state.frames:,} received of {_frames_produced(srv_st):,} produced, "
                f"{state.keyframes:,} keyframes",
            ),
            ("frames dropped by credits", f"{srv_st.get('dropped', 0):,}"),
            ("keyframes forced after drops", f"{srv_st.get('forced_keyframes', 0):,}"),
            ("viewer stalls (no acks)", f"{state.stalls}"),
            ("control messages (pings) received / sent", f"{h.total:,} / {state.pings_sent:,}"),
            ("control (ping) latency p50", _us(h.percentile_ns(50))),
            ("control (ping) latency p99", _us(h.percentile_ns(99))),
            ("control (ping) latency max", _us(h.max_ns if h.total else math.nan)),
            ("pointer → server latency p50", _us(hi.percentile_ns(50))),
            ("pointer → server latency p99", _us(hi.percentile_ns(99))),
            (
                "state patches sent / applied",
                f"{srv_st.get('patches', 0):,} / {state.kinds.get('StatePatch', 0):,}",
            ),
            ("camera at the end", state.camera_text()),
        ],
        "metrics": {
            "seconds": elapsed,
            "messages": state.messages,
            "bytes": state.nbytes,
            "by_type": dict(state.kinds),
            "frames_received": state.frames,
            "frames_produced": _frames_produced(srv_st),
            "keyframes": state.keyframes,
            "dropped": srv_st.get("dropped", 0),
            "forced_keyframes": srv_st.get("forced_keyframes", 0),
            "stalls": state.stalls,
            "pings_sent": state.pings_sent,
            "pings_received": h.total,
            "latency_p50_us": h.percentile_ns(50) / 1000,
            "latency_p99_us": h.percentile_ns(99) / 1000,
            "latency_max_us": (h.max_ns / 1000) if h.total else math.nan,
            "input_latency_p50_us": hi.percentile_ns(50) / 1000,
            "input_latency_p99_us": hi.percentile_ns(99) / 1000,
            "patches_sent": srv_st.get("patches", 0),
            "patches_applied": state.kinds.get("StatePatch", 0),
        },
    }


def _frames_produced(snap: dict[str, int]) -> int:
    """Video frames the server's application produced (sent, held or dropped)."""
    return int(snap.get("frames", 0))
