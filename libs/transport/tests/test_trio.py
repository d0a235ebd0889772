"""The trio front end: ``from isthmus.transport import trio as ttrio``.

Each test is a plain function running ``trio.run`` (no pytest-trio).  The ``backend`` fixture
runs a test once per backend; conftest's autouse check fails any test that leaves file
descriptors, threads, child processes or shared-memory rings behind.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pytest
import trio
import trio.testing

from _support import ANY, RNDV_TRANSPORT, Peer, payload, sentinel
from isthmus.transport import (
    ConnectionLostError,
    MessageTruncatedError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)
from isthmus.transport import trio as ttrio
from isthmus.transport._core import Worker

T = TypeVar("T")

SIZES = (8, 100_000, 20 << 20)
BIG = 20 << 20  # above every rendezvous threshold


@asynccontextmanager
async def tpair(
    backend: str, **client_kw: Any
) -> AsyncIterator[tuple[ttrio.Server, ttrio.Client, ttrio.ServerEndpoint]]:
    """A trio Server, a trio Client connected to it, and the Server's endpoint for it."""
    async with ttrio.Server(backend=backend) as server:
        server.listen("127.0.0.1", 0)
        accepted: list[ttrio.ServerEndpoint] = []
        got = trio.Event()

        def on_accept(ep: ttrio.ServerEndpoint) -> None:
            accepted.append(ep)
            got.set()

        server.set_accept_cb(on_accept)
        async with ttrio.Client(backend=backend, **client_kw) as client:
            await client.aconnect("127.0.0.1", server.port)
            with trio.fail_after(10):
                await got.wait()
            yield server, client, accepted[0]


async def both(send: Callable[[], Awaitable[Any]], recv: Callable[[], Awaitable[T]]) -> T:
    """Run a receive and a send concurrently; the receive's result."""
    out: list[T] = []

    async def receive() -> None:
        out.append(await recv())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await send()
    return out[0]


def fds() -> set[tuple[int, str]]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        with suppress(OSError):
            out.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
    return out


# ------------------------------------------------------------------------------------------
# the reactor
# ------------------------------------------------------------------------------------------


