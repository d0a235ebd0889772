"""The isthmus.wire adapters in examples/wire_adapters/ on real sockets.

Servers listen on 127.0.0.1 (port 0). Clients are the adapters themselves, or raw sockets that
misbehave: garbage instead of a hello, a frame cut in half. Each test runs its own event loop
under a deadline and ends by checking that no task is left running and that the process has as
many open file descriptors as before (so every socket was closed).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isthmus.wire import (
    Blob,
    Connection,
    ConnectionClosed,
    Error,
    ErrorCode,
    FrameDecoder,
    Goodbye,
    Hello,
    Pointer,
    ProtocolError,
    Role,
    StatePatch,
    Tensor,
    Welcome,
    parse_header,
)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.wire_adapters import aio  # noqa: E402  (examples/ is not installed)

DEMO = ROOT / "examples" / "wire_adapters" / "demo.py"
HOST = "127.0.0.1"
DEADLINE = 8.0  # seconds per test (pytest-timeout's 120 s is only the backstop)
SIX_MIB = np.random.default_rng(6).standard_normal((1024, 1536)).astype(np.float32)


# ------------------------------------------------------------------------------------ helpers


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` in a fresh event loop, failing after DEADLINE seconds."""

    async def guarded() -> None:
        async with asyncio.timeout(DEADLINE):
            await main()

    asyncio.run(guarded())


def open_fds() -> int:
    """Open file descriptors of this process (-1 where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:
        return -1


def assert_no_leaks(fds: int) -> None:
    """No task but the current one, and as many open descriptors as ``fds``."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, f"tasks left running: {others}"
    assert open_fds() == fds, "a socket was left open"


async def until(condition: Callable[[], object]) -> None:
    """Wait for ``condition()`` (the test's deadline bounds the wait)."""
    while not condition():
        await asyncio.sleep(0.005)


def port_of(server: Any) -> int:
    return int(server.sockets[0].getsockname()[1])


class Peer:
    """A server handler that records what it receives (with the bytes received so far),
    answers state patches and echoes tensors."""

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self.sessions: list[aio.WireSession] = []
        self.events: list[Any] = []
        self.received_at: list[int] = []
        self.error: ProtocolError | None = None
        self.ended = asyncio.Event()

    async def __call__(self, session: aio.WireSession) -> None:
        self.sessions.append(session)
        try:
            async for event in session:
                self.events.append(event)
                self.received_at.append(session.bytes_received)
                if not self.echo:
                    continue
                if isinstance(event, StatePatch):
                    await session.send(
                        StatePatch(path=event.path, value={"echo": event.value}, rev=event.rev)
                    )
                elif isinstance(event, Tensor):
                    # Send the received memory straight back (a view, not a copy).
                    await session.send(
                        Tensor(
                            data=event.data,
                            dtype=event.dtype,
                            shape=event.shape,
                            strides=event.strides,
                        )
                    )
        except ProtocolError as exc:
            self.error = exc
            raise
        finally:
            self.ended.set()

    def kinds(self) -> list[type]:
        return [type(e) for e in self.events]


async def exchange(session: aio.WireSession, peer: Peer) -> None:
    """Messages both ways and a 6 MiB tensor there and back; checks what both sides got."""
    await session.send(Pointer(kind="down", x=1.0, y=2.0, buttons=1))
    await session.send(StatePatch(path="/camera/zoom", value=2.5, rev=1))
    await session.send(Tensor.from_array(SIX_MIB))
    received = []
    async for event in session:
        received.append(event)
        if isinstance(event, Tensor):
            break
    assert [type(e) for e in received] == [StatePatch, Tensor]
    assert received[0].path == "/camera/zoom"
    assert received[0].value == {"echo": 2.5}
    echoed = received[1].to_numpy()
    assert echoed.dtype == SIX_MIB.dtype
    assert echoed.shape == SIX_MIB.shape
    assert np.array_equal(echoed, SIX_MIB)

    await session.close()
    assert session.closed
    await peer.ended.wait()
    assert peer.kinds()[:3] == [Pointer, StatePatch, Tensor]
    assert peer.events[0] == Pointer(kind="down", x=1.0, y=2.0, buttons=1)
    assert np.array_equal(peer.events[2].to_numpy(), SIX_MIB)
    assert Goodbye in peer.kinds()[3:]
    assert peer.error is None


# ---------------------------------------------------------------------------------------- TCP


def test_tcp_handshake_messages_and_tensor() -> None:
    async def main() -> None:
        fds = open_fds()
        peer = Peer()
        server = await aio.serve(peer, HOST, 0, accept={"session": "s-1", "name": "test server"})
        session = await aio.connect(HOST, port_of(server), Hello(name="test client"))
        welcome = session.welcome
        assert welcome is not None
        assert welcome.session == "s-1"
        assert welcome.name == "test server"
        assert welcome.encoding == "msgpack"

        await exchange(session, peer)
        assert peer.sessions[0].hello is not None
        assert peer.sessions[0].hello.name == "test client"
        assert session.bytes_received > SIX_MIB.nbytes
        assert session.bytes_sent > SIX_MIB.nbytes

        await aio.shutdown(server)
        assert_no_leaks(fds)

    run(main)


