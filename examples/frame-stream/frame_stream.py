#!/usr/bin/env python3
"""Render frames headless (EGL), encode them, decode them in a second process, time every stage.

    python examples/frame-stream/frame_stream.py                      # 720p, 60 fps, 300 frames
    python examples/frame-stream/frame_stream.py --width 1920 --height 1080 --codec jpeg
    python examples/frame-stream/frame_stream.py --frames 30 --json result.json

The sender (this process) draws an animated scene into an offscreen framebuffer
(:class:`isthmus.frames.EGLContext`), reads it back (:class:`~isthmus.frames.GLSource`),
converts it to I420 and encodes it (:func:`~isthmus.frames.open_encoder`); a
:class:`~isthmus.frames.StreamPolicy` decides what to encode (latest frame wins, at most
``--window`` frames unacknowledged).  Packets go over a ``multiprocessing`` pipe (a Unix
socketpair with length-prefixed messages) to the receiver, which decodes them
(:func:`~isthmus.frames.open_decoder`), checks size and content, and acknowledges each one with its
timings.  Per-stage latencies land in :class:`~isthmus.frames.FrameTimings` histograms:

    render      drawing the scene (glFinish included), not part of the streaming path
    capture     GL readback into host memory
    convert     RGBA -> I420 (H.264 from host memory only; other encoders convert inside encode)
    encode      one frame in, one packet out
    transfer    sent by the sender -> received by the receiver (queueing in the pipe included)
    decode      one packet in, one RGB frame out
    end-to-end  start of the readback -> decoded frame in the receiver

Exit status: 0 when every packet sent was decoded at the right size with the right picture,
1 when not (or on an error), 2 for bad options, 3 when EGL or a codec is unavailable here,
130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import math
import multiprocessing
import os
import signal
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger("frame_stream")

#: Stages in the order they happen to a frame; FrameTimings keeps a histogram for each.
STAGES = ("render", "capture", "convert", "encode", "transfer", "decode", "end-to-end")
CODECS = ("h264", "jpeg", "png")
#: Encoder backends fed I420 made here, so conversion shows as its own stage.
HOST_YUV_BACKENDS = ("x264", "nvenc-host")

# Messages on the pipe, each one length-prefixed by multiprocessing's Connection.send_bytes.
# sender -> receiver: PACKET header, then the payload as a message of its own (no copy); END.
PACKET = struct.Struct("<cqqqHHB?")  # b"P", frame id, picture number, sent ns, w, h, codec, key
END = b"E"
# receiver -> sender: READY/SUMMARY/FAILED + JSON, ACK per packet, KEYREQ after a loss.
ACK = struct.Struct("<cqqqqHHB")  # b"A", frame id, received ns, decode ns, done ns, w, h, status
KEYREQ = struct.Struct("<cq")  # b"K", newest frame id seen (-1: none)
READY, SUMMARY, FAILED = b"R", b"S", b"X"

# ACK status
OK, WRONG_SIZE, WRONG_PICTURE, SKIPPED, CORRUPT = range(5)
STATUS_NAMES = ("ok", "wrong_size", "wrong_picture", "skipped", "corrupt")

EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 1, 2, 3, 130


class ReceiverError(RuntimeError):
    """The receiving process failed, vanished or stopped answering."""


@dataclass
class Settings:
    """What to stream; the command-line flags map onto these one to one."""

    width: int = 1280
    height: int = 720
    fps: float = 60.0  # 0: as fast as possible
    frames: int | None = 300  # stop after this many frames ...
    duration: float | None = None  # ... or after this many seconds, whichever comes first
    codec: str = "auto"
    backend: str | None = None  # encoder backend, e.g. "x264"; None: the best that probes well
    gl_backend: str | None = None  # GL readback: "cuda-gl", "pbo" or "readpixels"
    bitrate: int | None = None
    quality: int | None = None
    window: int = 4  # frames in flight before the sender drops (latest frame wins)
    wait: bool = False  # wait for the receiver instead of dropping frames
    timeout: float = 30.0  # seconds to wait for the receiver to start or to answer


@dataclass
class Progress:
    """A snapshot for live displays, handed to the ``progress`` callback of :func:`stream`."""

    elapsed: float
    rendered: int
    sent: int
    acked: int
    dropped: int
    nbytes: int
    keyframes: int
    backend: str
    timings: Any  # FrameTimings of the whole run
    recent: Any  # FrameTimings since the previous snapshot


@dataclass
class Result:
    """Everything measured; ``to_dict()`` is the ``--json`` output."""

    settings: Settings
    ok: bool = False
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    encoder: str = ""
    codec: str = ""
    capture: str = ""
    gl_renderer: str = ""
    seconds: float = 0.0
    rendered: int = 0
    sent: int = 0
    acked: int = 0
    dropped: int = 0
    keyframes: int = 0
    keyframe_requests: int = 0
    nbytes: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    receiver: dict[str, Any] = field(default_factory=dict)
    child: dict[str, Any] = field(default_factory=dict)
    timings: Any = None

    @property
    def fps(self) -> float:
        return self.acked / self.seconds if self.seconds > 0 else math.nan

    @property
    def bitrate(self) -> float:
        return self.nbytes * 8 / self.seconds if self.seconds > 0 else math.nan

    def stages(self) -> dict[str, dict[str, float | int | None]]:
        out: dict[str, dict[str, float | int | None]] = {}
        if self.timings is None:
            return out
        for name, s in self.timings.summary().items():
            ms = [None if math.isnan(v) else v * 1e3 for v in (s.mean, s.p50, s.p95, s.p99, s.max)]
            out[name] = {"count": s.count} | dict(
                zip(("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"), ms, strict=True)
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "ok": self.ok,
            "interrupted": self.interrupted,
            "errors": self.errors,
            "settings": asdict(self.settings),
            "encoder": self.encoder,
            "codec": self.codec,
            "capture": self.capture,
            "gl_renderer": self.gl_renderer,
            "seconds": self.seconds,
            "fps": finite(self.fps),
            "bitrate_bps": finite(self.bitrate),
            "bytes": self.nbytes,
            "frames": {
                "rendered": self.rendered,
                "sent": self.sent,
                "acked": self.acked,
                "dropped": self.dropped,
                "keyframes": self.keyframes,
                "keyframe_requests": self.keyframe_requests,
                **{name: self.statuses.get(name, 0) for name in STATUS_NAMES},
            },
            "stages": self.stages(),
            "receiver": self.receiver,
            "child": self.child,
        }


# ------------------------------------------------------------------------------------------
# receiver (the second process)
# ------------------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGTERM when the parent dies, even by SIGKILL (the pipe's EOF covers the rest)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        raise SystemExit(1)


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def receiver_main(
    conn: Connection, parent: int, width: int, height: int, levels: tuple[int, int]
) -> None:
    """Entry point of the receiving process: decode until END, then send a summary."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sender's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)  # so that finally blocks run
    logging.basicConfig(level=levels[0], format="receiver %(levelname)s %(name)s: %(message)s")
    log.setLevel(levels[1])
    try:
        _die_with_parent(parent)
        _receive(conn, width, height)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            detail = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            conn.send_bytes(FAILED + json.dumps(detail).encode())
        raise
    finally:
        conn.close()


