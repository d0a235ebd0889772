"""The ``chat`` tour: hundreds of clients in one room of an ``isthmus.chat`` server, timed.

* A child process runs a ``ChatServer`` (line protocol, IRC and WebSocket over one chat state,
  one event loop), so its CPU time can be read on its own (psutil).
* This process connects ``--chat-clients`` line-protocol clients (500 by default), one IRC client
  and one WebSocket client, all to room ``main``. Then, every ``--chat-interval`` seconds, it
  fires a burst of ``--chat-burst`` messages from line clients taken in turn; each message
  carries its number and the time it was sent, and every member of the room receives it (the
  sender too: the line protocol echoes). The next burst waits for the server's ``OK SEND`` of
  this one, so the load never outruns the server.
* Live: deliveries per second (messages received, all clients together), deliveries per CPU
  second of the server process, the server's CPU load, latency p50/p99 from send to receipt
  (measured on a sample of the line clients and on the IRC and WebSocket clients), and how many
  messages the IRC and WebSocket clients received out of those sent.

Line clients only count the ``MSG`` lines they receive (a ``bytes.count`` per read), so this
process can keep up with the server; the sampled clients, IRC and WebSocket parse every line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import resource
import time
from array import array
from typing import Any

from ._proc import Worker
from ._stats import Batch, LatencyHistogram, Window

TITLE = "chat: one room, hundreds of line-protocol clients plus IRC and WebSocket, one server"
log = logging.getLogger("showcase.chat")

ROOM = "main"
PROBE_EVERY = 25  # every 25th line client parses its lines for latency
FILLER = "hello everyone, this is a chat message of a typical length"
REFRESH = 0.25  # seconds between live updates


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--chat-clients",
        type=int,
        default=500,
        metavar="N",
        help="line-protocol clients in the room, besides one IRC and one WebSocket client "
        "(default 500)",
    )
    group.add_argument(
        "--chat-burst",
        type=int,
        default=50,
        metavar="N",
        help="messages per burst, from N line clients in turn (default 50)",
    )
    group.add_argument(
        "--chat-interval",
        type=float,
        default=0.05,
        metavar="S",
        help="seconds from one burst to the next, at most (default 0.05: up to 20 bursts/s)",
    )
    group.add_argument(
        "--chat-db",
        default=":memory:",
        metavar="PATH",
        help="the server's store: :memory: (default) or a SQLite file (every message durable "
        "before it is delivered)",
    )


# --- the child process: the server ---------------------------------------------------------------


def _raise_nofile(need: int) -> None:
    """Allow ``need`` open files (sockets) if the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def server(args: dict[str, Any]) -> dict[str, Any]:
    """Serve until the parent writes to (or closes) the control pipe; returns the counters."""
    from isthmus.chat import ChatServer, ServerConfig

    _raise_nofile(args["clients"] + 512)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # no per-connection lines
    ctl = args["ctl"]

    async def main() -> dict[str, Any]:
        config = ServerConfig(
            host="127.0.0.1",
            line_port=0,
            irc_port=0,
            http_port=0,
            db=args["db"],
            max_clients=args["clients"] + 16,
            rate=0,  # no per-client rate limit: the bursts are the point
            irc_ping_interval=0,
            log_level="warning",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with ChatServer(config) as srv:
            ctl.send(("ports", srv.line_port, srv.irc_port, srv.http_port))
            loop.add_reader(ctl.fileno(), stop.set)  # a word from the parent, or its exit
            try:
                await stop.wait()
            finally:
                loop.remove_reader(ctl.fileno())
            counters = dict(srv.chat.counters)
        return counters

    return asyncio.run(main())


# --- this process: the clients --------------------------------------------------------------------


class _Load:
    """Counters shared by every client of this process."""

    def __init__(self) -> None:
        self.deliveries = 0  # MSG lines (and IRC/WebSocket messages) received
        self.acks = 0  # OK SEND replies received
        self.sent = 0
        self.latencies = array("q")  # ns, since the last display refresh
        self.dropped = 0  # connections the server closed during the run
        self.closing = False
        self.wake = asyncio.Event()  # set when acks or deliveries reach the awaited target
        self.ack_target = 0
        self.delivery_target = 0

    def delivered(self, n: int) -> None:
        self.deliveries += n
        if self.delivery_target and self.deliveries >= self.delivery_target:
            self.wake.set()

    def acked(self, n: int) -> None:
        self.acks += n
        if self.acks >= self.ack_target:
            self.wake.set()

    def lost(self) -> None:
        if not self.closing:
            self.dropped += 1
            self.wake.set()


def _stamp(line: bytes) -> int | None:
    """The send time in a message text ``<n> <t_ns> ...``, from a delivered line."""
    with contextlib.suppress(ValueError, IndexError):
        return int(line.split(b" ", 3)[1])
    return None


class LineLoadClient(asyncio.Protocol):
    """A line-protocol client that counts the MSG lines it receives (a probe also times them)."""

    def __init__(self, load: _Load, nick: str, probe: bool) -> None:
        self.load = load
        self.nick = nick
        self.probe = probe
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(f"HELLO {ROOM}:{self.nick}\n".encode())

    def data_received(self, data: bytes) -> None:
        if self.tail:
            data = self.tail + data
        end = data.rfind(b"\n") + 1
        self.tail = data[end:]
        if end == 0:
            return
        chunk = data[:end] if end < len(data) else data
        msgs = chunk.count(b"\nMSG ") + chunk.startswith(b"MSG ")
        if msgs:
            self.load.delivered(msgs)
            if self.probe:
                now = time.perf_counter_ns()
                for line in chunk.split(b"\n"):
                    if line.startswith(b"MSG "):
                        # MSG room nick seq <n> <t_ns> ...
                        t = _stamp(line.split(b" ", 4)[4])
                        if t is not None:
                            self.load.latencies.append(now - t)
        acks = chunk.count(b"OK SEND ")
        if acks:
            self.load.acked(acks)
        if not self.hello.done():
            if b"OK HELLO " in chunk:
                self.hello.set_result(None)
            elif b"ERR " in chunk:
                self.hello.set_exception(RuntimeError(chunk.decode(errors="replace").strip()))

    def send(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(f"SEND {ROOM} {text}\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost()
        if not self.hello.done():
            self.hello.set_exception(ConnectionError(f"{self.nick}: connection closed"))
        self.closed.set_result(None)


class Watcher:
    """Counts the message numbers one IRC or WebSocket client received, and times them."""

    def __init__(self, load: _Load, name: str) -> None:
        self.load = load
        self.name = name
        self.numbers: set[int] = set()

    def saw(self, text: str) -> None:
        n = text.partition(" ")[0]
        t = _stamp(text.encode())
        if n.isdigit():
            self.numbers.add(int(n))
        if t is not None:
            self.load.latencies.append(time.perf_counter_ns() - t)
        self.load.delivered(1)


class IrcWatcher(asyncio.Protocol):
    """A minimal IRC client: register, join #main, answer PINGs, count PRIVMSGs to #main."""

    def __init__(self, load: _Load, nick: str) -> None:
        self.watch = Watcher(load, "irc")
        self.load = load
        self.nick = nick
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        n = self.nick
        transport.write(f"NICK {n}\r\nUSER {n} 0 * :showcase\r\nJOIN #{ROOM}\r\n".encode())

    def data_received(self, data: bytes) -> None:
        data = self.tail + data
        *lines, self.tail = data.split(b"\n")
        chan = f" PRIVMSG #{ROOM} :".encode()
        for raw in lines:
            line = raw.rstrip(b"\r")
            i = line.find(chan)
            if i >= 0:
                self.watch.saw(line[i + len(chan) :].decode(errors="replace"))
            elif line.startswith(b"PING "):
                assert self.transport is not None
                self.transport.write(b"PONG " + line[5:] + b"\r\n")
            elif b" 366 " in line and not self.joined.done():  # end of NAMES: in the channel
                self.joined.set_result(None)
            elif (line.startswith(b"ERROR") or b" 433 " in line) and not self.joined.done():
                self.joined.set_exception(RuntimeError(line.decode(errors="replace")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost()
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("IRC: connection closed"))
        self.closed.set_result(None)


async def _ws_watch(url: str, load: _Load, joined: asyncio.Future[None], watch: Watcher) -> None:
    """The WebSocket client: hello, join, count messages until the socket closes."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "hello", "nick": "wswatch"}))
        await ws.send(json.dumps({"type": "join", "room": ROOM}))
        try:
            async for raw in ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "message" and msg.get("room") == ROOM:
                    watch.saw(str(msg.get("text", "")))
                elif kind == "joined" and not joined.done():
                    joined.set_result(None)
                elif kind == "error" and not joined.done():
                    joined.set_exception(RuntimeError(f"WebSocket: {msg}"))
        finally:
            load.lost()
            if not joined.done():
                joined.set_exception(ConnectionError("WebSocket: connection closed"))


# --- the tour ------------------------------------------------------------------------------------


def _us(ns: float) -> str:
    return "n/a" if math.isnan(ns) else f"{ns / 1000:,.0f} µs"


class _State:
    """What the display shows; updated four times a second."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.clients = opts.chat_clients
        self.phase = "starting the server"
        self.connected = 0
        self.hist = LatencyHistogram()
        self.window = Window(1.0)
        self.sent_window = Window(1.0)
        self.load: _Load | None = None
        self.irc: Watcher | None = None
        self.ws: Watcher | None = None
        self.cpu: Any = None  # psutil.Process of the server
        self.me: Any = None  # and of this process (the clients)
        self.me_now = 0.0
        self.me_pct = 0.0
        self.cpu0 = 0.0  # its CPU seconds when the bursts began
        self.deliveries0 = 0
        self.cpu_now = 0.0
        self.cpu_pct = 0.0
        self.started = time.monotonic()
        self.burst_started: float | None = None
        self.burst_ended: float | None = None
        self._last = (time.monotonic(), 0.0, 0, 0, 0.0)  # t, cpu, deliveries, sent, my cpu

    def sample(self) -> None:
        """Move the latest counts into the windows and the histogram."""
        import numpy as np

        load = self.load
        if load is None or self.cpu is None:
            return
        now = time.monotonic()
        with contextlib.suppress(Exception):  # the server may have exited
            t = self.cpu.cpu_times()
            self.cpu_now = t.user + t.system
        t = self.me.cpu_times()
        self.me_now = t.user + t.system
        t0, c0, d0, s0, m0 = self._last
        if now > t0:
            self.cpu_pct = 100.0 * (self.cpu_now - c0) / (now - t0)
            self.me_pct = 100.0 * (self.me_now - m0) / (now - t0)
        lat = np.frombuffer(load.latencies.tobytes(), dtype=np.int64)
        load.latencies = array("q")
        self.window.add(Batch(now, load.deliveries - d0, 0, lat))
        self.sent_window.add(Batch(now, load.sent - s0, 0, lat[:0]))
        if self.burst_started is not None:
            self.hist.add(lat)
        self._last = (now, self.cpu_now, load.deliveries, load.sent, self.me_now)

    def per_cpu_second(self) -> float:
        if self.load is None or self.burst_started is None:
            return math.nan
        cpu = self.cpu_now - self.cpu0
        return (self.load.deliveries - self.deliveries0) / cpu if cpu > 0 else math.nan

    def seconds(self) -> float:
        if self.burst_started is None:
            return 0.0
        return (self.burst_ended or time.monotonic()) - self.burst_started

    def received(self, w: Watcher | None) -> str:
        if w is None or self.load is None:
            return "…"
        return f"{len(w.numbers):,} / {self.load.sent:,}"

    def live_table(self, opts: argparse.Namespace, elapsed: float) -> Any:
        from rich.panel import Panel
        from rich.table import Table

        dps, _ = self.window.rates()
        mps, _ = self.sent_window.rates()
        p50, p99 = self.window.percentiles_ns(50, 99)
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold")
        t.add_column(justify="right")
        t.add_row("phase", self.phase)
        t.add_row("elapsed", f"{elapsed:5.1f} / {opts.duration:g} s")
        t.add_row("clients in the room", f"{self.connected:,} line + IRC + WebSocket")
        t.add_row("messages sent", f"{mps:,.0f}/s   ({self.load.sent if self.load else 0:,})")
        t.add_row("deliveries", f"{dps:,.0f}/s")
        t.add_row("per server CPU-second", f"{self.per_cpu_second():,.0f} deliveries")
        t.add_row("server CPU", f"{self.cpu_pct:4.0f} % of a core")
        t.add_row("clients' CPU (this process)", f"{self.me_pct:4.0f} % of a core")
        t.add_row("latency (last 1 s)", f"p50 {_us(p50)}   p99 {_us(p99)}")
        t.add_row("IRC client received", self.received(self.irc))
        t.add_row("WebSocket client received", self.received(self.ws))
        if self.load is not None and self.load.dropped:
            t.add_row("[red]connections dropped[/red]", f"{self.load.dropped}")
        return Panel(
            t,
            title=f"[b]chat tour[/b] · {self.clients:,} line clients · bursts of "
            f"{opts.chat_burst} every {opts.chat_interval * 1000:g} ms",
            expand=False,
        )

    def log_line(self, elapsed: float) -> None:
        dps, _ = self.window.rates()
        p50, p99 = self.window.percentiles_ns(50, 99)
        log.info(
            "%5.1f s: %s deliveries/s, %s per server CPU-second, latency p50 %s p99 %s",
            elapsed,
            f"{dps:,.0f}",
            f"{self.per_cpu_second():,.0f}",
            _us(p50),
            _us(p99),
        )


async def _display(state: _State, opts: argparse.Namespace, live: Any) -> None:
    """Refresh the figures four times a second (and log once a second without a live display)."""
    last_log = 0.0
    while True:
        await asyncio.sleep(REFRESH)
        state.sample()
        elapsed = state.seconds()
        if live is not None:
            live.update(state.live_table(opts, elapsed))
        elif state.burst_started is not None and time.monotonic() - last_log >= 1.0:
            state.log_line(elapsed)
            last_log = time.monotonic()


async def _connect(client: asyncio.Protocol, port: int) -> Any:
    return await asyncio.get_running_loop().create_connection(lambda: client, "127.0.0.1", port)


async def _recv(conn: Any, worker: Worker, timeout: float) -> Any:
    """The next object from the server's pipe, waiting in the event loop (no polling); fails
    at once if the server process exits instead."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fds = (conn.fileno(), worker.process.sentinel)
    for fd in fds:
        loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
    if not conn.poll():
        outcome = worker.poll_outcome()
        raise RuntimeError(f"the server process failed: {outcome[1] if outcome else '?'}")
    return conn.recv()


async def _tour(
    state: _State, opts: argparse.Namespace, worker: Worker, ctl: Any, live: Any
) -> bool:
    """Connect, fire bursts for ``opts.duration`` s, drain; True if interrupted (Ctrl-C)."""
    import psutil  # type: ignore[import-untyped,unused-ignore]

    loop = asyncio.get_running_loop()
    load = state.load = _Load()
    clients: list[LineLoadClient] = []
    irc: IrcWatcher | None = None
    ws_task: asyncio.Task[None] | None = None
    display = loop.create_task(_display(state, opts, live))
    try:
        _, line_port, irc_port, http_port = await _recv(ctl, worker, 60.0)
        state.cpu, state.me = psutil.Process(worker.process.pid), psutil.Process()
        state.phase = f"connecting {opts.chat_clients:,} line clients"
        log.info("server up (pid %d); %s", worker.process.pid, state.phase)
        for start in range(0, opts.chat_clients, 100):  # 100 handshakes at a time
            batch = [
                LineLoadClient(load, f"user{i}", i % PROBE_EVERY == 0)
                for i in range(start, min(start + 100, opts.chat_clients))
            ]
            clients.extend(batch)  # before connecting, so that Ctrl-C closes them too
            await asyncio.gather(*(_connect(c, line_port) for c in batch))
            await asyncio.wait_for(asyncio.gather(*(c.hello for c in batch)), 30)
            state.connected = len(clients)
        _, irc = await loop.create_connection(
            lambda: IrcWatcher(load, "ircwatch"), "127.0.0.1", irc_port
        )
        state.irc = irc.watch
        state.ws = Watcher(load, "websocket")
        ws_joined: asyncio.Future[None] = loop.create_future()
        ws_task = loop.create_task(
            _ws_watch(f"ws://127.0.0.1:{http_port}/ws", load, ws_joined, state.ws)
        )
        await asyncio.wait_for(asyncio.gather(irc.joined, ws_joined), 30)
        if load.dropped:
            raise RuntimeError("the server closed connections while they joined")

        state.phase = "bursts"
        members = len(clients) + 2
        state.sample()
        state.cpu0, state.deliveries0 = state.cpu_now, load.deliveries
        state.burst_started = time.monotonic()
        deadline = state.burst_started + opts.duration
        turn = 0
        while time.monotonic() < deadline:
            next_burst = time.monotonic() + opts.chat_interval
            load.ack_target = load.sent + opts.chat_burst
            load.wake.clear()
            for _ in range(opts.chat_burst):
                c = clients[turn % len(clients)]
                turn += 1
                c.send(f"{load.sent} {time.perf_counter_ns()} {FILLER}")
                load.sent += 1
            while load.acks < load.ack_target and not load.dropped:
                await asyncio.wait_for(load.wake.wait(), 30)
                load.wake.clear()
            if load.dropped:
                raise RuntimeError(f"the server dropped {load.dropped} connection(s)")
            await asyncio.sleep(max(0.0, next_burst - time.monotonic()))
        state.phase = "draining"
        load.delivery_target = state.deliveries0 + load.sent * members
        load.wake.clear()
        with contextlib.suppress(TimeoutError):
            while load.deliveries < load.delivery_target and not load.dropped:
                await asyncio.wait_for(load.wake.wait(), 15)
                load.wake.clear()
        state.burst_ended = time.monotonic()
        state.sample()
        state.phase = "done"
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us
        return True
    finally:
        display.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await display
        load.closing = True
        for c in clients:
            if c.transport is not None:
                c.transport.close()
        if irc is not None and irc.transport is not None:
            irc.transport.close()
        if ws_task is not None:
            ws_task.cancel()
            with contextlib.suppress(BaseException):
                await ws_task
        waits = [c.closed for c in clients if c.transport is not None]
        if irc is not None:
            waits.append(irc.closed)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)
    return False


def run(opts: argparse.Namespace, console: Any) -> dict[str, Any]:
    """Run the tour for ``opts.duration`` seconds; returns the summary (see showcase.py)."""
    try:
        import psutil  # noqa: F401
        import websockets  # noqa: F401

        import isthmus.chat  # noqa: F401
    except ImportError as exc:
        return _skipped(f"{exc} (pip install -e libs/chat psutil)")
    if opts.chat_clients < 1 or opts.chat_burst < 1 or opts.chat_interval < 0:
        raise SystemExit("--chat-clients and --chat-burst must be at least 1, --chat-interval >= 0")
    _raise_nofile(opts.chat_clients + 512)
    state = _State(opts)
    ctl, child_ctl = __import__("multiprocessing").get_context("spawn").Pipe()
    worker = Worker(
        "chat-server",
        __name__,
        "server",
        {"clients": opts.chat_clients, "db": opts.chat_db, "ctl": child_ctl},
    )
    child_ctl.close()
    live = None
    if opts.live:
        from rich.live import Live

        live = Live(state.live_table(opts, 0.0), console=console, refresh_per_second=4)
        live.start()
    errors: list[str] = []
    interrupted = False
    counters: dict[str, Any] = {}
    try:
        interrupted = asyncio.run(_tour(state, opts, worker, ctl, live))
    except KeyboardInterrupt:
        interrupted = True
    except (OSError, RuntimeError, TimeoutError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        log.error("%s", exc)
    finally:
        try:
            with contextlib.suppress(OSError):
                ctl.send("stop")
            outcome = worker.join(10.0)
            if outcome is not None and outcome[0] == "ok":
                counters = outcome[1]
            elif outcome is not None and not errors:
                errors.append(f"server: {outcome[1]}")
        except KeyboardInterrupt:
            log.warning("interrupted again: terminating the server")
        worker.stop()
        ctl.close()
        if live is not None:
            live.update(state.live_table(opts, state.seconds()))
            live.stop()
    if interrupted:
        log.warning("interrupted: the clients are closed and the server has stopped")
    return _summary(state, opts, interrupted, errors, counters)


def _summary(
    state: _State,
    opts: argparse.Namespace,
    interrupted: bool,
    errors: list[str],
    counters: dict[str, Any],
) -> dict[str, Any]:
    load = state.load or _Load()
    seconds = state.seconds()
    members = state.connected + 2
    expected = load.sent * members
    delivered = load.deliveries - state.deliveries0
    h = state.hist
    irc_got = len(state.irc.numbers) if state.irc else 0
    ws_got = len(state.ws.numbers) if state.ws else 0
    if not interrupted and not errors and state.burst_ended is not None:
        if delivered < expected:
            errors.append(f"{expected - delivered:,} of {expected:,} deliveries did not arrive")
        if irc_got < load.sent or ws_got < load.sent:
            errors.append("the IRC or WebSocket client missed messages")
    cpu = state.cpu_now - state.cpu0
    metrics = {
        "clients": state.connected,
        "messages": load.sent,
        "deliveries": delivered,
        "expected_deliveries": expected,
        "seconds": seconds,
        "deliveries_per_s": delivered / seconds if seconds > 0 else math.nan,
        "server_cpu_s": cpu,
        "deliveries_per_cpu_s": delivered / cpu if cpu > 0 else math.nan,
        "latency_p50_us": h.percentile_ns(50) / 1000,
        "latency_p99_us": h.percentile_ns(99) / 1000,
        "latency_max_us": h.max_ns / 1000 if h.total else math.nan,
        "irc_received": irc_got,
        "websocket_received": ws_got,
        "dropped": load.dropped,
        "server_counters": counters,
    }
    return {
        "tour": "chat",
        "ok": not errors and load.sent > 0,
        "interrupted": interrupted,
        "errors": errors,
        "rows": [
            ("clients", f"{state.connected:,} line + 1 IRC + 1 WebSocket"),
            ("store", opts.chat_db),
            ("duration", f"{seconds:.1f} s"),
            ("messages", f"{load.sent:,}"),
            ("deliveries", f"{delivered:,} of {expected:,}"),
            ("deliveries/s", f"{metrics['deliveries_per_s']:,.0f}"),
            ("server CPU", f"{cpu:,.2f} s"),
            ("deliveries per server CPU-second", f"{metrics['deliveries_per_cpu_s']:,.0f}"),
            ("latency p50", _us(h.percentile_ns(50))),
            ("latency p99", _us(h.percentile_ns(99))),
            ("IRC client received", f"{irc_got:,} of {load.sent:,}"),
            ("WebSocket client received", f"{ws_got:,} of {load.sent:,}"),
            ("connections dropped", f"{load.dropped}"),
        ],
        "metrics": metrics,
    }


def _skipped(reason: str) -> dict[str, Any]:
    log.warning("chat tour skipped: %s", reason)
    return {
        "tour": "chat",
        "ok": True,  # nothing failed: this machine lacks the library
        "interrupted": False,
        "errors": [],
        "rows": [("skipped", reason[:200])],
        "metrics": {"skipped": reason},
    }
