#!/usr/bin/env python
"""isthmus.wire adapters demo: a server streams fake video and state patches, a client acks the
video, sends its statistics back and prints them.

    python examples/wire_adapters/demo.py                       # both ends, one process, TCP
    python examples/wire_adapters/demo.py --transport ws --duration 10
    python examples/wire_adapters/demo.py server --port 8765    # or the two ends apart
    python examples/wire_adapters/demo.py client --port 8765

The video is random bytes labelled h264 (keyframes four times larger, one per ``--gop``
frames). The video stream runs on credits: the client acknowledges each packet after
"decoding" it, and if it falls behind the server drops frames and sends a keyframe next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script from a checkout: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.wire_adapters import aio
from examples.wire_adapters.aio import SessionClosed, WireSession
from isthmus.wire import (
    FramesDropped,
    Hello,
    Ping,
    Pong,
    RequestKeyframe,
    StatePatch,
    Stats,
    VideoPacket,
)

log = logging.getLogger("demo")


# ------------------------------------------------------------------------------------ server


@dataclass
class _Source:
    fps: float
    frame_size: int
    gop: int
    keyframe_needed: bool = True


async def _produce(session: WireSession, source: _Source) -> None:
    """Send fake video at ``fps`` and a state patch every fifth frame until the session
    closes."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / source.fps
    next_at = loop.time()
    frame = 0
    try:
        while True:
            key = source.keyframe_needed or frame % source.gop == 0
            source.keyframe_needed = False
            await session.send(
                VideoPacket(
                    codec="h264",
                    width=1280,
                    height=720,
                    keyframe=key,
                    pts=int(frame * 1e9 / source.fps),
                    config=b"\x00\x00\x00\x01fake-sps-pps" if key else b"",
                    data=os.urandom(source.frame_size * (4 if key else 1)),
                )
            )
            if frame % 5 == 0:
                video = session.conn.stream_stats(2)
                await session.send(
                    StatePatch(
                        path="/demo/server",
                        op="merge",
                        value={"frame": frame, "sent": video.sent, "dropped": video.dropped},
                        rev=frame,
                    )
                )
            frame += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    except SessionClosed:
        return


def make_handler(args: argparse.Namespace) -> aio.Handler:
    """The server's per-client handler: stream, and listen to what the client says."""

    async def handler(session: WireSession) -> None:
        hello = session.hello
        log.info("client %s (%s) connected", session.peer, hello.name if hello else "?")
        source = _Source(fps=args.fps, frame_size=args.frame_size, gop=args.gop)
        producer = asyncio.create_task(_produce(session, source))
        try:
            async for event in session:
                if isinstance(event, FramesDropped):
                    log.info("dropped %d frames for %s (client behind)", event.count, session.peer)
                    source.keyframe_needed = source.keyframe_needed or event.keyframe_needed
                elif isinstance(event, RequestKeyframe):
                    source.keyframe_needed = True
                elif isinstance(event, Stats):
                    log.info(
                        "client %s reports %.1f fps, %.0f kbit/s, rtt %s ms",
                        session.peer,
                        event.fps,
                        event.kbps,
                        f"{event.rtt_ms:.2f}" if event.rtt_ms is not None else "?",
                    )
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            log.info("client %s left", session.peer)

    return handler


async def start_server(args: argparse.Namespace) -> tuple[Any, int]:
    """Start the server; returns it and the port it listens on."""

    def authorize(hello: Hello) -> bool | str:
        return args.token is None or hello.token == args.token or "bad token"

    handler = make_handler(args)
    if args.transport == "ws":
        from examples.wire_adapters.websocket import serve_ws

        server: Any = await serve_ws(
            handler, args.host, args.port, authorize=authorize, codecs=["h264"]
        )
    else:
        server = await aio.serve(handler, args.host, args.port, authorize=authorize)
    port = int(server.sockets[0].getsockname()[1])
    log.info("serving isthmus.wire over %s on %s:%d", args.transport, args.host, port)
    return server, port


# ------------------------------------------------------------------------------------ client