def test_reactor(caplog: pytest.LogCaptureFixture) -> None:
    """Readers, writers, call_soon/call_later and their cancellation; callbacks that raise are
    logged and the nursery lives on."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            reactor = ttrio._TrioReactor(nursery)
            assert abs(reactor.time() - trio.current_time()) < 1
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            got: list[bytes] = []
            reactor.add_reader(a.fileno(), lambda: got.append(a.recv(100)))
            b.send(b"one")
            await trio.testing.wait_all_tasks_blocked()
            assert got == [b"one"]
            # A second add_reader replaces the callback, as asyncio's does.
            reactor.add_reader(a.fileno(), lambda: got.append(b"new:" + a.recv(100)))
            b.send(b"two")
            await trio.testing.wait_all_tasks_blocked()
            assert got == [b"one", b"new:two"]
            assert reactor.remove_reader(a.fileno()) is True
            assert reactor.remove_reader(a.fileno()) is False
            b.send(b"three")
            await trio.testing.wait_all_tasks_blocked()
            assert got == [b"one", b"new:two"]
            assert a.recv(100) == b"three"

            wrote: list[int] = []

            def on_writable() -> None:
                wrote.append(1)
                reactor.remove_writer(b.fileno())  # from inside its own callback

            reactor.add_writer(b.fileno(), on_writable)
            await trio.testing.wait_all_tasks_blocked()
            assert wrote == [1]

            order: list[str] = []
            reactor.call_soon(lambda: order.append("first"))
            reactor.call_soon(lambda: 1 / 0)  # logged, not fatal
            reactor.call_soon(lambda: order.append("second")).cancel()
            reactor.call_soon(lambda: reactor.call_soon(lambda: order.append("from a callback")))
            reactor.call_soon(lambda: order.append("third"))
            reactor.call_later(0.01, lambda: order.append("later"))
            reactor.call_later(0.01, lambda: order.append("never")).cancel()
            reactor.add_reader(a.fileno(), lambda: [].pop())  # raises IndexError: logged
            b.send(b"x")
            await trio.sleep(0.05)
            assert order == ["first", "third", "from a callback", "later"]
            # Closing right after removal is safe: nothing waits on the fd any more.
            reactor.remove_reader(a.fileno())
            a.close()
            b.close()
            reactor.close()
            with pytest.raises(RuntimeError):
                reactor.add_reader(0, lambda: None)
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR, logger="isthmus.transport"):
        trio.run(main)
    errors = [r for r in caplog.records if r.exc_info]
    assert {r.exc_info[0] for r in errors if r.exc_info} == {ZeroDivisionError, IndexError}


# ------------------------------------------------------------------------------------------
# messages
# ------------------------------------------------------------------------------------------


def test_round_trip(backend: str) -> None:
    """8 B, 100 KB and 20 MiB, client to server and back, exact bytes, numpy and bytearray."""

    async def main() -> None:
        async with tpair(backend) as (server, client, ep):
            for i, size in enumerate(SIZES):
                data = payload(size, i)
                into = sentinel(size)
                sender, tag, n = await both(
                    partial(client.asend, data, 10 + i), partial(server.arecv_from, into, 10 + i)
                )
                assert (sender, tag, n) == (ep, 10 + i, size)
                assert np.array_equal(into, data)

                back = bytearray(size)
                tag, n = await both(
                    partial(server.asend, ep, data, 20 + i), partial(client.arecv, back, 20 + i)
                )
                assert (tag, n) == (20 + i, size)
                assert back == data.tobytes()
            transports = dict(client.transports())
            want = RNDV_TRANSPORT[backend]
            assert transports.get("rendezvous") == want
            await client.aflush()
            await server.aflush()
            await server.aflush_ep(ep)

    trio.run(main)


def test_tag_masks_and_messages() -> None:
    """UCX matching ``(msg_tag & mask) == (tag & mask)``, first posted first; messages of
    unknown size; lists of buffers sent as one message; a too-small buffer."""

    async def main() -> None:
        async with tpair("auto") as (server, client, ep):
            for tag in (0x1_0001, 0x2_0002, 0x2_0003, 0x7):
                await client.asend(np.uint64(tag).tobytes(), tag)
            buf = bytearray(8)
            # The high half picks the 0x2_xxxx messages, in order.
            assert await server.arecv(buf, 0x2_0000, 0xFFFF_0000) == (0x2_0002, 8)
            assert await server.arecv(buf, 0x2_FFFF, 0xFFFF_0000) == (0x2_0003, 8)
            assert await server.arecv(buf, 0x7, ANY) == (0x7, 8)
            assert await server.arecv(buf, 0, 0) == (0x1_0001, 8)  # mask 0: anything
            assert int.from_bytes(buf, "little") == 0x1_0001

            await client.asend([b"abc", np.arange(3, dtype=np.uint8), bytearray(b"xyz")], 5)
            msg = await server.arecv_message(5)
            with msg:
                assert msg.tag == 5 and msg.endpoint == ep
                assert bytes(msg.data) == b"abc\x00\x01\x02xyz"

            await server.asend(ep, bytes(100), 6)
            with pytest.raises(MessageTruncatedError):
                await client.arecv(bytearray(10), 6)
            assert await client.arecv(bytearray(100), 6) == (6, 100)  # it stayed queued

            # Callback forms run in the reactor's tasks.
            done = trio.Event()
            results: list[Any] = []

            def received(tag: int, n: int) -> None:
                results.append((tag, n))
                done.set()

            server.recv(buf, 9, ANY, received, results.append)
            client.send(b"12345678", 9, lambda: results.append("sent"), results.append)
            with trio.fail_after(5):
                await done.wait()
            flushed = trio.Event()
            client.flush(flushed.set, results.append)
            server.flush_ep(ep, lambda: None, results.append)
            with trio.fail_after(5):
                await flushed.wait()
            assert results == ["sent", (9, 8)]

    trio.run(main)


def test_two_clients_recv_from() -> None:
    """A Server with two Clients: arecv_from says who sent what; replies go to each."""

    async def main() -> None:
        async with ttrio.Server(backend="auto") as server:
            server.listen("127.0.0.1", 0)
            async with ttrio.Client(name="one") as c1, ttrio.Client(name="two") as c2:
                await c1.aconnect("127.0.0.1", server.port)
                await c2.aconnect_address(server.get_worker_address())
                await c1.asend(b"from one", 1)
                await c2.asend(b"from two", 1)
                seen = {}
                for _ in range(2):
                    buf = bytearray(16)
                    ep, _tag, n = await server.arecv_from(buf, 1)
                    seen[ep.peer_name] = (ep, bytes(buf[:n]))
                assert {k: v[1] for k, v in seen.items()} == {
                    "one": b"from one",
                    "two": b"from two",
                }
                assert server.list_clients() == {v[0] for v in seen.values()}
                for name, (ep, _) in seen.items():
                    await server.asend(ep, name.encode(), 2)
                for client, expect in ((c1, b"one"), (c2, b"two")):
                    buf = bytearray(16)
                    _tag, n = await client.arecv(buf, 2)
                    assert bytes(buf[:n]) == expect

    trio.run(main)


# ------------------------------------------------------------------------------------------
# cancellation, timeouts, failures
# ------------------------------------------------------------------------------------------


def test_cancelled_recv_leaves_buffer(backend: str) -> None:
    """A receive cancelled by trio never writes into its buffer; the message goes to the next
    matching receive, small or large."""

    async def main() -> None:
        async with tpair(backend) as (server, client, _ep):
            for i, size in enumerate((8, BIG)):
                untouched = sentinel(size)
                with trio.move_on_after(0.02) as scope:
                    await server.arecv(untouched, 7)
                assert scope.cancelled_caught
                data = payload(size, i)
                into = sentinel(size, 0x11)
                got = await both(partial(client.asend, data, 7), partial(server.arecv, into, 7))
                assert got == (7, size)
                assert np.array_equal(into, data)
                assert (untouched == 0xA5).all()

            # The withdrawal happens inside trio's cancel(): nothing can slip in before it.
            worker = server._core._worker
            assert isinstance(worker, Worker)
            scope = trio.CancelScope()

            async def receive() -> None:
                with scope:
                    await server.arecv(bytearray(8), 8)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                assert worker.matcher.posted_count() == 1
                scope.cancel()
                assert worker.matcher.posted_count() == 0

    trio.run(main)


def test_timeouts(backend: str) -> None:
    """``timeout=`` raises TransportTimeoutError and withdraws the operation."""

    async def main() -> None:
        async with tpair(backend) as (server, client, ep):
            buf = sentinel(64)
            with pytest.raises(TransportTimeoutError):
                await client.arecv(buf, 3, timeout=0.02)
            await server.asend(ep, b"late", 3)
            assert await client.arecv(bytearray(8), 3, timeout=5) == (3, 4)
            assert (buf == 0xA5).all()
            if backend != "tcp":
                # A rendezvous nobody takes: the send is withdrawn, the peer drops it.
                with pytest.raises(TransportTimeoutError):
                    await client.asend(payload(BIG), 4, timeout=0.05)
                # (Once the peer has read the withdrawal: a receive posted before that could
                # still take the message, the core's withdrawal being a request to the peer.)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(TransportTimeoutError):
                    await server.arecv(sentinel(BIG), 4, timeout=0.1)
            # The connection carries on.
            await client.asend(b"ok", 5)
            assert await server.arecv(bytearray(2), 5, timeout=5) == (5, 2)

    trio.run(main)


def test_timed_out_send_half_written_still_arrives_whole() -> None:
    """A send whose bytes are half on the wire fails with TransportTimeoutError at once; the rest
    is still written from the buffer it holds, so the peer gets the message whole, and aflush
    returns once it has gone."""

    async def main() -> None:
        async with tpair("tcp") as (server, client, ep):
            conn = ep._conn
            reactor = server._core._w().reactor
            reactor.remove_reader(conn.fd)  # the server stops reading: the socket fills up
            data = payload(BIG)
            with trio.fail_after(10):
                with pytest.raises(TransportTimeoutError):
                    await client.asend(data, 3, timeout=0.05)
                reactor.add_reader(conn.fd, conn.on_readable)
                into = sentinel(BIG)
                assert await server.arecv(into, 3) == (3, BIG)
                await client.aflush()
            assert np.array_equal(into, data)

    trio.run(main)


def test_peer_close_fails_pending_recv(backend: str) -> None:
    """The Server closing fails the Client's pending receive with ConnectionLostError."""

    async def main() -> None:
        async with tpair(backend) as (server, client, _ep):
            buf = sentinel(1024)
            failed: list[BaseException] = []

            async def receive() -> None:
                try:
                    await client.arecv(buf, 3)
                except ConnectionLostError as exc:
                    failed.append(exc)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receive)
                    await trio.testing.wait_all_tasks_blocked()
                    await server.aclose()
            assert len(failed) == 1
            assert (buf == 0xA5).all()
            assert not client.connected
            with pytest.raises(ConnectionLostError):
                await client.arecv(buf, 3)
            with pytest.raises(TransportError):
                await client.asend(b"x", 1)

    trio.run(main)