def _receive(conn: Connection, width: int, height: int) -> None:
    from render import code_of, read_code

    from isthmus.frames import (
        CorruptPacketError,
        KeyframeRequester,
        Packet,
        open_decoder,
        probe_decoders,
    )

    decoders = probe_decoders()  # imports PyAV etc. now, not on the first packet
    conn.send_bytes(READY + json.dumps({"pid": os.getpid(), "decoders": decoders}).encode())
    decoder = open_decoder("auto")  # follows Packet.codec, so a fallback to JPEG still plays
    requester = KeyframeRequester(timeout=0.25, waiting=False)
    counts: Counter[str] = Counter()
    sizes: set[tuple[int, int]] = set()
    codecs: set[str] = set()
    try:
        while True:
            due = requester.due_at()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            # Nothing arriving by the timeout means a keyframe request is due.
            msg = conn.recv_bytes() if conn.poll(timeout) else b""
            if msg[:1] == END:
                break
            if msg[:1] == b"P":
                _, frame_id, picture, _sent, w, h, codec, key = PACKET.unpack(msg)
                payload = conn.recv_bytes()
                received = time.monotonic_ns()
                status, decode_ns, out_w, out_h = SKIPPED, 0, 0, 0
                if requester.on_packet(key, frame_id):
                    packet = Packet(payload, picture, key, CODECS[codec], w, h)
                    t0 = time.perf_counter_ns()
                    try:
                        frames = decoder.decode(packet)
                    except CorruptPacketError as exc:
                        log.warning("frame %d: %s; asking for a keyframe", frame_id, exc)
                        requester.lost()
                        frames = []
                        status = CORRUPT
                    decode_ns = time.perf_counter_ns() - t0
                    if frames:
                        f = frames[-1]
                        out_w, out_h = f.width, f.height
                        sizes.add((f.width, f.height))
                        codecs.add(CODECS[codec])
                        if (f.width, f.height) != (width, height) or f.array.shape[:2] != (
                            height,
                            width,
                        ):
                            status = WRONG_SIZE
                        elif read_code(f.array) != code_of(picture):
                            status = WRONG_PICTURE
                        else:
                            status = OK
                done = time.monotonic_ns()
                counts[STATUS_NAMES[status]] += 1
                conn.send_bytes(
                    ACK.pack(b"A", frame_id, received, decode_ns, done, out_w, out_h, status)
                )
            if requester.need_keyframe(time.monotonic()):
                last = requester.last_id
                conn.send_bytes(KEYREQ.pack(b"K", -1 if last is None else last))
    finally:
        decoder.close()
    summary = {
        "pid": os.getpid(),
        "received": sum(counts.values()),
        "decoded": counts["ok"] + counts["wrong_size"] + counts["wrong_picture"],
        **{name: counts[name] for name in STATUS_NAMES},
        "sizes": sorted([list(s) for s in sizes]),
        "codecs": sorted(codecs),
        "keyframe_requests": requester.requests,
    }
    conn.send_bytes(SUMMARY + json.dumps(summary).encode())


