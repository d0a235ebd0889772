"""Benchmarks of isthmus-wire against its anchors (run through ``python bench/run.py wire``).

Sections, all in one run, contenders side by side and interleaved within each repeat:

1. **header**: ``pack_header`` + ``parse_header`` of the 32-byte frame header, against a plain
   ``struct.Struct`` pack + unpack of the same layout (the floor);
2. **codec**: encode + decode of control messages (Pointer, Key, StatePatch with a dict value,
   Stats) in MessagePack and JSON: our ``Codec`` and ``encode_message``/``decode_message``
   against raw msgspec on the same Struct, and against ``json.dumps(dataclasses.asdict(x))`` +
   ``Cls(**json.loads(s))`` with an equivalent stdlib dataclass; plus the whole framed path
   (``Connection.send`` + ``receive_data`` + ``next_event`` on the peer);
3. **interference**: control-message latency through a real TCP connection on 127.0.0.1 while
   1080p H.264-sized video flows, our chunked priority scheduling against FIFO whole-message
   writes and napari-cuda's two sockets (see :mod:`bench.wire_workers`);
4. the targets, met or not.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import socket
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench._common import (
    ChildError,
    Children,
    fmt,
    median,
    package_version,
    percentile,
    spread,
    targets_table,
)

DESCRIPTION = (
    "isthmus-wire: header pack/parse, control-message codecs, framed path, "
    "keyframe interference on TCP"
)
WORKERS = "bench.wire_workers"

SECTIONS = ("header", "codec", "interference")

TARGETS = {
    "header_ns": 1000.0,
    "codec_vs_msgspec": 1.2,
    "json_dataclasses_vs_ours": 5.0,
    "p99_ratio": 1.10,
}

# 1080p H.264 at 60 fps: ~12 KB P-frames, a ~360 KB keyframe every second (GOP 60).
P_BYTES = 12_000
KEY_BYTES = 360_000
FPS = 60
GOP = 60
PING_HZ = 1000


@dataclass
class Plan:
    micro_repeats: int
    batch_s: float
    repeats: int
    duration: float
    max_bytes: int
    notsent_lowat: int
    rcvbuf: int
    scenarios: list[str]
    sections: list[str] = field(default_factory=list)


def plan_for(opts: argparse.Namespace) -> Plan:
    quick = bool(opts.quick)
    sections = opts.only.split(",") if getattr(opts, "only", None) else list(SECTIONS)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    duration = opts.duration if opts.duration is not None else (2.0 if quick else 10.0)
    repeats = opts.repeats if opts.repeats is not None else (1 if quick else 3)
    micro = opts.micro_repeats if opts.micro_repeats is not None else (5 if quick else 25)
    if duration <= 0 or micro < 1:
        raise SystemExit("--duration must be positive and --micro-repeats at least 1")
    return Plan(
        micro_repeats=micro,
        batch_s=0.004 if quick else 0.012,
        repeats=repeats,
        duration=duration,
        max_bytes=opts.max_bytes,
        notsent_lowat=opts.notsent_lowat,
        rcvbuf=opts.rcvbuf,
        scenarios=list(SCENARIOS),
        sections=sections,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="seconds of each interference run (default 10, 2 with --quick); "
        "--repeats sets how many runs of each scenario (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--micro-repeats",
        type=int,
        default=None,
        metavar="N",
        help="repeats of the header and codec micro-benchmarks (default 25, 5 with --quick)",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=16 * 1024,
        metavar="BYTES",
        help="interference, ours: the writer calls data_to_send(max_bytes=BYTES) before each "
        "write (default 16384, one video chunk)",
    )
    parser.add_argument(
        "--notsent-lowat",
        type=int,
        default=16 * 1024,
        metavar="BYTES",
        help="interference: TCP_NOTSENT_LOWAT of the sending sockets, every scenario alike "
        "but (b0) (default 16384; 0 leaves the kernel default)",
    )
    parser.add_argument(
        "--rcvbuf",
        type=int,
        default=32 * 1024,
        metavar="BYTES",
        help="interference: SO_RCVBUF of the receiving sockets, every scenario alike but (b0) "
        "(default 32768; 0 leaves the kernel's auto-tuning)",
    )
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help=f"comma-separated subset of sections to run ({', '.join(SECTIONS)})",
    )


# --- micro-benchmark machinery ----------------------------------------------------------------


Loop = Callable[[int], None]


def _empty_loop(n: int) -> None:
    for _ in range(n):
        pass


def _time_loop(loop: Loop, n: int) -> float:
    """ns per iteration of ``loop(n)``, with the garbage collector off (as timeit does)."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        loop(n)
        return (time.perf_counter_ns() - t0) / n
    finally:
        if gc_was:
            gc.enable()


