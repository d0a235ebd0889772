"""What runs inside the child processes of the ``transport`` benchmarks.

Kept import-light at module level (children are started with ``spawn`` and import this afresh);
numpy, zmq, starway and isthmus.transport are imported inside the functions, after
:func:`bench._child.child_entry` has applied the child's environment (``UCX_TLS``, ...).

Every contender runs as two processes: a **server** (the receiver of the one-way sections and
the echoing side of the ping-pong) and a **client** (the sender and pinger). The server tells the
client where to connect through ``spec["addr_q"]`` (a multiprocessing queue); results come back
through the harness's result pipe, never through stdout: each worker points its file descriptor 1
at ``/dev/null`` first, because Starway prints "Connected!" / "Server closed!" there.

Sections (``spec["sections"]``, run in that order over one connection):

* ``large``: one message of ``size`` bytes at a time. For each transfer the server posts its
  receive into a preallocated, pre-faulted buffer and then sends a tiny READY; the client waits
  for READY, stamps ``t0 = perf_counter_ns()`` and sends; the server stamps ``t1`` as soon as its
  receive completes. ``t1 - t0`` (CLOCK_MONOTONIC, the same clock in both processes) is the
  transfer time: from the start of the send to the data being in the receiver's buffer.
* ``msgs``: ``count`` messages of ``size`` bytes with ``window`` messages in flight. The server
  keeps ``window`` receives posted (reposting each buffer as soon as its message has arrived),
  then sends READY; the client stamps ``t0`` and keeps ``window`` sends outstanding (it awaits
  the oldest before issuing a new one); the server stamps ``t_end`` when the last message has
  arrived. Stream transports (asyncio sockets, zmq) have no posted receives: the kernel socket
  buffer / zmq's queue is their window, and they just send and receive in order.
* ``latency``: an 8-byte ping-pong; the client records each round trip.

CPU: each side reads ``time.process_time_ns()`` (user + system CPU of every thread of the
process, CLOCK_PROCESS_CPUTIME_ID: this includes Starway's busy-polling thread) and
``perf_counter_ns()`` at the start and end of its measured window; the parent sums both sides.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import os
import socket
import struct
import time
from array import array
from typing import Any

now = time.perf_counter_ns
cpu = time.process_time_ns

MASK = (1 << 64) - 1
TAG_READY = 0x1
TAG_BYE = 0x2
TAG_DATA = 0x10
TAG_MSG = 0x11
TAG_PING = 0x20
TAG_PONG = 0x21

#: Header of the plain-socket contenders: tag and payload length (what a user would frame with).
HDR = struct.Struct("<QQ")


def _quiet_stdout() -> None:
    """Send this process's stdout (fd 1, so C-level prints too) to /dev/null."""
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.close(fd)


def _buffers(np: Any, size: int, n: int, fill: int | None = None) -> list[Any]:
    """``n`` page-faulted uint8 arrays of ``size`` bytes (so no page fault is timed)."""
    out = []
    for i in range(n):
        a = np.empty(size, dtype=np.uint8)
        a.fill((fill if fill is not None else i) & 0xFF)
        out.append(a)
    return out


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _window(stamp: tuple[int, int]) -> dict[str, int]:
    """CPU and wall ns since ``stamp`` (a ``(cpu(), now())`` pair)."""
    c1, w1 = cpu(), now()
    return {"cpu_ns": c1 - stamp[0], "wall_ns": w1 - stamp[1]}


def _warm_count(sec: dict[str, Any]) -> int:
    """Messages in a warm-up pass of a ``msgs`` section (also sizes the measured passes)."""
    return min(sec["count"], max(4 * sec["window"], 32))


def _adapt(sec: dict[str, Any], elapsed_ns: int, done: int) -> int:
    """Messages per measured pass: enough for about ``sec["target_s"]`` seconds at the rate of
    the warm-up pass, at most ``sec["count"]``, so that a slow contender does not take minutes."""
    per = max(elapsed_ns, 1) / max(done, 1)
    want = int(sec["target_s"] * 1e9 / per)
    return max(min(sec["count"], 4 * sec["window"], 32), min(sec["count"], want))


