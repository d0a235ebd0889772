"""Buffers and tags are used as given or rejected, never copied, cast or silently corrupted.

A rejected operation raises a typed error (BufferValidationError, a ValueError; ValueError for a
tag), posts nothing and leaves the connection working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from _support import ANY, connected
from isthmus.buffer import BufferPool
from isthmus.transport import BufferValidationError, Client, Server, TransportError

pytestmark = pytest.mark.timeout(60)


async def rejected(exc: type[BaseException], call: Callable[[], Any]) -> None:
    """``call()`` raises ``exc`` at once: at the call, or on the future it returns (failed by
    the next turn of the loop, not left waiting for a message)."""
    with pytest.raises(exc):
        result = call()
        if isinstance(result, Awaitable):
            fut = asyncio.ensure_future(result)
            await asyncio.sleep(0)
            if not fut.done():
                fut.cancel()
                pytest.fail(f"accepted: {call} returned a pending operation")
            await fut


class FakeDeviceArray:
    """Device memory as CuPy and friends present it: no buffer protocol."""

    __cuda_array_interface__ = {"shape": (16,), "typestr": "|u1", "data": (0, False), "version": 3}


STRIDED = np.arange(64, dtype=np.uint8)[::2]
FORTRAN = np.asfortranarray(np.arange(64, dtype=np.int32).reshape(8, 8))
READONLY = np.arange(64, dtype=np.uint8)
READONLY.flags.writeable = False

BAD_SEND: dict[str, Any] = {
    "strided": STRIDED,
    "fortran": FORTRAN,
    "strided-column": np.zeros((8, 8), dtype=np.uint8)[:, 1],
    "int": 123,
    "str": "text",
    "object": object(),
    "none": None,
    "device": FakeDeviceArray(),
    "list-with-strided-part": [b"ok", STRIDED],
    "list-with-non-buffer": [b"ok", 5],
}
BAD_RECV: dict[str, Any] = {
    "strided": np.zeros(64, dtype=np.uint8)[::2],
    "fortran": np.asfortranarray(np.zeros((8, 8), dtype=np.int32)),
    "int": 123,
    "str": "text",
    "object": object(),
    "device": FakeDeviceArray(),
    "list": [bytearray(8), bytearray(8)],
    "bytes": b"read-only",
    "readonly-array": READONLY,
    "readonly-memoryview": memoryview(bytearray(8)).toreadonly(),
    "memoryview-of-bytes": memoryview(b"12345678"),
}


@pytest.mark.parametrize("name", list(BAD_SEND))
def test_bad_send_buffers_are_rejected(backend: str, name: str) -> None:
    bad = BAD_SEND[name]

    async def main() -> None:
        async with connected(backend) as (server, client, ep):
            await rejected(BufferValidationError, lambda: client.asend(bad, 1))
            await rejected(BufferValidationError, lambda: server.asend(ep, bad, 1))
            await rejected(
                BufferValidationError, lambda: client.send(bad, 1, lambda: None, lambda e: None)
            )
            await rejected(
                BufferValidationError,
                lambda: server.send(ep, bad, 1, lambda: None, lambda e: None),
            )
            await still_works(server, client)

    asyncio.run(main())


@pytest.mark.parametrize("name", [*BAD_RECV, "none"])
def test_bad_receive_buffers_are_rejected(backend: str, name: str) -> None:
    bad = BAD_RECV.get(name)

    async def main() -> None:
        async with connected(backend) as (server, client, _ep):
            await rejected(BufferValidationError, lambda: client.arecv(bad, 1, ANY))
            await rejected(BufferValidationError, lambda: server.arecv(bad, 1, ANY))
            await rejected(BufferValidationError, lambda: server.arecv_from(bad, 1, ANY))
            await rejected(
                BufferValidationError,
                lambda: client.recv(bad, 1, ANY, lambda t, n: None, lambda e: None),
            )
            await rejected(
                BufferValidationError,
                lambda: server.recv(bad, 1, ANY, lambda t, n: None, lambda e: None),
            )
            # nothing was posted: the message goes to the next (valid) receive
            await still_works(server, client, tag=1)

    asyncio.run(main())


async def still_works(server: Server, client: Client, tag: int = 2) -> None:
    into = bytearray(8)
    got, _ = await asyncio.wait_for(
        asyncio.gather(server.arecv(into, tag, ANY), client.asend(b"fine", tag)), 10
    )
    assert got == (tag, 4) and bytes(into[:4]) == b"fine"


def test_released_isthmus_buffer_is_rejected(backend: str) -> None:
    async def main() -> None:
        pool = BufferPool(64, 1)
        buf = pool.acquire()
        buf.release()
        try:
            async with connected(backend) as (server, client, _ep):
                await rejected(BufferValidationError, lambda: client.asend(buf, 1))
                await rejected(BufferValidationError, lambda: server.arecv(buf, 1, ANY))
        finally:
            pool.close()

    asyncio.run(main())


def test_readonly_buffers_may_be_sent(backend: str) -> None:
    """Read-only is only a problem for a receive target."""

    async def main() -> None:
        async with connected(backend) as (server, client, _ep):
            for ro in (b"bytes", READONLY, memoryview(b"view").toreadonly()):
                n = memoryview(ro).nbytes
                into = bytearray(n)
                got, _ = await asyncio.gather(server.arecv(into, 1, ANY), client.asend(ro, 1))
                assert got == (1, n) and bytes(into) == bytes(memoryview(ro))

    asyncio.run(main())


BAD_TAGS = [-1, 1 << 64, 1.0, "1", None]


@pytest.mark.parametrize("tag", BAD_TAGS, ids=repr)
def test_tags_out_of_range_raise_value_error(backend: str, tag: Any) -> None:
    async def main() -> None:
        async with connected(backend) as (server, client, ep):
            buf = bytearray(8)
            await rejected(ValueError, lambda: client.asend(b"x", tag))
            await rejected(ValueError, lambda: server.asend(ep, b"x", tag))
            await rejected(ValueError, lambda: client.arecv(buf, tag, ANY))
            await rejected(ValueError, lambda: server.arecv(buf, tag, ANY))
            await rejected(ValueError, lambda: client.arecv(buf, 1, tag))  # as a mask
            await rejected(ValueError, lambda: server.arecv_from(buf, 1, tag))
            await rejected(ValueError, lambda: server.arecv_message(tag))
            await rejected(ValueError, lambda: client.arecv_message(1, tag))
            await rejected(ValueError, lambda: client.send(b"x", tag, lambda: None, lambda e: None))
            await rejected(
                ValueError, lambda: server.recv(buf, 1, tag, lambda t, n: None, lambda e: None)
            )
            await still_works(server, client)

    asyncio.run(main())


def test_the_extreme_tags_are_valid(backend: str) -> None:
    async def main() -> None:
        async with connected(backend) as (server, client, _ep):
            for tag in (0, (1 << 64) - 1):
                into = bytearray(4)
                got, _ = await asyncio.gather(server.arecv(into, tag, ANY), client.asend(b"t", tag))
                assert got == (tag, 1)

    asyncio.run(main())


def test_unknown_backend_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        Server(backend="udp")
    with pytest.raises(ValueError):
        Client(backend="carrier-pigeon")
    monkeypatch.setenv("ISTHMUS_TRANSPORT_BACKEND", "nope")
    with pytest.raises(ValueError):
        Server()


def test_the_environment_picks_the_backend(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("ISTHMUS_TRANSPORT_BACKEND", backend)

    async def main() -> None:
        server = Server()
        server.listen("127.0.0.1", 0)
        client = Client()
        await client.aconnect("127.0.0.1", server.port)
        rndv = dict(client.transports()).get("rendezvous")
        assert rndv == {"cma": "cma", "shm": "shm-ring", "tcp": None}[backend]
        await client.aclose()
        await server.aclose()

    asyncio.run(main())


def test_send_before_connect_is_an_error() -> None:
    async def main() -> None:
        client = Client()
        await rejected(TransportError, lambda: client.asend(b"x", 1))
        await rejected(TransportError, lambda: client.aflush())
        await client.aclose()

    asyncio.run(main())


def test_listen_twice_and_connect_twice_are_errors(backend: str) -> None:
    async def main() -> None:
        async with connected(backend) as (server, client, _ep):
            with pytest.raises(TransportError):
                server.listen("127.0.0.1", 0)
            await rejected(TransportError, lambda: client.aconnect("127.0.0.1", server.port))
            await still_works(server, client)

    asyncio.run(main())