def _calibrate(loop: Loop, batch_s: float) -> int:
    """Iterations that make one batch last about ``batch_s`` seconds."""
    n = 64
    while True:
        ns = _time_loop(loop, n)
        if ns * n >= 2e6 or n >= 1 << 22:
            break
        n *= 4
    return max(64, int(batch_s * 1e9 / max(ns, 1.0)))


def run_micro(
    ui: Any, title: str, loops: dict[str, Loop], repeats: int, batch_s: float
) -> dict[str, Any]:
    """Time every loop ``repeats`` times, interleaved (a rotating order within each repeat).

    Returns, per key, the ns/op of every repeat; the empty loop's cost is measured alongside
    (key ``"(empty loop)"``).
    """
    loops = {"(empty loop)": _empty_loop, **loops}
    sizes = {k: _calibrate(f, batch_s) for k, f in loops.items()}
    keys = list(loops)
    runs: dict[str, list[float]] = {k: [] for k in keys}
    with ui.task(f"{title}: {len(keys) - 1} contenders x {repeats} repeats", repeats) as adv:
        for rep in range(repeats):
            shift = rep % len(keys)
            for k in keys[shift:] + keys[:shift]:
                runs[k].append(_time_loop(loops[k], sizes[k]))
            adv(f"repeat {rep + 1}")
    return {"runs": runs, "iterations": sizes}


def _net(runs: dict[str, list[float]], key: str) -> list[float]:
    """Per-repeat ns/op of ``key`` minus the empty loop of the same repeat."""
    empty = runs["(empty loop)"]
    return [max(v - e, 0.0) for v, e in zip(runs[key], empty, strict=True)]


def _paired_ratio(runs: dict[str, list[float]], num: str, den: str) -> float:
    """Median over repeats of (num / den), loop cost subtracted from both (paired by repeat)."""
    a, b = _net(runs, num), _net(runs, den)
    ratios = [x / y for x, y in zip(a, b, strict=True) if y > 0]
    return statistics.median(ratios) if ratios else math.nan


def _summary(runs: dict[str, list[float]], key: str) -> dict[str, float]:
    vals = runs[key]
    net = _net(runs, key) if key != "(empty loop)" else vals
    lo, hi = spread(vals)
    return {"ns": median(vals), "net_ns": median(net), "min": lo, "max": hi}


# --- 1. header ----------------------------------------------------------------------------------


def bench_header(ui: Any, plan: Plan) -> dict[str, Any]:
    from isthmus.wire import MAGIC, VERSION, pack_header, parse_header

    floor = struct.Struct("<2sBBHHIIQQ")
    ts = time.monotonic_ns()
    args = (5, 1, 0, 20, 20, 123_456, ts)  # a ping: type 5, MSGPACK, stream 0, 20-byte body
    frame = pack_header(*args)
    assert parse_header(frame)[:] == args
    assert floor.unpack(floor.pack(MAGIC, VERSION, *args))[2:] == args

    def ours(n: int) -> None:
        pk, ps, a = pack_header, parse_header, args
        for _ in range(n):
            ps(pk(*a))

    def ours_pack(n: int) -> None:
        pk, a = pack_header, args
        for _ in range(n):
            pk(*a)

    def ours_parse(n: int) -> None:
        ps, f = parse_header, frame
        for _ in range(n):
            ps(f)

    def plain(n: int) -> None:
        pk, up, m, v = floor.pack, floor.unpack, MAGIC, VERSION
        t, fl, s, ln, tot, seq, stamp = args
        for _ in range(n):
            up(pk(m, v, t, fl, s, ln, tot, seq, stamp))

    loops = {
        "ours": ours,
        "ours-pack": ours_pack,
        "ours-parse": ours_parse,
        "struct": plain,
    }
    res = run_micro(ui, "header", loops, plan.micro_repeats, plan.batch_s)
    runs = res["runs"]
    out = {k: _summary(runs, k) for k in runs}
    return {
        "rows": out,
        "iterations": res["iterations"],
        "runs": runs,
        "ratio_vs_struct": _paired_ratio(runs, "ours", "struct"),
    }


# --- 2. codec -----------------------------------------------------------------------------------

# Stdlib dataclasses with the same fields as the wire's Structs: what a hand-rolled protocol
# would use. Plain (not frozen) with slots, the quickest dataclass to build.


@dataclass(slots=True, kw_only=True)
class PointerDC:
    kind: str = "move"
    x: float
    y: float
    button: int = 0
    buttons: int = 0
    modifiers: int = 0
    pointer_id: int = 0


@dataclass(slots=True, kw_only=True)
class KeyDC:
    kind: str = "down"
    key: str
    code: str = ""
    modifiers: int = 0
    repeat: bool = False


