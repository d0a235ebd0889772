"""The ``frames`` tour: render headless, encode, decode in a second process, time every stage.

* First the encoder backends are probed (a real one-frame encode each, cached) and shown in the
  order :func:`isthmus.frames.open_encoder` tries them, with the reason for each one that cannot
  run here.
* Then ``examples/frame-stream/frame_stream.py`` streams for ``--duration`` seconds: this process
  draws an animated scene into an offscreen EGL framebuffer, reads it back with ``GLSource``,
  converts and encodes it under a ``StreamPolicy`` (latest frame wins, an ack window); a second
  process decodes every packet, checks its size and the frame number drawn into the picture,
  and acknowledges it with its timings. The live display shows p50/p95/p99 of every stage over
  the last half second; the summary gives the whole run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

TITLE = "frames: render headless (EGL), encode, decode in a second process, per-stage latency"
log = logging.getLogger("showcase.frames")

EXAMPLE = Path(__file__).resolve().parents[2] / "frame-stream"
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--frames-size",
        default="720p",
        metavar="SIZE",
        help="720p, 1080p or WIDTHxHEIGHT (default 720p)",
    )
    group.add_argument(
        "--frames-fps",
        type=float,
        default=30.0,
        metavar="FPS",
        help="frames rendered per second, 0 = as fast as possible (default 30)",
    )
    group.add_argument(
        "--frames-codec",
        choices=["auto", "h264", "jpeg", "png"],
        default="auto",
        help="auto: the best encoder that probes well (default)",
    )
    group.add_argument(
        "--frames-window",
        type=int,
        default=4,
        metavar="N",
        help="frames in flight before the sender drops frames (default 4)",
    )


def _size(text: str) -> tuple[int, int]:
    if text in SIZES:
        return SIZES[text]
    m = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not m:
        raise SystemExit(f"--frames-size must be 720p, 1080p or WIDTHxHEIGHT, not {text!r}")
    return int(m.group(1)), int(m.group(2))


def _example() -> ModuleType:
    """The frame-stream example, imported from its folder (its name has a dash, so it is not a
    package); the receiving process it spawns finds it through the same ``sys.path``."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return importlib.import_module("frame_stream")


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e3:,.2f}"


def _probe_table(console: Any) -> list[dict[str, Any]]:
    from rich.table import Table

    from isthmus.frames import BACKENDS, probe_encoders

    rows = []
    table = Table(title="encoder backends, in the order they are tried", title_justify="left")
    for col in ("backend", "codec", "usable", "probe ms", "why not"):
        table.add_column(col, justify="right" if col == "probe ms" else "left")
    for r in probe_encoders():
        codec = BACKENDS[r.backend].codec
        rows.append({"backend": r.backend, "codec": codec, "ok": r.ok, "reason": r.reason})
        table.add_row(
            r.backend,
            codec,
            "[green]yes[/green]" if r.ok else "no",
            f"{r.seconds * 1e3:.1f}",
            r.reason[:70] + ("…" if len(r.reason) > 70 else ""),
        )
    console.print(table)
    return rows


def _live_panel(p: Any, opts: argparse.Namespace, what: str) -> Any:
    from rich.panel import Panel
    from rich.table import Table

    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    for _ in range(3):
        t.add_column(justify="right")
    t.add_row("elapsed", f"{p.elapsed:5.1f} / {opts.duration:g} s", "", "")
    t.add_row(
        "frames", f"{p.rendered:,} rendered", f"{p.acked:,} decoded", f"{p.dropped:,} dropped"
    )
    rate = p.nbytes * 8 / p.elapsed / 1e6 if p.elapsed > 0 else 0.0
    t.add_row("rate", f"{p.acked / max(p.elapsed, 1e-9):,.1f} fps", f"{rate:,.2f} Mbit/s", "")
    t.add_row("[dim]last 0.5 s, ms[/dim]", "[dim]p50[/dim]", "[dim]p95[/dim]", "[dim]p99[/dim]")
    for name, st in p.recent.summary().items():
        t.add_row(name, _ms(st.p50), _ms(st.p95), _ms(st.p99))
    return Panel(t, title=f"[b]frames tour[/b] · {what}", expand=False)


