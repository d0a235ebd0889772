"""What runs inside the child processes of the isthmus-chat benchmarks (``bench/chat.py``).

Kept import-light at module level: children are started with ``spawn`` and import this afresh.

Servers (one process each; the parent measures nothing itself, the load generator samples the
server's CPU time with psutil around each measured phase):

* :func:`serve_ours`: ``isthmus.chat`` over one :class:`~isthmus.chat.Chat` (rate limit off, a
  1 GiB send queue so nobody is dropped as a slow consumer), with the line protocol front end
  (``LineProtocolServer``) or the IRC one (``isthmus.chat._irc.IrcServer``), and a
  ``MemoryStore`` or a ``SQLiteStore`` (the default store of ``isthmus-chat serve``).
* :func:`serve_plain`: the plain asyncio baseline the anchors describe: asyncio streams
  (``start_server`` and ``reader.readline()``), a room is a list of ``StreamWriter`` objects and a
  message goes out as ``for w in members: w.write(line)``, one write per delivery.

Both stop on SIGUSR1 and return a few counters.

Load generators (no asyncio: one ``select.epoll`` loop over non-blocking sockets, so that the
receivers cost as little as possible):

* :func:`load`: connects the members of each room (``HELLO`` for the line protocol and the plain
  server, ``NICK``/``USER``/``JOIN`` for IRC), then runs what the parent asks over a pipe:
  ``burst`` (the room's sender writes K messages in one ``send``; receivers count newline bytes
  until each has K more; repeated until the server used enough CPU to time it) and ``latency``
  (one message every 1/rate s stamped with ``time.time_ns()``; every receiver reads with
  ``recvmsg`` and the kernel's ``SO_TIMESTAMPNS`` receive time, CLOCK_REALTIME like the stamp).
* :func:`idle_load`: N connections registered and joined, then left idle while the parent reads
  the server's memory.
"""

from __future__ import annotations

import contextlib
import resource
import select
import signal
import socket
import struct
import sys
import time
from array import array
from typing import Any

# SO_TIMESTAMPNS (the "old" 32/64-bit-agnostic variant on x86-64 and arm64); Python does not
# export it. The control message carries a struct timespec of the receive time, CLOCK_REALTIME.
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("qq")

BURST_TEXT = "B" * 40  # every burst message carries the same 40 characters of text
_RECV = 1 << 18


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- servers -------------------------------------------------------------------------------------


def _run_until_usr1(main: Any) -> Any:
    import asyncio

    async def runner() -> Any:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()

        def on_usr1() -> None:
            if not stop.done():
                stop.set_result(None)

        loop.add_signal_handler(signal.SIGUSR1, on_usr1)
        return await main(stop)

    return asyncio.run(runner())


def serve_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """isthmus.chat: ``spec`` = {port, front ("line" | "irc"), store ("memory" | "sqlite"),
    db (path for SQLite), rooms, max_clients}."""
    raise_nofile()
    import gc

    from isthmus.chat import Chat, Limits, MemoryStore, SQLiteStore
    from isthmus.chat._line import LineProtocolServer

    async def main(stop: Any) -> dict[str, Any]:
        limits = Limits(
            max_clients=int(spec["max_clients"]),
            rate=0,
            send_queue_bytes=1 << 30,
            max_rooms_per_client=1000,
        )
        store = SQLiteStore(spec["db"]) if spec["store"] == "sqlite" else MemoryStore()
        async with Chat(limits=limits, store=store, default_rooms=spec["rooms"]) as chat:
            if spec["front"] == "irc":
                from isthmus.chat._irc import IrcServer

                # No keep-alive pings: the load generator does not answer them (ngIRCd gets
                # PingTimeout = 3600 for the same reason).
                srv: Any = IrcServer(chat, ping_interval=0)
            else:
                srv = LineProtocolServer(chat)
            await srv.start("127.0.0.1", int(spec["port"]))
            gc.collect()
            await stop
            counters = dict(chat.counters)
            await srv.close()
        return counters

    return dict(_run_until_usr1(main))