@dataclass(slots=True, kw_only=True)
class StatePatchDC:
    path: str
    op: str = "set"
    value: Any = None
    rev: int | None = None


@dataclass(slots=True, kw_only=True)
class StatsDC:
    stream: int | None = None
    fps: float = 0.0
    kbps: float = 0.0
    frames: int = 0
    dropped: int = 0
    rtt_ms: float | None = None
    latency_ms: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


def sample_messages() -> dict[str, tuple[Any, Any]]:
    """name -> (wire Struct, equivalent dataclass) with the same field values."""
    from isthmus.wire import Key, Pointer, StatePatch, Stats

    camera = {
        "center": [512.0, 384.0, 12.5],
        "zoom": 1.75,
        "angles": [0.0, 30.0, 90.0],
        "perspective": 45.0,
        "ndisplay": 3,
        "visible": True,
    }
    pointer = {"kind": "move", "x": 812.5, "y": 431.25, "buttons": 1}
    key = {"kind": "down", "key": "ArrowLeft", "code": "ArrowLeft", "modifiers": 1}
    patch = {"path": "/camera", "op": "merge", "value": camera, "rev": 42}
    stats = {
        "stream": 2,
        "fps": 59.94,
        "kbps": 8123.5,
        "frames": 3600,
        "dropped": 3,
        "rtt_ms": 1.25,
        "latency_ms": 18.5,
        "extra": {"encode_ms": 4.2, "decode_ms": 2.1},
    }
    return {
        "Pointer": (Pointer(**pointer), PointerDC(**pointer)),
        "Key": (Key(**key), KeyDC(**key)),
        "StatePatch": (StatePatch(**patch), StatePatchDC(**patch)),
        "Stats": (Stats(**stats), StatsDC(**stats)),
    }


def _open_pair(encoding: str) -> tuple[Any, Any]:
    """A client and a server Connection after the handshake, using ``encoding``."""
    from isthmus.wire import Connection, Hello, Role

    client = Connection(Role.CLIENT, encodings=(encoding,))
    server = Connection(Role.SERVER)
    for b in client.send(Hello(encodings=[encoding])):
        server.receive_data(bytes(b))
    for b in server.accept(server.next_event()):
        client.receive_data(bytes(b))
    client.next_event()
    assert client.encoding == encoding == server.encoding
    return client, server


CODEC_CONTENDERS = {
    "codec": "ours: Codec (codec.encode + codec.decoder(cls).decode)",
    "convenience": "ours: encode_message + decode_message",
    "msgspec": "raw msgspec Encoder + Decoder(type=cls), same Struct",
    "framed": "ours framed: Connection.send + peer receive_data + next_event",
}
ENCODINGS = ("msgpack", "json")
JSON_DC_LABEL = "json.dumps(asdict(x)) + Cls(**json.loads(s)), stdlib dataclass"
NAIVE_FRAMED_LABEL = "naive framed: 4-byte length + json.dumps(asdict(x)), parse + json.loads"


