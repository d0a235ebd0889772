"""The UCX backend (``isthmus.transport._ucx``): UcxServer / UcxClient on ucxx.

Skipped when ucxx is not importable, unless ISTHMUS_REQUIRE_UCX=1 (``nox -s ucx``), which turns
that into a failure.  Cross-process tests run this file as the other process:
``python test_ucx.py <scenario> <args...>`` (see ``_child_main`` at the bottom).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if __name__ != "__main__" and importlib.util.find_spec("ucxx") is None:
    if os.environ.get("ISTHMUS_REQUIRE_UCX") == "1":
        pytest.fail("ISTHMUS_REQUIRE_UCX=1 but ucxx cannot be imported", pytrace=False)
    pytest.skip(
        "ucxx is not installed (pip install 'isthmus-transport[ucx]')", allow_module_level=True
    )

from _support import payload, until
from isthmus.transport import (
    BACKENDS,
    Client,
    ConnectionLostError,
    Message,
    MessageTruncatedError,
    Server,
    ServerEndpoint,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
    _ucx,
)
from isthmus.transport._ucx import BackendUnavailableError, UcxClient, UcxServer

pytestmark = pytest.mark.ucx

ANY = (1 << 64) - 1
HERE = Path(__file__)
_ENV_AT_IMPORT = dict(os.environ)


def child_env() -> dict[str, str]:
    """The environment for children: without the UCX_* defaults ucxx wrote into os.environ
    when this process imported it (a child would take them for the user's own settings)."""
    env = dict(os.environ)
    for key in (
        "UCX_RNDV_THRESH",
        "UCX_MAX_RNDV_RAILS",
        "UCX_RNDV_FRAG_MEM_TYPE",
        "UCX_MEMTYPE_CACHE",
    ):
        if key not in _ENV_AT_IMPORT:
            env.pop(key, None)
    return env


def run(coro: Coroutine[Any, Any, Any], limit: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, limit))


@contextlib.asynccontextmanager
async def pair(**kw: Any) -> AsyncIterator[tuple[UcxServer, UcxClient, ServerEndpoint]]:
    """A listening UcxServer, a UcxClient connected to it, and the server's endpoint for it."""
    loop = asyncio.get_running_loop()
    server = UcxServer(**kw)
    server.listen("127.0.0.1", 0)
    accepted: asyncio.Future[ServerEndpoint] = loop.create_future()
    server.set_accept_cb(lambda ep: None if accepted.done() else accepted.set_result(ep))
    client = UcxClient(**kw)
    ok = False
    try:
        await client.aconnect("127.0.0.1", server.port)
        ep = await asyncio.wait_for(accepted, 10)
        yield server, client, ep
        ok = True
    finally:
        await client.aclose(drain=ok, timeout=10)
        await server.aclose(drain=ok, timeout=10)