def test_tcp_control_message_overtakes_large_packet() -> None:
    big = np.random.default_rng(32).integers(0, 256, 32 << 20, dtype=np.uint8)

    async def main() -> None:
        fds = open_fds()
        peer = Peer(echo=False)
        server = await aio.serve(peer, HOST, 0)
        session = await aio.connect(HOST, port_of(server))
        # A small socket send buffer: what has not been written stays in the connection's
        # priority queues, where a control message can overtake it.
        link = session.link
        assert isinstance(link, aio.WireProtocol) and link.transport is not None
        link.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024
        )
        await until(lambda: peer.sessions)
        server_side = peer.sessions[0]

        await session.send(Tensor.from_array(big))
        await until(lambda: server_side.bytes_received >= 1 << 20)  # the tensor is on its way
        assert session.conn.has_data_to_send, "the whole tensor left before the test could act"
        await session.send(Pointer(kind="move", x=3.0, y=4.0))
        await until(lambda: Tensor in peer.kinds())

        kinds = peer.kinds()
        pointer, tensor = kinds.index(Pointer), kinds.index(Tensor)
        assert pointer < tensor, kinds
        # The pointer was delivered while the tensor's bytes were still arriving.
        assert peer.received_at[pointer] < big.nbytes
        assert np.array_equal(peer.events[tensor].to_numpy(), big)

        await session.close()
        await aio.shutdown(server)
        assert_no_leaks(fds)

    run(main)


@pytest.mark.parametrize(
    ("hello", "code", "goodbye_code", "reason"),
    [
        (Hello(protocol=2, token="secret"), "version_mismatch", 1002, "protocol version 2"),
        (Hello(token="wrong"), "rejected", 1008, "bad token"),
    ],
    ids=["version-mismatch", "bad-token"],
)
def test_tcp_refused_hello(hello: Hello, code: str, goodbye_code: int, reason: str) -> None:
    def authorize(hello: Hello) -> bool | str:
        return hello.token == "secret" or "bad token"

    async def main() -> None:
        peer = Peer()
        server = await aio.serve(peer, HOST, 0, authorize=authorize)
        fds = open_fds()  # with the listening socket
        with pytest.raises(aio.HandshakeRejected) as caught:
            await aio.connect(HOST, port_of(server), hello)
        rejected = caught.value
        assert [type(e) for e in rejected.events] == [Error, Goodbye]
        assert rejected.error is not None and rejected.goodbye is not None
        assert rejected.error.code == code
        assert reason in rejected.error.message
        assert rejected.goodbye.code == goodbye_code
        # connect() closed the client's socket; the server closes its own on our goodbye.
        await until(lambda: not aio.server_sessions(server))
        assert not peer.sessions  # the handler never ran
        assert_no_leaks(fds)
        await aio.shutdown(server)

    run(main)