def bench_codec(ui: Any, plan: Plan) -> dict[str, Any]:
    import msgspec

    from isthmus.wire import Codec, decode_message, encode_message

    messages = sample_messages()
    loops: dict[str, Loop] = {}
    asdict, dumps, loads = dataclasses.asdict, json.dumps, json.loads
    prefix = struct.Struct("<I")

    for name, (msg, dc) in messages.items():
        cls, dcls = type(msg), type(dc)
        for enc in ENCODINGS:
            codec = Codec(enc)  # type: ignore[arg-type]
            mod = msgspec.msgpack if enc == "msgpack" else msgspec.json
            raw_enc, raw_dec = mod.Encoder(), mod.Decoder(type=cls)
            # Correctness first: every contender round-trips the message.
            assert codec.decoder(cls).decode(codec.encode(msg)) == msg
            assert decode_message(cls, encode_message(msg, enc), enc) == msg  # type: ignore[arg-type]
            assert raw_dec.decode(raw_enc.encode(msg)) == msg
            assert codec.encode(msg) == raw_enc.encode(msg)

            typed = codec.decoder(cls)

            def ours(n: int, e: Any = codec.encode, d: Any = typed.decode, m: Any = msg) -> None:
                for _ in range(n):
                    d(e(m))

            def conv(n: int, c: Any = cls, en: str = enc, m: Any = msg) -> None:
                e, d = encode_message, decode_message
                for _ in range(n):
                    d(c, e(m, en), en)

            def raw(n: int, e: Any = raw_enc.encode, d: Any = raw_dec.decode, m: Any = msg) -> None:
                for _ in range(n):
                    d(e(m))

            client, server = _open_pair(enc)
            bufs = client.send(msg)
            for b in bufs:
                server.receive_data(b)
            got = server.next_event()
            assert got == msg and server.next_event() is None, got

            def framed(n: int, send: Any = client.send, srv: Any = server, m: Any = msg) -> None:
                rd, nx = srv.receive_data, srv.next_event
                for _ in range(n):
                    for b in send(m):
                        rd(b)
                    nx()

            loops[f"{name}/{enc}/codec"] = ours
            loops[f"{name}/{enc}/convenience"] = conv
            loops[f"{name}/{enc}/msgspec"] = raw
            loops[f"{name}/{enc}/framed"] = framed

        assert dcls(**loads(dumps(asdict(dc)))) == dc

        def json_dc(n: int, c: Any = dcls, x: Any = dc) -> None:
            for _ in range(n):
                c(**loads(dumps(asdict(x))))

        def naive_framed(n: int, c: Any = dcls, x: Any = dc) -> None:
            pk, up, size = prefix.pack, prefix.unpack_from, prefix.size
            for _ in range(n):
                body = dumps(asdict(x)).encode()
                wire = pk(len(body)) + body
                (length,) = up(wire)
                c(**loads(wire[size : size + length]))

        loops[f"{name}/json-dataclass"] = json_dc
        loops[f"{name}/naive-framed"] = naive_framed

    res = run_micro(ui, "codec", loops, plan.micro_repeats, plan.batch_s)
    runs = res["runs"]
    table: dict[str, Any] = {}
    for name, (msg, _dc) in messages.items():
        entry: dict[str, Any] = {
            "msgpack_bytes": len(msgspec.msgpack.encode(msg)),
            "json_bytes": len(msgspec.json.encode(msg)),
            "json_dataclass": _summary(runs, f"{name}/json-dataclass"),
            "naive_framed": _summary(runs, f"{name}/naive-framed"),
        }
        for enc in ENCODINGS:
            e: dict[str, Any] = {k: _summary(runs, f"{name}/{enc}/{k}") for k in CODEC_CONTENDERS}
            e["codec_vs_msgspec"] = _paired_ratio(
                runs, f"{name}/{enc}/codec", f"{name}/{enc}/msgspec"
            )
            e["convenience_vs_msgspec"] = _paired_ratio(
                runs, f"{name}/{enc}/convenience", f"{name}/{enc}/msgspec"
            )
            e["json_dataclass_vs_codec"] = _paired_ratio(
                runs, f"{name}/json-dataclass", f"{name}/{enc}/codec"
            )
            e["framed_vs_codec"] = _paired_ratio(
                runs, f"{name}/{enc}/framed", f"{name}/{enc}/codec"
            )
            e["naive_framed_vs_framed"] = _paired_ratio(
                runs, f"{name}/naive-framed", f"{name}/{enc}/framed"
            )
            entry[enc] = e
        table[name] = entry
    return {
        "messages": table,
        "empty_loop": _summary(runs, "(empty loop)"),
        "iterations": res["iterations"],
        "runs": runs,
    }


# --- 3. interference ----------------------------------------------------------------------------

