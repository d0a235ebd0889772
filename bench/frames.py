"""Benchmarks of isthmus-frames against PyAV used naively (``python bench/run.py frames``).

All in one run, contenders interleaved within each repeat (a rotating order), medians of the
per-repeat medians:

1. **encode**: an RGB frame to an H.264 packet at 1080p and 720p.  Ours is
   ``open_encoder("h264")`` (OpenCV BT.709 conversion into pooled memory, zero-copy hand-off,
   libx264 ultrafast + zerolatency with slice threads).  The naive path is what a PyAV user
   writes first: ``VideoFrame.from_ndarray(rgb, "rgb24")`` and ``CodecContext.encode`` with the
   same x264 preset and tune, leaving the RGB->YUV conversion to swscale.
2. **decode**: an H.264 packet back to an RGB array at 1080p: ours (slice threads, swscale
   straight into a view) against ``decode`` + ``to_ndarray(format="rgb24")`` with defaults.
3. **size**: mean P-frame bytes and PSNR at 1080p of ours against libx264 ``ultrafast`` with no
   other settings, both at CRF 23, on a panning image-layer scene.
4. **stills**: JPEG (simplejpeg) and PNG encode/decode at 1080p.
5. **probe**: the cost of ruling out each absent backend.
"""

from __future__ import annotations

import argparse
import fractions
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench._common import fmt, median, package_version, spread, targets_table

DESCRIPTION = "isthmus-frames: RGB->H.264 encode, decode to RGB, P-frame size, stills, probes"

SIZES = {"1080p": (1920, 1080), "720p": (1280, 720)}
#: (label, width, height, scene kind): the targets are judged on the typical scene.
ENCODE_CASES = [
    ("1080p", 1920, 1080, "typical"),
    ("720p", 1280, 720, "typical"),
    ("1080p pan", 1920, 1080, "pan"),
]
DECODE_CASES = [("1080p", 1920, 1080, "typical"), ("1080p pan", 1920, 1080, "pan")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        metavar="N",
        help="frames per repeat (default 60, 20 with --quick)",
    )