def test_tcp_garbage_gets_error_goodbye_and_disconnect() -> None:
    async def main() -> None:
        peer = Peer()
        server = await aio.serve(peer, HOST, 0)
        fds = open_fds()
        reader, writer = await asyncio.open_connection(HOST, port_of(server))
        writer.write(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
        data = await reader.read()  # everything until the server hangs up
        writer.close()
        await writer.wait_closed()

        decoder = FrameDecoder()
        decoder.feed(data)
        decoder.feed(b"")
        messages = []
        while (item := decoder.next()) is not None:
            messages.append(item[1])
        assert [type(m) for m in messages] == [Error, Goodbye, ConnectionClosed]
        assert messages[0].code == "bad_magic"
        assert messages[0].offset == 0
        assert messages[1].code == 1002

        await until(lambda: not aio.server_sessions(server))
        assert not peer.sessions
        assert_no_leaks(fds)
        await aio.shutdown(server)

    run(main)


def test_tcp_peer_vanishing_mid_frame_ends_session_with_truncated() -> None:
    async def main() -> None:
        peer = Peer()
        server = await aio.serve(peer, HOST, 0)
        fds = open_fds()
        client = Connection(Role.CLIENT)
        reader, writer = await asyncio.open_connection(HOST, port_of(server))
        hello = b"".join(bytes(b) for b in client.send(Hello(name="vanishing")))
        writer.write(hello)
        while not isinstance(event := client.next_event(), Welcome):
            assert event is None
            client.receive_data(await reader.read(65536))
        # The first frame of a chunked 1 MiB tensor (32-byte header + 256 KiB), half of it.
        client.queue(Tensor.from_array(np.zeros(1 << 20, np.uint8)))
        frame = b"".join(bytes(b) for b in client.data_to_send(max_bytes=1))
        assert parse_header(frame).length == len(frame) - 32
        writer.write(frame[: len(frame) // 2])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        await peer.ended.wait()
        assert peer.error is not None
        assert peer.error.code is ErrorCode.TRUNCATED
        assert peer.error.offset == len(hello)  # the frame that was cut
        assert peer.sessions[0].error is peer.error
        # The session cleaned up by itself: no task, no socket (before shutdown).
        await until(lambda: not aio.server_sessions(server))
        assert peer.sessions[0].closed
        assert_no_leaks(fds)
        await aio.shutdown(server)

    run(main)


# ---------------------------------------------------------------------------------- WebSocket


def test_ws_handshake_messages_and_large_packet() -> None:
    pytest.importorskip("websockets")
    from examples.wire_adapters import websocket as ws_adapter

    async def main() -> None:
        fds = open_fds()
        peer = Peer()
        server = await ws_adapter.serve_ws(peer, HOST, 0, accept={"name": "ws server"})
        session = await ws_adapter.connect_ws(
            f"ws://{HOST}:{port_of(server)}/",
            Hello(name="ws client"),
            ws_options={"proxy": None},
        )
        assert session.welcome is not None
        assert session.welcome.name == "ws server"
        assert isinstance(session.link, ws_adapter.WebSocketLink)

        await exchange(session, peer)
        assert peer.sessions[0].hello is not None
        assert peer.sessions[0].hello.name == "ws client"

        await aio.shutdown(server)
        assert_no_leaks(fds)

    run(main)


def test_ws_messages_carry_whole_frames() -> None:
    """What a browser sees: every binary message is a run of whole frames."""
    websockets_client = pytest.importorskip("websockets.asyncio.client")
    from examples.wire_adapters import websocket as ws_adapter

    payload = np.random.default_rng(7).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()

    async def stream(session: aio.WireSession) -> None:
        await session.send(Blob(data=payload, mime="application/octet-stream", name="x.bin"))
        for rev in range(3):
            await session.send(StatePatch(path="/n", value=rev, rev=rev))
        await session.drain()

    async def main() -> None:
        fds = open_fds()
        server = await ws_adapter.serve_ws(stream, HOST, 0)
        client = Connection(Role.CLIENT)
        messages: list[bytes] = []
        events: list[Any] = []
        async with websockets_client.connect(
            f"ws://{HOST}:{port_of(server)}/", proxy=None, compression=None, max_size=None
        ) as websocket:
            await websocket.send(b"".join(bytes(b) for b in client.send(Hello())))
            async for message in websocket:  # until the server closes
                assert isinstance(message, bytes)
                messages.append(message)
                client.receive_data(message)
                for event in client.events():
                    events.append(event)
                    if isinstance(event, Goodbye):
                        await websocket.send(b"".join(bytes(b) for b in client.close()))

        for message in messages:
            pos = 0
            while pos < len(message):
                pos += 32 + parse_header(message, pos).length
            assert pos == len(message), "a frame spans two WebSocket messages"
        assert len(messages) > 4  # the blob went in chunks, several messages
        # The patches were queued right after the blob and overtook it (state stream first).
        kinds = [type(e) for e in events]
        assert kinds == [Welcome, StatePatch, StatePatch, StatePatch, Blob, Goodbye]
        assert [e.value for e in events[1:4]] == [0, 1, 2]
        assert bytes(events[4].data) == payload

        await aio.shutdown(server)
        assert_no_leaks(fds)

    run(main)


def test_ws_refused_hello() -> None:
    pytest.importorskip("websockets")
    from examples.wire_adapters import websocket as ws_adapter

    async def main() -> None:
        fds = open_fds()
        peer = Peer()
        server = await ws_adapter.serve_ws(peer, HOST, 0, authorize=lambda hello: False)
        with pytest.raises(aio.HandshakeRejected) as caught:
            await ws_adapter.connect_ws(
                f"ws://{HOST}:{port_of(server)}/", ws_options={"proxy": None}
            )
        assert [type(e) for e in caught.value.events] == [Error, Goodbye]
        assert caught.value.error is not None
        assert caught.value.error.message == "unauthorized"
        assert not peer.sessions
        await aio.shutdown(server)
        assert_no_leaks(fds)

    run(main)


# --------------------------------------------------------------------------------------- demo


def test_demo_help() -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--host", "--port", "--transport", "--duration"):
        assert flag in proc.stdout


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_demo_streams(transport: str) -> None:
    if transport == "ws":
        pytest.importorskip("websockets")
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--transport", transport, "--port", "0", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    match = re.search(r"(\d+) frames \((\d+) keyframes", proc.stdout)
    assert match, proc.stdout
    assert int(match.group(1)) > 0
    assert int(match.group(2)) > 0
    assert "Traceback" not in proc.stderr