def _cma_allowed() -> bool:
    """process_vm_readv between two processes of one user (no Yama restriction)."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope", encoding="ascii") as f:
            return f.read().strip() == "0"
    except OSError:
        return True


@pytest.fixture(scope="module", autouse=True)
def _ucx_warm() -> None:
    """Load ucxx and UCX once, before the per-test leak baseline (their globals stay loaded)."""

    async def warm() -> None:
        async with pair() as (_server, client, _ep):
            client.transports()

    run(warm())


# ------------------------------------------------------------------------------------------
# child processes
# ------------------------------------------------------------------------------------------


class Child:
    """``python test_ucx.py <scenario> <args>``: lines on its stdout, commands on its stdin."""

    def __init__(self, *args: object) -> None:
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self) -> str:
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buf:
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self._fd, lambda f=fut: None if f.done() else f.set_result(None))
            try:
                await asyncio.wait_for(fut, 30)
            finally:
                loop.remove_reader(self._fd)
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self.proc.wait(10)
                assert self.proc.stderr is not None
                raise AssertionError(
                    f"child {self.args} exited ({self.proc.returncode}):\n"
                    + self.proc.stderr.read().decode(errors="replace")
                )
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode()
        if text.startswith("[") and " UCX " in text:
            return await self.line()  # UCX logs to stdout
        return text

    async def expect(self, prefix: str) -> str:
        line = await self.line()
        assert line.startswith(prefix), (line, prefix)
        return line[len(prefix) :].strip()

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        with contextlib.suppress(BrokenPipeError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.wait(timeout)
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


@pytest.fixture
def child() -> Any:
    made: list[Child] = []

    def start(*args: object) -> Child:
        c = Child(*args)
        made.append(c)
        return c

    yield start
    for c in made:
        c.close()


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------


def test_importing_the_package_does_not_import_ucxx() -> None:
    code = (
        "import sys, isthmus.transport, isthmus.transport._ucx as u\n"
        "assert 'ucxx' not in sys.modules, 'ucxx imported'\n"
        "print(u.available())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_missing_ucxx_is_a_clear_transport_error() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ucxx' or name.startswith('ucxx.'):\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from isthmus.transport import TransportError\n"
        "from isthmus.transport._ucx import UcxServer, BackendUnavailableError, available\n"
        "try:\n"
        "    UcxServer()\n"
        "except BackendUnavailableError as e:\n"
        "    assert isinstance(e, TransportError) and isinstance(e, ImportError)\n"
        "    print('ok', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok backend='ucx' needs ucxx"), out.stdout
    assert issubclass(BackendUnavailableError, TransportError)


def test_wrong_backend_name_and_tls_are_refused() -> None:
    with pytest.raises(ValueError):
        UcxServer(backend="tcp")
    with pytest.raises(ValueError, match="no TLS"):
        UcxClient(ssl_context=object())


@pytest.mark.skipif("ucx" not in BACKENDS, reason="the front end does not route 'ucx' yet")
def test_front_end_routes_backend_ucx_here() -> None:
    async def body() -> None:
        server = Server(backend="ucx")
        client = Client(backend="ucx")
        assert isinstance(server, UcxServer) and isinstance(client, UcxClient)
        server.listen("127.0.0.1", 0)
        await client.aconnect("127.0.0.1", server.port)
        r = server.arecv(bytearray(4), 1)
        await client.asend(b"ok", 1)
        assert await r == (1, 2)
        await client.aclose()
        await server.aclose()

    run(body())


def test_a_core_backend_client_is_refused_cleanly() -> None:
    async def body() -> None:
        server = UcxServer()
        server.listen("127.0.0.1", 0)
        client = Client(backend="tcp", connect_timeout=3)
        try:
            with pytest.raises(TransportError):
                await client.aconnect("127.0.0.1", server.port)
            await asyncio.sleep(0.1)
            assert not server.list_clients()
        finally:
            await client.aclose()
            await server.aclose()

    run(body())


def test_aconnect_address() -> None:
    async def body() -> None:
        server = UcxServer()
        address = server.listen_address("127.0.0.1")
        assert address.startswith(b"isthmus-transport/")
        client = UcxClient()
        try:
            await client.aconnect_address(address)
            assert client.connected
            r = client.arecv(bytearray(8), 3)
            await until(lambda: len(server.list_clients()) == 1)
            (ep,) = server.list_clients()
            await server.asend(ep, b"addr", 3)
            assert await r == (3, 4)
        finally:
            await client.aclose()
            await server.aclose()

    run(body())


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [8, 1 << 20, 64 << 20], ids=["8B", "1MiB", "64MiB"])
def test_round_trip_both_ways(n: int) -> None:
    async def body() -> None:
        async with pair() as (server, client, ep):
            up, down = payload(n, 1), payload(n, 2)
            got = np.full(n + 16, 0xA5, np.uint8)
            r = server.arecv(got, 0x10)
            await client.asend(up, 0x10)
            assert await r == (0x10, n)
            assert np.array_equal(got[:n], up) and (got[n:] == 0xA5).all()

            got2 = np.full(n, 0x5A, np.uint8)
            r2 = client.arecv(got2, 0x20)
            await server.asend(ep, down, 0x20)
            assert await r2 == (0x20, n)
            assert np.array_equal(got2, down)

            # Sent before the receive is posted (unexpected on arrival), any dtype.  A large
            # send is a rendezvous: it completes once the receiver has read it.
            words = payload(n, 3).view(np.uint32)
            sent = server.asend(ep, words, 0x30)
            await asyncio.sleep(0.01)
            got3 = np.zeros(n, np.uint8)
            assert await client.arecv(got3, 0x30) == (0x30, n)
            await sent
            assert np.array_equal(got3, words.view(np.uint8))

    run(body())


def test_multi_buffer_send_is_one_message() -> None:
    async def body() -> None:
        async with pair() as (server, client, _ep):
            parts = [payload(100, 1), b"", bytearray(payload(300_000, 2)), payload(5, 3)]
            whole = np.concatenate([np.frombuffer(bytes(p), np.uint8) for p in parts])
            got = np.zeros(whole.nbytes, np.uint8)
            r = server.arecv(got, 7)
            await client.asend(parts, 7)
            assert await r == (7, whole.nbytes)
            assert np.array_equal(got, whole)

    run(body())


def test_zero_length_and_read_only_buffers() -> None:
    async def body() -> None:
        async with pair() as (server, client, _ep):
            r = server.arecv(bytearray(4), 1)
            await client.asend(b"", 1)
            assert await r == (1, 0)
            with pytest.raises(TransportError):
                server.arecv(b"read-only", 1)
            with pytest.raises(ValueError):
                await client.asend(b"x", 1 << 64)

    run(body())


# ------------------------------------------------------------------------------------------
# matching
# ------------------------------------------------------------------------------------------


def test_tag_masks_match_ucx_style_in_posting_order() -> None:
    async def body() -> None:
        async with pair() as (server, client, _ep):
            high = 0xFFFF_0000_0000_0000
            bufs = [bytearray(8) for _ in range(4)]
            r_low = server.arecv(bufs[0], 0xAB00_0000_0000_0001, 0x00FF)  # low byte == 1
            r_top = server.arecv(bufs[1], 0xAB00_0000_0000_0000, high)  # top 16 bits == 0xAB00
            r_exact = server.arecv(bufs[3], 0x42, ANY)
            r_any = server.arecv(bufs[2], 0, 0)  # anything (posted last: offered last)
            await client.asend(b"exact", 0x42)
            assert await r_exact == (0x42, 5)
            await client.asend(b"top", 0xAB00_1234_0000_0000)
            assert await r_top == (0xAB00_1234_0000_0000, 3)
            await client.asend(b"low", 0x77_0001)
            assert await r_low == (0x77_0001, 3)
            await client.asend(b"rest", 0x1234)
            assert await r_any == (0x1234, 4)
            # The whole 64-bit range is the application's.
            r_max = server.arecv(bytearray(4), ANY)
            await client.asend(b"max", ANY)
            assert await r_max == (ANY, 3)
            # Two receives that both match: the one posted first gets the first message.
            first, second = bytearray(8), bytearray(8)
            r1 = server.arecv(first, 0, 0)
            r2 = server.arecv(second, 5, 0xF)
            await client.asend(b"one", 0x15)
            await client.asend(b"two", 0x25)
            assert await r1 == (0x15, 3) and await r2 == (0x25, 3)
            assert bytes(first[:3]) == b"one" and bytes(second[:3]) == b"two"

    run(body())


def test_unexpected_messages_keep_arrival_order_per_tag() -> None:
    async def body() -> None:
        async with pair() as (server, client, _ep):
            for i in range(20):
                await client.asend(i.to_bytes(4, "little"), 100 + i % 2)
            await client.aflush()
            got = []
            for _ in range(10):
                b = bytearray(4)
                await server.arecv(b, 101)
                got.append(int.from_bytes(b, "little"))
            assert got == list(range(1, 20, 2))
            for i in range(0, 20, 2):
                b = bytearray(4)
                assert await server.arecv(b, 0, 0) == (100, 4)
                assert int.from_bytes(b, "little") == i

    run(body())


def test_truncation_fails_the_receive_and_keeps_the_message() -> None:
    async def body() -> None:
        async with pair() as (server, client, _ep):
            for n in (100, 300_000):  # eager, and rendezvous
                data = payload(n)
                sent = client.asend(data, 5)
                await asyncio.sleep(0.05)
                with pytest.raises(MessageTruncatedError) as info:
                    await server.arecv(bytearray(10), 5)
                assert info.value.length == n
                got = np.zeros(n, np.uint8)
                assert await server.arecv(got, 5) == (5, n)
                assert np.array_equal(got, data)
                await sent
                # A message arriving for a receive that is too small: same.
                small = server.arecv(bytearray(10), 6)
                sent = client.asend(data, 6)
                with pytest.raises(MessageTruncatedError):
                    await small
                assert await server.arecv(got, 6) == (6, n)
                await sent

    run(body())


def test_arecv_message_of_unknown_size() -> None:
    async def body() -> None:
        async with pair() as (server, client, ep):
            for n in (0, 3, 200_000, 5 << 20):
                data = payload(n, n)
                m = server.arecv_message(9)
                await client.asend(data, 9)
                msg = await m
                assert isinstance(msg, Message)
                assert msg.tag == 9 and msg.nbytes == n and msg.endpoint is ep
                assert bytes(msg.data) == data.tobytes()
                msg.release()
            m2 = client.arecv_message(0, 0)
            await server.asend(ep, b"hello", 0xF00D)
            msg2 = await m2
            assert (msg2.tag, bytes(msg2.data), msg2.endpoint) == (0xF00D, b"hello", None)

    run(body())


# ------------------------------------------------------------------------------------------
# a server with two clients
# ------------------------------------------------------------------------------------------


def test_server_with_two_clients_receive_from_any_and_arecv_from() -> None:
    async def body() -> None:
        server = UcxServer(name="srv")
        server.listen("127.0.0.1", 0)
        eps: list[ServerEndpoint] = []
        server.set_accept_cb(eps.append)
        a, b = UcxClient(name="a"), UcxClient(name="b")
        try:
            await a.aconnect("127.0.0.1", server.port)
            await b.aconnect("127.0.0.1", server.port)
            await until(lambda: len(eps) == 2, "two accepts")
            assert server.list_clients() == set(eps)
            by_name = {ep.peer_name: ep for ep in eps}
            assert set(by_name) == {"a", "b"} and all(ep.connected for ep in eps)
            assert {ep.peer_pid for ep in eps} == {os.getpid()}

            # The same tag from both: arecv_from tells them apart.
            buf1, buf2 = bytearray(8), bytearray(8)
            r1 = server.arecv_from(buf1, 3)
            r2 = server.arecv_from(buf2, 3)
            await a.asend(b"from-a", 3)
            await b.asend(b"from-b", 3)
            got = {
                (await r1)[0].peer_name: bytes(buf1[:6]),
                (await r2)[0].peer_name: bytes(buf2[:6]),
            }
            assert got == {"a": b"from-a", "b": b"from-b"}

            # Receive-from-any, and replies to each one.
            r = server.arecv(bytearray(8), 0, 0)
            await b.asend(b"bbb", 11)
            assert await r == (11, 3)
            ra, rb = a.arecv(bytearray(8), 50), b.arecv(bytearray(8), 50)
            await server.asend(by_name["a"], b"to-a", 50)
            await server.asend(by_name["b"], b"to-b!", 50)
            assert await ra == (50, 4) and await rb == (50, 5)
            await server.aflush()
            await server.aflush_ep(by_name["b"])

            # One leaves: list_clients follows, its endpoint says so.
            await a.aclose()
            await until(lambda: len(server.list_clients()) == 1, "a gone from list_clients")
            assert not by_name["a"].connected and by_name["b"].connected
            with pytest.raises(TransportError):
                await server.asend(by_name["a"], b"x", 1)
        finally:
            await a.aclose()
            await b.aclose()
            await server.aclose()

    run(body())


def test_a_departed_clients_unread_messages_stay_receivable() -> None:
    async def body() -> None:
        server = UcxServer()
        server.listen("127.0.0.1", 0)
        eps: list[ServerEndpoint] = []
        server.set_accept_cb(eps.append)
        c = UcxClient()
        try:
            await c.aconnect("127.0.0.1", server.port)
            await until(lambda: len(eps) == 1)
            data = payload(1 << 20)
            await c.asend(b"small", 1)  # eager: complete at once
            big = c.asend(data, 2)  # rendezvous: completes when the server reads it
            await asyncio.sleep(0.05)
            await c.aclose(drain=False)  # without waiting for that
            with pytest.raises(TransportClosedError):
                await big
            await until(lambda: not server.list_clients(), "client gone")
            got = np.zeros(data.nbytes, np.uint8)
            assert await server.arecv(got, 2) == (2, data.nbytes)
            assert np.array_equal(got, data)
            ep, tag, n = await server.arecv_from(bytearray(8), 1)
            assert (ep, tag, n) == (eps[0], 1, 5)
        finally:
            await c.aclose()
            await server.aclose()

    run(body())


# ------------------------------------------------------------------------------------------
# cancellation, timeouts, callbacks, flush
# ------------------------------------------------------------------------------------------


def test_cancelled_receive_is_never_written_and_loses_nothing() -> None:
    async def body() -> None:
        async with pair() as (server, client, _ep):
            victim = np.full(1 << 20, 0xA5, np.uint8)
            fut = server.arecv(victim, 4)
            await asyncio.sleep(0.01)
            assert fut.cancel()
            data = payload(1 << 20)
            sent = client.asend(data, 4)
            await asyncio.sleep(0.1)
            assert (victim == 0xA5).all()
            got = np.zeros(1 << 20, np.uint8)
            assert await server.arecv(got, 4) == (4, 1 << 20)
            assert np.array_equal(got, data)
            await sent
            with pytest.raises(asyncio.CancelledError):
                await fut

    run(body())


def test_timeouts_raise_transport_timeout_error() -> None:
    async def body() -> None:
        async with pair() as (server, client, _ep):
            buf = bytearray(8)
            t0 = time.monotonic()
            with pytest.raises(TransportTimeoutError):
                await server.arecv(buf, 77, timeout=0.2)
            assert 0.15 < time.monotonic() - t0 < 5
            with pytest.raises(TransportTimeoutError):
                await client.arecv(buf, 78, timeout=0.05)
            # The timed-out receive was withdrawn: the next message goes to the next receive.
            await client.asend(b"late", 77)
            assert await server.arecv(buf, 77, timeout=10) == (77, 4)
            assert bytes(buf[:4]) == b"late"
            assert isinstance(TransportTimeoutError("x"), TimeoutError)

    run(body())


def test_callback_forms() -> None:
    async def body() -> None:
        async with pair() as (server, client, ep):
            loop = asyncio.get_running_loop()
            got: asyncio.Future[tuple[int, int]] = loop.create_future()
            sent: asyncio.Future[None] = loop.create_future()
            flushed: asyncio.Future[None] = loop.create_future()
            buf = bytearray(16)
            server.recv(buf, 6, ANY, lambda t, n: got.set_result((t, n)), got.set_exception)
            client.send(b"callbacks", 6, lambda: sent.set_result(None), sent.set_exception)
            client.flush(lambda: flushed.set_result(None), flushed.set_exception)
            await sent
            await flushed
            assert await got == (6, 9)
            done: asyncio.Future[None] = loop.create_future()
            server.send(ep, b"back", 8, lambda: done.set_result(None), done.set_exception)
            server.flush_ep(ep, lambda: None, done.set_exception)
            await done
            assert await client.arecv(bytearray(8), 8) == (8, 4)

    run(body())


def test_send_and_receive_after_close_fail_typed() -> None:
    async def body() -> None:
        server = UcxServer()
        server.listen("127.0.0.1", 0)
        client = UcxClient()
        with pytest.raises(TransportError):
            client.asend(b"x", 1)  # not connected
        await client.aconnect("127.0.0.1", server.port)
        pending = client.arecv(bytearray(8), 1)
        await client.aclose()
        with pytest.raises(TransportClosedError):
            await pending
        with pytest.raises(TransportClosedError):
            client.asend(b"x", 1)
        await server.aclose()
        with pytest.raises(TransportClosedError):
            server.arecv(bytearray(8), 1)

    run(body())


# ------------------------------------------------------------------------------------------
# the peer goes away
# ------------------------------------------------------------------------------------------


def test_peer_close_fails_pending_operations_with_connection_lost() -> None:
    async def body() -> None:
        async with pair() as (server, client, ep):
            pending = client.arecv(bytearray(8), 1)
            await server.aclose()
            with pytest.raises(ConnectionLostError, match="peer closed"):
                await pending
            assert not client.connected
            with pytest.raises(ConnectionLostError):
                await client.arecv(bytearray(8), 1)
            assert not ep.connected

    run(body())


def test_killed_client_fails_sends_and_frees_its_worker(child: Any) -> None:
    """The client process is SIGKILLed while the server's large send to it waits to be read."""

    async def body() -> None:
        server = UcxServer()
        server.listen("127.0.0.1", 0)
        eps: list[ServerEndpoint] = []
        server.set_accept_cb(eps.append)
        try:
            c = child("client-idle", server.port)
            await c.expect("connected")
            await until(lambda: len(eps) == 1)
            swallowed = _ucx._lib().swallowed
            big = payload(64 << 20)
            send = server.asend(eps[0], big, 1)  # rendezvous: waits for the client to read it
            recv = server.arecv(bytearray(8), 2)
            await asyncio.sleep(0.05)
            assert not send.done()
            c.kill()
            with pytest.raises(ConnectionLostError, match="went away"):
                await asyncio.wait_for(send, 20)
            assert not recv.done()  # a server's receive can still be met by another client
            await until(lambda: not server.list_clients(), "dead client dropped")
            assert not eps[0].connected
            recv.cancel()
            # The dead client's canary is read as its connection is released: that CMA read
            # fails (UCX would abort the process; the backend keeps it an error), which ends
            # every request still waiting on the dead client.
            await until(lambda: _ucx._lib().swallowed > swallowed, "canary read failed")
        finally:
            await server.aclose()
        assert not _ucx._KEPT, "a worker could not be released"

    run(body())


