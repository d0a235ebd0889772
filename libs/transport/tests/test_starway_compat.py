"""``from isthmus.transport import starway`` keeps Starway 0.6's API.

The test bodies use nothing but Starway's API (uint8 numpy buffers, callbacks that may run on
another thread), so they run against the real ``starway`` too: set ISTHMUS_TEST_REAL_STARWAY=1
(off by default: real Starway busy-polls a core per worker).  Our module runs once per backend,
chosen through ISTHMUS_TRANSPORT_BACKEND since Starway's constructors take no options.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from _support import ANY, BACKENDS, payload, until

pytestmark = pytest.mark.timeout(60)

REAL = os.environ.get("ISTHMUS_TEST_REAL_STARWAY") == "1"
if REAL:
    # At collection: its UCX context (threads, fds) then predates every test's leak check.
    real_starway = pytest.importorskip("starway")
SIZE = 4 << 20  # large enough for the zero-copy (rendezvous) path


@pytest.fixture(params=[*(f"isthmus-{b}" for b in BACKENDS), *(["real-starway"] if REAL else [])])
def sw(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    if request.param == "real-starway":
        return real_starway
    monkeypatch.setenv("ISTHMUS_TRANSPORT_BACKEND", request.param.removeprefix("isthmus-"))
    from isthmus.transport import starway

    return starway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def threadsafe(fut: asyncio.Future[Any]) -> tuple[Callable[..., None], Callable[[str], None]]:
    """done/fail callbacks resolving ``fut`` from any thread (Starway calls them from its own)."""
    loop = fut.get_loop()

    def done(*args: Any) -> None:
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(args))

    def fail(reason: str) -> None:
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(("failed", reason)))

    return done, fail


async def listen_and_connect(sw: ModuleType, by_address: bool) -> tuple[Any, Any, Any]:
    """A Server, a connected Client and the Server's endpoint for it (from the accept callback)."""
    loop = asyncio.get_running_loop()
    server = sw.Server()
    accepted: asyncio.Future[Any] = loop.create_future()
    server.set_accept_cb(
        lambda ep: loop.call_soon_threadsafe(lambda: accepted.done() or accepted.set_result(ep))
    )
    client = sw.Client()
    if by_address:
        addr = server.listen_address()
        assert isinstance(addr, bytes) and addr
        assert server.get_worker_address() == addr
        await client.aconnect_address(addr)
    else:
        port = free_port()
        server.listen("127.0.0.1", port)
        assert isinstance(server.get_worker_address(), bytes)
        await client.aconnect("127.0.0.1", port)
    ep = await asyncio.wait_for(accepted, 30)
    return server, client, ep