# key -> (label, scenario of bench.wire_workers, spec overrides)
SCENARIOS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "control": ("(a) control only, ours (no video)", "control", {}),
    "ours": ("(b) ours: 16 KiB chunks, control first", "ours", {}),
    "ours-kernel-buffers": (
        "(b0) ours, kernel-default socket buffers",
        "ours",
        {"rcvbuf": 0, "notsent_lowat": 0},
    ),
    "fifo": ("(c) FIFO: whole messages in order, one socket", "fifo", {}),
    "two-socket": (
        "(c') napari-cuda layout: JSON socket + video socket",
        "two-socket",
        {},
    ),
}


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair over 127.0.0.1: (client end, server end)."""
    with socket.create_server(("127.0.0.1", 0)) as lst:
        client = socket.create_connection(lst.getsockname()[:2])
        server, _ = lst.accept()
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


def _lat_stats(lat_ns: Any) -> dict[str, float]:
    import numpy as np

    lat = np.sort(np.asarray(lat_ns, dtype=np.int64)) / 1000.0  # µs
    if not lat.size:
        return dict.fromkeys(("n", "p50", "p90", "p99", "p999", "max", "mean"), math.nan)
    vals = lat.tolist()
    return {
        "n": len(vals),
        "p50": percentile(vals, 50),
        "p90": percentile(vals, 90),
        "p99": percentile(vals, 99),
        "p999": percentile(vals, 99.9),
        "max": float(lat[-1]),
        "mean": float(lat.mean()),
    }


def run_interference_once(
    plan: Plan, scenario: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    import numpy as np

    spec: dict[str, Any] = {
        "scenario": scenario,
        "duration": plan.duration,
        "ping_hz": PING_HZ,
        "fps": FPS,
        "gop": GOP,
        "p_bytes": P_BYTES,
        "key_bytes": KEY_BYTES,
        "max_bytes": plan.max_bytes,
        "notsent_lowat": plan.notsent_lowat,
        "rcvbuf": plan.rcvbuf,
        **(overrides or {}),
    }
    socks: list[socket.socket] = []
    try:
        recv_end, send_end = tcp_pair()
        socks += [recv_end, send_end]
        rspec, sspec = dict(spec, sock=recv_end), dict(spec, sock=send_end)
        if scenario == "two-socket":
            r2, s2 = tcp_pair()
            socks += [r2, s2]
            rspec["sock2"], sspec["sock2"] = r2, s2
        with Children() as kids:
            rc = kids.start(WORKERS, "receiver", rspec, label=f"{scenario} receiver")
            sc = kids.start(WORKERS, "sender", sspec, label=f"{scenario} sender")
            for s in socks:  # the children hold their own copies
                s.close()
            timeout = plan.duration + 60.0
            sres = kids.wait(sc, timeout)
            rres = kids.wait(rc, 30.0)
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
    if sres["errors"]:
        raise ChildError(f"{scenario} sender: {sres['errors'][0]}")
    lat = np.frombuffer(rres["lat"], dtype=np.int64)
    created = np.frombuffer(rres["created"], dtype=np.int64)
    kq = np.frombuffer(rres["kf_queued"], dtype=np.int64)
    kd = np.frombuffer(rres["kf_done"], dtype=np.int64)
    if lat.size and lat.min() <= 0:
        raise ChildError(f"{scenario}: non-positive latency, clocks not comparable?")
    # Pings created while a keyframe was on its way: from the moment the keyframe was queued
    # by the sender until the receiver had all of it.
    during = np.zeros(created.size, dtype=bool)
    for q, d in zip(kq.tolist(), kd.tolist(), strict=True):
        during |= (created >= q) & (created <= d)
    stats = _lat_stats(lat)
    return {
        "stats": stats,
        "during_keyframe": _lat_stats(lat[during]),
        "keyframe_delivery": _lat_stats(kd - kq),
        "lat": lat.tobytes(),
        "during_lat": lat[during].tobytes(),
        "pings_sent": sres["pings"],
        "pings_received": int(lat.size),
        "frames_sent": sres["frames"],
        "frames_received": rres["frames"],
        "keyframes_sent": sres["keyframes"],
        "keyframes_received": rres["keyframes"],
        "video_bytes": rres["video_bytes"],
        "dropped": sres["dropped"],
        "acks": sres.get("acks", 0),
        "writes": sres["writes"],
        "reads": rres["reads"],
        "sender_sock": sres.get("sock", {}),
    }


def bench_interference(ui: Any, plan: Plan) -> dict[str, Any]:
    import numpy as np

    per: dict[str, dict[str, Any]] = {
        k: {"label": label, "scenario": scen, "overrides": ov, "runs": [], "error": None}
        for k, (label, scen, ov) in SCENARIOS.items()
    }
    keys = list(SCENARIOS)
    # (a) and (b) always run back to back (their p99 ratio is the target), in alternating order;
    # the order of the other scenarios rotates from one repeat to the next.
    units: list[list[str]] = [["control", "ours"]] + [
        [k] for k in keys if k not in ("control", "ours")
    ]
    total = plan.repeats * len(keys)
    with ui.task(
        f"interference: {len(keys)} scenarios x {plan.repeats} x {plan.duration:g} s", total
    ) as adv:
        for rep in range(plan.repeats):
            shift = rep % len(units)
            order = [
                k
                for unit in units[shift:] + units[:shift]
                for k in (unit if rep % 2 == 0 else unit[::-1])
            ]
            for key in order:
                entry = per[key]
                if entry["error"] is None:
                    try:
                        run = run_interference_once(plan, entry["scenario"], entry["overrides"])
                        entry["runs"].append(run)
                    except ChildError as exc:
                        entry["error"] = str(exc).strip().splitlines()[-1][:300]
                        ui.log(f"[yellow]{key}: {exc}")
                adv(f"{key} (repeat {rep + 1})")
    for entry in per.values():
        runs = entry["runs"]
        for part in ("stats", "during_keyframe", "keyframe_delivery"):
            entry[part] = {
                k: median(r[part][k] for r in runs) if runs else math.nan
                for k in ("n", "p50", "p90", "p99", "p999", "max", "mean")
            }
            if runs:
                entry[part]["n"] = sum(r[part]["n"] for r in runs if not math.isnan(r[part]["n"]))
        # Every repeat pooled (the p99.9 and max of a single 10 s run rest on ~10 samples).
        lat = [np.frombuffer(r.pop("lat"), dtype=np.int64) for r in runs]
        dur = [np.frombuffer(r.pop("during_lat"), dtype=np.int64) for r in runs]
        entry["pooled"] = _lat_stats(np.concatenate(lat)) if lat else _lat_stats([])
        entry["pooled_during"] = _lat_stats(np.concatenate(dur)) if dur else _lat_stats([])
        for k in (
            "pings_sent",
            "pings_received",
            "frames_sent",
            "frames_received",
            "keyframes_received",
            "dropped",
            "acks",
        ):
            entry[k] = sum(r[k] for r in runs)
        entry["p99_runs"] = [r["stats"]["p99"] for r in runs]
    a, b = per["control"], per["ours"]
    ratios = [
        rb["stats"]["p99"] / ra["stats"]["p99"]
        for ra, rb in zip(a["runs"], b["runs"], strict=False)
        if ra["stats"]["p99"] > 0
    ]
    return {
        "duration": plan.duration,
        "repeats": plan.repeats,
        "max_bytes": plan.max_bytes,
        "notsent_lowat": plan.notsent_lowat,
        "rcvbuf": plan.rcvbuf,
        "ping_hz": PING_HZ,
        "fps": FPS,
        "gop": GOP,
        "p_bytes": P_BYTES,
        "key_bytes": KEY_BYTES,
        "scenarios": per,
        "p99_ratio": (b["stats"]["p99"] / a["stats"]["p99"])
        if a["runs"] and b["runs"]
        else math.nan,
        "p99_ratio_paired": statistics.median(ratios) if ratios else math.nan,
    }


# --- entry points used by run.py ------------------------------------------------------------------


def _library_commit() -> str | None:
    """The repository's commit, with ``+dirty`` when libs/wire has uncommitted changes."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "libs/wire/src"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