def _pass_count(sec: dict[str, Any], p: int, measured: int) -> int:
    """Messages in pass ``p`` of a ``msgs`` section (warm-up passes first)."""
    return _warm_count(sec) if p < sec["warm_passes"] else measured


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def _addr_get(spec: dict[str, Any]) -> Any:
    return spec["addr_q"].get(timeout=spec.get("connect_timeout", 60.0))


# --- tagged transports: isthmus.transport and Starway (the same async API) ------------------------


class _Tagged:
    """One side of an isthmus.transport or Starway connection, as ``send(buf, tag) -> future`` and
    ``recv(buf, tag) -> future`` (both return at once; the futures complete later)."""

    def __init__(self, spec: dict[str, Any], role: str) -> None:
        self.spec, self.role, self.lib = spec, role, spec["lib"]
        if self.lib == "isthmus":
            from isthmus import transport

            backend = spec.get("backend", "auto")
            self.obj = (transport.Server if role == "server" else transport.Client)(backend=backend)
        elif self.lib == "starway":
            import starway

            self.obj = starway.Server() if role == "server" else starway.Client()
        else:  # pragma: no cover
            raise ValueError(self.lib)
        self.ep: Any = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        host = self.spec.get("host", "127.0.0.1")
        if self.role == "server":
            accepted: asyncio.Queue[Any] = asyncio.Queue()
            self.obj.set_accept_cb(lambda ep: loop.call_soon_threadsafe(accepted.put_nowait, ep))
            if self.lib == "starway":
                port = _free_port(host)
                self.obj.listen(host, port)
            else:
                self.obj.listen(host, 0)
                port = self.obj.port
            self.spec["addr_q"].put((host, port))
            self.ep = await asyncio.wait_for(accepted.get(), 60.0)
            srv, ep = self.obj, self.ep
            self.send = lambda buf, tag: srv.asend(ep, buf, tag)
            self.recv = lambda buf, tag: srv.arecv(buf, tag, MASK)
        else:
            host, port = await loop.run_in_executor(None, _addr_get, self.spec)
            await self.obj.aconnect(host, port)
            cli = self.obj
            self.send = lambda buf, tag: cli.asend(buf, tag)
            self.recv = lambda buf, tag: cli.arecv(buf, tag, MASK)
        # If a library hands back coroutines rather than futures, start them at once, or a
        # window of outstanding operations would silently become one at a time.
        if inspect.iscoroutinefunction(self.obj.asend) or inspect.iscoroutinefunction(
            self.obj.arecv
        ):
            s, r = self.send, self.recv
            self.send = lambda buf, tag: asyncio.ensure_future(s(buf, tag))
            self.recv = lambda buf, tag: asyncio.ensure_future(r(buf, tag))

    async def close(self) -> None:
        import numpy as np

        bye = np.zeros(8, dtype=np.uint8)
        if self.role == "client":
            fut = self.recv(bye, TAG_BYE)
            await self.send(bye, TAG_BYE)
            await fut
            await self.obj.aclose()
        else:
            await self.recv(bye, TAG_BYE)
            await self.send(bye, TAG_BYE)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.obj.aflush_ep(self.ep), 5.0)
            await asyncio.sleep(0.05)  # let the client close first
            await self.obj.aclose()


