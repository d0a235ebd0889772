from __future__ import annotations

import pytest

from _client import LineClient
from isthmus.chat import LineProtocolServer


@pytest.mark.asyncio
async def test_hello_send_reaches_every_member(line_server: LineProtocolServer) -> None:
    a = await LineClient.open(line_server.port)
    b = await LineClient.open(line_server.port)
    try:
        assert await a.ask("HELLO main:alice") == "OK HELLO alice main"
        assert await b.ask("HELLO main:bob") == "OK HELLO bob main"
        assert (await a.ask("SEND main:alice hello bob")).startswith("OK SEND main 1 ")
        assert await b.until("MSG ") == "MSG main alice 1 hello bob"
    finally:
        await a.close()
        await b.close()