def run(opts: argparse.Namespace, ui: Any) -> dict[str, Any]:
    plan = plan_for(opts)
    results: dict[str, Any] = {
        "plan": plan.__dict__,
        "library_commit": _library_commit(),
        "versions": {
            "isthmus-wire": package_version("isthmus-wire"),
            "isthmus-buffer": package_version("isthmus-buffer"),
            "msgspec": package_version("msgspec"),
            "numpy": package_version("numpy"),
        },
    }
    if "header" in plan.sections:
        results["header"] = bench_header(ui, plan)
    if "codec" in plan.sections:
        results["codec"] = bench_codec(ui, plan)
    if "interference" in plan.sections:
        results["interference"] = bench_interference(ui, plan)
    results["targets"] = target_checks(results)
    return results


def target_checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float, goal: str, ok: bool) -> None:
        met = None if isinstance(value, float) and math.isnan(value) else bool(ok)
        checks.append({"target": name, "measured": value, "goal": goal, "met": met})

    if "header" in r:
        v = r["header"]["rows"]["ours"]["ns"]
        add("frame header pack + parse, ns (loop included)", v, "≤ 1,000 ns", v <= 1000.0)
    if "codec" in r:
        msgs = r["codec"]["messages"]
        worst = max(msgs[m][e]["codec_vs_msgspec"] for m in msgs for e in ENCODINGS)
        add(
            "Codec / raw msgspec, worst message and encoding",
            worst,
            "≤ 1.2x",
            worst <= TARGETS["codec_vs_msgspec"],
        )
        worst = max(msgs[m][e]["convenience_vs_msgspec"] for m in msgs for e in ENCODINGS)
        add(
            "encode_message/decode_message / raw msgspec, worst",
            worst,
            "≤ 1.2x",
            worst <= TARGETS["codec_vs_msgspec"],
        )
        for enc in ENCODINGS:
            least = min(msgs[m][enc]["json_dataclass_vs_codec"] for m in msgs)
            add(
                f"json+dataclasses / Codec ({enc}), least favourable message",
                least,
                "≥ 5x",
                least >= TARGETS["json_dataclasses_vs_ours"],
            )
    if "interference" in r:
        it = r["interference"]
        v = it["p99_ratio"]
        add(
            "control p99 with video / without, ours: p99(b) / p99(a)",
            v,
            "≤ 1.10",
            v <= TARGETS["p99_ratio"],
        )
        sc = it["scenarios"]
        ours_d = sc["ours"]["during_keyframe"]
        for key, label in (("fifo", "FIFO (b < c)"), ("two-socket", "two sockets (b < c')")):
            other = sc[key]["during_keyframe"]
            add(
                f"control queued during a keyframe, median p50: ours below {label}",
                ours_d["p50"],
                f"< {fmt(other['p50'], 0)} µs (n = {other['n']:.0f} vs {ours_d['n']:.0f})",
                ours_d["p50"] < other["p50"],
            )
    return checks


# --- presentation ------------------------------------------------------------------------------------


def _range(lo: float, hi: float, digits: int = 0) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "n/a"
    return f"{fmt(lo, digits)}-{fmt(hi, digits)}"