def serve_plain(spec: dict[str, Any]) -> dict[str, Any]:
    """The plain asyncio broadcast server. Lines: ``HELLO room nick`` (join; answered
    ``OK HELLO nick``) and ``SEND room text`` (every other member of the room gets
    ``MSG room nick text``; no echo, no acknowledgement)."""
    raise_nofile()
    import asyncio
    import gc

    rooms: dict[bytes, list[asyncio.StreamWriter]] = {}
    counters = {"messages": 0, "deliveries": 0, "connections": 0}

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counters["connections"] += 1
        nick = b"?"
        joined: list[bytes] = []
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb, _, rest = line.rstrip(b"\r\n").partition(b" ")
                if verb == b"SEND":
                    room, _, text = rest.partition(b" ")
                    out = b"MSG " + room + b" " + nick + b" " + text + b"\n"
                    members = rooms.get(room, ())
                    for w in members:
                        if w is not writer:
                            w.write(out)
                    counters["messages"] += 1
                    counters["deliveries"] += len(members) - 1
                elif verb == b"HELLO":
                    room, _, nick = rest.partition(b" ")
                    rooms.setdefault(room, []).append(writer)
                    joined.append(room)
                    writer.write(b"OK HELLO " + nick + b"\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for room in joined:
                with contextlib.suppress(ValueError):
                    rooms[room].remove(writer)
            writer.close()

    async def main(stop: Any) -> dict[str, Any]:
        server = await asyncio.start_server(
            client, "127.0.0.1", int(spec["port"]), backlog=1024, reuse_address=True
        )
        gc.collect()
        await stop
        server.close()
        for members in rooms.values():
            for w in members:
                w.close()
        return dict(counters)

    return dict(_run_until_usr1(main))


# --- load generation ------------------------------------------------------------------------------


def hello(proto: str, nick: str, room: str) -> bytes:
    """What a member sends to register and join ``room``."""
    if proto == "irc":
        return f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nJOIN #{room}\r\n".encode()
    if proto == "plain":
        return f"HELLO {room} {nick}\n".encode()
    return f"HELLO {room}:{nick}\n".encode()


def ready_marker(proto: str) -> bytes:
    """What a member receives once it has joined (IRC: end of the NAMES list)."""
    return b" 366 " if proto == "irc" else b"OK HELLO"


def say(proto: str, room: str, text: str) -> bytes:
    """The line a member sends to say ``text`` in ``room``."""
    if proto == "irc":
        return f"PRIVMSG #{room} :{text}\r\n".encode()
    return f"SEND {room} {text}\n".encode()


class _Conn:
    __slots__ = ("count", "dead", "fd", "lat", "lat_app", "ltail", "marker", "nick", "sock", "tail")

    def __init__(self, sock: socket.socket, nick: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.nick = nick
        self.marker: bytes | None = None
        self.tail = b""
        self.ltail = b""
        self.count = 0
        self.dead = False
        self.lat: array[int] | None = None
        self.lat_app: array[int] | None = None


class _Load:
    """Non-blocking sockets under one epoll; what a read does depends on ``mode``:
    ``drain`` (discard), ``count`` (newline bytes), ``latency`` (recvmsg + timestamps)."""

    def __init__(self, port: int, proto: str) -> None:
        self.port = port
        self.proto = proto
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.buf = bytearray(_RECV)
        self.mode = "drain"
        self.waiting = 0  # conns still looking for their marker
        self.remaining = 0  # receivers below their target (count mode)
        self.targets: dict[int, int] = {}  # fd -> target count (count and latency modes)
        self.lost_conns = 0

    # -- sockets

    def connect(self, nick: str, stamps: bool) -> _Conn:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if stamps:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        c = _Conn(sock, nick)
        self.conns[c.fd] = c
        self.ep.register(c.fd, select.EPOLLIN)
        return c

    def send(self, c: _Conn, data: bytes) -> None:
        """Write all of ``data`` (blocking on this socket only; the server reads it meanwhile)."""
        c.sock.settimeout(30)
        try:
            c.sock.sendall(data)
        finally:
            c.sock.setblocking(False)

    def close(self) -> None:
        for c in self.conns.values():
            with contextlib.suppress(OSError):
                self.ep.unregister(c.fd)
            c.sock.close()
        self.conns.clear()
        self.ep.close()

    # -- the loop

    def pump(self, timeout: float) -> None:
        """Handle whatever is readable, waiting at most ``timeout`` seconds for something."""
        events = self.ep.poll(max(0.0, timeout))
        buf = self.buf
        conns = self.conns
        for fd, _ev in events:
            c = conns.get(fd)
            if c is None:
                continue
            if self.mode == "latency" and c.lat is not None:
                self._read_latency(c)
                continue
            try:
                n = c.sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                self._dead(c)
                continue
            if c.marker is not None:
                self._scan(c, bytes(buf[:n]))
            elif self.mode == "count":
                before = c.count
                c.count = before + buf.count(b"\n", 0, n)
                target = self.targets.get(fd)
                if target is not None and before < target <= c.count:
                    self.remaining -= 1

    def _dead(self, c: _Conn) -> None:
        if not c.dead:
            c.dead = True
            self.lost_conns += 1
            with contextlib.suppress(OSError):
                self.ep.unregister(c.fd)

    def _scan(self, c: _Conn, data: bytes) -> None:
        assert c.marker is not None
        data = c.tail + data
        i = data.find(c.marker)
        if i < 0:
            c.tail = data[-(len(c.marker) - 1) :]
            return
        c.marker = None
        c.tail = b""
        # The marker's own line ends with the first newline at or after it: lines after it count.
        c.count = data.count(b"\n", i) - 1
        self.waiting -= 1

    def _read_latency(self, c: _Conn) -> None:
        try:
            data, anc, _flags, _addr = c.sock.recvmsg(1 << 16, 64)
        except BlockingIOError:
            return
        except OSError:
            data, anc = b"", []
        app = time.time_ns()
        if not data:
            self._dead(c)
            return
        kernel = app
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                kernel = sec * 1_000_000_000 + nsec
        lines = (c.ltail + data).split(b"\n")
        c.ltail = lines.pop()
        assert c.lat is not None and c.lat_app is not None
        before = c.count
        for line in lines:
            i = line.rfind(b"LAT")
            if i < 0:
                continue
            stamp = int(line[i + 3 :].rstrip(b"\r"))
            c.lat.append(kernel - stamp)
            c.lat_app.append(app - stamp)
            c.count += 1
        target = self.targets.get(c.fd)
        if target is not None and before < target <= c.count:
            self.remaining -= 1

    def wait_markers(self, conns: list[_Conn], marker: bytes, timeout: float, what: str) -> None:
        for c in conns:
            c.marker = marker
            c.tail = b""
        self.waiting = len(conns)
        deadline = time.monotonic() + timeout
        while self.waiting > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [c.nick for c in conns if c.marker is not None]
                raise TimeoutError(
                    f"{what}: {len(missing)} of {len(conns)} connections still waiting after "
                    f"{timeout:.0f} s (e.g. {missing[:5]}); connections lost: {self.lost_conns}"
                )
            self.pump(min(left, 0.5))

    def wait_targets(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.remaining > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.5))
        return True

    def settle(self, quiet: float, timeout: float) -> None:
        """Drain until nothing arrives for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.ep.poll(quiet):
                return
            self.pump(0)

    # -- setup

    def join_members(
        self, room: str, nicks: list[str], batch: int, stamps: bool, timeout: float
    ) -> list[_Conn]:
        """Connect, register and join ``nicks`` to ``room``, ``batch`` at a time."""
        out: list[_Conn] = []
        marker = ready_marker(self.proto)
        for i in range(0, len(nicks), batch):
            group = [self.connect(n, stamps) for n in nicks[i : i + batch]]
            for c in group:
                self.send(c, hello(self.proto, c.nick, room))
            self.wait_markers(group, marker, timeout, f"joining {room}")
            out += group
        return out

    def sync(self, tx: _Conn, rx: list[_Conn], room: str, tag: str, timeout: float) -> None:
        """Send a marker message to ``room`` and wait until every receiver has read it."""
        for c in rx:
            c.marker = f"SYNC{tag}".encode()
            c.tail = b""
        self.waiting = len(rx)
        self.send(tx, say(self.proto, room, f"SYNC{tag}"))
        deadline = time.monotonic() + timeout
        while self.waiting > 0:
            if time.monotonic() > deadline:
                missing = sum(1 for c in rx if c.marker is not None)
                raise TimeoutError(f"sync of {room}: {missing} receivers missed the marker")
            self.pump(0.5)


def _cpu(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _cpu_ticks(cpu: int | None) -> list[int] | None:
    """The /proc/stat counters of one CPU (user nice system idle iowait irq softirq steal)."""
    if cpu is None:
        return None
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                return [int(x) for x in line.split()[1:9]]
    return None


def load(spec: dict[str, Any]) -> dict[str, Any]:
    """Long-lived load generator: spec = {port, proto, server_pid, rooms: [[name, members]],
    batch, cmd (a duplex pipe end)}. Sends ("ready", info) when set up, then answers every
    (command, args) on the pipe with ("ok", result) or ("error", text) until ("stop", {})."""
    import traceback

    import psutil  # type: ignore[import-untyped]

    raise_nofile()
    cmd = spec["cmd"]
    proto = spec["proto"]
    server = psutil.Process(int(spec["server_pid"]))
    lg = _Load(int(spec["port"]), proto)
    rooms: dict[str, tuple[_Conn, list[_Conn]]] = {}
    try:
        t0 = time.perf_counter()
        for name, members in spec["rooms"]:
            tx = lg.join_members(name, [f"s{name[1:]}"], 1, True, 60)[0]
            rx = lg.join_members(
                name,
                [f"{name}x{i}" if proto != "irc" else f"m{name[1:]}x{i}" for i in range(members)],
                int(spec["batch"]),
                True,
                120,
            )
            rooms[name] = (tx, rx)
        for name, (tx, rx) in rooms.items():
            lg.sync(tx, rx, name, "0", 60)
        lg.settle(0.2, 5)
        cmd.send(("ready", {"setup_s": time.perf_counter() - t0, "conns": len(lg.conns)}))
        while True:
            while not cmd.poll(0):
                lg.pump(0.05)  # keep reading whatever trickles in
            what, args = cmd.recv()
            if what == "stop":
                cmd.send(("ok", {}))
                break
            try:
                tx, rx = rooms[args["room"]]
                if what == "burst":
                    result = _burst(lg, server, tx, rx, args)
                elif what == "latency":
                    result = _latency(lg, server, tx, rx, args)
                else:
                    raise ValueError(f"unknown command {what!r}")
            except Exception:
                cmd.send(("error", traceback.format_exc()))
            else:
                cmd.send(("ok", result))
    finally:
        lg.close()
    return {"lost_conns": lg.lost_conns}


def _burst(
    lg: _Load, server: Any, tx: _Conn, rx: list[_Conn], args: dict[str, Any]
) -> dict[str, Any]:
    k = int(args["k"])
    payload = say(lg.proto, args["room"], BURST_TEXT) * k
    timeout = float(args.get("timeout", 60))

    def one() -> float:
        lg.targets = {c.fd: c.count + k for c in rx}
        lg.remaining = len(rx)
        lg.mode = "count"
        t = time.perf_counter()
        lg.send(tx, payload)
        if not lg.wait_targets(timeout):
            short = sum(1 for c in rx if c.count < lg.targets[c.fd])
            raise TimeoutError(f"burst: {short} of {len(rx)} receivers short after {timeout} s")
        return time.perf_counter() - t

    try:
        for _ in range(int(args.get("warm", 1))):
            one()
        walls = []
        load0 = time.process_time()
        w0 = time.perf_counter()
        c0 = _cpu(server)
        n = 0
        cpu = 0.0
        while True:
            walls.append(one())
            n += 1
            cpu = _cpu(server) - c0
            wall = time.perf_counter() - w0
            if n >= int(args["min_bursts"]) and cpu >= float(args["min_cpu"]):
                break
            if n >= int(args["max_bursts"]) or wall > float(args["max_wall"]):
                break
        wall = time.perf_counter() - w0
        load_cpu = time.process_time() - load0
    finally:
        lg.mode = "drain"
        lg.targets = {}
    return {
        "bursts": n,
        "k": k,
        "receivers": len(rx),
        "deliveries": n * k * len(rx),
        "cpu_s": cpu,
        "wall_s": wall,
        "burst_ms": sorted(w * 1e3 for w in walls),
        "load_cpu_s": load_cpu,
        "lost_conns": lg.lost_conns,
    }


def _latency(
    lg: _Load, server: Any, tx: _Conn, rx: list[_Conn], args: dict[str, Any]
) -> dict[str, Any]:
    rate = float(args["rate"])
    count = max(1, int(rate * float(args["seconds"])))
    interval = 1.0 / rate
    for c in rx:
        c.lat = array("q")
        c.lat_app = array("q")
        c.ltail = b""
    lg.targets = {c.fd: c.count + count for c in rx}
    lg.remaining = len(rx)
    lg.mode = "latency"
    room = args["room"]
    try:
        load0 = time.process_time()
        c0 = _cpu(server)
        ticks0 = _cpu_ticks(args.get("cpu"))
        start = time.monotonic()
        next_at = start
        sent = 0
        while sent < count:
            now = time.monotonic()
            if now >= next_at:
                stamp = time.time_ns()
                tx.sock.send(say(lg.proto, room, f"LAT{stamp}"))
                sent += 1
                next_at += interval
                continue
            lg.pump(next_at - now)
        complete = lg.wait_targets(10.0)
        wall = time.monotonic() - start
        cpu = _cpu(server) - c0
        ticks1 = _cpu_ticks(args.get("cpu"))
        load_cpu = time.process_time() - load0
    finally:
        lg.mode = "drain"
        lg.targets = {}
    busy = softirq = float("nan")
    if ticks0 and ticks1:
        d = [b - a for a, b in zip(ticks0, ticks1, strict=True)]
        if sum(d) > 0:
            busy = (sum(d) - d[3] - d[4]) / sum(d)
            softirq = d[6] / sum(d)
    lat: list[int] = []
    app: list[int] = []
    missing = 0
    for c in rx:
        assert c.lat is not None and c.lat_app is not None
        lat.extend(c.lat)
        app.extend(c.lat_app)
        missing += max(0, count - len(c.lat))
        c.lat = c.lat_app = None
    lat.sort()
    app.sort()

    def pct(vals: list[int], q: float) -> float:
        if not vals:
            return float("nan")
        return vals[min(len(vals) - 1, round((len(vals) - 1) * q / 100.0))] / 1e6

    return {
        "sent": count,
        "receivers": len(rx),
        "received": len(lat),
        "missing": missing,
        "complete": complete,
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "p999_ms": pct(lat, 99.9),
        "max_ms": lat[-1] / 1e6 if lat else float("nan"),
        "app_p50_ms": pct(app, 50),
        "app_p99_ms": pct(app, 99),
        "wall_s": wall,
        "server_cpu_s": cpu,
        "cpu_busy": busy,
        "cpu_softirq": softirq,
        "load_cpu_s": load_cpu,
        "lost_conns": lg.lost_conns,
    }


def idle_load(spec: dict[str, Any]) -> dict[str, Any]:
    """N idle members: spec = {port, proto, n, room_size (members per room; rooms idle0, idle1,
    ...), batch, cmd}. Sends ("ready", info) once every member has joined and the traffic of
    the joins has died down, then holds the connections until ("close", {})."""
    raise_nofile()
    cmd = spec["cmd"]
    proto = spec["proto"]
    n = int(spec["n"])
    size = int(spec["room_size"]) or n
    lg = _Load(int(spec["port"]), proto)
    try:
        t0 = time.perf_counter()
        for r in range(0, n, size):
            room = f"idle{r // size}"
            nicks = [f"i{j}" for j in range(r, min(n, r + size))]
            lg.join_members(room, nicks, int(spec["batch"]), False, 300)
        setup = time.perf_counter() - t0
        lg.settle(0.5, 120)
        cmd.send(("ready", {"setup_s": setup, "conns": len(lg.conns), "lost": lg.lost_conns}))
        while not cmd.poll(0):
            lg.pump(0.1)
        cmd.recv()
        lost = lg.lost_conns
    finally:
        lg.close()
    cmd.send(("ok", {}))
    return {"setup_s": setup, "lost_conns": lost}


if __name__ == "__main__":  # pragma: no cover - run a server by hand: python -m bench.chat_workers
    which = sys.argv[1] if len(sys.argv) > 1 else "plain"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 10010
    fn = serve_plain if which == "plain" else serve_ours
    print(
        fn(
            {
                "port": port,
                "front": "line",
                "store": "memory",
                "rooms": ["main"],
                "max_clients": 20000,
                "db": ":memory:",
            }
        )
    )