def test_killed_sender_with_unread_rendezvous_does_not_take_us_down(child: Any) -> None:
    """Without UCX error handling a failed CMA read is fatal; the backend turns it into an error."""

    async def body() -> None:
        server = UcxServer()
        server.listen("127.0.0.1", 0)
        eps: list[ServerEndpoint] = []
        server.set_accept_cb(eps.append)
        try:
            swallowed = _ucx._lib().swallowed
            c = child("client-send-big", server.port, 64 << 20)
            await c.expect("sent")
            await until(lambda: len(eps) == 1)
            await asyncio.sleep(0.2)  # its RTS is in our queue, the data still in its memory
            c.kill()
            await until(lambda: not server.list_clients(), "dead client dropped")
            # Its unread rendezvous is gone with it; we are alive and still work.
            with pytest.raises(TransportTimeoutError):
                await server.arecv(np.zeros(64 << 20, np.uint8), 9, timeout=0.3)
            assert _ucx._lib().swallowed > swallowed  # UCX would have aborted the process
        finally:
            await server.aclose()
        assert not _ucx._KEPT

    run(body())


def test_killed_server_fails_the_clients_receive(child: Any) -> None:
    async def body() -> None:
        s = child("echo-server")
        port = int(await s.expect("port"))
        client = UcxClient()
        try:
            await client.aconnect("127.0.0.1", port)
            buf = bytearray(8)
            await client.asend(b"ping", 1)
            assert await client.arecv(buf, 2) == (2, 4)
            pending = client.arecv(np.zeros(1 << 20, np.uint8), 99)
            send = client.asend(payload(32 << 20), 98)  # rendezvous to a server that never reads
            s.kill()
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(pending, 20)
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(send, 20)
            assert not client.connected
        finally:
            await client.aclose()
        assert not _ucx._KEPT

    run(body())


