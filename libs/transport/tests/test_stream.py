"""A large DATA payload that started arriving before its receive was posted."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from _support import ANY, payload, sentinel
from isthmus.transport import Client, Server, ServerEndpoint


def test_receive_posted_mid_stream_takes_over_the_payload() -> None:
    """Over TCP a 64 MiB message streams into scratch memory while no receive matches; a receive
    posted meanwhile takes it over: what arrived is copied once, the rest lands in place."""
    size = 64 << 20

    async def main() -> None:
        server = Server(backend="tcp")
        server.listen("127.0.0.1", 0)
        accepted: asyncio.Queue[ServerEndpoint] = asyncio.Queue()
        server.set_accept_cb(accepted.put_nowait)
        client = Client(backend="tcp")
        await client.aconnect("127.0.0.1", server.port)
        ep = await accepted.get()
        try:
            data = payload(size, 11)
            conn: Any = ep._conn
            send = client.asend(data, 5)
            while conn.stream_view is None:  # the first bytes are in, nothing matched them
                await asyncio.sleep(0)
            assert conn.stream_op is None and conn.stream_got < size
            into = sentinel(size)
            recv = server.arecv(into, 5, ANY)
            assert conn.stream_op is not None, "the posted receive did not take the stream over"
            assert await recv == (5, size)
            await send
            assert np.array_equal(into, data)
        finally:
            await client.aclose()
            await server.aclose()

    asyncio.run(main())
