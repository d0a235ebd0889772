#!/usr/bin/env python3
"""Fuzz isthmus-wire's receiving side with random and mutated byte streams.

Each iteration takes a valid recorded stream (or random bytes), mutates it (bit flips, bytes
set to edge values, header fields overwritten, truncation, splicing, insertion, deletion,
duplication), and feeds it in random pieces (whole, byte by byte, random split points, or
reads through ``get_buffer``/``buffer_updated``), sometimes ending the stream, into one of:

* a bare ``FrameDecoder`` (default or small limits), twice with different splits: the split
  must not change what is decoded, nor the error and its offset,
* a server ``Connection`` driven like an application (accepts or rejects the hello, answers
  pings, acknowledges credit streams, says goodbye after a ``ProtocolError``),
* a client ``Connection`` that sent a hello and reads the server's side.

Nothing may raise but ``ProtocolError`` from ``next()`` / ``next_event()`` (and
``LocalProtocolError`` from the driver's own sends); a ProtocolError must point inside the bytes
received (or at the first payload byte of the header just received) and repeat on every later
call. Inputs are bounded (at most ``MAX_INPUT`` bytes) so an
iteration cannot hang; the command line also arms a watchdog timer per iteration::

    python libs/wire/tests/fuzz_wire.py --iterations 1000000 --seed 1

prints a progress bar (rich, if importable), then iterations per second and how many inputs
ended in each error code. On an unexpected exception it prints the reproducer (the target, how
the input was split, and the input in hex) and exits 1. ``run(iterations, seed)`` does the same
in-process and returns the statistics (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import random
import signal
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from isthmus.wire import (
    HEADER_SIZE,
    Ack,
    AudioChunk,
    Blob,
    Connection,
    Error,
    FrameDecoder,
    Goodbye,
    Hello,
    Key,
    LocalProtocolError,
    Ping,
    Pointer,
    ProtocolError,
    RequestKeyframe,
    Role,
    StatePatch,
    Stats,
    StreamSpec,
    Tensor,
    VersionMismatch,
    VideoPacket,
    Welcome,
    Wheel,
    default_streams,
    pack_header,
)

MAX_INPUT = 8192  # bytes per iteration: keeps every iteration short
TARGETS = ("decoder", "server", "client")


# ------------------------------------------------------------------------------ corpus


def _clock() -> Callable[[], int]:
    return itertools.count(1_700_000_000_000_000_000).__next__


def _streams(chunk: int) -> list[StreamSpec]:
    return [
        msgspec.structs.replace(s, chunk_size=chunk if s.id else 0) for s in default_streams()
    ] + [StreamSpec(id=7, name="thumbs", kind="video", credits=2, chunk_size=chunk)]


def _join(buffers: list[Any]) -> bytes:
    return b"".join(bytes(memoryview(b)) for b in buffers)


def _session(encoding: str, chunk: int, rng: np.random.Generator) -> tuple[bytes, bytes]:
    """One recorded conversation: (client-to-server bytes, server-to-client bytes)."""
    client = Connection(Role.CLIENT, clock=_clock())
    server = Connection(Role.SERVER, streams=_streams(chunk), clock=_clock())
    c2s = bytearray(_join(client.send(Hello(encodings=[encoding], codecs=["h264"], token="t"))))
    server.receive_data(bytes(c2s))
    hello = server.next_event()
    s2c = bytearray(_join(server.accept(hello, session="fuzz")))
    client.receive_data(bytes(s2c))
    client.next_event()
    handshake = len(s2c)

    def both(message: Any, stream: int | None = None) -> None:
        server.queue(message, stream=stream)
        client.queue(message, stream=stream)

    both(Ping(nonce=1, time_ns=2))
    both(Pointer(kind="down", x=1.5, y=2.5, buttons=1))
    both(Wheel(dy=-3.0, mode="line"))
    both(Key(key="a", code="KeyA"))
    both(StatePatch(path="/camera/zoom", value={"z": [1.0, 2, None, "x" * 40]}, rev=3))
    both(Stats(stream=2, fps=30.0, extra={"q": 1.0}))
    both(RequestKeyframe())
    both(VideoPacket(codec="h264", keyframe=True, config=b"\x01SPS", data=rng.bytes(300)))
    both(VideoPacket(codec="h264", keyframe=False, data=rng.bytes(90)))
    both(VideoPacket(codec="jpeg", keyframe=True, data=rng.bytes(40)), stream=7)
    both(AudioChunk(sample_format="f32", planar=True, codec="opus", data=rng.bytes(120)))
    both(Tensor.from_array(np.asfortranarray(rng.random((3, 5)))))
    both(Tensor.from_array(np.arange(6, dtype=">i2").reshape(2, 3)))
    both(Blob(data=rng.bytes(70), mime="text/plain", name="n.txt"))
    while server.has_data_to_send or client.has_data_to_send:
        s2c += _join(server.data_to_send(max_bytes=150))
        c2s += _join(client.data_to_send(max_bytes=150))
    client.receive_data(bytes(s2c[handshake:]))
    # acknowledgements travel too (the server's video stream and the thumbnails)
    for event in client.events():
        if isinstance(event, VideoPacket):
            header = client.last_header
            assert header is not None
            c2s += _join(client.send(Ack(stream=header.stream, seq=header.seq)))
    c2s += _join(client.close("bye"))
    s2c += _join(server.close("bye"))
    return bytes(c2s), bytes(s2c)


def build_corpus() -> dict[str, list[bytes]]:
    """Valid byte streams: ``c2s`` (a client's, for servers), ``s2c`` (a server's, for
    clients); the frame decoder takes either."""
    rng = np.random.default_rng(0)
    c2s: list[bytes] = []
    s2c: list[bytes] = []
    for encoding, chunk in (("msgpack", 0), ("json", 0), ("msgpack", 64), ("json", 23)):
        a, b = _session(encoding, chunk, rng)
        c2s.append(a)
        s2c.append(b)
    # the handshake alone, a version mismatch, a rejection
    c2s.append(_join(Connection(Role.CLIENT).send(Hello())))
    c2s.append(_join(Connection(Role.CLIENT).send(Hello(protocol=9))))
    server = Connection(Role.SERVER)
    server.receive_data(c2s[-1])
    assert isinstance(server.next_event(), VersionMismatch)
    s2c.append(_join(server.data_to_send()))
    server = Connection(Role.SERVER)
    server.receive_data(c2s[-2])
    server.next_event()
    s2c.append(_join(server.reject("no")))
    s2c.append(_join([msgspec.json.encode(Error(code="x"))]))  # a body without a header
    # a sender that ignores the video credits (4): frames built by hand after a welcome
    server = Connection(Role.SERVER, clock=_clock())
    server.receive_data(c2s[4])  # the plain hello
    server.next_event()
    greedy = bytearray(_join(server.accept()))
    for seq in range(7):
        body = struct.pack("<BBHIIIq", 5, 1, 0, 8, 8, 0, seq) + rng.bytes(20)
        greedy += pack_header(64, 8, 2, len(body), len(body), seq, seq) + body
    s2c.append(bytes(greedy))
    return {"c2s": c2s, "s2c": s2c}


# ------------------------------------------------------------------------------ mutations

INTERESTING_8 = (0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 65, 66, 67, 127, 128, 255)
INTERESTING_32 = (0, 1, 7, 8, 31, 32, 33, 64, 255, 256, 4096, 65535, 65536, 2**31 - 1, 2**32 - 1)
# header fields: (offset, struct format)
HEADER_FIELDS = ((3, "<B"), (4, "<H"), (6, "<H"), (8, "<I"), (12, "<I"), (16, "<Q"), (24, "<Q"))


def frame_starts(data: bytes | bytearray) -> list[int]:
    """Where frames start, following the length fields as far as they make sense."""
    out = []
    pos = 0
    while pos + HEADER_SIZE <= len(data):
        out.append(pos)
        (length,) = struct.unpack_from("<I", data, pos + 8)
        pos += HEADER_SIZE + length
    return out


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> tuple[bytes, list[str]]:
    buf = bytearray(data)
    applied = []
    for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3, 5))):
        kind = rng.choice(
            (
                "bitflip",
                "bitflip",
                "byte",
                "field",
                "field",
                "field",
                "truncate",
                "splice",
                "insert",
                "delete",
                "duplicate",
                "swap",
            )
        )
        applied.append(kind)
        n = len(buf)
        if kind == "bitflip" and n:
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif kind == "byte" and n:
            buf[rng.randrange(n)] = rng.choice(INTERESTING_8)
        elif kind == "field" and n >= HEADER_SIZE:
            starts = frame_starts(buf)
            base = rng.choice(starts)
            offset, fmt = rng.choice(HEADER_FIELDS)
            size = struct.calcsize(fmt)
            if rng.random() < 0.7:
                value = rng.choice(INTERESTING_32) % (1 << (8 * size))
            else:
                (old,) = struct.unpack_from(fmt, buf, base + offset)
                value = (old + rng.choice((-2, -1, 1, 2))) % (1 << (8 * size))
            struct.pack_into(fmt, buf, base + offset, value)
        elif kind == "truncate" and n:
            del buf[rng.randrange(n) :]
        elif kind == "splice":
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            at = rng.randrange(n + 1)
            buf[at:] = other[cut:]
        elif kind == "insert":
            at = rng.randrange(n + 1)
            buf[at:at] = rng.randbytes(rng.choice((1, 2, 4, 8, 32, 100)))
        elif kind == "delete" and n:
            at = rng.randrange(n)
            del buf[at : at + rng.choice((1, 2, 4, 8, 32))]
        elif kind == "duplicate" and n:
            starts = frame_starts(buf)
            if len(starts) > 1:
                i = rng.randrange(len(starts) - 1)
                a, b = starts[i], starts[i + 1]
                buf[b:b] = buf[a:b]
        elif kind == "swap":
            starts = frame_starts(buf)
            if len(starts) > 2:
                i = rng.randrange(len(starts) - 2)
                a, b, c = starts[i], starts[i + 1], starts[i + 2]
                buf[a:c] = buf[b:c] + buf[a:b]
    return bytes(buf[:MAX_INPUT]), applied


def make_input(
    rng: random.Random, corpus: dict[str, list[bytes]], target: str
) -> tuple[bytes, list[str]]:
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randrange(0, 600)), ["random"]
    if roll < 0.1:
        # a plausible header followed by noise
        head = struct.pack(
            "<2sBBHHIIQQ",
            b"IW",
            1,
            rng.choice((1, 5, 13, 64, 65, 66, 67)),
            rng.randrange(16),
            rng.randrange(6),
            rng.randrange(200),
            rng.randrange(400),
            rng.randrange(3),
            0,
        )
        return head + rng.randbytes(rng.randrange(0, 300)), ["header+noise"]
    pool = (
        corpus["c2s"]
        if target == "server"
        else corpus["s2c"]
        if target == "client"
        else (corpus["c2s"] + corpus["s2c"])
    )
    return mutate(rng.choice(pool), rng, corpus["c2s"] + corpus["s2c"])


def split_plan(rng: random.Random, n: int) -> tuple[str, list[int]]:
    """How to deliver ``n`` bytes: ('feed' | 'reads', piece sizes)."""
    roll = rng.random()
    if roll < 0.35 or n == 0:
        return "feed", [n]
    if roll < 0.45 and n <= 1500:
        return "feed", [1] * n
    if roll < 0.75:
        cuts = sorted(rng.randrange(n + 1) for _ in range(rng.randrange(1, 12)))
        points = [0, *cuts, n]
        return "feed", [b - a for a, b in itertools.pairwise(points)]
    sizes = [rng.choice((1, 7, 31, 32, 33, 100, 1000, 70_000)) for _ in range(rng.randrange(1, 6))]
    return "reads", sizes


# ------------------------------------------------------------------------------ targets


class Unexpected(Exception):
    """An invariant of the receiving side failed."""


@dataclass
class Outcome:
    code: str | None = None  # the ProtocolError's code, if any
    events: int = 0


def check_error(exc: ProtocolError, fed: int, again: Callable[[], Any]) -> str:
    # An error found in a header may point at the payload's first byte (a control message on
    # a binary stream), which need not have arrived yet: hence <= rather than <.
    if not 0 <= exc.offset <= fed:
        raise Unexpected(f"offset {exc.offset} past the {fed} bytes received: {exc}")
    try:
        again()
    except ProtocolError as second:
        if second is not exc and (second.code, second.offset) != (exc.code, exc.offset):
            raise Unexpected(f"a different error on the next call: {second} after {exc}") from None
    else:
        raise Unexpected(f"no error on the call after {exc}")
    return exc.code.value


def deliver(
    sink: Any, data: bytes, plan: tuple[str, list[int]], drain: Callable[[int], bool]
) -> None:
    """Give ``data`` to ``sink`` (FrameDecoder or Connection) following ``plan``; ``drain``
    after each piece returns True to stop (an error was raised)."""
    mode, sizes = plan
    feed = sink.feed if isinstance(sink, FrameDecoder) else sink.receive_data
    pos = 0
    i = 0
    while pos < len(data):
        size = max(1, sizes[i % len(sizes)])
        i += 1
        if mode == "reads":
            view = sink.get_buffer(size)
            n = min(len(view), size, len(data) - pos)
            if n <= 0:
                raise Unexpected(f"get_buffer returned {len(view)} bytes")
            view[:n] = data[pos : pos + n]
            sink.buffer_updated(n)
        else:
            n = min(size, len(data) - pos)
            feed(data[pos : pos + n])
        pos += n
        if drain(pos):
            return


def decode(
    data: bytes, plan: tuple[str, list[int]], end: bool, limits: dict[str, int]
) -> tuple[Outcome, list[Any]]:
    """Decode ``data`` delivered per ``plan``; the outcome and what was decoded, as
    (header, offset) pairs followed by the error's (code, offset)."""
    decoder = FrameDecoder(**limits)
    out = Outcome()
    trace: list[Any] = []

    def drain(fed: int) -> bool:
        while True:
            try:
                item = decoder.next()
            except ProtocolError as exc:
                out.code = check_error(exc, fed, decoder.next)
                trace.append((exc.code.value, exc.offset))
                return True
            if item is None:
                return False
            out.events += 1
            trace.append((tuple(item[0]), item[2]))
            if out.events > 10 * MAX_INPUT:
                raise Unexpected("more messages than bytes")

    deliver(decoder, data, plan, drain)
    if out.code is None and end:
        decoder.feed(b"")
        drain(len(data))
    return out, trace


