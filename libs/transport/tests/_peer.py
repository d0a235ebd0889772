"""The other process of the cross-process tests: ``python _peer.py <scenario> <args...>``.

It reports on stdout, one line per event (``port 12345``, ``ready``, ``mid``, ...), and takes
commands on stdin; closing its stdin asks it to finish.  Everything here is public API.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import numpy as np

from _support import RNDV, payload, wake
from isthmus.transport import Client, Server, ServerEndpoint, TransportClosedError

ANY = (1 << 64) - 1


def say(*words: object) -> None:
    print(*words, flush=True)


async def stdin_closed() -> None:
    """Wait (without blocking the loop) until the parent closes our stdin."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    while True:
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, wake, fut)
        try:
            await fut
        finally:
            loop.remove_reader(fd)
        try:
            if not os.read(fd, 4096):
                return
        except BlockingIOError:
            pass


async def connected_pair(backend: str) -> tuple[Server, Client, ServerEndpoint]:
    loop = asyncio.get_running_loop()
    server = Server(backend=backend)
    server.listen("127.0.0.1", 0)
    accepted: asyncio.Future[ServerEndpoint] = loop.create_future()
    server.set_accept_cb(lambda ep: None if accepted.done() else accepted.set_result(ep))
    client = Client(backend=backend)
    await client.aconnect("127.0.0.1", server.port)
    return server, client, await accepted


async def serve_send(backend: str, size: str, tag: str) -> None:
    """Listen; send ``size`` zero bytes to the first client; stay until told to stop."""
    server = Server(backend=backend)
    server.listen("127.0.0.1", 0)
    data = np.zeros(int(size), dtype=np.uint8)
    sends: list[asyncio.Future[None]] = []
    server.set_accept_cb(lambda ep: sends.append(server.asend(ep, data, int(tag))))
    say("port", server.port)
    await stdin_closed()
    await server.aclose(drain=False)


async def serve_echo(backend: str) -> None:
    """Listen; send every message back to its sender with its tag, until stdin closes."""
    server = Server(backend=backend)
    server.listen("127.0.0.1", 0)
    say("port", server.port)

    async def echo() -> None:
        while True:
            msg = await server.arecv_message(0, 0)
            assert msg.endpoint is not None
            await server.asend(msg.endpoint, msg.data, msg.tag)
            msg.release()

    task = asyncio.ensure_future(echo())
    await stdin_closed()
    task.cancel()
    await server.aclose()


async def connect_stall_recv(backend: str, port: str, size: str, tag: str) -> None:
    """Post a receive; as soon as its first bytes land, say ``mid`` and block the loop."""
    client = Client(backend=backend)
    await client.aconnect("127.0.0.1", int(port))
    buf = np.full(int(size), 0xFF, dtype=np.uint8)
    fut = client.arecv(buf, int(tag), ANY)
    loop = asyncio.get_running_loop()

    def poll() -> None:
        if buf[0] != 0xFF:
            say("mid")
            time.sleep(600)  # the loop is stuck mid-transfer until we are killed
        elif not fut.done():
            loop.call_soon(poll)

    loop.call_soon(poll)
    say("posted")
    await fut
    say("completed")  # not expected: the parent kills us first


async def connect_send_close(backend: str, port: str, size: str, tag: str, seed: str) -> None:
    """Send one message then aclose() at once: the close must wait until the peer took it."""
    client = Client(backend=backend)
    await client.aconnect("127.0.0.1", int(port))
    data = payload(int(size), int(seed))
    fut = client.asend(data, int(tag))
    say("sent")
    await client.aclose()
    say("closed", "ok" if fut.done() and fut.exception() is None else repr(fut))


async def connect_stall(backend: str, port: str) -> None:
    """Connect, then block the loop on stdin (nothing is read from the socket any more) and
    exit abruptly without closing: unread data makes the kernel reset a TCP connection."""
    client = Client(backend=backend)
    await client.aconnect("127.0.0.1", int(port))
    say("ready")
    sys.stdin.readline()
    os._exit(0)


async def connect_stall_then_recv(backend: str, port: str, size: str) -> None:
    """Connect; block the loop until told "go"; then post a receive for tag 1, ping the parent
    (tag 2), wait for its pong (tag 3: everything sent before it has been processed) and say
    what the receive got: ``got <sha256>`` or ``none``."""
    import hashlib

    client = Client(backend=backend)
    await client.aconnect("127.0.0.1", int(port))
    say("ready")
    sys.stdin.readline()
    buf = bytearray(int(size))
    recv = client.arecv(buf, 1, ANY)
    await client.asend(b"ping", 2)
    await client.arecv(bytearray(8), 3, ANY)
    if recv.done() and recv.exception() is None:
        _tag, n = recv.result()
        say("got", hashlib.sha256(buf[:n]).hexdigest())
    else:
        recv.cancel()
        say("none")
    await client.aclose()


async def idle(backends: str) -> None:
    """A connected pair per backend, a receive posted on each side, idle until stdin closes."""
    pairs = [await connected_pair(b) for b in backends.split(",")]
    recvs = []
    for server, client, _ep in pairs:
        recvs.append(client.arecv(bytearray(1 << 20), 1, ANY))
        recvs.append(server.arecv(bytearray(1 << 20), 2, ANY))
    say("ready")
    await stdin_closed()
    for server, client, _ep in pairs:
        await client.aclose()
        await server.aclose()
    for r in recvs:
        assert r.done() and isinstance(r.exception(), TransportClosedError), r
    say("done")


async def exit_pair(backend: str) -> None:
    """A connected pair that exchanged a message and has receives and a send outstanding."""
    server, client, ep = await connected_pair(backend)
    data = payload(RNDV + 1, 1)
    into = np.empty_like(data)
    await asyncio.gather(client.asend(data, 5), server.arecv(into, 5, ANY))
    client.arecv(bytearray(16), 6, ANY)
    server.arecv(bytearray(16), 7, ANY)
    server.asend(ep, data, 8)  # nobody receives it: a rendezvous left in flight
    say("ready")
    # return without aclose()


async def exit_client(backend: str, port: str) -> None:
    """Connected to the parent's Server, a receive and a large send outstanding; no aclose()."""
    client = Client(backend=backend)
    await client.aconnect("127.0.0.1", int(port))
    client.arecv(bytearray(16), 6, ANY)
    client.asend(payload(RNDV + 1, 2), 9)
    await asyncio.sleep(0)
    say("ready")


async def exit_sys_exit(backend: str) -> None:
    """sys.exit() inside the coroutine with operations outstanding."""
    _server, client, _ep = await connected_pair(backend)
    client.arecv(bytearray(16), 6, ANY)
    client.asend(payload(RNDV + 1, 3), 9)
    say("ready")
    sys.exit(0)


SCENARIOS = {
    "serve-send": serve_send,
    "serve-echo": serve_echo,
    "connect-stall-recv": connect_stall_recv,
    "connect-send-close": connect_send_close,
    "connect-stall": connect_stall,
    "connect-stall-then-recv": connect_stall_then_recv,
    "idle": idle,
    "exit-pair": exit_pair,
    "exit-client": exit_client,
    "exit-sys-exit": exit_sys_exit,
}


def main() -> None:
    name, *args = sys.argv[1:]
    coro = SCENARIOS[name](*args)
    if name == "exit-pair" and os.environ.get("PEER_NO_LOOP_CLOSE") == "1":
        # Run the loop by hand and never close it: the interpreter tears everything down.
        loop = asyncio.new_event_loop()
        loop.run_until_complete(coro)
        return
    asyncio.run(coro)


if __name__ == "__main__":
    main()
