"""TLS over TCP: certificates from trustme, real handshakes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import numpy as np
import pytest

from isthmus.transport import Client, ConnectionLostError, Server, ServerEndpoint

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def contexts() -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield server_ctx, client_ctx


async def _pair(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[Server, Client, ServerEndpoint]:
    server = Server(ssl_context=server_ctx)
    server.listen("127.0.0.1", 0)
    accepted: asyncio.Queue[ServerEndpoint] = asyncio.Queue()
    server.set_accept_cb(accepted.put_nowait)
    client = Client(ssl_context=client_ctx)
    await client.aconnect("127.0.0.1", server.port)
    endpoint = await asyncio.wait_for(accepted.get(), 10)
    return server, client, endpoint


@pytest.mark.parametrize("size", [0, 8, 100_000, 20 << 20])
def test_tls_round_trip_both_ways(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], size: int
) -> None:
    async def main() -> None:
        server, client, endpoint = await _pair(*contexts)
        try:
            # A client given a TLS context speaks TLS even to a server on this host.
            assert ("control", "tls") in client.transports()
            assert ("control", "tls") in endpoint.view_transports()
            data = np.random.default_rng(size).integers(0, 255, size, dtype=np.uint8)
            got = np.zeros(size, np.uint8)
            _, (tag, n) = await asyncio.gather(client.asend(data, 7), server.arecv(got, 7))
            assert (tag, n) == (7, size)
            assert np.array_equal(got, data)
            got[:] = 0
            _, (tag, n) = await asyncio.gather(
                server.asend(endpoint, [data[:3], data[3:]], 9), client.arecv(got, 9)
            )
            assert (tag, n) == (9, size)
            assert np.array_equal(got, data)
        finally:
            await client.aclose()
            await server.aclose()

    asyncio.run(main())


def test_untrusted_certificate_is_a_typed_error_and_server_stays_up(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts

    async def main() -> None:
        server = Server(ssl_context=server_ctx)
        server.listen("127.0.0.1", 0)
        try:
            stranger = Client(ssl_context=ssl.create_default_context())  # not our CA
            with pytest.raises(ConnectionLostError, match="TLS handshake failed"):
                await stranger.aconnect("127.0.0.1", server.port)
            await stranger.aclose()
            # A plain-TCP client cannot talk to a TLS server either; it fails, and cleanly.
            plain = Client(backend="tcp", connect_timeout=2.0)
            with pytest.raises((ConnectionLostError, TimeoutError)):
                await plain.aconnect("127.0.0.1", server.port)
            await plain.aclose()
            # The server still serves a good client afterwards.
            good = Client(ssl_context=client_ctx)
            await good.aconnect("127.0.0.1", server.port)
            buf = bytearray(5)
            await asyncio.gather(good.asend(b"hello", 1), server.arecv(buf, 1))
            assert bytes(buf) == b"hello"
            await good.aclose()
        finally:
            await server.aclose()

    asyncio.run(main())