async def _tagged_server_sections(t: _Tagged, sections: list[dict[str, Any]]) -> list[Any]:
    import numpy as np

    send, recv = t.send, t.recv
    ready = np.ones(8, dtype=np.uint8)
    out: list[Any] = []
    for sec in sections:
        kind = sec["kind"]
        if kind == "large":
            (dst,) = _buffers(np, sec["size"], 1)
            t1 = []
            stamp = (0, 0)
            for i in range(sec["warm"] + sec["n"]):
                if i == sec["warm"]:
                    stamp = (cpu(), now())
                fut = recv(dst, TAG_DATA)
                await send(ready, TAG_READY)
                _, length = await fut
                t1.append(now())
                if length != sec["size"]:
                    raise RuntimeError(f"received {length} bytes, expected {sec['size']}")
            res = _window(stamp)
            res["t1"] = t1[sec["warm"] :]
            res["check"] = int(dst[-1])
            del dst
            out.append(res)
        elif kind == "msgs":
            size, w, measured = sec["size"], sec["window"], sec["count"]
            bufs = _buffers(np, size, w)
            passes = []
            for p in range(sec["warm_passes"] + sec["passes"]):
                count = _pass_count(sec, p, measured)
                pending = collections.deque(recv(bufs[i], TAG_MSG) for i in range(min(w, count)))
                stamp = (cpu(), now())
                count_msg = np.frombuffer(_u64(count), dtype=np.uint8).copy()
                await send(count_msg, TAG_READY)  # READY carries the pass's message count
                nbytes = 0
                for i in range(count):
                    nbytes += (await pending.popleft())[1]
                    if i + w < count:
                        pending.append(recv(bufs[i % w], TAG_MSG))
                t_end = now()
                res = _window(stamp)
                res.update(t_end=t_end, bytes=nbytes, count=count)
                passes.append(res)
                if p == sec["warm_passes"] - 1:
                    measured = _adapt(sec, t_end - stamp[1], count)
            out.append({"passes": passes[sec["warm_passes"] :]})
        elif kind == "latency":
            a, b = np.zeros(8, dtype=np.uint8), np.zeros(8, dtype=np.uint8)
            total = sec["warm"] + sec["n"]
            fut = recv(a, TAG_PING)
            stamp = (cpu(), now())
            await send(ready, TAG_READY)
            for i in range(total):
                await fut
                if i + 1 < total:
                    fut = recv(b, TAG_PING)
                await send(a, TAG_PONG)
                a, b = b, a
            out.append(_window(stamp))
        else:  # pragma: no cover
            raise ValueError(kind)
    return out


async def _tagged_client_sections(t: _Tagged, sections: list[dict[str, Any]]) -> list[Any]:
    import numpy as np

    send, recv = t.send, t.recv
    ready = np.zeros(8, dtype=np.uint8)
    out: list[Any] = []
    for sec in sections:
        kind = sec["kind"]
        if kind == "large":
            (src,) = _buffers(np, sec["size"], 1, fill=0x5A)
            t0 = []
            stamp = (0, 0)
            for i in range(sec["warm"] + sec["n"]):
                if i == sec["warm"]:
                    stamp = (cpu(), now())
                await recv(ready, TAG_READY)
                t0.append(now())
                await send(src, TAG_DATA)
            res = _window(stamp)
            res["t0"] = t0[sec["warm"] :]
            del src
            out.append(res)
        elif kind == "msgs":
            size, w = sec["size"], sec["window"]
            srcs = _buffers(np, size, w)
            passes = []
            for _ in range(sec["warm_passes"] + sec["passes"]):
                await recv(ready, TAG_READY)
                stamp = (cpu(), now())
                count = int.from_bytes(ready.tobytes(), "little")
                pending: collections.deque[Any] = collections.deque()
                for i in range(count):
                    if len(pending) >= w:
                        await pending.popleft()
                    pending.append(send(srcs[i % w], TAG_MSG))
                while pending:
                    await pending.popleft()
                res = _window(stamp)
                res["t0"] = stamp[1]
                passes.append(res)
            out.append({"passes": passes[sec["warm_passes"] :]})
        elif kind == "latency":
            ping, pong = np.ones(8, dtype=np.uint8), np.zeros(8, dtype=np.uint8)
            warm, n = sec["warm"], sec["n"]
            rtt = array("q", bytes(8 * n))
            await recv(ready, TAG_READY)
            stamp = (cpu(), now())
            for i in range(warm + n):
                t = now()
                fut = recv(pong, TAG_PONG)
                await send(ping, TAG_PING)
                await fut
                if i >= warm:
                    rtt[i - warm] = now() - t
            res = _window(stamp)
            res["rtt_ns"] = rtt.tobytes()
            out.append(res)
        else:  # pragma: no cover
            raise ValueError(kind)
    return out


def tagged_server(spec: dict[str, Any]) -> dict[str, Any]:
    _quiet_stdout()

    async def main() -> list[Any]:
        t = _Tagged(spec, "server")
        await t.open()
        out = await _tagged_server_sections(t, spec["sections"])
        await t.close()
        return out

    return {"sections": asyncio.run(main()), "info": _info(spec)}