@pytest.mark.parametrize("by_address", [False, True], ids=["listen", "listen_address"])
def test_async_api_both_directions(
    sw: ModuleType, by_address: bool, request: pytest.FixtureRequest
) -> None:
    if sw.__name__ == "starway":
        request.applymarker(
            pytest.mark.xfail(
                reason="upstream Starway 0.6: ServerEndpoint.name is at times not valid UTF-8 "
                "(UnicodeDecodeError): it reads garbage memory",
                strict=False,
            )
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server, client, ep = await listen_and_connect(sw, by_address)
        assert isinstance(ep, sw.ServerEndpoint)
        clients = server.list_clients()
        assert len(clients) == 1
        (listed,) = clients
        for e in (ep, listed):
            assert isinstance(e.name, str)
            assert isinstance(e.local_addr, str) and isinstance(e.local_port, int)
            assert isinstance(e.remote_addr, str) and isinstance(e.remote_port, int)
            assert all(len(pair) == 2 for pair in e.view_transports())
        assert isinstance(client.get_worker_address(), bytes)

        up = payload(SIZE, 1)
        down = payload(SIZE, 2)
        into_up = np.zeros(SIZE, dtype=np.uint8)
        into_down = np.zeros(SIZE, dtype=np.uint8)
        # client -> server, with and without the optional loop argument
        got, _ = await asyncio.gather(
            server.arecv(into_up, 11, ANY), client.asend(up, 11, loop=loop)
        )
        assert tuple(got) == (11, SIZE) and np.array_equal(into_up, up)
        await client.aflush()
        await client.aflush(loop)
        # server -> client
        got, _ = await asyncio.gather(
            client.arecv(into_down, 12, ANY, loop), server.asend(ep, down, 12)
        )
        assert tuple(got) == (12, SIZE) and np.array_equal(into_down, down)
        await server.aflush()
        await server.aflush_ep(ep)
        await server.aflush_ep(ep, loop=loop)
        # a masked receive reports the sender's full tag
        small = np.zeros(16, dtype=np.uint8)
        got, _ = await asyncio.gather(
            server.arecv(small, 0xAB00, 0xFF00), client.asend(np.arange(5, dtype=np.uint8), 0xAB42)
        )
        assert tuple(got) == (0xAB42, 5) and list(small[:5]) == [0, 1, 2, 3, 4]
        await client.aclose()
        if sw.__name__ != "starway":  # Starway keeps closed clients listed: ours drops them
            await until(lambda: not server.list_clients(), "the client to leave list_clients()")
        await server.aclose(loop)

    asyncio.run(main())


def test_callback_api_both_directions(sw: ModuleType) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server, client, ep = await listen_and_connect(sw, False)
        up = payload(SIZE, 3)
        down = payload(SIZE, 4)
        into_up = np.zeros(SIZE, dtype=np.uint8)
        into_down = np.zeros(SIZE, dtype=np.uint8)

        recv_done: asyncio.Future[Any] = loop.create_future()
        send_done: asyncio.Future[Any] = loop.create_future()
        server.recv(into_up, 21, ANY, *threadsafe(recv_done))
        client.send(up, 21, *threadsafe(send_done))
        assert await recv_done == (21, SIZE)
        assert await send_done == ()
        assert np.array_equal(into_up, up)

        recv_done = loop.create_future()
        send_done = loop.create_future()
        client.recv(into_down, 22, ANY, *threadsafe(recv_done))
        server.send(ep, down, 22, *threadsafe(send_done))
        assert await recv_done == (22, SIZE)
        assert await send_done == ()
        assert np.array_equal(into_down, down)

        for flush in (
            lambda d, f: client.flush(d, f),
            lambda d, f: server.flush(d, f),
            lambda d, f: server.flush_ep(ep, d, f),
        ):
            flushed: asyncio.Future[Any] = loop.create_future()
            flush(*threadsafe(flushed))
            assert await flushed == ()

        # a failure reaches fail_callback as a string
        failed: asyncio.Future[Any] = loop.create_future()
        client.recv(np.zeros(8, dtype=np.uint8), 23, ANY, *threadsafe(failed))
        await client.aclose()
        outcome = await asyncio.wait_for(failed, 30)
        assert outcome[0] == "failed" and isinstance(outcome[1], str) and outcome[1]
        await server.aclose()

    asyncio.run(main())


def test_failures_are_exceptions(sw: ModuleType) -> None:
    """Starway fails futures with Exception; ours are typed, and still Exceptions."""

    async def main() -> None:
        server, client, _ep = await listen_and_connect(sw, False)
        recv = client.arecv(np.zeros(8, dtype=np.uint8), 31, ANY)
        await client.aclose()
        with pytest.raises(Exception):
            await asyncio.wait_for(recv, 30)
        await server.aclose()

    asyncio.run(main())


def test_check_sys_libs(sw: ModuleType) -> None:
    assert sw.check_sys_libs() in ("system", "wheel")


def test_module_surface(sw: ModuleType) -> None:
    """Every public name and method of Starway 0.6 (but its benchmark helpers) is there."""
    for name in ("Server", "Client", "ServerEndpoint", "check_sys_libs"):
        assert hasattr(sw, name), name
    server_methods = (
        "listen listen_address set_accept_cb aclose list_clients get_worker_address send asend "
        "recv arecv flush aflush flush_ep aflush_ep"
    )
    client_methods = (
        "aconnect aconnect_address aclose recv arecv send asend flush aflush get_worker_address"
    )
    for m in server_methods.split():
        assert callable(getattr(sw.Server, m, None)), f"Server.{m}"
    for m in client_methods.split():
        assert callable(getattr(sw.Client, m, None)), f"Client.{m}"


def test_our_starway_is_a_thin_layer_over_the_transport() -> None:
    """Not Starway's contract: what ours adds (typed errors, strict buffers)."""
    from isthmus.transport import BufferValidationError, starway

    async def main() -> None:
        port = free_port()
        server = starway.Server()
        server.listen("127.0.0.1", port)
        client = starway.Client()
        await client.aconnect("127.0.0.1", port)
        with pytest.raises(BufferValidationError):
            client.asend(object(), 1)
        with pytest.raises(BufferValidationError):
            server.arecv(b"read-only", 1, ANY)
        await client.aclose()
        await server.aclose()

    asyncio.run(main())