def run_decoder(data: bytes, plan: tuple[str, list[int]], end: bool, rng: random.Random) -> Outcome:
    """Decode with ``plan`` and again whole (or in three pieces if ``plan`` was whole): how
    the bytes are split must not change what is decoded, or the error and its offset."""
    limits = rng.choice(({}, {"max_frame_size": 1000, "max_message_size": 4000}))
    out, trace = decode(data, plan, end, limits)
    if plan == ("feed", [len(data)]) and len(data) > 1:
        cuts = sorted(rng.randrange(1, len(data)) for _ in range(2))
        other = ("feed", [cuts[0], cuts[1] - cuts[0], len(data) - cuts[1]])
    else:
        other = ("feed", [max(len(data), 1)])
    _, again = decode(data, other, end, limits)
    if trace != again:
        first = next(
            (i for i, (a, b) in enumerate(zip(trace, again, strict=False)) if a != b),
            min(len(trace), len(again)),
        )
        raise Unexpected(
            f"the split changed the result at item {first}: "
            f"{trace[first : first + 2]} with {plan[0]} {plan[1][:8]}, "
            f"{again[first : first + 2]} with {other[0]} {other[1]}"
        )
    return out


def _driver_send(call: Callable[[], Any]) -> None:
    """The application's own sends may be refused with LocalProtocolError, nothing else."""
    with contextlib.suppress(LocalProtocolError):
        call()