def tagged_client(spec: dict[str, Any]) -> dict[str, Any]:
    _quiet_stdout()

    info = _info(spec)

    async def main() -> list[Any]:
        t = _Tagged(spec, "client")
        await t.open()
        out = await _tagged_client_sections(t, spec["sections"])
        with contextlib.suppress(Exception):  # isthmus: which paths carried the traffic
            info["transports"] = [list(x) for x in t.obj.transports()]
        await t.close()
        return out

    return {"sections": asyncio.run(main()), "info": info}


def _info(spec: dict[str, Any]) -> dict[str, Any]:
    """What the child actually ran (library version, backend) for the results file."""
    info: dict[str, Any] = {"pid": os.getpid()}
    if spec.get("lib") == "isthmus":
        with contextlib.suppress(Exception):
            from isthmus import transport

            info["version"] = getattr(transport, "__version__", None)
    elif spec.get("lib") == "starway":
        with contextlib.suppress(Exception):
            import starway

            info["ucx"] = starway.check_sys_libs()
    return info


# --- plain asyncio over a Unix socket: loop.sock_recv_into / loop.sock_sendall ----------------------


async def _sock_recv_exact(loop: Any, sock: socket.socket, view: memoryview) -> None:
    pos, n = 0, len(view)
    while pos < n:
        k = await loop.sock_recv_into(sock, view[pos:])
        if not k:
            raise ConnectionError("peer closed")
        pos += k


async def _aio_unix_open(spec: dict[str, Any], role: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    path = spec["path"]
    if role == "server":
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.setblocking(False)
        lsock.bind(path)
        lsock.listen(1)
        spec["addr_q"].put(path)
        try:
            sock, _ = await asyncio.wait_for(loop.sock_accept(lsock), 60.0)
        finally:
            lsock.close()
    else:
        path = await loop.run_in_executor(None, _addr_get, spec)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, path)
    sock.setblocking(False)
    return sock


async def _aio_unix_server(spec: dict[str, Any]) -> list[Any]:
    import numpy as np

    loop = asyncio.get_running_loop()
    sock = await _aio_unix_open(spec, "server")
    sendall = loop.sock_sendall
    ready = HDR.pack(TAG_READY, 0)
    hdr = bytearray(HDR.size)
    hview = memoryview(hdr)
    unpack = HDR.unpack_from

    async def recv_msg(view: memoryview) -> int:
        await _sock_recv_exact(loop, sock, hview)
        _tag, n = unpack(hdr)
        await _sock_recv_exact(loop, sock, view[:n])
        return int(n)

    out: list[Any] = []
    try:
        for sec in spec["sections"]:
            kind = sec["kind"]
            if kind == "large":
                (dst,) = _buffers(np, sec["size"], 1)
                view = memoryview(dst)
                t1 = []
                stamp = (0, 0)
                for i in range(sec["warm"] + sec["n"]):
                    if i == sec["warm"]:
                        stamp = (cpu(), now())
                    await sendall(sock, ready)
                    length = await recv_msg(view)
                    t1.append(now())
                    if length != sec["size"]:
                        raise RuntimeError(f"received {length} bytes, expected {sec['size']}")
                res = _window(stamp)
                res["t1"] = t1[sec["warm"] :]
                del view, dst
                out.append(res)
            elif kind == "msgs":
                size, w, measured = sec["size"], sec["window"], sec["count"]
                views = [memoryview(b) for b in _buffers(np, size, w)]
                passes = []
                for p in range(sec["warm_passes"] + sec["passes"]):
                    count = _pass_count(sec, p, measured)
                    stamp = (cpu(), now())
                    await sendall(sock, HDR.pack(TAG_READY, count))
                    nbytes = 0
                    for i in range(count):
                        nbytes += await recv_msg(views[i % w])
                    t_end = now()
                    res = _window(stamp)
                    res.update(t_end=t_end, bytes=nbytes, count=count)
                    passes.append(res)
                    if p == sec["warm_passes"] - 1:
                        measured = _adapt(sec, t_end - stamp[1], count)
                out.append({"passes": passes[sec["warm_passes"] :]})
            elif kind == "latency":
                buf = memoryview(bytearray(8))
                stamp = (cpu(), now())
                await sendall(sock, ready)
                for _ in range(sec["warm"] + sec["n"]):
                    await recv_msg(buf)
                    await sendall(sock, HDR.pack(TAG_PONG, 8) + buf)
                out.append(_window(stamp))
            else:  # pragma: no cover
                raise ValueError(kind)
        await recv_msg(memoryview(bytearray(8)))  # bye
        await sendall(sock, HDR.pack(TAG_BYE, 0))
    finally:
        sock.close()
    return out