# ------------------------------------------------------------------------------------------
# sender (this process)
# ------------------------------------------------------------------------------------------

RX = "receiver"  # the StreamPolicy client id of the one receiver


class _Sender:
    """The sender's state: the pipe, the policy, what is in flight, and the timings."""

    def __init__(
        self,
        settings: Settings,
        conn: Connection,
        result: Result,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        from isthmus.frames import Frame, FrameTimings, StreamPolicy

        self.s = settings
        self.conn = conn
        self.result = result
        self.progress = progress
        self.timings = result.timings = FrameTimings(STAGES)
        self.recent = FrameTimings(STAGES)
        self.policy: StreamPolicy[Frame, str] = StreamPolicy(window=settings.window)
        self.policy.join(RX)
        self.in_flight: dict[int, tuple[int, int]] = {}  # frame id -> (capture ns, sent ns)
        self.ready: dict[str, Any] | None = None
        self.closing = False
        self.started = time.monotonic()
        self.last_ack = self.started
        self.encoder: Any = None
        self.converter: Any = None

    # -- bookkeeping -----------------------------------------------------------------------
    def record(self, stage: str, ns: int) -> None:
        ns = max(0, ns)  # two processes, one clock: never negative, but be safe
        self.timings.record_ns(stage, ns)
        self.recent.record_ns(stage, ns)

    def report(self) -> None:
        if self.progress is None:
            return
        r = self.result
        self.progress(
            Progress(
                elapsed=time.monotonic() - self.started,
                rendered=r.rendered,
                sent=r.sent,
                acked=r.acked,
                dropped=self.policy.dropped,
                nbytes=r.nbytes,
                keyframes=r.keyframes,
                backend=r.encoder,
                timings=self.timings,
                recent=self.recent,
            )
        )
        self.recent.reset()

    # -- the pipe ---------------------------------------------------------------------------
    def handle(self, msg: bytes) -> None:
        kind = msg[:1]
        r = self.result
        if kind == b"A":
            _, fid, received, decode_ns, done, _w, _h, status = ACK.unpack(msg)
            captured, sent = self.in_flight.pop(fid)
            self.policy.ack(RX, fid)
            self.record("transfer", received - sent)
            if status != SKIPPED:
                self.record("decode", decode_ns)
            if status in (OK, WRONG_SIZE, WRONG_PICTURE):
                self.record("end-to-end", done - captured)
            r.acked += 1
            r.statuses[STATUS_NAMES[status]] += 1
            self.last_ack = time.monotonic()
        elif kind == b"K":
            (_, after) = KEYREQ.unpack(msg)
            log.info("the receiver asks for a keyframe (newest frame it has: %d)", after)
            self.policy.request_keyframe(RX, after=None if after < 0 else after)
            r.keyframe_requests += 1
        elif kind == READY:
            self.ready = json.loads(msg[1:])
        elif kind == SUMMARY:
            r.receiver = json.loads(msg[1:])
        elif kind == FAILED:
            detail = json.loads(msg[1:])
            log.debug("receiver traceback:\n%s", detail.get("traceback", ""))
            raise ReceiverError(f"the receiver failed: {detail.get('error')}")

    def service(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for messages (acks free window room), handle them all, and
        encode whatever the policy now allows."""
        wake = self.policy.wake_at()  # a keyframe held back by min_keyframe_interval
        if wake is not None:
            timeout = min(timeout, max(0.0, wake - time.monotonic()))
        try:
            if self.conn.poll(timeout):
                self.handle(self.conn.recv_bytes())
                while self.conn.poll():
                    self.handle(self.conn.recv_bytes())
        except (EOFError, ConnectionError) as exc:
            if self.closing and self.result.receiver:
                return  # it sent its summary and exited, as asked
            raise ReceiverError(f"the receiver went away ({type(exc).__name__})") from exc
        if not self.closing:
            self.pump()

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.s.timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReceiverError(f"the receiver did not {what} within {self.s.timeout:g} s")
            self.service(left)

    # -- encode and send --------------------------------------------------------------------
    def pump(self) -> None:
        while (job := self.policy.next_encode()) is not None:
            self.encode_and_send(job)

    def encode_and_send(self, job: Any) -> None:
        frame, r = job.frame, self.result
        try:
            src = frame
            if self.encoder.backend in HOST_YUV_BACKENDS:
                t0 = time.perf_counter_ns()
                src = self.converter.convert(frame)
                self.record("convert", time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            packet = self.encoder.encode(src, keyframe=job.keyframe)
            self.record("encode", time.perf_counter_ns() - t0)
        except BaseException:
            self.policy.encode_failed()
            raise
        r.encoder, r.codec = self.encoder.backend, packet.codec
        dispatch = self.policy.packet_ready(packet)
        if RX not in dispatch.clients:
            return
        sent = time.monotonic_ns()
        header = PACKET.pack(
            b"P",
            job.frame_id,
            frame.pts,  # the picture number drawn into the frame
            sent,
            packet.width,
            packet.height,
            CODECS.index(packet.codec),
            packet.keyframe,
        )
        with _signals_deferred():
            try:
                self.conn.send_bytes(header)
                self.conn.send_bytes(packet.payload)  # a view of the encoder's packet, no copy
            except (BrokenPipeError, ConnectionError) as exc:
                raise ReceiverError("the receiver went away while a packet was sent") from exc
            self.in_flight[job.frame_id] = (frame.timestamp_ns, sent)
            r.sent += 1
            r.nbytes += packet.nbytes
            r.keyframes += packet.keyframe

    # -- the run ----------------------------------------------------------------------------
    def run(self, scene: Any, source: Any) -> None:
        s, r = self.s, self.result
        self.wait_until(lambda: self.ready is not None, "start")
        log.info(
            "streaming %dx%d %s (%s) at %s, window %d%s",
            s.width,
            s.height,
            self.encoder.codec,
            self.encoder.backend,
            f"{s.fps:g} fps" if s.fps > 0 else "full speed",
            s.window,
            ", waiting for the receiver when it is full" if s.wait else ", latest frame wins",
        )
        period = 1.0 / s.fps if s.fps > 0 else 0.0
        self.started = self.last_ack = start = time.monotonic()
        due = next_report = start
        index = 0
        while True:
            now = time.monotonic()
            if (s.frames is not None and index >= s.frames) or (
                s.duration is not None and now - start >= s.duration
            ):
                break
            if now < due:
                self.service(due - now)  # sleep until the next frame, handling acks meanwhile
                continue
            t0 = time.perf_counter_ns()
            scene.draw(index, now - start)
            t1 = time.perf_counter_ns()
            frame = source.read()
            self.record("capture", time.perf_counter_ns() - t1)
            self.record("render", t1 - t0)
            index += 1
            r.rendered = index
            self.policy.submit(frame)  # replaces a frame still waiting: latest frame wins
            del frame  # its pool slot comes back as soon as the encoder is done with it
            self.pump()
            if s.wait:
                self.wait_until(lambda: not self.policy.pending, "acknowledge frames")
            self.service(0.0)
            # Paced by the clock, not by the previous frame: a slow frame does not shift the
            # schedule, and a long stall does not cause a burst to catch up.
            due = max(due + period, time.monotonic() - period) if period else now
            if now >= next_report:
                self.report()
                next_report = now + 0.5
        # The last frame may still wait for room in the window; then every packet in flight
        # must come back acknowledged.
        self.wait_until(lambda: not self.policy.pending, "acknowledge the last frames")
        self.wait_until(lambda: not self.in_flight, "acknowledge the last frames")
        r.seconds = max(self.last_ack - start, 1e-9)
        self.report()

    def stop(self, child: Any) -> None:
        """Tell the receiver to finish, collect its summary, and make sure it is gone."""
        self.closing = True
        try:
            self.conn.send_bytes(END)
            self.wait_until(lambda: bool(self.result.receiver), "send its summary")
        except (ReceiverError, OSError) as exc:
            if not self.result.errors:
                self.result.errors.append(str(exc))
            log.warning("%s", exc)
        finally:
            _reap(child, grace=5.0)
            self.conn.close()
        self.result.child = {"pid": child.pid, "exitcode": child.exitcode}


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a packet is half written, so that the pipe stays
    framed and the receiver can still be told to stop; they are delivered right after."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _reap(child: Any, grace: float) -> None:
    """Join the child; terminate, then kill it if it does not exit by itself."""
    child.join(grace)
    if child.is_alive():
        log.warning("the receiver did not exit; terminating it")
        child.terminate()
        child.join(2.0)
    if child.is_alive():
        child.kill()
        child.join(2.0)


def stream(settings: Settings, progress: Callable[[Progress], None] | None = None) -> Result:
    """Stream ``settings.frames`` frames (or ``settings.duration`` seconds) to a receiving
    process and return what was measured.

    Raises :class:`isthmus.frames.BackendUnavailableError` when EGL or the codec is missing and
    :class:`isthmus.frames.FrameFormatError` for an impossible size; errors while streaming end
    up in ``Result.errors``; Ctrl-C stops cleanly (``Result.interrupted``).
    """
    from render import Scene

    from isthmus.frames import (
        BackendUnavailableError,
        Converter,
        EGLContext,
        FrameFormatError,
        FramesError,
        GLSource,
        load_gl,
        open_encoder,
    )

    s = settings
    _, gl = load_gl()  # first: it picks PyOpenGL's EGL platform before OpenGL is imported
    result = Result(s)
    mp = multiprocessing.get_context("spawn")  # a fresh interpreter: no GL state inherited
    conn, child_conn = mp.Pipe(duplex=True)
    child = mp.Process(
        target=receiver_main,
        args=(
            child_conn,
            os.getpid(),
            s.width,
            s.height,
            (logging.getLogger().getEffectiveLevel(), log.getEffectiveLevel()),
        ),
        name="frame-stream-receiver",
        daemon=True,  # terminated at interpreter exit whatever happens here
    )
    sender = _Sender(s, conn, result, progress)
    with contextlib.ExitStack() as stack:
        try:
            child.start()  # starts importing PyAV while this process sets up GL
        finally:
            child_conn.close()  # the child has its own; EOF reaches it when we close ours
        stack.callback(sender.stop, child)
        try:
            egl = stack.enter_context(EGLContext(s.width, s.height))
            result.gl_renderer = gl.glGetString(gl.GL_RENDERER).decode()
            source = stack.enter_context(GLSource(egl, format="rgba", backend=s.gl_backend))
            result.capture = source.backend
            encoder = stack.enter_context(
                open_encoder(
                    s.codec,
                    s.width,
                    s.height,
                    backend=s.backend,
                    fps=s.fps or 60.0,
                    bitrate=s.bitrate,
                    quality=s.quality,
                )
            )
            sender.encoder = encoder
            result.encoder, result.codec = encoder.backend, encoder.codec
            sender.converter = Converter(s.width, s.height, dst="i420", color=encoder.color)
            stack.callback(sender.converter.close)
            sender.run(Scene(gl, s.width, s.height), source)
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted: stopping the receiver")
        except (BackendUnavailableError, FrameFormatError):
            raise  # not this run's failure: the machine or the options (the caller decides)
        except (ReceiverError, FramesError) as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
            log.error("%s", exc)
    r = result
    r.dropped = sender.policy.dropped
    r.ok = (
        not r.errors
        and r.sent > 0
        and r.statuses["ok"] == r.sent == r.acked
        and r.receiver.get("ok") == r.sent
    )
    return r


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def stage_table(timings: Any, title: str) -> Any:
    """A rich table of p50/p95/p99/max per stage, in milliseconds."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("stage", style="bold")
    for col in ("frames", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right")
    for name, st in timings.summary().items():
        if not st.count:
            table.add_row(name, "0", "—", "—", "—", "—")
            continue
        table.add_row(
            name, f"{st.count:,}", *(f"{v * 1e3:.2f}" for v in (st.p50, st.p95, st.p99, st.max))
        )
    return table


def print_report(result: Result) -> None:
    from rich.console import Console

    r, s = result, result.settings
    console = Console()
    title = f"{s.width}x{s.height} {r.codec} ({r.encoder}), capture {r.capture}"
    if r.timings is not None:
        console.print(stage_table(r.timings, title))
    console.print(f"renderer: {r.gl_renderer or '?'}")
    rx = r.receiver
    console.print(
        f"frames: {r.rendered:,} rendered, {r.sent:,} sent, {r.dropped:,} dropped "
        f"(latest frame wins), {rx.get('decoded', 0):,} decoded in the receiver "
        f"(pid {rx.get('pid', '?')}), {r.keyframes:,} keyframes\n"
        f"rate:   {r.fps:,.1f} fps, {r.bitrate / 1e6:,.2f} Mbit/s, "
        f"{r.nbytes / max(r.sent, 1) / 1024:,.1f} KiB per packet\n"
        f"checks: sizes {rx.get('sizes', [])}, "
        + ", ".join(f"{k} {r.statuses.get(k, 0)}" for k in STATUS_NAMES)
    )
    for err in r.errors:
        console.print(f"[red]error:[/red] {err}")


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e3:.2f} ms"


def _bitrate(text: str) -> int:
    """``4000000``, ``4000k`` or ``4M`` bit/s."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a bitrate: {text!r} (e.g. 4M, 800k)") from None


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="frame_stream.py",
        description="Render frames headless (EGL), encode them, decode them in a second "
        "process, and report the latency of every stage (p50/p95/p99), fps and bitrate.",
    )
    p.add_argument("--width", type=int, default=d.width, help=f"(default {d.width})")
    p.add_argument("--height", type=int, default=d.height, help=f"(default {d.height})")
    p.add_argument(
        "--fps", type=float, default=d.fps, help=f"frame rate, 0 = as fast as possible ({d.fps:g})"
    )
    p.add_argument("--frames", type=int, default=d.frames, help=f"frames to render ({d.frames})")
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds even if frames remain"
    )
    p.add_argument(
        "--codec",
        choices=["auto", *CODECS],
        default=d.codec,
        help="auto: the best encoder that probes well (NVENC, x264, then JPEG)",
    )
    p.add_argument(
        "--backend", help="one encoder backend, e.g. x264 or jpeg (isthmus-frames probe)"
    )
    p.add_argument(
        "--gl-backend",
        choices=["cuda-gl", "pbo", "readpixels"],
        help="GL readback (default: probe)",
    )
    p.add_argument("--bitrate", type=_bitrate, help="H.264 bitrate, e.g. 4M (default: CRF)")
    p.add_argument("--quality", type=int, help="H.264 CRF (default 23) or JPEG quality (85)")
    p.add_argument(
        "--window",
        type=int,
        default=d.window,
        help=f"frames in flight before the sender drops frames ({d.window})",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="when the window is full, wait for the receiver instead of dropping frames",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=d.timeout,
        metavar="S",
        help=f"give up when the receiver does not answer for S seconds ({d.timeout:g})",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH")
    p.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(INFO)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.width <= 0 or opts.height <= 0:
        parser.error("--width and --height must be positive")
    if opts.fps < 0 or opts.frames < 1 or opts.window < 1 or opts.timeout <= 0:
        parser.error("--fps must be >= 0, --frames and --window >= 1, --timeout > 0")
    # The libraries' INFO lines (every backend probed) only with --log-level DEBUG.
    logging.basicConfig(
        level=max(logging.WARNING, logging.getLevelName(opts.log_level))
        if opts.log_level == "INFO"
        else opts.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    log.setLevel(opts.log_level)
    signal.signal(signal.SIGTERM, _on_sigterm)  # finally blocks run, the receiver is stopped
    settings = Settings(
        width=opts.width,
        height=opts.height,
        fps=opts.fps,
        frames=opts.frames,
        duration=opts.duration,
        codec=opts.codec,
        backend=opts.backend,
        gl_backend=opts.gl_backend,
        bitrate=opts.bitrate,
        quality=opts.quality,
        window=opts.window,
        wait=opts.wait,
        timeout=opts.timeout,
    )

    def progress(p: Progress) -> None:
        enc = p.recent.summary()["encode"]
        e2e = p.recent.summary()["end-to-end"]
        log.info(
            "%5.1f s: %d rendered, %d sent, %d dropped; encode p50 %s, end-to-end p50 %s",
            p.elapsed,
            p.rendered,
            p.sent,
            p.dropped,
            _ms(enc.p50),
            _ms(e2e.p50),
        )

    from isthmus.frames import BackendUnavailableError, FrameFormatError

    try:
        result = stream(settings, progress)
    except BackendUnavailableError as exc:
        log.error("unavailable here: %s", exc)
        return EXIT_UNAVAILABLE
    except FrameFormatError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    print_report(result)
    if opts.json:
        opts.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.interrupted:
        return EXIT_INTERRUPTED
    return 0 if result.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
