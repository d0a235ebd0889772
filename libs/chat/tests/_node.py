"""A chat server process for the multi-process tests, and :class:`Node` to run one.

``python _node.py --db DB [--redis URL --channel C --node-id ID --heartbeat S]`` starts a
:class:`Chat` over ``DB`` (a SQLite path or a ``postgresql://`` DSN) with the line protocol on
a free port of 127.0.0.1, prints ``READY <port> <node id>`` and serves until its stdin closes
or it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from isthmus.chat import Chat, Limits, LineProtocolServer
from isthmus.chat._server import make_store


async def _serve(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--redis")
    p.add_argument("--channel", default="isthmus-chat")
    p.add_argument("--node-id")
    p.add_argument("--heartbeat", type=float, default=2.0)
    args = p.parse_args(argv)
    backplane = None
    if args.redis:
        from isthmus.chat._redis import RedisBackplane

        backplane = RedisBackplane(
            args.redis, channel=args.channel, node_id=args.node_id, heartbeat=args.heartbeat
        )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def stdin_readable() -> None:
        if not os.read(0, 4096):
            stop.set()

    loop.add_reader(0, stdin_readable)
    limits = Limits(rate=0, max_clients=1000)
    async with Chat(store=make_store(args.db), backplane=backplane, limits=limits) as chat:
        server = LineProtocolServer(chat)
        await server.start("127.0.0.1", 0)
        node = backplane.node_id if backplane is not None else "-"
        print(f"READY {server.port} {node}", flush=True)
        await stop.wait()
        await server.close()
    loop.remove_reader(0)


class Node:
    """A running ``_node.py`` process: ``port``, ``node_id``; :meth:`stop` or :meth:`kill`."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, node_id: str) -> None:
        self.proc = proc
        self.port = port
        self.node_id = node_id

    @classmethod
    async def start(
        cls,
        db: str | Path,
        *,
        redis: str | None = None,
        channel: str = "isthmus-chat",
        node_id: str | None = None,
        heartbeat: float = 0.25,
    ) -> Node:
        argv = [sys.executable, __file__, "--db", str(db)]
        if redis is not None:
            argv += ["--redis", redis, "--channel", channel, "--heartbeat", str(heartbeat)]
            if node_id is not None:
                argv += ["--node-id", node_id]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
        except BaseException:
            proc.kill()
            await proc.communicate()
            raise
        if not line.startswith(b"READY "):
            proc.kill()
            await proc.communicate()
            raise RuntimeError(f"node did not start (exit {proc.returncode})")
        _, port, name = line.decode().split()
        return cls(proc, int(port), name)

    async def stop(self) -> int:
        """Close its stdin (a clean shutdown), wait; SIGKILL after 15 s. Returns the exit code
        (of the earlier exit, if it had exited)."""
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # communicate() closes stdin only when it has input
            try:
                await asyncio.wait_for(self.proc.communicate(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no goodbye."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.communicate()


if __name__ == "__main__":
    asyncio.run(_serve())
