"""Benchmarks of isthmus-transport against its anchors (``python bench/run.py transport``).

All in one run, every contender side by side, contenders interleaved within each repeat in an
order that rotates from repeat to repeat; figures are medians over repeats of per-repeat figures.
Each transport contender is two fresh processes per repeat (server = receiver / echoer, client =
sender / pinger, see :mod:`bench.transport_workers`), running these sections over one connection:

1. **256 MiB one-way, same host**: GB/s from the start of the send (client's clock) to the
   receive completing in the server's pre-faulted buffer (server's clock; both CLOCK_MONOTONIC),
   one transfer at a time with the receive posted before the send starts; against single-core
   memcpy bandwidth (``numpy.copyto`` of 256 MiB, in its own process, in the same rotation). CPU:
   user + system time of both processes (every thread) over the measured transfers, per transfer,
   and as "cores" (CPU time / wall time of each process, summed).
2. **1 MiB and 64 KiB messages**: GB/s of a stream with ``--window`` messages in flight (the
   receiver keeps that many receives posted, the sender that many sends outstanding).
3. **8-byte round trip**: ping-pong, median µs.
4. **TCP loopback, 16 MiB messages**: ours with ``backend="tcp"`` against plain asyncio streams
   (``reader.readexactly`` / ``writer.write`` + ``drain``), and Starway forced onto UCX's TCP
   transport for reference.

Contenders on the same host: ``isthmus.transport`` (``backend="auto"``: Unix socket for control,
``process_vm_readv`` for the payload), Starway 0.6 with the ``libucx-cu12`` wheel (UCX defaults:
shared memory + CMA; each side busy-polls a core), pyzmq ``PAIR`` over ``ipc://`` (blocking
sockets, ``send(copy=False)``, ``recv(copy=False)``; ``recv_into`` for the ping-pong) and plain
asyncio over a Unix socket (``loop.sock_recv_into`` / ``loop.sock_sendall``, 16-byte header).
A contender whose package is missing is listed as "not installed".
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import importlib
import importlib.util
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from bench._common import (
    RUN_TAG,
    ChildError,
    Children,
    fmt,
    median,
    package_version,
    percentile,
    spawn_context,
    spread,
    sweep_tmp,
    targets_table,
    unique_name,
)

DESCRIPTION = (
    "isthmus-transport: 256 MiB one-way (GB/s, CPU), 1 MiB / 64 KiB windowed streams, 8 B round "
    "trip, TCP loopback; vs Starway, pyzmq, asyncio, memcpy"
)
WORKERS = "bench.transport_workers"

MiB = 1 << 20
LARGE = 256 * MiB
TCP_MSG = 16 * MiB
SECTIONS = ("large", "msg1m", "msg64k", "latency", "tcp")

TARGETS = {
    "large_pct_of_memcpy": 95.0,
    "large_vs_starway": 1.0,
    "large_cpu_vs_starway": 0.6,
    "msgs_vs_starway": 1.0,
    "rtt_vs_starway": 0.7,
    "tcp_vs_asyncio": 1.5,
}


# --- contenders ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    family: str  # tagged | aio-unix | aio-tcp | zmq | memcpy
    group: str  # local (same-host sections) | tcp | memcpy
    lib: str | None = None  # tagged family: isthmus | starway
    backend: str | None = None  # isthmus only
    env: dict[str, str | None] = field(default_factory=dict)


_STARWAY_ENV: dict[str, str | None] = {
    # Load UCX from the libucx-cu12 wheel (the pinned one) rather than whatever the system has;
    # an explicit setting in the caller's environment wins.
    "STARWAY_USE_SYSTEM_UCX": os.environ.get("STARWAY_USE_SYSTEM_UCX", "false"),
}
# Ours with the backend the contender names. ISTHMUS_TRANSPORT_SPIN_US is left to the caller (to try
# a spinning receive side) and shows in the contender's label when set.
_OURS_ENV: dict[str, str | None] = {"ISTHMUS_TRANSPORT_BACKEND": None}
#: Environment variables that change what a contender does; recorded with the results.
_ENV_RECORDED = (
    "ISTHMUS_TRANSPORT_SPIN_US",
    "STARWAY_USE_SYSTEM_UCX",
    "UCX_TLS",
    "UCX_RNDV_THRESH",
    "UCX_NET_DEVICES",
)

OURS = Contender(
    "ours",
    "ours: isthmus.transport, backend auto (Unix socket + process_vm_readv)",
    "tagged",
    "local",
    lib="isthmus",
    backend="auto",
    env=_OURS_ENV,
)
STARWAY = Contender(
    "starway",
    "Starway 0.6 + libucx (UCX defaults: shm + CMA, busy-poll)",
    "tagged",
    "local",
    lib="starway",
    env=_STARWAY_ENV,
)
ZMQ = Contender("zmq", "pyzmq PAIR ipc:// (blocking, zero-copy send)", "zmq", "local")
AIO_UNIX = Contender(
    "asyncio-unix", "asyncio Unix socket (sock_recv_into / sock_sendall)", "aio-unix", "local"
)
MEMCPY = Contender("memcpy", "single-core memcpy (numpy.copyto)", "memcpy", "memcpy")
OURS_TCP = Contender(
    "ours-tcp",
    'ours: isthmus.transport, backend="tcp"',
    "tagged",
    "tcp",
    lib="isthmus",
    backend="tcp",
    env=_OURS_ENV,
)
AIO_TCP = Contender(
    "asyncio-tcp", "asyncio streams (readexactly / write + drain)", "aio-tcp", "tcp"
)
STARWAY_TCP = Contender(
    "starway-tcp",
    "Starway 0.6, UCX_TLS=tcp (reference)",
    "tagged",
    "tcp",
    lib="starway",
    env={**_STARWAY_ENV, "UCX_TLS": "tcp"},
)
CONTENDERS = [OURS, STARWAY, ZMQ, AIO_UNIX, MEMCPY, OURS_TCP, AIO_TCP, STARWAY_TCP]


def _unavailable(c: Contender) -> str | None:
    """Why a contender cannot run here ("not installed", ...), or None."""
    if c.family == "zmq" and importlib.util.find_spec("zmq") is None:
        return "not installed (pyzmq)"
    if c.lib == "starway":
        if importlib.util.find_spec("starway") is None:
            return "not installed (starway)"
        if importlib.util.find_spec("libucx") is None and ctypes.util.find_library("ucp") is None:
            return "not installed (libucx-cu12, or a system UCX)"
    if c.lib == "isthmus":
        try:
            if importlib.util.find_spec("isthmus.transport") is None:
                return "not installed (isthmus-transport)"
        except ModuleNotFoundError:
            return "not installed (isthmus-transport)"
        try:
            mod = importlib.import_module("isthmus.transport")
            mod.Server, mod.Client  # noqa: B018  (both must exist)
        except Exception as exc:  # an incomplete library is reported, not fatal
            return f"cannot import isthmus.transport: {type(exc).__name__}: {exc}"[:300]
    return None


# --- plan ------------------------------------------------------------------------------------------


@dataclass
class Plan:
    repeats: int
    windows: list[int]
    large_n: int
    large_warm: int
    msg1m_count: int
    msg64k_count: int
    tcp_count: int
    tcp_window: int
    pass_seconds: float
    passes: int
    warm_passes: int
    rtt_n: int
    rtt_warm: int
    memcpy_n: int
    sections: list[str]
    contenders: list[str]
    pin: str = "none"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help=f"comma-separated subset of sections to run ({', '.join(SECTIONS)})",
    )
    parser.add_argument(
        "--contenders",
        metavar="KEYS",
        help="comma-separated subset of contenders ("
        + ", ".join(c.key for c in CONTENDERS)
        + "); default all",
    )
    parser.add_argument(
        "--pin",
        choices=["none", "split", "same"],
        default="none",
        help="let the scheduler place server and client (none, the default), pin the server to "
        "CPU 0 and the client to CPU 1 (split: every thread of each, so a busy-polling thread "
        "shares its CPU with its own process), or both to CPU 0 (same; Starway is skipped)",
    )
    parser.add_argument(
        "--windows",
        default="16,1",
        metavar="N,N",
        help="messages in flight in the 1 MiB / 64 KiB streams (default 16,1: the first for "
        "every contender, the others again for the tagged ones, ours and Starway)",
    )


def plan_for(opts: argparse.Namespace) -> Plan:
    quick = bool(getattr(opts, "quick", False))
    repeats = opts.repeats if getattr(opts, "repeats", None) is not None else (3 if quick else 5)
    sections = opts.only.split(",") if getattr(opts, "only", None) else list(SECTIONS)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    keys = [c.key for c in CONTENDERS]
    chosen = opts.contenders.split(",") if getattr(opts, "contenders", None) else keys
    bad = [k for k in chosen if k not in keys]
    if bad:
        raise SystemExit(f"unknown contender(s) {bad}; choose from {', '.join(keys)}")
    try:
        windows = [max(1, int(w)) for w in str(getattr(opts, "windows", "16,1")).split(",")]
    except ValueError as exc:
        raise SystemExit(
            f"--windows: a comma-separated list of integers, not {opts.windows!r}"
        ) from exc
    return Plan(
        repeats=repeats,
        windows=list(dict.fromkeys(windows)),
        large_n=2 if quick else 5,
        large_warm=1,
        msg1m_count=256 if quick else 1024,
        msg64k_count=2048 if quick else 8192,
        tcp_count=8 if quick else 32,
        tcp_window=4,
        pass_seconds=0.1 if quick else 0.25,
        passes=2 if quick else 3,
        warm_passes=1,
        rtt_n=1000 if quick else 5000,
        rtt_warm=200 if quick else 500,
        memcpy_n=3 if quick else 5,
        sections=sections,
        contenders=chosen,
        pin=getattr(opts, "pin", "none") or "none",
    )


def _sections_for(c: Contender, plan: Plan) -> list[dict[str, Any]]:
    """The section specs a contender's children run, in order."""
    out: list[dict[str, Any]] = []
    msgs = {
        "kind": "msgs",
        "passes": plan.passes,
        "warm_passes": plan.warm_passes,
        "target_s": plan.pass_seconds,
    }
    # Windows only mean something to transports with posted receives; streams get the first.
    windows = plan.windows if c.family == "tagged" else plan.windows[:1]
    if c.group == "local":
        if "large" in plan.sections:
            out.append(
                {
                    "name": "large",
                    "kind": "large",
                    "size": LARGE,
                    "n": plan.large_n,
                    "warm": plan.large_warm,
                }
            )
        for name, size, count in (
            ("msg1m", MiB, plan.msg1m_count),
            ("msg64k", 64 << 10, plan.msg64k_count),
        ):
            if name in plan.sections:
                for i, w in enumerate(windows):
                    variant = name if i == 0 else f"{name}/w{w}"
                    out.append(msgs | {"name": variant, "size": size, "count": count, "window": w})
        if "latency" in plan.sections:
            out.append(
                {"name": "latency", "kind": "latency", "n": plan.rtt_n, "warm": plan.rtt_warm}
            )
    elif c.group == "tcp" and "tcp" in plan.sections:
        out.append(
            msgs
            | {"name": "tcp", "size": TCP_MSG, "count": plan.tcp_count, "window": plan.tcp_window}
        )
    return out