# ------------------------------------------------------------------------------------------
# transports on one host, and across processes
# ------------------------------------------------------------------------------------------


def test_transports_on_one_host_are_shared_memory_and_cma(child: Any) -> None:
    """What UCX picked between two processes of this host: not TCP alone."""

    async def body() -> None:
        s = child("echo-server")
        port = int(await s.expect("port"))
        client = UcxClient()
        try:
            await client.aconnect("127.0.0.1", port)
            lanes = client.transports()
            info = client.ucx_info()
            print("\nUCX lanes (client -> server process):", lanes)
            print("\n".join(line for line in info.splitlines() if "lane[" in line or "| " in line))
            used = {t for _p, t in lanes}
            assert used and used != {"tcp"}, lanes
            if _cma_allowed():
                assert ("rendezvous", "cma") in lanes, lanes
            assert any(p == "eager" and t in ("sysv", "posix") for p, t in lanes), lanes
            s.tell("transports")
            server_lanes = await s.expect("transports")
            assert "tcp" not in server_lanes, server_lanes

            # And the data goes through: both directions, small and 64 MiB.
            for n in (8, 64 << 20):
                data = payload(n, 7)
                got = np.zeros(n, np.uint8)
                r = client.arecv(got, 2)
                await client.asend(data, 1)
                assert await r == (2, n)
                assert np.array_equal(got, data)
        finally:
            await client.aclose()
        rc, err = s.finish()
        assert rc == 0, err

    run(body())