@dataclass
class _Counters:
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    patches: int = 0
    rtt_ms: float | None = None
    state: dict[str, Any] = field(default_factory=dict)


async def run_client(args: argparse.Namespace, port: int) -> _Counters:
    """Connect, consume for ``--duration`` seconds while reporting once a second, close."""
    hello = Hello(name="demo-client", codecs=["h264"], token=args.token)
    if args.transport == "ws":
        from examples.wire_adapters.websocket import connect_ws

        session = await connect_ws(f"ws://{args.host}:{port}/", hello)
    else:
        session = await aio.connect(args.host, port, hello)
    assert session.welcome is not None
    log.info("welcomed: encoding %s, codecs %s", session.welcome.encoding, session.welcome.codecs)

    loop = asyncio.get_running_loop()
    total = _Counters()
    window = _Counters()
    started = last_report = loop.time()
    nonce = 0
    try:
        async with asyncio.timeout(args.duration):
            async for event in session:
                if isinstance(event, VideoPacket):
                    for c in (total, window):
                        c.frames += 1
                        c.keyframes += event.keyframe
                        c.bytes += len(event.data)
                    await session.ack(2)  # "decoded": return the credit
                elif isinstance(event, StatePatch):
                    total.patches += 1
                    if isinstance(event.value, dict):
                        total.state.update(event.value)
                elif isinstance(event, Pong):
                    total.rtt_ms = (time.monotonic_ns() - event.time_ns) / 1e6
                now = loop.time()
                if now - last_report >= 1.0:
                    elapsed = now - last_report
                    fps = window.frames / elapsed
                    kbps = window.bytes * 8 / 1000 / elapsed
                    log.info(
                        "%.1f fps, %.2f Mbit/s, %d keyframes, %d patches, rtt %s ms",
                        fps,
                        kbps / 1000,
                        window.keyframes,
                        total.patches,
                        f"{total.rtt_ms:.2f}" if total.rtt_ms is not None else "?",
                    )
                    await session.send(
                        Stats(
                            stream=2, fps=fps, kbps=kbps, frames=total.frames, rtt_ms=total.rtt_ms
                        )
                    )
                    nonce += 1
                    await session.send(Ping(nonce=nonce, time_ns=time.monotonic_ns()))
                    window = _Counters()
                    last_report = now
    except TimeoutError:
        pass
    finally:
        await session.close("demo finished")
    elapsed = loop.time() - started
    print(
        f"demo over {args.transport}: {elapsed:.1f} s, {total.frames} frames "
        f"({total.keyframes} keyframes, {total.bytes / 1e6:.1f} MB), "
        f"{total.patches} state patches, server dropped {total.state.get('dropped', 0)}, "
        f"rtt {total.rtt_ms if total.rtt_ms is None else round(total.rtt_ms, 2)} ms, "
        f"{session.bytes_received} bytes received"
    )
    return total


# -------------------------------------------------------------------------------------- main


async def amain(args: argparse.Namespace) -> int:
    if args.role == "client":
        await run_client(args, args.port)
        return 0
    server, port = await start_server(args)
    try:
        if args.role == "server":
            await asyncio.Event().wait()  # until interrupted
            return 0
        counters = await run_client(args, port)
        return 0 if counters.frames else 1
    finally:
        await aio.shutdown(server)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Stream fake video and state patches over isthmus.wire (TCP or WebSocket).",
    )
    parser.add_argument(
        "role",
        nargs="?",
        choices=("both", "server", "client"),
        default="both",
        help="run both ends in one process (default), only the server, or only the client",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port; 0 picks a free one (default %(default)s)"
    )
    parser.add_argument("--transport", choices=("tcp", "ws"), default="tcp", help="default tcp")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="client run time, seconds (default 5)"
    )
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    parser.add_argument(
        "--frame-size", type=int, default=50_000, help="bytes per non-key frame (default 50000)"
    )
    parser.add_argument("--gop", type=int, default=30, help="frames per keyframe (default 30)")
    parser.add_argument("--token", default=None, help="require / send this hello token")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