def _skipped(reason: str) -> dict[str, Any]:
    log.warning("frames tour skipped: %s", reason)
    return {
        "tour": "frames",
        "ok": True,  # nothing failed: this machine lacks EGL or a codec
        "interrupted": False,
        "errors": [],
        "rows": [("skipped", reason[:200])],
        "metrics": {"skipped": reason},
    }


def run(opts: argparse.Namespace, console: Any) -> dict[str, Any]:
    """Probe, then stream for ``opts.duration`` seconds; returns the summary (see showcase.py)."""
    width, height = _size(opts.frames_size)
    if opts.frames_fps < 0 or opts.frames_window < 1:
        raise SystemExit("--frames-fps must be >= 0 and --frames-window >= 1")
    try:
        import av  # noqa: F401  (PyAV: libx264 and the H.264 decoder)

        from isthmus.frames import BackendUnavailableError, load_gl
    except ImportError as exc:
        return _skipped(f"{exc} (pip install -r examples/frame-stream/requirements.txt)")
    try:
        load_gl()  # before anything imports PyOpenGL: selects its EGL platform
        probes = _probe_table(console)
    except BackendUnavailableError as exc:
        return _skipped(str(exc))
    except KeyboardInterrupt:
        return {"tour": "frames", "ok": False, "interrupted": True, "errors": [], "rows": []}

    fs = _example()
    settings = fs.Settings(
        width=width,
        height=height,
        fps=opts.frames_fps,
        frames=None,
        duration=opts.duration,
        codec=opts.frames_codec,
        window=opts.frames_window,
    )
    what = f"{width}x{height} {opts.frames_codec} at " + (
        f"{opts.frames_fps:g} fps" if opts.frames_fps else "full speed"
    )
    live = None
    if opts.live:
        from rich.live import Live
        from rich.text import Text

        live = Live(Text("starting the receiver…"), console=console, refresh_per_second=4)
        live.start()
    last_log = [0.0]

    def progress(p: Any) -> None:
        if live is not None:
            live.update(_live_panel(p, opts, what))
        elif p.elapsed - last_log[0] >= 1.0:
            last_log[0] = p.elapsed
            s = p.recent.summary()
            log.info(
                "%5.1f s: %d decoded, %d dropped; capture p50 %s ms, encode p50 %s ms, "
                "end-to-end p50 %s ms",
                p.elapsed,
                p.acked,
                p.dropped,
                _ms(s["capture"].p50),
                _ms(s["encode"].p50),
                _ms(s["end-to-end"].p50),
            )

    try:
        result = fs.stream(settings, progress)
    except BackendUnavailableError as exc:
        return _skipped(str(exc))
    finally:
        if live is not None:
            live.stop()
    if result.timings is not None:
        console.print(fs.stage_table(result.timings, f"per-stage latency, {what}, whole run"))

    r = result
    stages = r.stages()
    rx = r.receiver
    rows: list[tuple[str, Any]] = [
        (
            "pipeline",
            f"EGL → GLSource {r.capture or '?'} → {r.encoder or '?'} {r.codec} → pipe → "
            f"decoder in pid {rx.get('pid', '?')}",
        ),
        ("GL renderer", r.gl_renderer or "?"),
        ("resolution", f"{width}x{height}"),
        ("duration", f"{r.seconds:.1f} s"),
        (
            "frames rendered / sent / decoded",
            f"{r.rendered:,} / {r.sent:,} / {rx.get('decoded', 0):,}",
        ),
        ("frames dropped (latest frame wins)", f"{r.dropped:,}"),
        ("right size and picture", f"{r.statuses.get('ok', 0):,} of {r.sent:,}"),
        ("keyframes", f"{r.keyframes:,}"),
        ("frame rate", f"{r.fps:,.1f} fps"),
        ("bitrate", f"{r.bitrate / 1e6:,.2f} Mbit/s"),
    ]
    for name, st in stages.items():
        if st["count"]:
            figures = " / ".join(
                "n/a" if v is None else f"{v:,.2f}"
                for v in (st["p50_ms"], st["p95_ms"], st["p99_ms"])
            )
            rows.append((f"{name} p50 / p95 / p99", f"{figures} ms"))
    metrics = r.to_dict()
    metrics["probes"] = probes
    return {
        "tour": "frames",
        "ok": r.ok or (r.interrupted and not r.errors),
        "interrupted": r.interrupted,
        "errors": r.errors,
        "rows": rows,
        "metrics": metrics,
    }