class Scene:
    """A viewer-like canvas at 1080p or 720p.

    ``"typical"``: a still image layer (a smooth field under a magma colormap, with fine
    texture and a grid) under a points layer of 40 markers that drift and a cursor disc that
    moves, like a napari session where the user edits or watches an overlay.  Its H.264 sizes
    (P-frames about 12.7 KB, keyframe about 344 KB at CRF 23) match the napari scene measured for
    the anchors.  ``"pan"``: the whole image layer pans every frame (a drag in progress), the
    worst case for bits and encode time.
    """

    def __init__(self, width: int, height: int, seed: int = 7, kind: str = "typical") -> None:
        import cv2

        rng = np.random.default_rng(seed)
        big = rng.normal(0, 1, (height + 256, width + 256)).astype(np.float32)
        blob = cv2.GaussianBlur(big, (0, 0), 6)
        blob = (blob - blob.min()) / (blob.max() - blob.min())
        fine = cv2.GaussianBlur(rng.normal(0, 1, big.shape).astype(np.float32), (0, 0), 1.2)
        gray = np.clip(blob * 230 + fine * 4, 0, 255).astype(np.uint8)
        # A colormap like an image layer's (magma-ish), so chroma carries detail too.
        self.texture = cv2.applyColorMap(gray, cv2.COLORMAP_MAGMA)[:, :, ::-1].copy()
        self.width, self.height = width, height
        self.kind = kind
        self._still = self._layer(0)
        rng = np.random.default_rng(seed + 1)
        self._points = rng.integers(0, [width, height], (40, 2))

    def _layer(self, t: int) -> np.ndarray[Any, Any]:
        x, y = (2 * t) % 256, t % 256
        img = self.texture[y : y + self.height, x : x + self.width].copy()
        img[::90, :] = (90, 90, 90)
        img[:, ::160] = (90, 90, 90)
        return img

    def frame(self, t: int) -> np.ndarray[Any, Any]:
        import cv2

        img = self._layer(t) if self.kind == "pan" else self._still.copy()
        w, h = self.width, self.height
        for k, (x, y) in enumerate(self._points):
            c = (int(x + 3 * t * math.cos(k)) % w, int(y + 3 * t * math.sin(k)) % h)
            cv2.circle(img, c, 9, (0, 255, 128), 2)
        cv2.circle(img, ((w // 3 + 6 * t) % w, h // 2), 12, (255, 255, 0), -1)
        return img


def _x264_naive(
    width: int, height: int, *, zerolatency: bool = True, crf: int | None = None
) -> Any:
    import av

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 60)
    opts = {"preset": "ultrafast"}
    if zerolatency:
        opts["tune"] = "zerolatency"
    if crf is not None:
        opts["crf"] = str(crf)
    ctx.options = opts
    ctx.open()
    return ctx


def _timed(fn: Callable[[int], Any], frames: int, warmup: int = 3) -> list[float]:
    for i in range(warmup):
        fn(-1 - i)
    out = []
    for i in range(frames):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _interleaved(
    ui: Any,
    title: str,
    makers: dict[str, Callable[[], Callable[[int], Any]]],
    repeats: int,
    frames: int,
) -> dict[str, list[float]]:
    """Per contender, the median frame time (ms) of each repeat; a fresh contender per repeat,
    in an order that rotates from repeat to repeat so no one always runs first."""
    keys = list(makers)
    runs: dict[str, list[float]] = {k: [] for k in keys}
    with ui.task(f"{title}: {len(keys)} contenders x {repeats} repeats", repeats) as adv:
        for rep in range(repeats):
            shift = rep % len(keys)
            for k in keys[shift:] + keys[:shift]:
                runs[k].append(statistics.median(_timed(makers[k](), frames)))
            adv(f"repeat {rep + 1}")
    return runs


def _encode_makers(
    w: int, h: int, imgs: list[Any]
) -> dict[str, Callable[[], Callable[[int], Any]]]:
    """Fresh contenders for one repeat: each returns a per-frame step function."""
    import av

    from isthmus.frames import Converter, open_encoder

    def ours() -> Callable[[int], Any]:
        enc = open_encoder("h264", w, h, backend="x264", fallback=False)
        return lambda i: enc.encode(imgs[i])

    def naive() -> Callable[[int], Any]:
        ctx = _x264_naive(w, h)
        state = {"pts": 0}

        def step(i: int) -> Any:
            vf = av.VideoFrame.from_ndarray(imgs[i], format="rgb24")
            vf.pts = state["pts"]
            state["pts"] += 1
            return ctx.encode(vf.reformat(format="yuv420p"))

        return step

    def convert() -> Callable[[int], Any]:
        conv = Converter(w, h)
        return lambda i: conv.convert(imgs[i])

    def x264_only() -> Callable[[int], Any]:
        enc = open_encoder("h264", w, h, backend="x264", fallback=False)
        conv = Converter(w, h)
        yuv = [conv.convert(img) for img in imgs]
        return lambda i: enc.encode(yuv[i])

    makers = {"ours": ours, "naive": naive, "convert": convert, "x264 only": x264_only}
    # The GPU paths run only where they probe well (an NVENC-capable GPU); no figure otherwise.
    from isthmus.frames import BACKENDS

    for gpu in ("nvenc-device", "nvenc-host"):
        if BACKENDS[gpu].probe().ok:

            def nvenc(name: str = gpu) -> Callable[[int], Any]:
                enc = open_encoder("h264", w, h, backend=name, fallback=False)
                if name == "nvenc-device":
                    import cupy

                    dev = [cupy.asarray(img) for img in imgs]
                    return lambda i: enc.encode(dev[i])
                return lambda i: enc.encode(imgs[i])

            makers[gpu] = nvenc
    return makers


def bench_encode(ui: Any, repeats: int, frames: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, w, h, kind in ENCODE_CASES:
        scene = Scene(w, h, kind=kind)
        imgs = [scene.frame(t) for t in range(frames + 3)]
        makers = _encode_makers(w, h, imgs)
        results[label] = _interleaved(ui, f"encode {label}", makers, repeats, frames)
    return results


def _decode_makers(packets: list[Any]) -> dict[str, Callable[[], Callable[[int], Any]]]:
    import av

    from isthmus.frames import open_decoder

    def ours() -> Callable[[int], Any]:
        dec = open_decoder("h264", backend="pyav")
        seq = iter(packets)
        return lambda i: dec.decode(next(seq))[0].array

    def naive() -> Callable[[int], Any]:
        ctx = av.CodecContext.create("h264", "r")
        seq = iter(packets)
        return lambda i: [
            f.to_ndarray(format="rgb24") for f in ctx.decode(av.Packet(bytes(next(seq))))
        ]

    return {"ours": ours, "naive": naive}


def bench_decode(ui: Any, repeats: int, frames: int) -> dict[str, Any]:
    from isthmus.frames import open_encoder

    results: dict[str, Any] = {}
    for label, w, h, kind in DECODE_CASES:
        scene = Scene(w, h, kind=kind)
        enc = open_encoder("h264", w, h, backend="x264", fallback=False)
        packets = [enc.encode(scene.frame(t)) for t in range(frames + 3)]
        makers = _decode_makers(packets)
        results[label] = _interleaved(ui, f"decode {label}", makers, repeats, frames)
    return results


def _psnr(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def bench_size(ui: Any, frames: int) -> dict[str, Any]:
    return {kind: _size_one(ui, frames, kind) for kind in ("typical", "pan")}


def _size_one(ui: Any, frames: int, kind: str) -> dict[str, Any]:
    import av

    from isthmus.frames import open_decoder, open_encoder

    w, h = SIZES["1080p"]
    scene = Scene(w, h, kind=kind)
    imgs = [scene.frame(t) for t in range(frames)]
    out: dict[str, Any] = {}
    with ui.task(f"P-frame size at 1080p, CRF 23, {kind} scene", 2) as adv:
        enc = open_encoder("h264", w, h, backend="x264", fallback=False, quality=23)
        dec = open_decoder("h264", backend="pyav")
        sizes, psnr = [], []
        for img in imgs:
            p = enc.encode(img)
            rgb = dec.decode(p)[0].array
            if not p.keyframe:
                sizes.append(p.nbytes)
            psnr.append(_psnr(rgb, img))
        out["ours"] = {"p_bytes": statistics.mean(sizes), "psnr": statistics.mean(psnr)}
        adv("ours")
        ctx = _x264_naive(w, h, zerolatency=False, crf=23)
        dctx = av.CodecContext.create("h264", "r")
        sizes, psnr, decoded = [], [], []
        for t, img in enumerate(imgs):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            vf.pts = t
            for p in ctx.encode(vf):
                if not p.is_keyframe:
                    sizes.append(p.size)
                decoded += [f.to_ndarray(format="rgb24") for f in dctx.decode(p)]
        for p in ctx.encode(None):
            if not p.is_keyframe:
                sizes.append(p.size)
            decoded += [f.to_ndarray(format="rgb24") for f in dctx.decode(p)]
        psnr = [_psnr(d, i) for d, i in zip(decoded, imgs, strict=False)]
        out["x264 ultrafast defaults"] = {
            "p_bytes": statistics.mean(sizes),
            "psnr": statistics.mean(psnr),
        }
        adv("x264 defaults")
    return out


def bench_stills(ui: Any, repeats: int) -> dict[str, Any]:
    from isthmus.frames import open_decoder, open_encoder

    w, h = SIZES["1080p"]
    img = Scene(w, h).frame(0)
    out: dict[str, Any] = {}
    with ui.task("stills at 1080p", 2) as adv:
        for codec in ("jpeg", "png"):
            enc = open_encoder(codec, w, h, fallback=False)
            dec = open_decoder(codec)
            packet = enc.encode(img)
            e = _timed(lambda i, enc=enc: enc.encode(img), repeats)
            d = _timed(lambda i, dec=dec, packet=packet: dec.decode(packet), repeats)
            out[codec] = {
                "encode_ms": statistics.median(e),
                "decode_ms": statistics.median(d),
                "bytes": packet.nbytes,
            }
            adv(codec)
    return out


def bench_probe() -> dict[str, Any]:
    from isthmus.frames import probe_encoders

    return {
        r.backend: {"ok": r.ok, "ms": r.seconds * 1e3, "reason": r.reason}
        for r in probe_encoders(refresh=True)
    }


def run(opts: argparse.Namespace, ui: Any) -> dict[str, Any]:
    quick = bool(getattr(opts, "quick", False))
    repeats = getattr(opts, "repeats", None) or (2 if quick else 5)
    frames = opts.frames or (20 if quick else 60)
    results: dict[str, Any] = {
        "plan": {"repeats": repeats, "frames": frames},
        "versions": {
            "isthmus-frames": package_version("isthmus-frames"),
            "av": package_version("av"),
            "opencv-python-headless": package_version("opencv-python-headless"),
            "simplejpeg": package_version("simplejpeg"),
            "numpy": package_version("numpy"),
        },
    }
    results["probe"] = bench_probe()
    results["encode"] = bench_encode(ui, repeats, frames)
    results["decode"] = bench_decode(ui, repeats, frames)
    results["size"] = bench_size(ui, max(frames, 30))
    results["stills"] = bench_stills(ui, max(5, frames // 4))
    results["targets"] = target_checks(results)
    return results


def target_checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    enc1080, enc720 = r["encode"]["1080p"], r["encode"]["720p"]
    dec = r["decode"]["1080p"]
    ours_p = r["size"]["typical"]["ours"]["p_bytes"]
    ref_p = r["size"]["typical"]["x264 ultrafast defaults"]["p_bytes"]
    absent = [v["ms"] for v in r["probe"].values() if not v["ok"]]
    return [
        {
            "target": "1080p RGB -> H.264 packet, ms",
            "measured": median(enc1080["ours"]),
            "goal": "≤ 8",
            "met": median(enc1080["ours"]) <= 8,
        },
        {
            "target": "1080p encode: naive PyAV / ours",
            "measured": median(enc1080["naive"]) / median(enc1080["ours"]),
            "goal": "≥ 1.7",
            "met": median(enc1080["naive"]) / median(enc1080["ours"]) >= 1.7,
        },
        {
            "target": "720p RGB -> H.264 packet, ms",
            "measured": median(enc720["ours"]),
            "goal": "≤ 3.5",
            "met": median(enc720["ours"]) <= 3.5,
        },
        {
            "target": "1080p decode to RGB, ms",
            "measured": median(dec["ours"]),
            "goal": "≤ 2",
            "met": median(dec["ours"]) <= 2,
        },
        {
            "target": "P-frame bytes: ours / x264 ultrafast defaults",
            "measured": ours_p / ref_p,
            "goal": "within 20% (0.8-1.2)",
            "met": 0.8 <= ours_p / ref_p <= 1.2,
        },
        {
            "target": "slowest absent-backend probe, ms",
            "measured": max(absent) if absent else None,
            "goal": "< 1",
            "met": (max(absent) < 1) if absent else None,
        },
    ]


def _row(name: str, values: list[float], ref: list[float] | None = None) -> list[str]:
    lo, hi = spread(values)
    ratio = fmt(median(ref) / median(values), 2) + "x" if ref else ""
    return [name, fmt(median(values), 2), f"{fmt(lo, 2)}-{fmt(hi, 2)}", ratio]


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    rows = []
    for label, *_ in ENCODE_CASES:
        runs = r["encode"][label]
        rows.append(_row(f"{label} ours (convert + x264)", runs["ours"], runs["naive"]))
        rows.append(_row(f"{label} naive PyAV (swscale + x264)", runs["naive"], runs["naive"]))
        rows.append(_row(f"{label} ours: convert only", runs["convert"]))
        rows.append(_row(f"{label} ours: x264 only (pre-converted)", runs["x264 only"]))
        for gpu in ("nvenc-device", "nvenc-host"):
            if gpu in runs:
                rows.append(_row(f"{label} ours: {gpu}", runs[gpu], runs["naive"]))
    out.append(
        {
            "title": "Encode: RGB frame -> H.264 packet (ms per frame)",
            "headers": ["path", "median ms", "repeat range", "speed-up vs naive"],
            "rows": rows,
            "note": "Median over repeats of the per-repeat median frame time; x264 ultrafast + zerolatency in both.",
        }
    )
    dec_rows = []
    for label, *_ in DECODE_CASES:
        dec = r["decode"][label]
        dec_rows += [
            _row(f"{label} ours (slice threads, swscale into a view)", dec["ours"], dec["naive"]),
            _row(f"{label} naive PyAV (defaults, to_ndarray)", dec["naive"], dec["naive"]),
        ]
    out.append(
        {
            "title": "Decode: H.264 packet -> RGB array (ms per frame)",
            "headers": ["path", "median ms", "repeat range", "speed-up vs naive"],
            "rows": dec_rows,
            "note": "",
        }
    )
    size = r["size"]
    out.append(
        {
            "title": "P-frame size at 1080p, CRF 23",
            "headers": ["scene", "encoder", "mean P-frame bytes", "Mbit/s at 60 fps", "PSNR dB"],
            "rows": [
                [kind, k, fmt(v["p_bytes"], 0), fmt(v["p_bytes"] * 480 / 1e6, 2), fmt(v["psnr"], 2)]
                for kind, per in size.items()
                for k, v in per.items()
            ],
            "note": "",
        }
    )
    out.append(
        {
            "title": "Stills at 1080p",
            "headers": ["codec", "encode ms", "decode ms", "bytes"],
            "rows": [
                [k, fmt(v["encode_ms"], 2), fmt(v["decode_ms"], 2), fmt(v["bytes"], 0)]
                for k, v in r["stills"].items()
            ],
            "note": "",
        }
    )
    out.append(
        {
            "title": "Backend probes",
            "headers": ["backend", "available", "probe ms", "reason"],
            "rows": [
                [k, "yes" if v["ok"] else "no", fmt(v["ms"], 3), v["reason"][:80]]
                for k, v in r["probe"].items()
            ],
            "note": "An absent backend's probe cost, after the shared import of its library.",
        }
    )
    out.append(targets_table(r["targets"]))
    return out