def test_error_handling_would_have_meant_tcp_only() -> None:
    """Why endpoints are made without error handling: UCX then has nothing but TCP here."""
    lib = _ucx._lib()
    L = lib.L
    ctx = lib.context(_ucx.DEFAULT_RNDV_THRESHOLD, None)
    w1, w2 = L.UCXWorker(ctx), L.UCXWorker(ctx)
    lanes = {}
    for handling in (True, False):
        ep = L.UCXEndpoint.create_from_worker_address(w1, w2.address, handling)
        lanes[handling] = _ucx._lanes(lib.ep_info(int(ep.handle)))
        req = ep.close()
        while not req.completed:
            w1.progress()
            w2.progress()
        del ep, req
    print("\nwith error handling:", lanes[True], "\nwithout:", lanes[False])
    assert {t for _p, t in lanes[True]} == {"tcp"}
    assert "tcp" not in {t for _p, t in lanes[False]}
    del w1, w2, ctx


@pytest.mark.gpu
def test_device_buffers_pass_through() -> None:
    cupy = pytest.importorskip("cupy")

    async def body() -> None:
        async with pair() as (server, client, _ep):
            if not server.cuda_support:
                pytest.skip("this UCX has no CUDA support here")
            n = 8 << 20
            src = cupy.arange(n, dtype=cupy.uint8)
            dst = cupy.zeros(n, dtype=cupy.uint8)
            r = server.arecv(dst, 1)
            await client.asend(src, 1)
            assert await r == (1, n)
            assert bool((src == dst).all())

    run(body())