# --- running one contender -------------------------------------------------------------------------


def _wait_pair(kids: Children, children: list[Any], timeout: float) -> list[Any]:
    """Results of ``children``; the first one to fail stops the others at once (a dead peer
    would otherwise leave its partner waiting until the timeout). The error names every child
    that failed, since the one noticed first is often just the peer of the one that broke."""
    deadline = time.monotonic() + timeout
    pending = list(children)
    errors: list[str] = []
    while pending and not errors:
        for c in list(pending):
            if c.conn.poll(0) or not c.process.is_alive():
                try:
                    kids.wait(c, 5.0)
                except ChildError as exc:
                    errors.append(_last_line(exc))
                pending.remove(c)
        if pending and not errors and time.monotonic() > deadline:
            kids.stop_all()
            raise ChildError(f"{pending[0].label}: no result after {timeout:.0f} s")
        time.sleep(0.01)
    if errors:
        # Give the peers a moment to report their own failure before stopping them.
        end = time.monotonic() + 1.0
        for c in pending:
            while not c.conn.poll(0.05) and c.process.is_alive() and time.monotonic() < end:
                pass
            if c.conn.poll(0):
                with contextlib.suppress(ChildError):
                    kids.wait(c, 1.0)
                if isinstance(c.result, ChildError):
                    errors.append(_last_line(c.result))
        kids.stop_all()
        raise ChildError("; ".join(errors))
    return [kids.wait(c, 1.0) for c in children]