def run_connection(
    role: Role, data: bytes, plan: tuple[str, list[int]], end: bool, rng: random.Random
) -> Outcome:
    conn = Connection(role)
    if role is Role.CLIENT:
        conn.send(Hello(codecs=["h264"]))
    out = Outcome()
    ack_often = rng.random() < 0.7

    def respond(event: Any) -> None:
        if isinstance(event, Hello):
            if rng.random() < 0.9:
                _driver_send(lambda: conn.accept(event))
            else:
                _driver_send(lambda: conn.reject("no"))
        elif isinstance(event, Ping):
            _driver_send(lambda: conn.send(event.response()))
        elif isinstance(event, (VideoPacket, Tensor, Blob, AudioChunk)):
            header = conn.last_header
            if header is not None and ack_often and header.stream in (2, 7):
                _driver_send(lambda: conn.ack(header.stream))
        elif isinstance(event, Goodbye):
            _driver_send(conn.close)
        elif isinstance(event, Welcome) and rng.random() < 0.5:
            _driver_send(lambda: conn.send(Pointer(x=1.0, y=2.0)))
        if rng.random() < 0.3:
            conn.data_to_send(max_bytes=rng.choice((None, 1, 1000)))

    def drain(fed: int) -> bool:
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                out.code = check_error(exc, fed, conn.next_event)
                _driver_send(functools.partial(conn.goodbye_for, exc))
                conn.data_to_send()
                return True
            if event is None:
                return False
            out.events += 1
            if out.events > 10 * MAX_INPUT:
                raise Unexpected("more events than bytes")
            respond(event)

    deliver(conn, data, plan, drain)
    if out.code is None and end:
        conn.receive_data(b"")
        drain(len(data))
    return out


