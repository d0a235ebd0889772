"""Faults end in a typed error on the right future, with no hang and nothing leaked.

Peers are killed with SIGKILL in the middle of a 256 MiB transfer, reset, sent garbage, closed
under outstanding operations; receives are truncated, timed out and cancelled.  The autouse
leak check (conftest) fails any test that leaves an fd, a thread, a child or a ring behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from typing import Any

import numpy as np
import psutil
import pytest

from _support import ANY, BACKENDS, EAGER_SHM, RNDV, Peer, connected, payload, sentinel, until
from isthmus.transport import (
    Client,
    ConnectionLostError,
    MessageTruncatedError,
    Server,
    ServerEndpoint,
    TransportClosedError,
    TransportTimeoutError,
)

pytestmark = pytest.mark.timeout(60)

BIG = 256 * 1024 * 1024  # a transfer long enough to be killed in the middle of


def kill_when_touched(buf: np.ndarray[Any, Any], child: Peer, fut: asyncio.Future[Any]) -> None:
    """Poll on the loop (between the transport's own steps) until the first bytes of the transfer
    land in ``buf`` (all 0xFF before), then SIGKILL ``child`` and reap it."""
    loop = asyncio.get_running_loop()

    def poll() -> None:
        if buf[0] != 0xFF:
            child.kill()
        elif not fut.done():
            loop.call_soon(poll)

    loop.call_soon(poll)


# ------------------------------------------------------------------------------------------
# a peer killed mid-transfer
# ------------------------------------------------------------------------------------------


def test_peer_killed_while_sending_to_us(backend: str, peer: Any) -> None:
    """The child's Server sends 256 MiB; once part of it landed, the child is SIGKILLed: our
    receive fails with ConnectionLostError and the Client knows it is disconnected."""
    child = peer("serve-send", backend, BIG, 3)
    port = int(child.expect("port"))

    async def main() -> None:
        client = Client(backend=backend)
        await client.aconnect("127.0.0.1", port)
        buf = np.full(BIG, 0xFF, dtype=np.uint8)
        recv = client.arecv(buf, 3, ANY)
        kill_when_touched(buf, child, recv)
        with pytest.raises(ConnectionLostError):
            await recv
        assert child.proc.returncode == -9
        await until(lambda: not client.connected, "the Client to notice")
        # what follows fails at once, typed
        with pytest.raises(ConnectionLostError):
            await client.asend(b"x", 1)
        with pytest.raises(ConnectionLostError):
            await client.arecv(bytearray(8), 1, ANY)
        await client.aclose()

    asyncio.run(main())


def test_peer_killed_while_receiving_from_us(backend: str, peer: Any) -> None:
    """We send 256 MiB to a child that stalls once the first bytes arrived; it is SIGKILLed:
    our send fails with ConnectionLostError, its endpoint goes, the Server carries on."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        accepted: asyncio.Future[ServerEndpoint] = loop.create_future()
        server.set_accept_cb(lambda ep: None if accepted.done() else accepted.set_result(ep))
        child = peer("connect-stall-recv", backend, server.port, BIG, 4)
        ep = await accepted
        assert await child.aline() == "posted"
        pending = server.arecv_from(bytearray(8), 99, ANY)  # from any client: stays pending
        send = server.asend(ep, np.zeros(BIG, dtype=np.uint8), 4)
        assert await child.aline() == "mid"
        child.kill()
        with pytest.raises(ConnectionLostError):
            await send
        await until(lambda: ep not in server.list_clients(), "the endpoint to go away")
        assert not ep.connected and not pending.done()
        with pytest.raises(ConnectionLostError):
            await server.asend(ep, b"late", 4)
        # the Server still serves new clients, and the pending receive is theirs
        client = Client(backend=backend)
        await client.aconnect("127.0.0.1", server.port)
        await client.asend(b"hello", 99)
        new_ep, tag, n = await pending
        assert (tag, n) == (99, 5) and new_ep is not ep
        await client.aclose()
        await server.aclose()

    asyncio.run(main())


def test_peer_reset_fails_our_pending_send(backend: str, peer: Any) -> None:
    """A child stops reading and exits without closing (for TCP, unread data turns its close
    into a reset): our pending send fails with ConnectionLostError."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        accepted: asyncio.Future[ServerEndpoint] = loop.create_future()
        server.set_accept_cb(lambda ep: None if accepted.done() else accepted.set_result(ep))
        child = peer("connect-stall", backend, server.port)
        ep = await accepted
        assert await child.aline() == "ready"
        send = server.asend(ep, np.zeros(64 << 20, dtype=np.uint8), 1)
        flush = server.aflush_ep(ep)
        child.tell("exit")
        with pytest.raises(ConnectionLostError):
            await send
        with pytest.raises(ConnectionLostError):
            await flush
        await until(lambda: not server.list_clients())
        await server.aclose()
        child.proc.wait(10)
        assert child.proc.returncode == 0

    asyncio.run(main())


def test_a_peer_speaking_garbage_is_dropped(backend: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.setblocking(False)
        raw.sendall(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        got = b""
        while True:  # the server says its HELLO, then hangs up on us
            chunk = await loop.sock_recv(raw, 65536)
            if not chunk:
                break
            got += chunk
        raw.close()
        assert not server.list_clients()
        # and it still serves real clients
        client = Client(backend=backend)
        await client.aconnect("127.0.0.1", server.port)
        into = bytearray(8)
        await asyncio.gather(server.arecv(into, 1, ANY), client.asend(b"fine", 1))
        assert bytes(into[:4]) == b"fine"
        await client.aclose()
        await server.aclose()

    asyncio.run(main())


def test_connect_to_nothing_fails_typed(backend: str) -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: refused
            client = Client(backend=backend)
            with pytest.raises(ConnectionLostError):
                await client.aconnect("127.0.0.1", port)
            await client.aclose()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# truncation, timeouts, cancellation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [100, EAGER_SHM + 100, 100_000, RNDV + 100])
@pytest.mark.parametrize("posted_first", [True, False], ids=["posted", "unexpected"])
def test_truncation_keeps_the_message(pair: Any, size: int, posted_first: bool) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            data = payload(size, 1)
            small = sentinel(size // 2)
            if posted_first:
                recv = server.arecv(small, 6, ANY)
                send = client.asend(data, 6)
            else:
                send = client.asend(data, 6)
                await asyncio.gather(client.asend(b"m", 7), server.arecv(bytearray(1), 7, ANY))
                recv = server.arecv(small, 6, ANY)
            with pytest.raises(MessageTruncatedError) as info:
                await recv
            assert (info.value.tag, info.value.length, info.value.capacity) == (6, size, size // 2)
            assert (small == 0xA5).all(), "a truncated receive must not write"
            into = sentinel(size)
            assert await server.arecv(into, 6, ANY) == (6, size)
            await send
            assert np.array_equal(into, data)
            # the other direction; a receive of unknown size is never truncated
            back = client.arecv(bytearray(10), 8, ANY)
            send = server.asend(ep, data, 8)
            with pytest.raises(MessageTruncatedError):
                await back
            msg = await client.arecv_message(8)
            await send
            assert bytes(msg.data) == data.tobytes()
            msg.release()

    asyncio.run(main())


def test_recv_timeout(pair: Any) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            for recv, send in (
                (lambda b, **k: server.arecv(b, 42, ANY, **k), client.asend),
                (lambda b, **k: client.arecv(b, 42, ANY, **k), lambda b, t: server.asend(ep, b, t)),
            ):
                buf = sentinel(64)
                with pytest.raises(TransportTimeoutError):
                    await recv(buf, timeout=0.05)
                assert isinstance(TransportTimeoutError(), TimeoutError)
                # withdrawn: the next message goes to the next receive, the old buffer untouched
                into = bytearray(64)
                got, _ = await asyncio.gather(recv(into), send(b"later", 42))
                assert got == (42, 5) and bytes(into[:5]) == b"later"
                assert (buf == 0xA5).all()
            with pytest.raises(TransportTimeoutError):
                await server.arecv_from(bytearray(1), 43, ANY, timeout=0.01)
            with pytest.raises(TransportTimeoutError):
                await server.arecv_message(43, timeout=0.01)

    asyncio.run(main())


@pytest.mark.parametrize("backend", ["cma", "shm"])
def test_unreceived_rendezvous_send_times_out_and_is_withdrawn(backend: str) -> None:
    """Nobody receives the tag: asend(timeout=) fails with TransportTimeoutError and the
    message is withdrawn (a receive posted later does not get it); the connection carries on."""

    async def main() -> None:
        async with connected(backend) as (server, client, ep):
            for where, send, recv in (
                ("client->server", client.asend, server.arecv),
                ("server->client", lambda *a, **k: server.asend(ep, *a, **k), client.arecv),
            ):
                data = payload(RNDV + 10, 1)
                with pytest.raises(TransportTimeoutError):
                    await send(data, 77, timeout=0.2)
                # a round trip: the withdrawal reached the peer
                await asyncio.gather(send(b"p", 78), recv(bytearray(1), 78, ANY))
                with pytest.raises(TransportTimeoutError):
                    await recv(bytearray(RNDV + 10), 77, ANY, timeout=0.1)
                fresh = payload(RNDV + 10, 2)
                into = np.empty_like(fresh)
                got, _ = await asyncio.gather(recv(into, 77, ANY), send(fresh, 77, timeout=30))
                assert got == (77, fresh.nbytes) and np.array_equal(into, fresh), where

    asyncio.run(main())


def test_send_times_out_when_the_peer_stops_reading(backend: str, peer: Any) -> None:
    """A child whose loop is stuck reads nothing: a large send with a timeout must end with
    TransportTimeoutError, not wait for the peer forever."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        accepted: asyncio.Future[ServerEndpoint] = loop.create_future()
        server.set_accept_cb(lambda ep: None if accepted.done() else accepted.set_result(ep))
        child = peer("connect-stall", backend, server.port)
        ep = await accepted
        assert await child.aline() == "ready"
        send = server.asend(ep, np.zeros(64 << 20, dtype=np.uint8), 1, timeout=0.2)
        try:
            # the outer bound only turns a hang into a failure: 10x the timeout
            await asyncio.wait_for(asyncio.shield(send), 2)
        except TransportTimeoutError:
            pass
        except TimeoutError:
            send.cancel()
            pytest.fail("asend(timeout=0.2) still pending after 2 s")
        else:
            pytest.fail("the send completed although nobody read it")
        finally:
            child.tell("exit")
            child.proc.wait(10)
            await until(lambda: not server.list_clients())
            await server.aclose(drain=False)

    asyncio.run(main())


def test_a_timed_out_send_settles_before_its_buffer_is_reused(backend: str, peer: Any) -> None:
    """asend(timeout=) fails at once, but a transfer already under way (a rendezvous the peer may
    be reading, a frame half on the wire) keeps the buffer referenced until it settles; once
    aflush_ep() returns, the caller may reuse the buffer: the peer then holds the message as it
    was, or nothing, never the caller's new bytes under the old tag."""
    size = 64 << 20 if backend == "tcp" else 2 * RNDV  # over the socket buffers / one CMA step

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        accepted: asyncio.Future[ServerEndpoint] = loop.create_future()
        server.set_accept_cb(lambda ep: None if accepted.done() else accepted.set_result(ep))
        try:
            child = peer("connect-stall-then-recv", backend, server.port, size)
            ep = await accepted
            assert await child.aline() == "ready"
            data = payload(size, 6)
            original = hashlib.sha256(data).hexdigest()
            with pytest.raises(TransportTimeoutError):
                await asyncio.wait_for(server.asend(ep, data, 1, timeout=0.2), 10)
            ping = server.arecv(bytearray(8), 2, ANY)
            child.tell("go")
            await ping
            await asyncio.wait_for(server.aflush_ep(ep), 10)  # the failed send has settled
            data[:] = 0xEE  # so the buffer is the caller's again
            await server.asend(ep, b"pong", 3)
            said = await child.aline()
            assert said in ("none", f"got {original}"), "the peer got altered bytes"
            rc, _, err = child.finish()
            assert rc == 0, err
        finally:
            await server.aclose(drain=False)

    asyncio.run(main())


@pytest.mark.parametrize("how", ["cancel", "wait_for", "timeout"])
@pytest.mark.parametrize("size", [10, EAGER_SHM, 100_000, RNDV + 1])
def test_cancelled_receive_is_never_written(pair: Any, how: str, size: int) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            for where, send, recv in (
                ("client->server", client.asend, server.arecv),
                ("server->client", lambda b, t: server.asend(ep, b, t), client.arecv),
            ):
                buf = sentinel(size)
                if how == "cancel":
                    fut = recv(buf, 5, ANY)
                    await asyncio.sleep(0)
                    assert fut.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await fut
                elif how == "wait_for":
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(recv(buf, 5, ANY), 0.02)
                else:
                    with pytest.raises(TransportTimeoutError):
                        await recv(buf, 5, ANY, timeout=0.02)
                data = payload(size, 3)
                into = sentinel(size)
                got, _ = await asyncio.gather(recv(into, 5, ANY), send(data, 5))
                assert got == (5, size), where
                assert np.array_equal(into, data), where
                await asyncio.gather(send(b"p", 6), recv(bytearray(1), 6, ANY))
                assert (buf == 0xA5).all(), f"{where}: the cancelled buffer was written"

    asyncio.run(main())


def test_receive_cancelled_mid_transfer(pair: Any, backend: str) -> None:
    """A 40 MiB receive is cancelled once its first bytes landed: its buffer is not written
    again, and the message goes whole to the next receive (the sender's send completes)."""
    size = 40 << 20

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with pair() as (server, client, _ep):
            data = payload(size, 4)
            first = np.full(size, 0xFF, dtype=np.uint8)
            recv = server.arecv(first, 9, ANY)
            snapshot: list[np.ndarray[Any, Any]] = []

            def poll() -> None:
                if first[0] != 0xFF:
                    recv.cancel()
                    snapshot.append(first.copy())
                elif not recv.done():
                    loop.call_soon(poll)

            loop.call_soon(poll)
            send = client.asend(data, 9)
            with pytest.raises(asyncio.CancelledError):
                await recv
            assert snapshot, "the receive completed before it could be cancelled"
            second = sentinel(size)
            recv2 = server.arecv(second, 9, ANY)
            await send
            # a ping-pong behind it: whatever was in flight has been processed
            await asyncio.gather(client.asend(b"p", 10), server.arecv(bytearray(1), 10, ANY))
            assert recv2.done(), "the sender's send completed but the message never arrived"
            assert await recv2 == (9, size)
            assert np.array_equal(second, data)
            assert np.array_equal(first, snapshot[0]), "written to after cancel()"

    asyncio.run(main())


@pytest.mark.parametrize("same_tag", [False, True], ids=["distinct-tags", "one-tag"])
def test_thousands_of_outstanding_operations(pair: Any, same_tag: bool) -> None:
    n = 3000

    def size(i: int) -> int:
        return RNDV + i if i % 1000 == 999 else 1 + (i * 37) % 3000

    async def main() -> None:
        async with pair() as (server, client, _ep):
            datas = [payload(size(i), i) for i in range(n)]
            intos = [sentinel(size(i)) for i in range(n)]

            def tag(i: int) -> int:
                return 5 if same_tag else 1000 + i

            # half the receives posted before the sends, half after (their messages unexpected)
            recvs: list[asyncio.Future[tuple[int, int]]] = [
                server.arecv(intos[i], tag(i), ANY) for i in range(n // 2)
            ]
            order = range(n) if same_tag else [*range(n - 1, n // 2 - 1, -1), *range(n // 2)]
            sends = [client.asend(datas[i], tag(i)) for i in order]
            await asyncio.sleep(0)
            recvs += [server.arecv(intos[i], tag(i), ANY) for i in range(n // 2, n)]
            got = await asyncio.gather(*recvs)
            await asyncio.gather(*sends)
            assert got == [(tag(i), size(i)) for i in range(n)]
            bad = [i for i in range(n) if not np.array_equal(intos[i], datas[i])]
            assert not bad, f"{len(bad)} corrupted, first {bad[:5]}"

    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# close
# ------------------------------------------------------------------------------------------


def test_close_fails_outstanding_operations(backend: str) -> None:
    async def main() -> None:
        async with connected(backend) as (server, client, ep):
            recv = client.arecv(bytearray(8), 1, ANY)
            msg = client.arecv_message(2)
            # nobody receives it; too big for the socket buffers over TCP
            big = client.asend(np.zeros(64 << 20, dtype=np.uint8), 3)
            cb_fail: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
            client.recv(bytearray(8), 4, ANY, lambda t, n: None, cb_fail.set_result)
            await client.aclose(drain=False)
            for fut in (recv, msg):
                with pytest.raises(TransportClosedError):
                    await fut
            assert isinstance(await cb_fail, TransportClosedError)
            with pytest.raises(TransportClosedError):
                await big  # not taken (rendezvous) or not all written (TCP): failed
            assert not client.connected
            # the Server side of it
            await until(lambda: not ep.connected)
            srecv = server.arecv(bytearray(8), 1, ANY)
            await server.aclose()
            with pytest.raises(TransportClosedError):
                await srecv

    asyncio.run(main())


def test_aclose_gives_up_draining_after_its_timeout(backend: str) -> None:
    async def main() -> None:
        async with connected(backend) as (_server, client, _ep):
            big = client.asend(payload(RNDV + 1), 3)  # nobody receives it
            await client.aclose(timeout=0.1)
            if backend != "tcp":
                with pytest.raises(TransportClosedError):
                    await big
            else:
                await big

    asyncio.run(main())


def test_server_close_fails_the_clients_operations(backend: str) -> None:
    async def main() -> None:
        async with connected(backend) as (server, client, _ep):
            recv = client.arecv(bytearray(8), 1, ANY)
            big = client.asend(np.zeros(64 << 20, dtype=np.uint8), 3)
            await server.aclose(drain=False)
            for fut in (recv, big):
                with pytest.raises(ConnectionLostError):
                    await fut
            with pytest.raises(ConnectionLostError):
                await client.asend(b"x", 1)
            assert not client.connected

    asyncio.run(main())


def test_operations_after_aclose_raise_closed(pair: Any) -> None:
    async def call(fn: Any, *args: Any, **kw: Any) -> None:
        # raised at the call, or on the future it returns: either way, typed
        with pytest.raises(TransportClosedError):
            fut = fn(*args, **kw)
            await fut

    async def main() -> None:
        async with pair() as (server, client, ep):
            await client.aclose()
            await client.aclose()  # twice is fine
            await call(client.asend, b"x", 1)
            await call(client.arecv, bytearray(1), 1, ANY)
            await call(client.arecv_message, 1)
            await call(client.aflush)
            await call(client.aconnect, "127.0.0.1", server.port)
            await server.aclose()
            await server.aclose()
            await call(server.asend, ep, b"x", 1)
            await call(server.arecv, bytearray(1), 1, ANY)
            await call(server.arecv_from, bytearray(1), 1, ANY)
            await call(server.arecv_message, 1)
            await call(server.aflush)
            await call(server.aflush_ep, ep)
            with pytest.raises(TransportClosedError):
                server.listen("127.0.0.1", 0)
            assert server.list_clients() == set()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# resources: idle CPU, exit without close
# ------------------------------------------------------------------------------------------


def test_idle_pairs_use_no_cpu(peer: Any) -> None:
    """A child holding one connected pair per backend, receives posted on both sides, idle for
    1 s, uses (almost) no CPU: nothing polls.  This measures CPU time consumed, not wall time."""
    child = peer("idle", ",".join(BACKENDS))
    assert child.line() == "ready"
    proc = psutil.Process(child.pid)
    before = proc.cpu_times()
    time.sleep(1.0)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    assert used < 0.05, f"idle connected pairs ({BACKENDS}) used {used:.3f} s of CPU in 1 s"
    rc, out, err = child.finish()
    assert (rc, out.strip(), err) == (0, "done", "")


@pytest.mark.parametrize(
    ("backend", "scenario"),
    [
        *((b, "exit-pair") for b in BACKENDS),
        # the rest on shm, the backend with the most to tear down (rings)
        ("shm", "exit-client"),
        ("shm", "exit-sys-exit"),
        ("shm", "no-loop-close"),
    ],
)
def test_exit_without_closing_is_clean(backend: str, scenario: str) -> None:
    """A process that exits with a connected Client (and Server) never closed, operations
    outstanding, exits with status 0 and prints nothing (Starway aborts here)."""

    async def main() -> None:
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        env = {}
        name = scenario
        if scenario == "no-loop-close":
            name, env = "exit-pair", {"PEER_NO_LOOP_CLOSE": "1"}
        args = (backend, server.port) if name == "exit-client" else (backend,)
        child = Peer(name, *args, env=env)
        assert await child.aline() == "ready"
        await until(lambda: child.proc.poll() is not None, "the child to exit")
        rc, _out, err = child.finish()
        assert rc == 0, err
        assert err == "", err
        await until(lambda: not server.list_clients())
        await server.aclose()

    asyncio.run(main())