def _last_line(exc: BaseException) -> str:
    """``label: last line of the traceback`` of a child's error."""
    text = str(exc).strip()
    label = text.split(" failed:", 1)[0].split(":", 1)[0]
    last = text.splitlines()[-1] if text else ""
    return last if last.startswith(label) else f"{label}: {last}"


def _run_memcpy(plan: Plan) -> dict[str, Any]:
    spec = {"size": LARGE, "n": plan.memcpy_n, "warm": 1}
    with Children() as kids:
        (res,) = _wait_pair(kids, [kids.start(WORKERS, "memcpy_bench", spec, label="memcpy")], 120)
    gbps = [LARGE / s / 1e9 for s in res["seconds"]]
    return {
        "large": {
            "gbps": median(gbps),
            "gbps_runs": gbps,
            "cpu_per_transfer": median(res["cpu_seconds"]),
            "cores": median(c / s for c, s in zip(res["cpu_seconds"], res["seconds"], strict=True)),
        }
    }


def _run_pair(c: Contender, plan: Plan) -> dict[str, Any]:
    """One repeat of one transport contender: a server and a client child over one connection."""
    sections = _sections_for(c, plan)
    if not sections:
        return {}
    ctx = spawn_context()
    addr_q = ctx.Queue()
    spec: dict[str, Any] = {
        "sections": sections,
        "addr_q": addr_q,
        "host": "127.0.0.1",
        "lib": c.lib,
        "backend": c.backend,
    }
    tmp_files: list[str] = []
    if c.family == "aio-unix":
        spec["path"] = "\0" + unique_name("aio")  # abstract namespace: nothing to clean up
    elif c.family == "zmq":
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), unique_name("zmq") + ".ipc")
        tmp_files.append(path)
        spec["addr"] = "ipc://" + path
    func = {"tagged": "tagged", "aio-unix": "aio_unix", "aio-tcp": "aio_tcp", "zmq": "zmq"}[
        c.family
    ]
    timeout = 60.0 + 40.0 * len(sections)
    cpus = {"none": ("", ""), "split": ("0", "1"), "same": ("0", "0")}[plan.pin]
    try:
        with Children() as kids:
            srv = kids.start(
                WORKERS,
                f"{func}_server",
                spec,
                env={**c.env, "ISTHMUS_BENCH_CPU": cpus[0] or None},
                label=f"{c.key} server",
            )
            cli = kids.start(
                WORKERS,
                f"{func}_client",
                spec,
                env={**c.env, "ISTHMUS_BENCH_CPU": cpus[1] or None},
                label=f"{c.key} client",
            )
            sres, cres = _wait_pair(kids, [srv, cli], timeout)
    finally:
        addr_q.close()
        addr_q.cancel_join_thread()
        for p in tmp_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
    out: dict[str, Any] = {"info": {"server": sres.get("info"), "client": cres.get("info")}}
    for sec, s, k in zip(sections, sres["sections"], cres["sections"], strict=True):
        out[sec["name"]] = _combine(sec, s, k)
    return out