def test_lifecycle() -> None:
    """Outside its block a Server/Client refuses to work; the block's exception propagates as
    it is; closing releases every fd (checked inside the same trio run)."""

    async def main() -> None:
        with pytest.raises(TransportError, match="async with"):
            ttrio.Server().listen("127.0.0.1", 0)
        before = fds()
        with pytest.raises(ValueError, match="boom"):
            async with ttrio.Server() as server:
                server.listen("127.0.0.1", 0)
                raise ValueError("boom")
        with pytest.raises(TransportClosedError):
            server.listen("127.0.0.1", 0)
        for backend in ("cma", "shm", "tcp"):
            async with tpair(backend) as (server, client, ep):
                data = payload(BIG)
                await both(partial(client.asend, data, 1), partial(server.arecv, sentinel(BIG), 1))
                await both(
                    partial(server.asend, ep, data[:100_000], 2),
                    partial(client.arecv, sentinel(100_000), 2),
                )
                # Left with a receive posted on each side and a send in flight.
                server.recv(bytearray(8), 9, ANY, lambda t, n: None, lambda e: None)
                client.recv(bytearray(8), 9, ANY, lambda t, n: None, lambda e: None)
                server.send(ep, data, 10, lambda: None, lambda e: None)
        assert fds() == before

    trio.run(main)