def _x(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}x"


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if "header" in r:
        h = r["header"]["rows"]
        labels = {
            "ours": "ours: parse_header(pack_header(...))",
            "ours-pack": "ours: pack_header alone",
            "ours-parse": "ours: parse_header alone (checks magic, version, type, flags)",
            "struct": "floor: struct.Struct('<2sBBHHIIQQ') pack + unpack",
            "(empty loop)": "(the loop itself)",
        }
        rows = []
        for k, label in labels.items():
            v = h[k]
            rows.append(
                [
                    label,
                    fmt(v["ns"], 0),
                    fmt(v["net_ns"], 0) if k != "(empty loop)" else "",
                    f"{fmt(v['min'], 0)}-{fmt(v['max'], 0)}",
                ]
            )
        out.append(
            {
                "title": "Frame header: pack + parse of the 32-byte header",
                "headers": ["contender", "ns/op", "ns/op minus loop", "range"],
                "rows": rows,
                "note": (
                    f"isthmus-wire at commit {r.get('library_commit') or '?'}. "
                    f"Median over {r['plan']['micro_repeats']} interleaved repeats (gc off); 'range' "
                    "is the spread of the repeats. ours / struct floor (loop cost subtracted, "
                    f"paired by repeat): {_x(r['header']['ratio_vs_struct'])}."
                ),
            }
        )
    if "codec" in r:
        msgs = r["codec"]["messages"]
        rows = []
        for name, m in msgs.items():
            for enc in ENCODINGS:
                e = m[enc]
                rows.append(
                    [
                        f"{name} ({m[enc.split('-')[0] + '_bytes']} B)",
                        enc,
                        fmt(e["codec"]["ns"], 0),
                        fmt(e["convenience"]["ns"], 0),
                        fmt(e["msgspec"]["ns"], 0),
                        fmt(m["json_dataclass"]["ns"], 0),
                        _x(e["codec_vs_msgspec"]),
                        _x(e["convenience_vs_msgspec"]),
                        _x(e["json_dataclass_vs_codec"], 1),
                    ]
                )
        out.append(
            {
                "title": "Control message encode + decode (ns per round trip)",
                "headers": [
                    "message (body size)",
                    "encoding",
                    "ours Codec",
                    "ours encode/decode_message",
                    "raw msgspec",
                    "json + dataclasses",
                    "Codec ÷ msgspec",
                    "functions ÷ msgspec",
                    "json+dc ÷ Codec",
                ],
                "rows": rows,
                "note": (
                    "One encode to bytes plus one typed decode back to the object, per message. "
                    "'ours Codec' = codec.encode + codec.decoder(cls).decode; 'raw msgspec' = "
                    "msgspec.msgpack/json Encoder().encode + Decoder(type=cls).decode on the same "
                    "Struct; 'json + dataclasses' = json.dumps(dataclasses.asdict(x)) + "
                    "Cls(**json.loads(s)) with an equivalent slots dataclass (no validation; its "
                    "figure is the same for both encodings). ns/op: medians over "
                    f"{r['plan']['micro_repeats']} interleaved repeats, gc off, loop included "
                    f"(the empty loop costs {fmt(r['codec']['empty_loop']['ns'], 0)} ns). Ratios: "
                    "median over repeats of the per-repeat ratio, loop cost subtracted from both. "
                    "Body sizes are the MessagePack / JSON bodies."
                ),
            }
        )
        rows = []
        for name, m in msgs.items():
            for enc in ENCODINGS:
                e = m[enc]
                rows.append(
                    [
                        name,
                        enc,
                        fmt(e["framed"]["ns"], 0),
                        fmt(e["codec"]["ns"], 0),
                        _x(e["framed_vs_codec"]),
                        fmt(m["naive_framed"]["ns"], 0),
                        _x(e["naive_framed_vs_framed"]),
                    ]
                )
        out.append(
            {
                "title": "Framed path: Connection.send + peer receive_data + next_event (ns per message)",
                "headers": [
                    "message",
                    "encoding",
                    "ours framed",
                    "ours Codec only",
                    "framed ÷ Codec",
                    "naive framed (length + json+dc)",
                    "naive ÷ ours framed",
                ],
                "rows": rows,
                "note": (
                    "Framed: on an open connection, client.send(msg) (queue, sequence number, "
                    "monotonic timestamp, 32-byte header, body encoded into the same buffer) and "
                    "server.receive_data(frame) + server.next_event() (header checks, stream and "
                    "sequence checks, typed decode). 'naive framed' = a 4-byte length prefix + "
                    "json.dumps(asdict(x)), then the length parsed and Cls(**json.loads(body)): "
                    "no header fields, no checks."
                ),
            }
        )
    if "interference" in r:
        it = r["interference"]
        sc = it["scenarios"]
        rows = []
        ref = sc["control"]["stats"]["p99"]
        for s in sc.values():
            st, pooled = s["stats"], s["pooled"]
            if s["error"] and not s["runs"]:
                rows.append([s["label"]] + ["n/a"] * 7 + [f"error: {s['error']}"])
                continue
            lo, hi = spread(s["p99_runs"])
            rows.append(
                [
                    s["label"],
                    fmt(st["p50"], 0),
                    fmt(st["p99"], 0),
                    _range(lo, hi),
                    fmt(pooled["p999"], 0),
                    fmt(pooled["max"], 0),
                    _x(st["p99"] / ref) if ref and not math.isnan(ref) else "n/a",
                    f"{s['pings_received']:,} / {s['pings_sent']:,}",
                    f"{s['frames_received']:,} ({s['keyframes_received']} key), {s['dropped']} dropped",
                ]
            )
        out.append(
            {
                "title": (
                    f"Keyframe interference: control latency over TCP 127.0.0.1 "
                    f"({it['repeats']} x {it['duration']:g} s per scenario)"
                ),
                "headers": [
                    "scenario",
                    "p50 µs",
                    "p99 µs",
                    "p99 range",
                    "p99.9 µs",
                    "max µs",
                    "p99 ÷ (a)",
                    "pings received / sent",
                    "video frames received",
                ],
                "rows": rows,
                "note": (
                    f"Ping(time_ns=monotonic_ns()) at {it['ping_hz']:,} Hz; video: {it['p_bytes']:,} B "
                    f"P-frames at {it['fps']} fps and a {it['key_bytes']:,} B keyframe every "
                    f"{it['gop']} frames (1 s), h264 VideoPackets on the credit stream (4 in "
                    "flight), acked by the receiver with conn.ack(2) over the same socket. Sender "
                    "and receiver are separate processes; blocking sockets, TCP_NODELAY; socket "
                    f"buffers bounded for every scenario but (b0): TCP_NOTSENT_LOWAT "
                    f"{it['notsent_lowat']:,} B on the sending sockets, SO_RCVBUF "
                    f"{it['rcvbuf']:,} B on the receiving ones (the kernel doubles it). Latency = "
                    "receiver's monotonic_ns() when next_event() returns the Ping - Ping.time_ns. "
                    "p50/p99: median over repeats of each run's figure ('p99 range': the "
                    "repeats' spread); p99.9 and max: every repeat pooled. p99(b) / p99(a) paired "
                    f"by repeat (median of the per-repeat ratios): {_x(it['p99_ratio_paired'])}. "
                    "(b): the writer calls data_to_send(max_bytes="
                    f"{it['max_bytes']:,}) before each sendmsg, so a ping overtakes the rest of a "
                    "keyframe; (b0): the same with the kernel's own buffer sizes (auto-tuned "
                    "receive buffer, no low-water mark); (c): the same Connection with unchunked "
                    "video, every message written whole, in order; (c'): JSON pings on one "
                    "socket, length-prefixed "
                    "video on a second (napari-cuda's layout), no credits."
                ),
            }
        )
        rows = []
        for s in sc.values():
            if not s["runs"]:
                continue
            d, pd, kd = s["during_keyframe"], s["pooled_during"], s["keyframe_delivery"]
            lo, hi = spread(r["during_keyframe"]["p50"] for r in s["runs"])
            rows.append(
                [
                    s["label"],
                    f"{pd['n']:,}" if not math.isnan(pd["n"]) else "0",
                    fmt(d["p50"], 0),
                    _range(lo, hi),
                    fmt(pd["p90"], 0),
                    fmt(pd["max"], 0),
                    fmt(kd["p50"], 0),
                    fmt(kd["max"], 0),
                ]
            )
        out.append(
            {
                "title": "Control messages queued while a keyframe was being written",
                "headers": [
                    "scenario",
                    "pings",
                    "p50 µs",
                    "p50 range",
                    "p90 µs, pooled",
                    "max µs, pooled",
                    "keyframe delivery p50 µs",
                    "keyframe delivery max µs",
                ],
                "rows": rows,
                "note": (
                    "Pings created between the moment a keyframe was queued by the sender (its "
                    "frame's timestamp_ns) and the moment the receiver had all of it (about one "
                    "ping per keyframe, so a few dozen per scenario). 'pings': all repeats; p50: "
                    "median over repeats of each run's p50 ('p50 range': their spread); p90 and "
                    "max: all repeats pooled. Keyframe delivery = that interval (queued to fully "
                    "received), median over repeats of each run's p50 and max."
                ),
            }
        )
    if r.get("targets"):
        out.append(targets_table(r["targets"]))
    return out