def _cores(s: dict[str, Any], k: dict[str, Any]) -> float:
    return sum(d["cpu_ns"] / d["wall_ns"] for d in (s, k) if d["wall_ns"] > 0)


def _combine(sec: dict[str, Any], s: dict[str, Any], k: dict[str, Any]) -> dict[str, Any]:
    """One section's figures for one repeat, from the server's (s) and the client's (k) report."""
    kind = sec["kind"]
    if kind == "large":
        secs = [(t1 - t0) / 1e9 for t0, t1 in zip(k["t0"], s["t1"], strict=True)]
        if min(secs) <= 0:
            raise ChildError(f"non-positive transfer time {min(secs)} s: clocks not comparable?")
        gbps = [sec["size"] / x / 1e9 for x in secs]
        n = len(secs)
        return {
            "gbps": median(gbps),
            "gbps_runs": gbps,
            "cpu_per_transfer": (s["cpu_ns"] + k["cpu_ns"]) / n / 1e9,
            "cpu_server": s["cpu_ns"] / n / 1e9,
            "cpu_client": k["cpu_ns"] / n / 1e9,
            "cores": _cores(s, k),
        }
    if kind == "msgs":
        gbps, cores, cpu_msg = [], [], []
        for sp, kp in zip(s["passes"], k["passes"], strict=True):
            secs = (sp["t_end"] - kp["t0"]) / 1e9
            expect = sec["size"] * sp["count"]
            if sp["bytes"] != expect:
                raise ChildError(f"{sec['name']}: received {sp['bytes']} of {expect} bytes")
            gbps.append(sp["bytes"] / secs / 1e9)
            cores.append(_cores(sp, kp))
            cpu_msg.append((sp["cpu_ns"] + kp["cpu_ns"]) / sp["count"] / 1e3)  # µs
        return {
            "gbps": median(gbps),
            "gbps_runs": gbps,
            "cores": median(cores),
            "cpu_us_per_msg": median(cpu_msg),
            "count": median(sp["count"] for sp in s["passes"]),
            "window": sec["window"],
        }
    if kind == "latency":
        import numpy as np

        rtt = np.sort(np.frombuffer(k["rtt_ns"], dtype=np.int64)) / 1e3
        vals = rtt.tolist()
        return {
            "p50": percentile(vals, 50),
            "p90": percentile(vals, 90),
            "p99": percentile(vals, 99),
            "min": vals[0],
            "n": len(vals),
            "cores": _cores(s, k),
        }
    raise ValueError(kind)  # pragma: no cover


