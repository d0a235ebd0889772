"""``ChatServer``: every front end over one state, in one loop, with TLS on all of them."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import httpx
import pytest
import trustme
import websockets

from _client import LineClient
from isthmus.chat import ChatServer, ServerConfig


@pytest.mark.asyncio
async def test_tls_on_every_front_end_and_one_shared_state(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    config = ServerConfig(
        line_port=0,
        irc_port=0,
        http_port=0,
        db=str(tmp_path / "chat.db"),
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        rate=0,
    )
    async with ChatServer(config) as server:
        assert server.line_port and server.irc_port and server.http_port
        # The line protocol over TLS.
        line = await LineClient.open(server.line_port, ssl_context=client_ctx)
        assert await line.ask("HELLO main:liner") == "OK HELLO liner main"
        # IRC over TLS.
        r, w = await asyncio.open_connection("127.0.0.1", server.irc_port, ssl=client_ctx)
        w.write(b"NICK ircer\r\nUSER u 0 * :IRC user\r\nJOIN #main\r\n")
        while b" 366 " not in await asyncio.wait_for(r.readline(), 5):
            pass
        # The WebSocket over TLS (wss).
        uri = f"wss://127.0.0.1:{server.http_port}/ws"
        async with websockets.connect(uri, ssl=client_ctx) as ws:
            await ws.send('{"type": "hello", "nick": "webber", "rooms": ["main"]}')
            while (await asyncio.wait_for(ws.recv(), 5)).find('"welcome"') < 0:
                pass
            # One message per front end; every front end sees all three.
            line.send("SEND main from line")
            w.write(b"PRIVMSG #main :from irc\r\n")
            await ws.send('{"type": "send", "room": "main", "text": "from ws"}')
            seen_ws: set[str] = set()
            while len(seen_ws) < 3:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame.get("type") == "message":
                    seen_ws.add(frame["text"])
            seen_irc: set[str] = set()
            while len(seen_irc) < 2:  # IRC does not echo its own without echo-message
                got = (await asyncio.wait_for(r.readline(), 5)).decode()
                seen_irc |= {t for t in ("from line", "from ws") if got.rstrip().endswith(t)}
            seen_line = set()
            while len(seen_line) < 3:
                got = await line.until("MSG main")
                seen_line.add(got.split(" ", 4)[4])
            assert seen_line == {"from line", "from irc", "from ws"}
        # REST over HTTPS reads the same history.
        async with httpx.AsyncClient(verify=client_ctx) as http:
            resp = await http.get(f"https://127.0.0.1:{server.http_port}/rooms/main/history")
            assert resp.status_code == 200
            texts = {m["text"] for m in resp.json()["messages"]}
            assert texts == {"from line", "from irc", "from ws"}
            plain = f"http://127.0.0.1:{server.http_port}/server/status"
            with pytest.raises(httpx.HTTPError):
                await http.get(plain)  # no plaintext HTTP next to TLS
        w.close()
        await line.close()
