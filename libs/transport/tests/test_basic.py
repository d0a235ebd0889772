"""Round trips, tag matching, the Server's endpoints, messages of unknown size, flush and close.

Each test runs once per backend (``backend`` fixture: cma, shm, tcp).  Sizes straddle the
thresholds that change the protocol: 2048 (one gathered write), 8 KiB (whole messages through
the shared-memory ring), 64 KiB (DATA read in place), ``RNDV`` (rendezvous: CMA or the ring in
chunks) and 16 MiB (one CMA step).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from _support import ANY, EAGER_SHM, RNDV, RNDV_TRANSPORT, connected, payload, sentinel, until
from isthmus.buffer import BufferPool
from isthmus.transport import (
    Client,
    ConnectionLostError,
    Message,
    Server,
    ServerEndpoint,
    TransportError,
)

pytestmark = pytest.mark.timeout(60)

SIZES = sorted(
    {0, 8, 2047, 2049, EAGER_SHM - 1, EAGER_SHM, 65535, 65536, 300_000, RNDV - 1, RNDV, 20 << 20}
)

Send = Callable[[Any, int], "asyncio.Future[None]"]
Recv = Callable[[Any, int], "asyncio.Future[tuple[int, int]]"]


def directions(server: Server, client: Client, ep: ServerEndpoint) -> list[tuple[str, Send, Recv]]:
    """(name, send, recv) for client->server and server->client."""
    return [
        ("client->server", client.asend, lambda b, t: server.arecv(b, t, ANY)),
        (
            "server->client",
            lambda b, t: server.asend(ep, b, t),
            lambda b, t: client.arecv(b, t, ANY),
        ),
    ]


async def make_unexpected(send: Send, recv: Recv, data: Any, tag: int) -> asyncio.Future[None]:
    """Send ``data`` with ``tag`` before any receive is posted for it, and return once the
    receiver has seen it: a marker sent after it on the same connection has arrived."""
    fut = send(data, tag)
    await asyncio.gather(send(b"marker", tag + 1), recv(bytearray(16), tag + 1))
    return fut


# ------------------------------------------------------------------------------------------
# transports and round trips
# ------------------------------------------------------------------------------------------


def test_transports_name_the_backend(pair: Any, backend: str) -> None:
    async def main() -> None:
        async with pair() as (_server, client, ep):
            want = RNDV_TRANSPORT[backend]
            for got in (dict(client.transports()), dict(ep.view_transports())):
                assert got.get("rendezvous") == want
                assert got["control"] == ("tcp" if backend == "tcp" else "unix")
            assert client.connected and ep.connected
            assert ep.peer_name == client.name

    asyncio.run(main())


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_both_directions(pair: Any, size: int) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            for i, (where, send, recv) in enumerate(directions(server, client, ep)):
                data = payload(size, seed=i)
                # the receive is posted before the message arrives
                into = sentinel(size + 64)
                got, _ = await asyncio.gather(recv(into, 10), send(data, 10))
                assert got == (10, size), where
                assert np.array_equal(into[:size], data), where
                assert (into[size:] == 0xA5).all(), f"{where}: wrote past the message"
                # the message arrives before the receive is posted
                data2 = payload(size, seed=10 + i)
                sent = await make_unexpected(send, recv, data2, 20)
                into2 = sentinel(size)
                assert await recv(into2, 20) == (20, size), where
                await sent
                assert np.array_equal(into2, data2), where

    asyncio.run(main())


@pytest.mark.parametrize("shape", ["small", "eager", "rendezvous"])
def test_list_of_buffers_is_one_message(pair: Any, shape: str) -> None:
    big = {"small": 40, "eager": 100_000, "rendezvous": RNDV + 1000}[shape]
    parts: list[Any] = [
        b"head",
        payload(big, 1),
        bytearray(),  # an empty part is fine
        memoryview(b"-middle-"),
        np.arange(7, dtype=np.int32),  # moved as its 28 bytes
        bytearray(payload(big // 2, 2).tobytes()),
    ]
    whole = b"".join(bytes(memoryview(p).cast("B")) for p in parts)

    async def main() -> None:
        async with pair() as (server, client, ep):
            for where, send, recv in directions(server, client, ep):
                into = bytearray(len(whole) + 10)
                got, _ = await asyncio.gather(recv(into, 3), send(parts, 3))
                assert got == (3, len(whole)), where
                assert bytes(into[: len(whole)]) == whole, where
                into = bytearray(len(whole))
                sent = await make_unexpected(send, recv, tuple(parts), 5)
                assert await recv(into, 5) == (5, len(whole))
                await sent
                assert bytes(into) == whole, where

    asyncio.run(main())


def test_a_list_of_many_buffers_is_one_message(pair: Any, backend: str) -> None:
    """20000 pieces (a scatter-gather list, each piece a memoryview into one array)."""
    pieces, size = 20_000, 300

    async def main() -> None:
        async with pair() as (server, client, _ep):
            data = payload(pieces * size, 5)
            view = memoryview(data)
            parts = [view[i * size : (i + 1) * size] for i in range(pieces)]
            into = sentinel(data.nbytes)
            recv = server.arecv(into, 1, ANY)
            await client.asend(parts, 1)
            assert await recv == (1, data.nbytes)
            assert np.array_equal(into, data)

    asyncio.run(main())


@pytest.mark.parametrize(
    "array",
    [
        np.arange(1000, dtype=np.int64),
        np.linspace(0, 1, 3000, dtype=np.float32),
        np.arange(RNDV // 4, dtype=np.float32).reshape(-1, 512),  # rendezvous
        np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4),
        np.arange(1 << 20, dtype=np.float64).reshape(1024, 1024)[:512],  # C-contiguous slice
    ],
    ids=["int64", "float32", "float32-2d-rndv", "int16-3d", "float64-rows"],
)
def test_numpy_arrays_move_as_bytes(pair: Any, array: np.ndarray[Any, Any]) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            for where, send, recv in directions(server, client, ep):
                same = np.zeros_like(array)
                got, _ = await asyncio.gather(recv(same, 1), send(array, 1))
                assert got == (1, array.nbytes), f"{where}: the length is in bytes"
                assert np.array_equal(same, array), where
                flat = np.zeros(array.nbytes + 8, dtype=np.uint8)  # any dtype can receive
                got, _ = await asyncio.gather(recv(flat, 2), send(array, 2))
                assert got == (2, array.nbytes), where
                assert flat[: array.nbytes].tobytes() == array.tobytes(), where

    asyncio.run(main())


@pytest.mark.parametrize("size", [100, 100_000, RNDV + 100])
def test_isthmus_buffers_from_a_pool(pair: Any, size: int) -> None:
    async def main() -> None:
        pool = BufferPool(RNDV + 4096, 2)
        try:
            async with pair() as (server, client, ep):
                for i, (where, send, recv) in enumerate(directions(server, client, ep)):
                    data = payload(size, seed=i)
                    src = pool.acquire()
                    dst = pool.acquire()
                    src[:size] = data.tobytes()
                    part = src[:size]  # a Buffer slice is sent as it is
                    got, _ = await asyncio.gather(recv(dst, 4), send(part, 4))
                    assert got == (4, size), where
                    assert dst.tobytes()[:size] == data.tobytes(), where
                    dst.release()
                    part.release()  # the send completed: the transport let go of it
                    src.release()
                    assert pool.in_use == 0
        finally:
            pool.close()

    asyncio.run(main())


@pytest.mark.parametrize("size", [100, RNDV + 100])
def test_a_completed_send_lets_go_of_its_buffer(pair: Any, size: int) -> None:
    async def main() -> None:
        pool = BufferPool(RNDV + 4096, 1)
        try:
            async with pair() as (server, client, _ep):
                src = pool.acquire()
                into = bytearray(src.nbytes)
                recv = server.arecv(into, 1, ANY)
                await client.asend(src, 1)
                await recv
                src.release()  # the send completed: the buffer is ours again
                assert pool.in_use == 0
        finally:
            pool.close()

    asyncio.run(main())


@pytest.mark.parametrize("size", [50, 100_000, RNDV + 10])
def test_bytearray_and_memoryview_slices(pair: Any, size: int) -> None:
    """A receive into a memoryview slice lands exactly there; neighbours are untouched."""

    async def main() -> None:
        async with pair() as (server, client, ep):
            for i, (where, send, recv) in enumerate(directions(server, client, ep)):
                data = bytearray(payload(size, seed=i).tobytes())
                src = bytearray(b"x" * 13) + data + bytearray(b"y" * 7)
                target = bytearray(b"\xee" * (size + 100))
                window = memoryview(target)[33 : 33 + size]
                got, _ = await asyncio.gather(
                    recv(window, 6), send(memoryview(src)[13 : 13 + size], 6)
                )
                assert got == (6, size), where
                assert target[33 : 33 + size] == data, where
                assert target[:33] == b"\xee" * 33 and target[33 + size :] == b"\xee" * 67
                got, _ = await asyncio.gather(recv(target, 7), send(bytes(data), 7))
                assert got == (7, size) and target[:size] == data, where

    asyncio.run(main())


def test_cross_process_round_trip(backend: str, peer: Any) -> None:
    """Both directions against a Server in another process (CMA and the ring between two
    address spaces), the Server echoing what it receives with arecv_message."""
    child = peer("serve-echo", backend)
    port = int(child.expect("port"))

    async def main() -> None:
        client = Client(backend=backend)
        await client.aconnect("127.0.0.1", port)
        assert dict(client.transports()).get("rendezvous") == RNDV_TRANSPORT[backend]
        for i, size in enumerate(SIZES):
            data = payload(size, seed=i)
            back = sentinel(size + 1)
            got, _ = await asyncio.gather(
                client.arecv(back, 100 + i, ANY), client.asend(data, 100 + i)
            )
            assert got == (100 + i, size)
            assert np.array_equal(back[:size], data) and back[size] == 0xA5
        await client.aclose()

    asyncio.run(main())
    rc, _out, err = child.finish()
    assert rc == 0, err
    assert err == ""


# ------------------------------------------------------------------------------------------
# tag matching
# ------------------------------------------------------------------------------------------


def test_exact_tags_pick_their_message(pair: Any) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            for where, send, recv in directions(server, client, ep):
                a, b = bytearray(8), bytearray(8)
                ra, rb = recv(a, 1), recv(b, 2)
                await send(b"two", 2)
                await send(b"one", 1)
                assert await rb == (2, 3) and await ra == (1, 3), where
                assert bytes(a[:3]) == b"one" and bytes(b[:3]) == b"two", where

    asyncio.run(main())


@pytest.mark.parametrize("size", [5, RNDV + 5])
@pytest.mark.parametrize("posted_first", [True, False], ids=["posted", "unexpected"])
def test_mask_wildcards_and_full_sender_tag(pair: Any, size: int, posted_first: bool) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            recvs = {
                "client->server": lambda b, t, tag_mask: server.arecv(b, t, tag_mask),
                "server->client": lambda b, t, tag_mask: client.arecv(b, t, tag_mask),
            }
            for where, send, _recv in directions(server, client, ep):
                arecv = recvs[where]
                want = payload(size, 1)
                other = payload(size, 2)
                into = sentinel(size)
                if posted_first:
                    r = arecv(into, 0x1234_0000, 0xFFFF_0000)
                    s_other = send(other, 0x4321_ABCD)  # does not match the mask
                    s_want = send(want, 0x1234_ABCD)
                else:
                    exact = functools.partial(arecv, tag_mask=ANY)
                    s_other = await make_unexpected(send, exact, other, 0x4321_ABCD)
                    s_want = await make_unexpected(send, exact, want, 0x1234_ABCD)
                    r = arecv(into, 0x1234_0000, 0xFFFF_0000)
                assert await r == (0x1234_ABCD, size), f"{where}: the sender's full tag"
                await s_want
                assert np.array_equal(into, want), where
                # the non-matching message is still there for a receive that matches it
                into2 = sentinel(size)
                assert await arecv(into2, 0x4321_0000, 0xFFFF_0000) == (0x4321_ABCD, size)
                await s_other
                assert np.array_equal(into2, other), where
                # mask 0 matches anything; the highest tag bits are matched too
                top = (1 << 64) - 1
                got, _ = await asyncio.gather(arecv(bytearray(size), 0, 0), send(want, top))
                assert got == (top, size), where
                got, _ = await asyncio.gather(
                    arecv(bytearray(size), 1 << 63, 1 << 63), send(want, (1 << 63) | 7)
                )
                assert got == ((1 << 63) | 7, size), where

    asyncio.run(main())


@pytest.mark.parametrize(
    "sizes", [(10, 20), (RNDV + 10, 20), (20, RNDV + 10), (100_000, 70_000)], ids=str
)
def test_same_tag_keeps_order(pair: Any, sizes: tuple[int, int]) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            for where, send, recv in directions(server, client, ep):
                first, second = payload(sizes[0], 1), payload(sizes[1], 2)
                top = max(sizes)
                # receives posted first: the first posted gets the first message
                a, b = sentinel(top), sentinel(top)
                ra, rb = recv(a, 9), recv(b, 9)
                await asyncio.gather(send(first, 9), send(second, 9))
                assert await ra == (9, sizes[0]) and await rb == (9, sizes[1]), where
                assert np.array_equal(a[: sizes[0]], first), where
                assert np.array_equal(b[: sizes[1]], second), where
                # both arrived before any receive: still in order
                s1 = send(first, 11)
                s2 = await make_unexpected(send, recv, second, 11)
                a, b = sentinel(top), sentinel(top)
                assert await recv(a, 11) == (11, sizes[0]), where
                assert await recv(b, 11) == (11, sizes[1]), where
                await asyncio.gather(s1, s2)
                assert np.array_equal(a[: sizes[0]], first), where
                assert np.array_equal(b[: sizes[1]], second), where

    asyncio.run(main())


def test_first_posted_receive_wins_between_exact_and_masked(pair: Any) -> None:
    async def main() -> None:
        async with pair() as (server, client, _ep):
            # exact posted before masked
            e, m = bytearray(8), bytearray(8)
            re_, rm = server.arecv(e, 0x55, ANY), server.arecv(m, 0x50, 0xF0)
            await client.asend(b"first", 0x55)
            await client.asend(b"second", 0x55)
            assert await re_ == (0x55, 5) and await rm == (0x55, 6)
            assert bytes(e[:5]) == b"first" and bytes(m[:6]) == b"second"
            # masked posted before exact
            e, m = bytearray(8), bytearray(8)
            rm, re_ = server.arecv(m, 0x50, 0xF0), server.arecv(e, 0x55, ANY)
            await client.asend(b"first", 0x55)
            await client.asend(b"second", 0x55)
            assert await rm == (0x55, 5) and await re_ == (0x55, 6)
            assert bytes(m[:5]) == b"first" and bytes(e[:6]) == b"second"
            # a wildcard receive takes unexpected messages in arrival order, whatever the tag
            for tag in (0x32, 0x31, 0x33):
                await client.asend(bytes([tag]), tag)
            await client.aflush()
            got = [await server.arecv(bytearray(1), 0x30, 0xF0) for _ in range(3)]
            assert got == [(0x32, 1), (0x31, 1), (0x33, 1)]

    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# the Server and its endpoints
# ------------------------------------------------------------------------------------------


def test_many_clients_endpoints_and_routing(backend: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        accepted: list[ServerEndpoint] = []
        server.set_accept_cb(accepted.append)
        clients = [Client(backend=backend, name=f"c{i}") for i in range(3)]
        for c in clients:
            await c.aconnect("127.0.0.1", server.port)
        await until(lambda: len(accepted) == 3, "three accept callbacks")
        eps = server.list_clients()
        assert eps == set(accepted) and len(eps) == 3
        assert len({ep.name for ep in eps}) == 3
        assert {ep.peer_name for ep in eps} == {"c0", "c1", "c2"}
        for ep in eps:
            assert isinstance(ep, ServerEndpoint) and ep.connected
            assert isinstance(ep.name, str) and ep.name
            assert (ep.local_addr, ep.local_port) == ("127.0.0.1", server.port)
            assert isinstance(ep.remote_addr, str) and ep.remote_addr
            assert isinstance(ep.remote_port, int)
            if backend == "tcp":
                assert ep.remote_addr == "127.0.0.1" and ep.remote_port > 0

        # arecv_from says who sent what; a reply to that endpoint reaches that client only
        froms = [server.arecv_from(bytearray(16), 7, ANY) for _ in clients]
        replies = [c.arecv(bytearray(16), 8, ANY) for c in clients]
        for i, c in enumerate(clients):
            await c.asend(f"from c{i}".encode(), 7)
        by_name: dict[str, ServerEndpoint] = {}
        for f in froms:
            ep, tag, n = await f
            assert ep in eps and tag == 7 and n == 7
            by_name[ep.peer_name] = ep
        assert set(by_name) == {"c0", "c1", "c2"}
        for name, ep in by_name.items():
            await server.asend(ep, f"to {name}".encode(), 8)
        for r in replies:
            assert await r == (8, 5)
        # arecv (from any client)
        r = server.arecv(bytearray(16), 9, ANY)
        await clients[2].asend(b"any", 9)
        assert await r == (9, 3)

        # a client that closes disappears; the others carry on
        gone = by_name["c1"]
        await clients[1].aclose()
        await until(lambda: gone not in server.list_clients(), "the endpoint to go away")
        assert not gone.connected and len(server.list_clients()) == 2
        with pytest.raises(ConnectionLostError):
            await server.asend(gone, b"late", 8)
        got, _ = await asyncio.gather(
            clients[0].arecv(bytearray(8), 8, ANY), server.asend(by_name["c0"], b"still", 8)
        )
        assert got == (8, 5)
        for c in clients:
            await c.aclose()
        await until(lambda: not server.list_clients(), "every endpoint to go away")
        await server.aclose()
        assert loop.is_running()

    asyncio.run(main())


def test_accept_callback_runs_once_per_client_with_a_ready_endpoint(pair: Any) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            assert ep in server.list_clients()
            # the endpoint handed to the callback can be sent to at once
            got, _ = await asyncio.gather(
                client.arecv(bytearray(4), 1, ANY), server.asend(ep, b"hi", 1)
            )
            assert got == (1, 2)

    asyncio.run(main())


def test_listen_address_and_aconnect_address(backend: str) -> None:
    async def main() -> None:
        server = Server(backend=backend)
        addr = server.listen_address()
        assert isinstance(addr, bytes) and addr == server.get_worker_address()
        client = Client(backend=backend)
        await client.aconnect_address(addr)
        assert dict(client.transports()).get("rendezvous") == RNDV_TRANSPORT[backend]
        await until(lambda: len(server.list_clients()) == 1)
        data = payload(RNDV + 2)
        into = np.empty_like(data)
        await asyncio.gather(server.arecv(into, 1, ANY), client.asend(data, 1))
        assert np.array_equal(into, data)
        await client.aclose()
        await server.aclose()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# receives of unknown size
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 100, 100_000, 300_000, RNDV + 3])
def test_arecv_message_of_unknown_size(pair: Any, size: int) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            data = payload(size, 3)
            # server side: posted first, then unexpected
            fut = server.arecv_message(4)
            await client.asend(data, 4)
            msg = await fut
            assert isinstance(msg, Message)
            assert (msg.tag, msg.nbytes, msg.endpoint) == (4, size, ep)
            assert bytes(msg.data) == data.tobytes()
            msg.release()
            with pytest.raises(ValueError):
                bytes(msg.data)  # released
            sent = await make_unexpected(
                client.asend, lambda b, t: server.arecv(b, t, ANY), data, 5
            )
            with await server.arecv_message(0, 0) as msg:  # any tag
                assert (msg.tag, msg.nbytes) == (5, size)
                assert bytes(msg.data) == data.tobytes()
            await sent
            # client side
            fut = client.arecv_message(6)
            await server.asend(ep, data, 6)
            msg = await fut
            assert (msg.tag, msg.nbytes, msg.endpoint) == (6, size, None)
            assert bytes(msg.data) == data.tobytes()
            msg.release()

    asyncio.run(main())


@pytest.mark.parametrize("size", [100, 200_000, 1 << 20, (1 << 20) + 1, RNDV + 1])
def test_arecv_message_into_a_pool(pair: Any, size: int) -> None:
    async def main() -> None:
        pool = BufferPool(1 << 20, 2)
        try:
            async with pair() as (server, client, ep):
                pooled = size <= pool.slot_size
                data = payload(size, 4)
                for where, send, arecv_message in [
                    ("client->server", client.asend, server.arecv_message),
                    ("server->client", lambda b, t: server.asend(ep, b, t), client.arecv_message),
                ]:
                    fut = arecv_message(1, pool=pool)
                    await send(data, 1)
                    msg = await fut
                    assert bytes(msg.data) == data.tobytes(), where
                    assert pool.in_use == (1 if pooled else 0), where
                    msg.release()
                    assert pool.in_use == 0, f"{where}: release() gives the slot back"
                    marker = functools.partial(_message_of_any_size, arecv_message)
                    sent = await make_unexpected(send, marker, data, 2)
                    with await arecv_message(2, pool=pool) as msg:
                        assert bytes(msg.data) == data.tobytes()
                        assert pool.in_use == (1 if pooled else 0), where
                    await sent
                    assert pool.in_use == 0, where
        finally:
            pool.close()

    asyncio.run(main())


async def _message_of_any_size(arecv_message: Any, _buf: Any, tag: int) -> tuple[int, int]:
    with await arecv_message(tag) as msg:
        return msg.tag, msg.nbytes


# ------------------------------------------------------------------------------------------
# flush and close
# ------------------------------------------------------------------------------------------


def test_aflush_completes_after_the_sends_before_it(pair: Any, backend: str) -> None:
    async def main() -> None:
        async with pair() as (server, client, ep):
            sends = [client.asend(payload(100 + i, i), 1) for i in range(10)]
            await client.aflush()
            assert all(s.done() for s in sends)
            for i in range(10):
                into = bytearray(200)
                assert await server.arecv(into, 1, ANY) == (1, 100 + i)
                assert bytes(into[: 100 + i]) == payload(100 + i, i).tobytes()
            # nothing outstanding: completes at once
            await client.aflush()
            await server.aflush()
            await server.aflush_ep(ep)

            big = payload(RNDV + 9, 9)
            send = client.asend(big, 2)
            flush = client.aflush()
            # a ping-pong lets every frame in flight be processed on both sides
            await asyncio.gather(server.arecv(bytearray(4), 3, ANY), client.asend(b"p", 3))
            if backend != "tcp":
                # a rendezvous send completes when the receiver took it: not before
                assert not send.done() and not flush.done()
            into = np.empty_like(big)
            await server.arecv(into, 2, ANY)
            await flush
            assert send.done() and np.array_equal(into, big)

    asyncio.run(main())


def test_server_aflush_and_aflush_ep(backend: str) -> None:
    async def main() -> None:
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        eps: list[ServerEndpoint] = []
        server.set_accept_cb(eps.append)
        clients = [Client(backend=backend) for _ in range(2)]
        for c in clients:
            await c.aconnect("127.0.0.1", server.port)
        await until(lambda: len(eps) == 2)
        big = payload(RNDV + 1, 1)
        intos = [np.empty_like(big) for _ in clients]
        recvs = [c.arecv(into, 1, ANY) for c, into in zip(clients, intos, strict=True)]
        sends = [server.asend(ep, big, 1) for ep in eps]
        await server.aflush_ep(eps[0])
        assert sends[0].done()
        await server.aflush()
        assert all(s.done() for s in sends)
        await asyncio.gather(*recvs)
        assert all(np.array_equal(x, big) for x in intos)
        # the callback forms
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        server.flush(lambda: done.set_result("flush"), done.set_exception)
        assert await done == "flush"
        done = loop.create_future()
        server.flush_ep(eps[1], lambda: done.set_result("flush_ep"), done.set_exception)
        assert await done == "flush_ep"
        done = loop.create_future()
        clients[0].flush(lambda: done.set_result("client"), done.set_exception)
        assert await done == "client"
        for c in clients:
            await c.aclose()
        await server.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("size", [RNDV, 20 << 20])
def test_aclose_drains_a_send_the_peer_receives_later(backend: str, size: int) -> None:
    async def main() -> None:
        async with connected(backend) as (server, client, _ep):
            data = payload(size, 5)
            send = client.asend(data, 1)
            closing = client.aclose()
            # let the loop spin: the close must wait for the peer to take the message
            for _ in range(20):
                await asyncio.sleep(0.005)
            if backend != "tcp":
                assert not closing.done() and not send.done()
            into = sentinel(size)
            assert await server.arecv(into, 1, ANY) == (1, size)
            await closing
            assert send.done() and send.exception() is None
            assert np.array_equal(into, data)
            assert not client.connected

    asyncio.run(main())


def test_aclose_drains_across_processes(backend: str, peer: Any) -> None:
    """A child sends 4 MiB and closes at once; we post the receive only afterwards."""

    async def main() -> None:
        server = Server(backend=backend)
        server.listen("127.0.0.1", 0)
        size = RNDV + 5
        child = peer("connect-send-close", backend, server.port, size, 1, 7)
        assert await child.aline() == "sent"
        await asyncio.sleep(0.1)  # the child is inside aclose() by now
        into = sentinel(size)
        ep, tag, n = await server.arecv_from(into, 1, ANY)
        assert (tag, n) == (1, size) and isinstance(ep, ServerEndpoint)
        assert np.array_equal(into, payload(size, 7))
        assert await child.aline() == "closed ok"
        await until(lambda: not server.list_clients(), "the child's endpoint to go away")
        await server.aclose()
        rc, _, err = child.finish()
        assert rc == 0 and err == ""

    asyncio.run(main())


@pytest.mark.parametrize(
    ("size", "flush"),
    [
        (4, False),
        (4, True),
        (EAGER_SHM, False),
        (EAGER_SHM, True),
        (100_000, True),
    ],
)
def test_sends_completed_before_the_peer_closed_stay_receivable(
    backend: str, size: int, flush: bool
) -> None:
    """A message whose send completed (so the sender moved on and closed) is not lost: it is
    received after its sender is gone."""

    async def main() -> None:
        async with connected(backend) as (server, client, ep):
            data = payload(size, 8)
            await client.asend(data, 1)
            if flush:
                await client.aflush()
            await client.aclose()
            await until(lambda: not ep.connected)
            into = sentinel(size)
            assert await server.arecv(into, 1, ANY, timeout=2) == (1, size)
            assert np.array_equal(into, data)

    asyncio.run(main())


def test_error_types_form_one_hierarchy() -> None:
    import isthmus.transport as t

    for name in (
        "BufferValidationError",
        "ConnectionLostError",
        "MessageTruncatedError",
        "ProtocolError",
        "TransportClosedError",
        "TransportTimeoutError",
    ):
        assert issubclass(getattr(t, name), TransportError)
    assert issubclass(t.TransportTimeoutError, TimeoutError)
    assert issubclass(t.ConnectionLostError, ConnectionError)
    assert issubclass(t.BufferValidationError, ValueError)