async def _aio_unix_client(spec: dict[str, Any]) -> list[Any]:
    import numpy as np

    loop = asyncio.get_running_loop()
    sock = await _aio_unix_open(spec, "client")
    sendall = loop.sock_sendall
    hdr = bytearray(HDR.size)
    hview = memoryview(hdr)
    pack = HDR.pack

    async def wait_ready() -> int:
        await _sock_recv_exact(loop, sock, hview)
        return int(HDR.unpack(hdr)[1])

    out: list[Any] = []
    try:
        for sec in spec["sections"]:
            kind = sec["kind"]
            if kind == "large":
                size = sec["size"]
                (src,) = _buffers(np, size, 1, fill=0x5A)
                t0 = []
                stamp = (0, 0)
                for i in range(sec["warm"] + sec["n"]):
                    if i == sec["warm"]:
                        stamp = (cpu(), now())
                    await wait_ready()
                    t0.append(now())
                    await sendall(sock, pack(TAG_DATA, size))
                    await sendall(sock, src)
                res = _window(stamp)
                res["t0"] = t0[sec["warm"] :]
                del src
                out.append(res)
            elif kind == "msgs":
                size, w = sec["size"], sec["window"]
                srcs = _buffers(np, size, w)
                head = pack(TAG_MSG, size)
                passes = []
                for _ in range(sec["warm_passes"] + sec["passes"]):
                    count = await wait_ready()
                    stamp = (cpu(), now())
                    for i in range(count):
                        await sendall(sock, head)
                        await sendall(sock, srcs[i % w])
                    res = _window(stamp)
                    res["t0"] = stamp[1]
                    passes.append(res)
                out.append({"passes": passes[sec["warm_passes"] :]})
            elif kind == "latency":
                warm, n = sec["warm"], sec["n"]
                rtt = array("q", bytes(8 * n))
                ping = pack(TAG_PING, 8) + b"\x01" * 8
                reply = memoryview(bytearray(HDR.size + 8))
                await wait_ready()
                stamp = (cpu(), now())
                for i in range(warm + n):
                    t = now()
                    await sendall(sock, ping)
                    await _sock_recv_exact(loop, sock, reply)
                    if i >= warm:
                        rtt[i - warm] = now() - t
                res = _window(stamp)
                res["rtt_ns"] = rtt.tobytes()
                out.append(res)
            else:  # pragma: no cover
                raise ValueError(kind)
        await sendall(sock, pack(TAG_BYE, 8) + bytes(8))
        await wait_ready()  # the server's bye
    finally:
        sock.close()
    return out


def aio_unix_server(spec: dict[str, Any]) -> dict[str, Any]:
    _quiet_stdout()
    return {"sections": asyncio.run(_aio_unix_server(spec)), "info": {"pid": os.getpid()}}


def aio_unix_client(spec: dict[str, Any]) -> dict[str, Any]:
    _quiet_stdout()
    return {"sections": asyncio.run(_aio_unix_client(spec)), "info": {"pid": os.getpid()}}


# --- plain asyncio streams over TCP: reader.readexactly / writer.write + drain ---------------------