# ------------------------------------------------------------------------------ the loop


@dataclass
class Failure:
    iteration: int
    target: str
    plan: tuple[str, list[int]]
    end: bool
    data: bytes
    mutations: list[str]
    error: str

    def report(self) -> str:
        return (
            f"iteration {self.iteration}: {self.error}\n"
            f"  target:    {self.target}\n"
            f"  delivery:  {self.plan[0]} {self.plan[1][:20]}{' ...' if len(self.plan[1]) > 20 else ''}"
            f", end of stream: {self.end}\n"
            f"  mutations: {', '.join(self.mutations) or 'none'}\n"
            f"  input ({len(self.data)} bytes, hex):\n    {self.data.hex()}"
        )


@dataclass
class FuzzStats:
    iterations: int = 0
    seconds: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)
    targets: Counter[str] = field(default_factory=Counter)
    clean: int = 0  # inputs that decoded without a ProtocolError
    events: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else 0.0


class Hang(Exception):
    """The watchdog fired: one iteration took far too long."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang("the iteration did not finish within the watchdog time")


def iterate(
    seed: int,
) -> Iterator[tuple[int, str, bytes, list[str], tuple[str, list[int]], bool, random.Random]]:
    corpus = build_corpus()
    rng = random.Random(seed)
    for i in itertools.count():
        target = TARGETS[i % len(TARGETS)]
        data, mutations = make_input(rng, corpus, target)
        plan = split_plan(rng, len(data))
        end = rng.random() < 0.4
        yield i, target, data, mutations, plan, end, random.Random(rng.getrandbits(32))


def run_one(
    target: str, data: bytes, plan: tuple[str, list[int]], end: bool, rng: random.Random
) -> Outcome:
    if target == "decoder":
        return run_decoder(data, plan, end, rng)
    return run_connection(Role.SERVER if target == "server" else Role.CLIENT, data, plan, end, rng)


def run(
    iterations: int,
    seed: int,
    *,
    progress: Callable[[int], None] | None = None,
    watchdog: float | None = None,
    max_failures: int = 10,
) -> FuzzStats:
    """Fuzz for ``iterations`` inputs from ``seed``; never raises for what it finds."""
    stats = FuzzStats()
    use_alarm = bool(watchdog) and hasattr(signal, "setitimer")
    start = time.perf_counter()
    if use_alarm:
        # Borrow SIGALRM and the real-time timer; give both back (with the time left) after.
        old_handler = signal.signal(signal.SIGALRM, _alarm)
        old_timer = signal.getitimer(signal.ITIMER_REAL)
    try:
        for i, target, data, mutations, plan, end, rng in iterate(seed):
            if i >= iterations:
                break
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, watchdog)
            try:
                outcome = run_one(target, data, plan, end, rng)
            except Exception as exc:  # anything else is a finding
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                detail = "".join(traceback.format_exception(exc)[-3:]).strip()
                failure = Failure(
                    i, target, plan, end, data, mutations, f"{type(exc).__name__}: {exc}\n{detail}"
                )
                stats.failures.append(failure)
                if len(stats.failures) >= max_failures:
                    stats.iterations = i + 1
                    break
            else:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                if outcome.code is None:
                    stats.clean += 1
                else:
                    stats.codes[outcome.code] += 1
                stats.events += outcome.events
            stats.targets[target] += 1
            stats.iterations = i + 1
            if progress is not None and not (i + 1) % 500:
                progress(i + 1)
    finally:
        stats.seconds = time.perf_counter() - start
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            if old_timer[0] > 0:
                left = max(old_timer[0] - stats.seconds, 0.001)
                signal.setitimer(signal.ITIMER_REAL, left, old_timer[1])
    return stats


def replay(seed: int, iteration: int) -> Outcome:
    """Run one iteration again, letting its exception propagate (for debugging)."""
    for i, target, data, _, plan, end, rng in iterate(seed):
        if i == iteration:
            return run_one(target, data, plan, end, rng)
    raise AssertionError


def summary(stats: FuzzStats) -> str:
    lines = [
        f"{stats.iterations} iterations in {stats.seconds:.1f} s: "
        f"{stats.per_second:,.0f} iterations/second",
        f"targets: {dict(sorted(stats.targets.items()))}",
        f"{stats.clean} inputs decoded without an error, {stats.events} events in all",
        f"unexpected exceptions: {len(stats.failures)}",
        "inputs per error code:",
    ]
    width = max((len(c) for c in stats.codes), default=0)
    for code, count in sorted(stats.codes.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {code:<{width}}  {count}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--watchdog", type=float, default=30.0, help="seconds one iteration may take (0: off)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--max-failures", type=int, default=10, help="stop after this many findings"
    )
    args = parser.parse_args(argv)

    progress: Callable[[int], None] | None = None
    bar: Any = None
    if not args.no_progress:
        try:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            step = max(args.iterations // 20, 1)

            def progress(n: int) -> None:
                if n % step < 500:
                    print(f"  {n}/{args.iterations}", flush=True)
        else:
            bar = Progress(
                TextColumn("fuzzing isthmus-wire"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            task = bar.add_task("fuzz", total=args.iterations)

            def progress(n: int) -> None:
                bar.update(task, completed=n)

    print(f"fuzzing isthmus-wire: {args.iterations} iterations, seed {args.seed}", flush=True)
    if bar is not None:
        with bar:
            stats = run(
                args.iterations,
                args.seed,
                progress=progress,
                watchdog=args.watchdog,
                max_failures=args.max_failures,
            )
            bar.update(task, completed=stats.iterations)
    else:
        stats = run(
            args.iterations,
            args.seed,
            progress=progress,
            watchdog=args.watchdog,
            max_failures=args.max_failures,
        )
    print(summary(stats))
    if not stats.failures:
        return 0
    print(f"\n{len(stats.failures)} unexpected exception(s); reproducers:", file=sys.stderr)
    for failure in stats.failures:
        print(failure.report(), file=sys.stderr)
    print(
        f"replay: cd libs/wire/tests && python -c 'import fuzz_wire; "
        f"fuzz_wire.replay({args.seed}, {stats.failures[0].iteration})'",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