# ------------------------------------------------------------------------------------------
# interoperability with the asyncio front end, and TLS
# ------------------------------------------------------------------------------------------


def test_interop_with_asyncio_peer(backend: str, peer: type[Peer]) -> None:
    """A trio Client and an asyncio Server (child process, echoing), then an asyncio Client
    (child process) sending to a trio Server."""
    echo = peer("serve-echo", backend)
    port = int(echo.expect("port"))

    async def client_side() -> None:
        async with ttrio.Client(backend=backend) as client:
            await client.aconnect("127.0.0.1", port)
            for i, size in enumerate(SIZES):
                data = payload(size, i)
                into = sentinel(size)
                got = await both(
                    partial(client.asend, data, 100 + i), partial(client.arecv, into, 100 + i)
                )
                assert got == (100 + i, size)
                assert np.array_equal(into, data)

    trio.run(client_side)
    assert echo.finish()[0] == 0

    async def server_side() -> Peer:
        async with ttrio.Server(backend=backend) as server:
            server.listen("127.0.0.1", 0)
            sender = peer("connect-send-close", backend, server.port, BIG, 77, 3)
            into = sentinel(BIG)
            ep, tag, n = await server.arecv_from(into, 77, timeout=30)
            assert (tag, n) == (77, BIG)
            assert ep.peer_pid == sender.pid
            assert np.array_equal(into, payload(BIG, 3))
            return sender

    sender = trio.run(server_side)
    rc, out, err = sender.finish()
    assert rc == 0, err
    assert "closed ok" in out, out


def test_tls() -> None:
    """TLS over TCP (the handshake driven by the reactor's readers, writers and a timer)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main() -> None:
        async with ttrio.Server(ssl_context=server_ctx) as server:
            server.listen("127.0.0.1", 0)
            async with ttrio.Client(ssl_context=client_ctx, server_hostname="localhost") as client:
                await client.aconnect("127.0.0.1", server.port)
                assert dict(client.transports())["control"] == "tls"
                for i, size in enumerate((8, 1 << 20)):
                    data = payload(size, i)
                    into = sentinel(size)
                    _ep, _tag, n = await both(
                        partial(client.asend, data, 1), partial(server.arecv_from, into, 1)
                    )
                    assert n == size and np.array_equal(into, data)
            # A handshake abandoned by cancellation: its socket is closed on leaving the block
            # (conftest's leak check would catch it otherwise).
            with socket.create_server(("127.0.0.1", 0)) as mute:
                async with ttrio.Client(ssl_context=client_ctx) as client:
                    with trio.move_on_after(0.1) as scope:
                        await client.aconnect("127.0.0.1", mute.getsockname()[1])
                    assert scope.cancelled_caught and not client.connected
            # A client without TLS is refused by the TLS server's TCP port.
            async with ttrio.Client(backend="tcp", connect_timeout=2) as plain:
                with pytest.raises((TransportError, OSError)):
                    await plain.aconnect("127.0.0.1", server.port)

    trio.run(main)