async def _aio_tcp_server(spec: dict[str, Any]) -> list[Any]:
    conn: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conn.set_result((r, w))

    server = await asyncio.start_server(on_client, spec.get("host", "127.0.0.1"), 0)
    host, port = server.sockets[0].getsockname()[:2]
    spec["addr_q"].put((host, port))
    reader, writer = await asyncio.wait_for(conn, 60.0)
    server.close()
    unpack = HDR.unpack
    out: list[Any] = []
    try:
        for sec in spec["sections"]:
            if sec["kind"] != "msgs":
                raise ValueError(f"asyncio streams run only 'msgs' sections, not {sec['kind']}")
            measured = sec["count"]
            passes = []
            for p in range(sec["warm_passes"] + sec["passes"]):
                count = _pass_count(sec, p, measured)
                stamp = (cpu(), now())
                writer.write(HDR.pack(TAG_READY, count))
                await writer.drain()
                nbytes = 0
                for _ in range(count):
                    _tag, n = unpack(await reader.readexactly(HDR.size))
                    # Kept until the next message replaces it, as a reading loop does: freeing
                    # it first lets malloc hand the memory back and fault it in again (2x slower).
                    data = await reader.readexactly(n)
                    nbytes += len(data)
                t_end = now()
                res = _window(stamp)
                res.update(t_end=t_end, bytes=nbytes, count=count)
                passes.append(res)
                if p == sec["warm_passes"] - 1:
                    measured = _adapt(sec, t_end - stamp[1], count)
            out.append({"passes": passes[sec["warm_passes"] :]})
        await reader.readexactly(HDR.size + 8)  # bye
        writer.write(HDR.pack(TAG_BYE, 0))
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return out


async def _aio_tcp_client(spec: dict[str, Any]) -> list[Any]:
    import numpy as np

    loop = asyncio.get_running_loop()
    host, port = await loop.run_in_executor(None, _addr_get, spec)
    reader, writer = await asyncio.open_connection(host, port)
    out: list[Any] = []
    try:
        for sec in spec["sections"]:
            size, w = sec["size"], sec["window"]
            srcs = [memoryview(b) for b in _buffers(np, size, w)]
            head = HDR.pack(TAG_MSG, size)
            passes = []
            for _ in range(sec["warm_passes"] + sec["passes"]):
                count = int(HDR.unpack(await reader.readexactly(HDR.size))[1])
                stamp = (cpu(), now())
                for i in range(count):
                    writer.write(head)
                    writer.write(srcs[i % w])
                    await writer.drain()
                res = _window(stamp)
                res["t0"] = stamp[1]
                passes.append(res)
            out.append({"passes": passes[sec["warm_passes"] :]})
        writer.write(HDR.pack(TAG_BYE, 8) + bytes(8))
        await writer.drain()
        await reader.readexactly(HDR.size)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return out


def aio_tcp_server(spec: dict[str, Any]) -> dict[str, Any]:
    _quiet_stdout()
    return {"sections": asyncio.run(_aio_tcp_server(spec)), "info": {"pid": os.getpid()}}


def aio_tcp_client(spec: dict[str, Any]) -> dict[str, Any]:
    _quiet_stdout()
    return {"sections": asyncio.run(_aio_tcp_client(spec)), "info": {"pid": os.getpid()}}


# --- pyzmq PAIR over ipc:// (blocking sockets, zero-copy sends) -------------------------------------


def _zmq_socket(spec: dict[str, Any], role: str) -> tuple[Any, Any]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 0
    sock.rcvtimeo = int(spec.get("io_timeout", 60.0) * 1000)
    if role == "server":
        sock.bind(spec["addr"])
        spec["addr_q"].put(spec["addr"])
    else:
        sock.connect(_addr_get(spec))
    return ctx, sock