# --- the run -----------------------------------------------------------------------------------------


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats of every per-repeat figure, plus the spread of the headline one."""
    out: dict[str, Any] = {"repeats": len(runs)}
    if not runs:
        return out
    for key in runs[0]:
        if key.endswith("_runs"):
            continue
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        if vals:
            out[key] = median(vals)
    head = "p50" if "p50" in runs[0] else "gbps"
    out[f"{head}_min"], out[f"{head}_max"] = spread(r[head] for r in runs)
    out["per_repeat"] = [r[head] for r in runs]
    return out


def run(opts: argparse.Namespace, ui: Any) -> dict[str, Any]:
    plan = plan_for(opts)
    active = [c for c in CONTENDERS if c.key in plan.contenders]
    if "large" not in plan.sections:
        active = [c for c in active if c.group != "memcpy"]
    if "tcp" not in plan.sections:
        active = [c for c in active if c.group != "tcp"]
    if not set(plan.sections) - {"tcp"}:
        active = [c for c in active if c.group != "local"]
    per: dict[str, dict[str, Any]] = {
        c.key: {
            "label": c.label,
            "group": c.group,
            "error": _unavailable(c),
            "runs": [],
            "info": None,
        }
        for c in active
    }
    spin = os.environ.get("ISTHMUS_TRANSPORT_SPIN_US")
    for c in active:
        if c.lib == "isthmus" and spin:
            per[c.key]["label"] += f", ISTHMUS_TRANSPORT_SPIN_US={spin}"
        if per[c.key]["error"] is None and plan.pin == "same" and c.lib == "starway":
            per[c.key]["error"] = "skipped: its busy-polling threads cannot share one CPU"
        if per[c.key]["error"]:
            ui.log(f"[yellow]{c.label}: {per[c.key]['error']}")
    runnable = [c for c in active if per[c.key]["error"] is None]
    try:
        with ui.task(
            f"{len(runnable)} contenders x {plan.repeats} repeats", plan.repeats * len(runnable)
        ) as adv:
            for rep in range(plan.repeats):
                shift = rep % max(1, len(runnable))
                for c in runnable[shift:] + runnable[:shift]:
                    entry = per[c.key]
                    if entry["error"] is None:
                        try:
                            res = _run_memcpy(plan) if c.family == "memcpy" else _run_pair(c, plan)
                            entry["info"] = res.pop("info", entry["info"])
                            entry["runs"].append(res)
                        except ChildError as exc:
                            entry["error"] = str(exc).strip().splitlines()[-1][:400]
                            ui.log(f"[yellow]{c.label}: {exc}")
                    adv(f"{c.key} (repeat {rep + 1})")
    finally:
        sweep_tmp(RUN_TAG)
    for entry in per.values():
        runs = entry.pop("runs")
        names = sorted({k for r in runs for k in r})
        entry["sections"] = {
            name: _summarise([r[name] for r in runs if name in r]) for name in names
        }
    results: dict[str, Any] = {
        "plan": plan.__dict__,
        "versions": {
            "isthmus-transport": package_version("isthmus-transport"),
            "isthmus-buffer": package_version("isthmus-buffer"),
            "starway": package_version("starway"),
            "libucx-cu12": package_version("libucx-cu12"),
            "pyzmq": package_version("pyzmq"),
            "numpy": package_version("numpy"),
        },
        "environment": {k: os.environ.get(k) for k in _ENV_RECORDED if k in os.environ},
        "protocol": (
            "256 MiB: receive posted, READY sent, then t0 = sender's perf_counter_ns() before the "
            "send and t1 = receiver's after the receive completes (CLOCK_MONOTONIC, same host); "
            "GB/s = bytes / (t1 - t0). Streams: receiver posts `window` receives, sender keeps "
            "`window` sends outstanding; GB/s = bytes / (receiver's last arrival - sender's "
            "start). CPU = time.process_time_ns() (user+sys, all threads) of both processes over "
            "the measured window; cores = CPU / wall of each process, summed. GB = 1e9 bytes."
        ),
        "contenders": per,
    }
    results["targets"] = [t for t in target_checks(results) if t["section"] in plan.sections]
    return results


# --- targets ------------------------------------------------------------------------------------------


def _get(r: dict[str, Any], key: str, section: str, field_: str) -> float:
    c = r["contenders"].get(key)
    if not c:
        return math.nan
    return float(c["sections"].get(section, {}).get(field_, math.nan))


def target_checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def ratio(a: float, b: float) -> float:
        return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan

    def add(name: str, value: float, goal: str, ok: bool, section: str) -> None:
        checks.append(
            {
                "section": section,
                "target": name,
                "measured": value,
                "goal": goal,
                "met": None if math.isnan(value) else bool(ok),
            }
        )

    t = TARGETS
    ours_large = _get(r, OURS.key, "large", "gbps")
    pct = 100.0 * ratio(ours_large, _get(r, MEMCPY.key, "large", "gbps"))
    add(
        "256 MiB one-way: ours, % of single-core memcpy",
        pct,
        "≥ 95 %",
        pct >= t["large_pct_of_memcpy"],
        "large",
    )
    v = ratio(ours_large, _get(r, STARWAY.key, "large", "gbps"))
    add("256 MiB one-way GB/s: ours / Starway", v, "≥ 1.0", v >= t["large_vs_starway"], "large")
    v = ratio(
        _get(r, OURS.key, "large", "cpu_per_transfer"),
        _get(r, STARWAY.key, "large", "cpu_per_transfer"),
    )
    add(
        "256 MiB one-way CPU s per transfer: ours / Starway",
        v,
        "≤ 0.6",
        v <= t["large_cpu_vs_starway"],
        "large",
    )
    for name, label in (("msg1m", "1 MiB"), ("msg64k", "64 KiB")):
        (ours, wo), (sw, ws) = _best(r, OURS.key, name), _best(r, STARWAY.key, name)
        v = ratio(ours, sw)
        at = f" (windows {wo} and {ws})" if wo and ws else ""
        add(
            f"{label} messages GB/s: ours / Starway, each at its best window{at}",
            v,
            "≥ 1.0",
            v >= t["msgs_vs_starway"],
            name,
        )
    v = ratio(_get(r, OURS.key, "latency", "p50"), _get(r, STARWAY.key, "latency", "p50"))
    add("8 B round trip p50: ours / Starway", v, "≤ 0.7", v <= t["rtt_vs_starway"], "latency")
    v = ratio(_get(r, OURS_TCP.key, "tcp", "gbps"), _get(r, AIO_TCP.key, "tcp", "gbps"))
    add(
        "TCP 16 MiB GB/s: ours (tcp) / asyncio streams", v, "≥ 1.5", v >= t["tcp_vs_asyncio"], "tcp"
    )
    return checks


# --- presentation ---------------------------------------------------------------------------------------


def _ratio(value: float, ref: float) -> str:
    if any(x is None or math.isnan(x) or x <= 0 for x in (value, ref)):
        return "n/a"
    return f"{value / ref:.2f}x"


def _range(sec: dict[str, Any], head: str = "gbps", digits: int = 2) -> str:
    lo, hi = sec.get(f"{head}_min", math.nan), sec.get(f"{head}_max", math.nan)
    return f"{fmt(lo, digits)}-{fmt(hi, digits)}"


def _variant(name: str, index: int, window: int) -> str:
    """Section name of the ``index``-th window of a stream section (the first has no suffix)."""
    return name if index == 0 else f"{name}/w{window}"


def _best(r: dict[str, Any], key: str, name: str) -> tuple[float, int | None]:
    """The best GB/s of contender ``key`` over the windows it ran section ``name`` with."""
    secs = r["contenders"].get(key, {}).get("sections", {})
    best: tuple[float, int | None] = (math.nan, None)
    for variant, s in secs.items():
        mine = variant == name or variant.startswith(name + "/")
        if mine and s.get("repeats") and (math.isnan(best[0]) or s["gbps"] > best[0]):
            best = (s["gbps"], s.get("window"))
    return best


def _missing_row(c: dict[str, Any], width: int) -> list[str]:
    return [c["label"], *["n/a"] * (width - 2), c["error"] or "no result"]


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cons = r["contenders"]
    plan = r["plan"]
    nan = math.nan

    def sec(key: str, name: str) -> dict[str, Any]:
        return cons.get(key, {}).get("sections", {}).get(name, {})

    if "large" in plan["sections"]:
        mem = sec(MEMCPY.key, "large").get("gbps", nan)
        ref = sec(STARWAY.key, "large")
        rows = []
        for key, c in cons.items():
            s = sec(key, "large")
            if not s.get("repeats"):
                if c["group"] in ("local", "memcpy"):
                    rows.append(_missing_row(c, 9))
                continue
            rows.append(
                [
                    c["label"],
                    fmt(s["gbps"], 2),
                    _range(s),
                    f"{100 * s['gbps'] / mem:.0f} %" if mem == mem else "n/a",
                    _ratio(s["gbps"], ref.get("gbps", nan)),
                    fmt(s["cpu_per_transfer"] * 1e3, 1),
                    fmt(s["cores"], 2),
                    _ratio(s["cpu_per_transfer"], ref.get("cpu_per_transfer", nan)),
                    f"{plan['large_n'] if key != MEMCPY.key else plan['memcpy_n']} x {s['repeats']}"
                    + (f" (error: {c['error']})" if c["error"] else ""),
                ]
            )
        out.append(
            {
                "title": "256 MiB one-way between two processes, same host",
                "headers": [
                    "contender",
                    "GB/s",
                    "range",
                    "% of memcpy",
                    "÷ Starway",
                    "CPU ms / transfer",
                    "cores",
                    "CPU ÷ Starway",
                    "transfers x repeats",
                ],
                "rows": rows,
                "note": "GB/s = 256 MiB / (receiver's clock when its receive completes - sender's "
                "clock when the send starts), the receive posted beforehand; median of the "
                "transfers of a repeat, then median over repeats ('range': spread of the repeat "
                "medians). CPU = user + system time (time.process_time_ns, every thread) of both "
                "processes over the measured transfers, per transfer; cores = CPU / wall of each "
                "process, summed. memcpy: numpy.copyto of 256 MiB between pre-faulted arrays in "
                "a process of its own (one core by construction). GB = 10⁹ bytes.",
            }
        )
    msg_secs = [
        (n, lab) for n, lab in (("msg1m", "1 MiB"), ("msg64k", "64 KiB")) if n in plan["sections"]
    ]
    if msg_secs:
        best_sw = {name: _best(r, STARWAY.key, name)[0] for name, _lab in msg_secs}
        rows = []
        for key, c in cons.items():
            if c["group"] != "local":
                continue
            tagged = key in (OURS.key, STARWAY.key)
            windows = plan["windows"] if tagged else plan["windows"][:1]
            for i, w in enumerate(windows):
                row = [c["label"], str(w) if tagged else "stream"]
                got = False
                for name, _lab in msg_secs:
                    s = sec(key, _variant(name, i, w))
                    if s.get("repeats"):
                        got = True
                        row += [
                            fmt(s["gbps"], 2),
                            _range(s),
                            _ratio(s["gbps"], best_sw[name]),
                            fmt(s["cores"], 2),
                        ]
                    else:
                        row += ["n/a"] * 4
                row.append("" if got and not c["error"] else (c["error"] or "no result"))
                rows.append(row)
                if not got:
                    break
        headers = ["contender", "window"]
        for _name, lab in msg_secs:
            headers += [f"{lab} GB/s", "range", "÷ Starway best", "cores"]
        headers.append("note")
        out.append(
            {
                "title": "Streams of 1 MiB and 64 KiB messages with a window of messages in flight",
                "headers": headers,
                "rows": rows,
                "note": f"Up to {plan['msg1m_count']:,} x 1 MiB and {plan['msg64k_count']:,} x "
                f"64 KiB per pass (fewer if the warm-up pass shows a pass would take more than "
                f"{plan['pass_seconds']} s), {plan['passes']} passes per repeat after "
                f"{plan['warm_passes']} warm-up. The receiver keeps the window of receives posted "
                "(each buffer reposted once its message is in), the sender the window of sends "
                "outstanding (it awaits the oldest before issuing the next). GB/s = bytes / "
                "(receiver's last arrival - sender's start). 'stream': asyncio and zmq have no "
                "posted receives, the kernel socket buffer / zmq's queue is their window; zmq "
                "receives with recv(copy=False) (into zmq's own message, no further copy). "
                "'÷ Starway best': against Starway at whichever window was faster for it.",
            }
        )
    if "latency" in plan["sections"]:
        ref = sec(STARWAY.key, "latency")
        rows = []
        for key, c in cons.items():
            if c["group"] != "local":
                continue
            s = sec(key, "latency")
            if not s.get("repeats"):
                rows.append(_missing_row(c, 7))
                continue
            rows.append(
                [
                    c["label"],
                    fmt(s["p50"], 1),
                    fmt(s["p99"], 1),
                    _range(s, "p50", 1),
                    _ratio(s["p50"], ref.get("p50", nan)),
                    fmt(s["cores"], 2),
                    f"{s['n']:,} x {s['repeats']}"
                    + (f" (error: {c['error']})" if c["error"] else ""),
                ]
            )
        out.append(
            {
                "title": "8-byte round trip (ping-pong), same host",
                "headers": [
                    "contender",
                    "p50 µs",
                    "p99 µs",
                    "p50 range",
                    "÷ Starway",
                    "cores",
                    "round trips x repeats",
                ],
                "rows": rows,
                "note": "The client posts its receive for the pong, sends the 8-byte ping and "
                "waits; the server has its next receive posted before it sends the pong back. "
                f"{plan['rtt_warm']:,} warm-up round trips per repeat; p50/p99 are medians over "
                "repeats. cores: CPU of both processes / wall during the ping-pong (busy-polling "
                "transports show about 2).",
            }
        )
    if "tcp" in plan["sections"]:
        ref = sec(AIO_TCP.key, "tcp")
        rows = []
        for key, c in cons.items():
            if c["group"] != "tcp":
                continue
            s = sec(key, "tcp")
            if not s.get("repeats"):
                rows.append(_missing_row(c, 6))
                continue
            rows.append(
                [
                    c["label"],
                    fmt(s["gbps"], 2),
                    _range(s),
                    _ratio(s["gbps"], ref.get("gbps", nan)),
                    fmt(s["cores"], 2),
                    "" if not c["error"] else f"error: {c['error']}",
                ]
            )
        out.append(
            {
                "title": f"TCP loopback (127.0.0.1), 16 MiB messages, {plan['tcp_window']} in flight",
                "headers": ["contender", "GB/s", "range", "÷ asyncio streams", "cores", "note"],
                "rows": rows,
                "note": f"{plan['tcp_count']} x 16 MiB per pass, {plan['passes']} passes per "
                "repeat. asyncio streams: writer.write(header); writer.write(payload); await "
                "writer.drain() per message; the receiver reader.readexactly()s the header and "
                "the payload.",
            }
        )
    pin = plan.get("pin", "none")
    if pin != "none":
        where = {"split": "server on CPU 0, client on CPU 1", "same": "both on CPU 0"}[pin]
        for t in out:
            t["title"] += f" — pinned: {where}"
    if r.get("targets"):
        t = targets_table(r["targets"])
        t["note"] = (
            "Ratios of medians over repeats, every contender measured in the same run; n/a: a "
            "contender did not run (see the tables above)."
        )
        out.append(t)
    return out
