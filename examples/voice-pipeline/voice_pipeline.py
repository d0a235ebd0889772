"""Voice pipeline: audio in, speech segments with timestamps out.

    48 kHz audio  ->  resample to 16 kHz  ->  level meter  ->  WebRTC VAD  ->  speech segments

The same pipeline two ways: ``voice.yaml`` (a manifest) and :func:`build_pipeline` (code).
It is a template: copy this folder and change the nodes.

    python voice_pipeline.py --input speech.wav          # a file (any format FFmpeg reads)
    python voice_pipeline.py --input speech.wav --code   # the pipeline built in code
    python voice_pipeline.py --live                      # live frames, paced in real time
    python voice_pipeline.py --demo [--json]             # synthesized speech, both forms, checked
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from isthmus.pipeline import AudioChunk, Pipeline, Session, SpeechSegment, load, to_manifest
from isthmus.pipeline.nodes import AudioFileSource

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "voice.yaml"
RATE, FRAME_MS = 48000, 20


def build_pipeline() -> Pipeline:
    """``voice.yaml``, in code."""
    p = Pipeline("voice", description="48 kHz audio in, speech segments with timestamps out")
    p.negotiation = {"auto_convert": True}
    p.add(
        "mic",
        "input",
        caps=f"audio(sample_rate={RATE}, channels=1, format=f32, frame_ms={FRAME_MS})",
    )
    p.add("resample", "resample", sample_rate=16000)
    p.add("vad", "webrtcvad", aggressiveness=2)
    p.add("level", "level_meter")
    p.add("segments", "output")
    p.add("levels", "output")
    p.connect("mic", "resample")
    p.connect("resample", "level")
    p.connect("level.out", "vad")
    p.connect("level.levels", "levels", overflow="latest", maxsize=1)
    p.connect("vad.segments", "segments")
    return p


async def file_chunks(path: str, realtime: bool = False) -> AsyncIterator[AudioChunk]:
    """A file decoded into 48 kHz mono 20 ms chunks (paced in real time if asked)."""
    src = AudioFileSource(
        path=path, sample_rate=RATE, channels=1, frame_ms=FRAME_MS, realtime=realtime
    )
    src.initialize()
    try:
        async for chunk in src.generate():
            yield chunk
    finally:
        src.close()


async def live_chunks(seconds: float) -> AsyncIterator[AudioChunk]:
    """Live frames: a voice-like buzz that comes and goes, produced in real time."""
    n = RATE * FRAME_MS // 1000
    t0 = time.monotonic()
    for k in range(int(seconds * 1000 / FRAME_MS)):
        delay = t0 + k * FRAME_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (k * n + np.arange(n)) / RATE
        on = (t % 2.0) > 0.8  # 1.2 s of "speech" every 2 s
        f0 = 130 + 15 * np.sin(2 * np.pi * 3 * t)
        x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 10))
        yield AudioChunk(
            (0.2 * on * x).astype(np.float32).reshape(-1, 1), RATE, k * FRAME_MS / 1000
        )


async def run(
    pipeline: Pipeline, chunks: AsyncIterator[AudioChunk], show: Any = None
) -> list[SpeechSegment]:
    """Feed ``chunks`` into the pipeline; return the speech segments (``show`` sees each)."""
    segments: list[SpeechSegment] = []

    def on_output(node: str, item: Any) -> None:
        if node == "segments":
            segments.append(item)
        if show is not None:
            show(node, item)

    async with Session(pipeline, on_output=on_output) as s:
        async for chunk in chunks:
            await s.push("mic", chunk)
        await s.drain()
    return segments


def synthesize(path: Path) -> str:
    """Speech in a WAV file: espeak-ng when installed, else a voice-like buzz."""
    if shutil.which("espeak-ng"):
        subprocess.run(
            [
                "espeak-ng",
                "-w",
                str(path),
                "Hello, this is the voice pipeline. "
                "It finds where people speak, and where they stop.",
            ],
            check=True,
        )
        return "espeak-ng"
    t = np.arange(int(3.5 * RATE)) / RATE
    on = ((t > 0.5) & (t < 1.5)) | ((t > 2.2) & (t < 3.0))
    x = 0.2 * on * sum(np.sin(2 * np.pi * h * 140 * t) / h for h in range(1, 10))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).astype(np.int16).tobytes())
    return "a synthetic buzz"


def _fmt(seg: SpeechSegment) -> str:
    return f"speech {seg.start:7.2f} s -> {seg.end:7.2f} s  ({seg.duration:.2f} s)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Speech segments from audio: resample 48 kHz -> 16 kHz, then VAD."
    )
    ap.add_argument("--input", "-i", help="an audio file (wav, flac, mp3, ...)")
    ap.add_argument(
        "--code", action="store_true", help="build the pipeline in code, not from voice.yaml"
    )
    ap.add_argument("--live", action="store_true", help="feed live frames in real time")
    ap.add_argument("--seconds", type=float, default=6.0, help="how long --live runs (default 6)")
    ap.add_argument(
        "--demo", action="store_true", help="synthesize speech, run both forms, check they agree"
    )
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    opts = ap.parse_args(argv)
    pipeline = build_pipeline() if opts.code else load(MANIFEST)

    if opts.demo:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "speech.wav"
            source = synthesize(wav)
            from_manifest = asyncio.run(run(load(MANIFEST), file_chunks(str(wav))))
            from_code = asyncio.run(run(build_pipeline(), file_chunks(str(wav))))
        same_graph = to_manifest(load(MANIFEST))["nodes"] == to_manifest(build_pipeline())["nodes"]
        agree = [(s.start, s.end) for s in from_manifest] == [(s.start, s.end) for s in from_code]
        report = {
            "source": source,
            "segments": [
                {"start": round(s.start, 3), "end": round(s.end, 3)} for s in from_manifest
            ],
            "manifest_and_code_agree": agree and same_graph,
        }
        if opts.json:
            print(json.dumps(report))
        else:
            print(f"speech from {source}:")
            for s in from_manifest:
                print("  " + _fmt(s))
            print("manifest and code agree" if report["manifest_and_code_agree"] else "MISMATCH")
        return 0 if report["manifest_and_code_agree"] and from_manifest else 1

    if opts.live:
        from rich.console import Console

        console = Console()
        level = [-math.inf]

        def show(node: str, item: Any) -> None:
            if node == "levels":
                level[0] = item.rms_dbfs
            else:
                console.print(_fmt(item))

        console.print(f"live frames for {opts.seconds:.0f} s (Ctrl-C stops)...")
        try:
            segs = asyncio.run(run(pipeline, live_chunks(opts.seconds), show))
        except KeyboardInterrupt:
            return 130
        console.print(f"{len(segs)} segment(s)")
        return 0

    if not opts.input:
        ap.error("give --input FILE, --live or --demo")
    segs = asyncio.run(run(pipeline, file_chunks(opts.input)))
    if opts.json:
        print(json.dumps([{"start": round(s.start, 3), "end": round(s.end, 3)} for s in segs]))
    else:
        for s in segs:
            print(_fmt(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