def zmq_server(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import zmq

    _quiet_stdout()
    ctx, sock = _zmq_socket(spec, "server")
    send, recv, recv_into = sock.send, sock.recv, sock.recv_into
    ready = b"R"
    out: list[Any] = []
    try:
        for sec in spec["sections"]:
            kind = sec["kind"]
            if kind == "large":
                t1 = []
                stamp = (0, 0)
                for i in range(sec["warm"] + sec["n"]):
                    if i == sec["warm"]:
                        stamp = (cpu(), now())
                    send(ready)
                    frame = recv(copy=False)
                    t1.append(now())
                    if len(frame) != sec["size"]:
                        raise RuntimeError(f"received {len(frame)} bytes, expected {sec['size']}")
                    del frame
                res = _window(stamp)
                res["t1"] = t1[sec["warm"] :]
                out.append(res)
            elif kind == "msgs":
                measured = sec["count"]
                passes = []
                for p in range(sec["warm_passes"] + sec["passes"]):
                    count = _pass_count(sec, p, measured)
                    stamp = (cpu(), now())
                    send(_u64(count))
                    nbytes = 0
                    for _ in range(count):
                        frame = recv(copy=False)  # dropped when the next one replaces it
                        nbytes += len(frame)
                    t_end = now()
                    res = _window(stamp)
                    res.update(t_end=t_end, bytes=nbytes, count=count)
                    passes.append(res)
                    if p == sec["warm_passes"] - 1:
                        measured = _adapt(sec, t_end - stamp[1], count)
                out.append({"passes": passes[sec["warm_passes"] :]})
            elif kind == "latency":
                buf = np.zeros(8, dtype=np.uint8)
                stamp = (cpu(), now())
                send(ready)
                for _ in range(sec["warm"] + sec["n"]):
                    recv_into(buf)
                    send(buf)
                out.append(_window(stamp))
            else:  # pragma: no cover
                raise ValueError(kind)
        recv()  # bye
        send(b"B")
    finally:
        sock.close(linger=0)
        ctx.term()
    return {"sections": out, "info": {"pid": os.getpid(), "zmq": zmq.zmq_version()}}


def zmq_client(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import zmq

    _quiet_stdout()
    ctx, sock = _zmq_socket(spec, "client")
    send, recv, recv_into = sock.send, sock.recv, sock.recv_into
    out: list[Any] = []
    try:
        for sec in spec["sections"]:
            kind = sec["kind"]
            if kind == "large":
                (src,) = _buffers(np, sec["size"], 1, fill=0x5A)
                t0 = []
                stamp = (0, 0)
                for i in range(sec["warm"] + sec["n"]):
                    if i == sec["warm"]:
                        stamp = (cpu(), now())
                    recv()
                    t0.append(now())
                    send(src, copy=False)
                res = _window(stamp)
                res["t0"] = t0[sec["warm"] :]
                out.append(res)
            elif kind == "msgs":
                size, w = sec["size"], sec["window"]
                srcs = _buffers(np, size, w)
                passes = []
                for _ in range(sec["warm_passes"] + sec["passes"]):
                    count = int.from_bytes(recv(), "little")
                    stamp = (cpu(), now())
                    for i in range(count):
                        send(srcs[i % w], copy=False)
                    res = _window(stamp)
                    res["t0"] = stamp[1]
                    passes.append(res)
                out.append({"passes": passes[sec["warm_passes"] :]})
            elif kind == "latency":
                warm, n = sec["warm"], sec["n"]
                rtt = array("q", bytes(8 * n))
                ping, pong = np.ones(8, dtype=np.uint8), np.zeros(8, dtype=np.uint8)
                recv()
                stamp = (cpu(), now())
                for i in range(warm + n):
                    t = now()
                    send(ping)
                    recv_into(pong)
                    if i >= warm:
                        rtt[i - warm] = now() - t
                res = _window(stamp)
                res["rtt_ns"] = rtt.tobytes()
                out.append(res)
            else:  # pragma: no cover
                raise ValueError(kind)
        send(b"bye")
        recv()
    finally:
        sock.close(linger=0)
        ctx.term()
    return {"sections": out, "info": {"pid": os.getpid(), "zmq": zmq.zmq_version()}}


# --- single-core memcpy baseline ---------------------------------------------------------------------


def memcpy_bench(spec: dict[str, Any]) -> dict[str, Any]:
    """``numpy.copyto`` of ``size`` bytes between two pre-faulted arrays, ``n`` times."""
    import numpy as np

    size = spec["size"]
    (src,) = _buffers(np, size, 1, fill=0x5A)
    (dst,) = _buffers(np, size, 1)
    secs, cpus = [], []
    for i in range(spec["warm"] + spec["n"]):
        c0, t0 = cpu(), now()
        np.copyto(dst, src)
        t1, c1 = now(), cpu()
        if i >= spec["warm"]:
            secs.append((t1 - t0) / 1e9)
            cpus.append((c1 - c0) / 1e9)
    return {"seconds": secs, "cpu_seconds": cpus}