# ------------------------------------------------------------------------------------------
# the other process
# ------------------------------------------------------------------------------------------


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    buf = b""
    while True:
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, lambda f=fut: None if f.done() else f.set_result(None))
        try:
            await fut
        finally:
            loop.remove_reader(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode().strip()


async def _child(scenario: str, args: list[str]) -> None:
    if scenario == "echo-server":
        server = UcxServer(name="echo")
        server.listen("127.0.0.1", 0)
        eps: list[ServerEndpoint] = []
        server.set_accept_cb(eps.append)
        print("port", server.port, flush=True)

        async def echo() -> None:
            while True:
                msg = await server.arecv_message(0, 0)
                assert msg.endpoint is not None
                with contextlib.suppress(TransportError):
                    await server.asend(msg.endpoint, msg.data, msg.tag + 1)
                msg.release()

        task = asyncio.ensure_future(echo())
        async for line in _stdin_lines():
            if line == "transports":
                print("transports", eps[0].view_transports(), flush=True)
        task.cancel()
        await server.aclose()
    elif scenario in ("client-idle", "client-send-big"):
        client = UcxClient()
        await client.aconnect("127.0.0.1", int(args[0]))
        if scenario == "client-send-big":
            big = np.ones(int(args[1]), np.uint8)
            client.asend(big, 9)  # never read: it stays in our memory
            await asyncio.sleep(0.05)
            print("sent", flush=True)
        else:
            print("connected", flush=True)
        async for _line in _stdin_lines():
            pass
        await client.aclose(drain=False)


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], sys.argv[2:]))
