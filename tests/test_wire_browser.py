"""isthmus-wire in a real browser: headless Chromium speaks the protocol over WebSocket.

The server is ``examples/wire_adapters/websocket.py`` (``serve_ws``). The client is
``tests/browser/client.mjs``, which imports ``libs/wire/js/isthmus-wire.mjs`` (both served over
HTTP by a small thread here): it says hello, feeds every WebSocket message to a ``Decoder``,
acks the video packet, answers the ping and the goodbye, sends a pointer event and stores a
summary in ``window.__result`` when the socket closes. The test drives Chromium over the Chrome
DevTools Protocol (with the ``websockets`` library, no selenium or playwright) and checks both
sides: what the browser decoded and what the server received.

Chromium is looked up on PATH. Without it the tests are skipped, unless
``ISTHMUS_REQUIRE_BROWSER=1`` (set in CI), which makes a missing browser an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from isthmus.wire import (
    Ack,
    ConnectionClosed,
    Goodbye,
    Hello,
    MessageType,
    Ping,
    Pointer,
    Pong,
    StatePatch,
    Tensor,
    VideoPacket,
    pack_header,
)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.wire_adapters import aio  # noqa: E402  (examples/ is not installed)
from examples.wire_adapters.websocket import WebSocketLink, serve_ws  # noqa: E402

HOST = "127.0.0.1"
DEADLINE = 15.0  # seconds for the asyncio part of a test
PAGE_TIMEOUT_MS = 10_000  # the page gives up waiting for its result after this
STARTUP_TIMEOUT = 10.0  # seconds for Chromium to open its DevTools port
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_DIR = ROOT / "tests" / "browser"
ROUTES = {  # what the static server serves: path -> (file, content type)
    "/client.html": (BROWSER_DIR / "client.html", "text/html; charset=utf-8"),
    "/client.mjs": (BROWSER_DIR / "client.mjs", "text/javascript; charset=utf-8"),
    "/isthmus-wire.mjs": (ROOT / "libs/wire/js/isthmus-wire.mjs", "text/javascript; charset=utf-8"),
}
TOKEN = "browser-token"

# What the server sends. Integers beyond 2**53 check that they stay exact in JavaScript.
STATE = StatePatch(
    path="/scene/title",
    value={"title": "hello, browser", "zoom": 1.5, "layers": [1, 2, 3], "on": True, "big": 2**60},
)
CONFIG = bytes.fromhex("0000000167640028acd940780227e5c00000000168ebe3cb22c0")  # SPS, PPS
VIDEO_DATA = b"\x00\x00\x00\x01\x65" + random.Random(7).randbytes(300_000 - 5)  # an IDR slice
PTS = 2**40 + 7
VIDEO = VideoPacket(
    codec="h264", width=1920, height=1080, keyframe=True, pts=PTS, config=CONFIG, data=VIDEO_DATA
)
TENSOR_DATA = struct.pack("<6f", 0.0, -1.5, 3.25, 1e-3, 65504.0, -2.5e-8)
TENSOR = Tensor(data=TENSOR_DATA, dtype="<f4", shape=(2, 3))
PING = Ping(nonce=2**53 + 1, time_ns=2**62 + 123_456_789)
# What the page sends (client.mjs).
POINTER = Pointer(kind="down", x=12.5, y=7.25, button=0, buttons=1, modifiers=2, pointer_id=3)
BROWSER_GOODBYE = Goodbye(code=1000, reason="bye from chromium")

# Evaluated in the page: resolves with window.__result as JSON once the page has set it.
WAIT_FOR_RESULT = f"""
new Promise((resolve) => {{
  if (location.pathname !== '/client.html') {{ resolve('"not loaded"'); return; }}
  const deadline = Date.now() + {PAGE_TIMEOUT_MS};
  const poll = () => {{
    if (window.__result !== undefined) resolve(JSON.stringify(window.__result));
    else if (Date.now() > deadline) {{
      const partial = typeof window.__partial === 'function' ? window.__partial() : null;
      resolve(JSON.stringify({{ timeout: true, partial }}));
    }} else setTimeout(poll, 20);
  }};
  poll();
}})
"""


# ------------------------------------------------------------------------------------ helpers


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main()`` in a fresh event loop under DEADLINE; no task may outlive it."""

    async def guarded() -> Any:
        async with asyncio.timeout(DEADLINE):
            result = await main()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert not others, f"tasks left running: {others}"
        return result

    return asyncio.run(guarded())


def open_fds() -> int:
    """Open file descriptors of this process (-1 where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:
        return -1


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of a Chromium (or Chrome) binary; skip, or fail under ISTHMUS_REQUIRE_BROWSER=1."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    message = f"no browser on PATH (looked for {', '.join(BROWSERS)})"
    if os.environ.get("ISTHMUS_REQUIRE_BROWSER") == "1":
        pytest.fail(
            f"{message}, and ISTHMUS_REQUIRE_BROWSER=1 requires one: install Chromium "
            "(Debian/Ubuntu: apt-get install chromium)",
            pytrace=False,
        )
    pytest.skip(f"{message}; set ISTHMUS_REQUIRE_BROWSER=1 to make this an error")


# ------------------------------------------------------------------------- static HTTP server


class _StaticServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the request threads
    requests: list[str]


class _StaticHandler(http.server.BaseHTTPRequestHandler):
    server: _StaticServer
    timeout = 5  # a connection that never sends a request does not hold up server_close()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.requests.append(path)
        route = ROUTES.get(path)
        if route is None:
            self.send_error(404)
            return
        file, content_type = route
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the requests are kept in server.requests


@contextlib.contextmanager
def static_server() -> Iterator[_StaticServer]:
    """Serve ROUTES on HOST (any port) from a thread; stop and join it on exit."""
    server = _StaticServer((HOST, 0), _StaticHandler)
    server.requests = []
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="static http"
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ------------------------------------------------------------------------------------ browser


@contextlib.contextmanager
def launch_chromium(binary: str) -> Iterator[str]:
    """Start headless Chromium with a fresh profile; yield its DevTools browser WebSocket URL.

    On exit the browser is terminated (killed if it does not exit within 5 s) and waited for,
    whatever is left of its process group is killed, and the temporary directory is removed.
    """
    tmp = Path(tempfile.mkdtemp(prefix="isthmus-chromium-"))
    profile, log = tmp / "profile", tmp / "chromium.log"
    args = [
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-networking",
        "--no-proxy-server",
        "--mute-audio",
        "about:blank",
    ]
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        yield _devtools_url(proc, profile / "DevToolsActivePort", log)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp.exists():  # a straggler was still writing: once more
            time.sleep(0.2)
            shutil.rmtree(tmp)


def _devtools_url(proc: subprocess.Popen[bytes], port_file: Path, log: Path) -> str:
    """Wait for Chromium to write DevToolsActivePort ("<port>\\n/devtools/browser/<id>")."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chromium exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(FileNotFoundError):
            match = re.fullmatch(
                r"(\d+)\n(/devtools/browser/[0-9a-f-]{36})\s*", port_file.read_text()
            )
            if match:
                return f"ws://{HOST}:{match[1]}{match[2]}"
        time.sleep(0.05)
    pytest.fail(f"chromium opened no DevTools port within {STARTUP_TIMEOUT} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Renderer, GPU and zygote processes are in the browser's own process group (its id is
    # the browser's pid, start_new_session): end any that outlived the browser.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


class DevTools:
    """A minimal Chrome DevTools Protocol client: one command at a time, events kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._id = 0

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        self._id += 1
        request: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session is not None:
            request["sessionId"] = session
        await self.ws.send(json.dumps(request))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") != self._id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"DevTools {method}: {reply['error']}")
            else:
                return reply["result"]

    def console(self) -> str:
        """The page's console output, uncaught exceptions and log entries, for diagnostics."""
        lines = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled":
                args = [a.get("value", a.get("description", "?")) for a in params["args"]]
                lines.append(f"console.{params['type']}: {' '.join(map(str, args))}")
            elif event.get("method") == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description", details.get("text"))
                lines.append(f"exception: {text}")
            elif event.get("method") == "Log.entryAdded":
                entry = params["entry"]
                lines.append(f"log.{entry['level']}: {entry['text']} {entry.get('url', '')}")
        return "\n".join(lines) or "(nothing)"


async def run_page(devtools_url: str, page_url: str) -> dict[str, Any]:
    """Open ``page_url`` in a new tab and return its ``window.__result``."""
    async with ws_connect(
        devtools_url, max_size=None, compression=None, proxy=None, ping_interval=None
    ) as ws:
        cdp = DevTools(ws)
        target = (await cdp.call("Target.createTarget", url="about:blank"))["targetId"]
        try:
            attached = await cdp.call("Target.attachToTarget", targetId=target, flatten=True)
            session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                await cdp.call(f"{domain}.enable", session)
            navigation = await cdp.call("Page.navigate", session, url=page_url)
            assert "errorText" not in navigation, f"navigation failed: {navigation}"
            while True:  # until the evaluation runs in the new document
                try:
                    reply = await cdp.call(
                        "Runtime.evaluate",
                        session,
                        expression=WAIT_FOR_RESULT,
                        awaitPromise=True,
                        returnByValue=True,
                    )
                except RuntimeError as exc:
                    if "context" not in str(exc).lower():  # destroyed by the navigation
                        raise
                    reply = {"result": {"value": '"not loaded"'}}
                assert "exceptionDetails" not in reply, reply["exceptionDetails"]
                result = json.loads(reply["result"]["value"])
                if result != "not loaded":
                    break
                await asyncio.sleep(0.05)
        finally:
            await cdp.call("Target.closeTarget", targetId=target)
    if not isinstance(result, dict) or result.get("timeout") or result.get("failure"):
        pytest.fail(
            f"the page did not finish cleanly:\n{json.dumps(result, indent=1)}\n"
            f"browser console:\n{cdp.console()}",
            pytrace=False,
        )
    result["console"] = cdp.console()
    return result


def page_url(http: _StaticServer, ws_port: int, encodings: list[str]) -> str:
    query = urlencode({"ws": f"ws://{HOST}:{ws_port}/", "encodings": ",".join(encodings)})
    return f"http://{HOST}:{http.server_address[1]}/client.html?{query}"


def browse(chromium: str, serve: Callable[[_StaticServer, str], Coroutine[Any, Any, Any]]) -> Any:
    """Start the static server and Chromium, run ``serve(http, devtools_url)`` in an event
    loop, tear everything down, and check that no file descriptor was left open."""
    fds = open_fds()
    with static_server() as http:
        with launch_chromium(chromium) as devtools_url:
            result = run(lambda: serve(http, devtools_url))
        assert sorted(http.requests) == sorted(ROUTES), http.requests
    assert open_fds() == fds, "a file descriptor was left open"
    return result


async def start_server(handler: aio.Handler) -> tuple[Any, int]:
    server = await serve_ws(
        handler,
        HOST,
        0,
        authorize=lambda hello: hello.token == TOKEN or "bad token",
        accept={"session": "browser-test", "name": "pytest"},
    )
    return server, server.sockets[0].getsockname()[1]


# -------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("encodings", [["msgpack", "json"], ["json"]], ids=["msgpack", "json"])
def test_browser_session(chromium: str, encodings: list[str]) -> None:
    """A full session: handshake, a state patch, a chunked keyframe, a tensor and a ping to the
    browser; hello, ack, pong, pointer and goodbye back; a clean close."""
    encoding = encodings[0]  # the server picks the hello's first encoding it speaks
    server_side: dict[str, Any] = {"events": []}

    async def handler(session: aio.WireSession) -> None:
        server_side["session"] = session
        for message in (STATE, VIDEO, TENSOR, PING):
            await session.send(message)
        async for event in session:
            header = session.last_header
            server_side["events"].append((event, header and (header.stream, header.seq)))
            if isinstance(event, Ack):
                server_side["video_in_flight"] = session.conn.stream_stats(2).in_flight
            elif isinstance(event, Pointer):
                session.request_close("done")  # goodbye; the page answers with its own

    async def serve(http: _StaticServer, devtools_url: str) -> dict[str, Any]:
        server, ws_port = await start_server(handler)
        try:
            return await run_page(devtools_url, page_url(http, ws_port, encodings))
        finally:
            await aio.shutdown(server)

    page = browse(chromium, serve)
    session: aio.WireSession = server_side["session"]
    context = f"page: {json.dumps(page, indent=1)}\nserver events: {server_side['events']}"

    # --- what the browser decoded
    assert page["error"] is None and page["endError"] is None, context
    assert page["nonBinaryMessages"] == 0
    welcome = page["welcome"]
    assert welcome["encoding"] == encoding
    assert (welcome["session"], welcome["name"], welcome["codecs"]) == (
        "browser-test",
        "pytest",
        ["h264"],
    )
    assert welcome["max_frame_size"] == 1 << 20  # the hello's limit, the smaller one
    streams = {s["id"]: s for s in welcome["streams"]}
    assert [streams[i]["kind"] for i in range(5)] == ["control", "state", "video", "audio", "data"]
    assert streams[2]["credits"] == 4
    assert 0 < streams[2]["chunk_size"] < len(VIDEO_DATA), "the keyframe must be sent in chunks"

    received = page["received"]
    assert received[0]["type"] == "welcome" and received[-1]["type"] == "goodbye"
    assert sorted(m["type"] for m in received[1:-1]) == ["ping", "state_patch", "tensor", "video"]
    for m in received[1:]:
        want = "binary" if m["type"] in ("video", "tensor") else encoding
        assert m["encoding"] == want, m

    assert page["statePatches"] == [
        {"path": STATE.path, "value": {**STATE.value, "big": str(2**60)}}
    ]

    video = page["video"]
    assert (video["stream"], video["seq"]) == (2, 0)
    assert (video["codec"], video["keyframe"]) == ("h264", True)
    assert (video["width"], video["height"], video["pts"]) == (1920, 1080, str(PTS))
    assert video["config"] == list(CONFIG)
    assert video["dataLength"] == len(VIDEO_DATA)
    assert video["dataHead"] == list(VIDEO_DATA[:8])
    assert video["sha256"] == hashlib.sha256(VIDEO_DATA).hexdigest()

    tensor = page["tensor"]
    assert (tensor["dtype"], tensor["shape"], tensor["strides"]) == ("<f4", [2, 3], [12, 4])
    assert tensor["values"] == list(struct.unpack("<6f", TENSOR_DATA))

    ping = page["ping"]
    assert (ping["nonce"], ping["time_ns"]) == (str(PING.nonce), str(PING.time_ns))
    assert (ping["nonceType"], ping["timeType"]) == ("bigint", "bigint")
    assert page["goodbye"] == {"code": 1000, "reason": "done"}

    # --- what the browser sent: one seq counter per stream, all on the control stream
    sent = page["sent"]
    assert [(m["stream"], m["seq"]) for m in sent] == [(0, n) for n in range(5)]
    assert sent[0]["type"] == "hello" and [m["type"] for m in sent[3:]] == ["pointer", "goodbye"]
    assert sorted(m["type"] for m in sent[1:3]) == ["ack", "pong"]

    # --- what the server received
    hello = session.hello
    assert isinstance(hello, Hello)
    assert (hello.protocol, hello.role, hello.name, hello.token) == (1, "client", "chromium", TOKEN)
    assert (hello.encodings, hello.codecs) == (encodings, ["h264"])
    assert (hello.max_frame_size, hello.credits) == (1 << 20, 4)
    assert session.conn.encoding == encoding
    events = [e for e, _ in server_side["events"] if not isinstance(e, ConnectionClosed)]
    headers = [h for e, h in server_side["events"] if not isinstance(e, ConnectionClosed)]
    assert events[2:] == [POINTER, BROWSER_GOODBYE], context
    assert sorted(events[:2], key=lambda e: type(e).__name__) == [
        Ack(stream=2, seq=0),
        Pong(nonce=PING.nonce, time_ns=PING.time_ns),
    ], context
    assert sorted(headers[:2]) + headers[2:] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert server_side["video_in_flight"] == 0  # the ack returned the credit
    assert session.error is None

    # --- every byte made it, and the close was clean on both sides
    assert page["close"] == {"code": 1000, "reason": "", "wasClean": True}, context
    assert page["bytesReceived"] == session.bytes_sent
    assert page["bytesSent"] == session.bytes_received
    assert session.closed


def test_browser_reports_bad_magic(chromium: str) -> None:
    """A frame with a bad magic after a valid one, in one WebSocket message: the page gets the
    valid message, then a ProtocolError ``bad_magic`` at the bad frame's byte offset."""
    server_side: dict[str, Any] = {}

    async def handler(session: aio.WireSession) -> None:
        server_side["session"] = session
        await session.send(STATE)
        await session.drain()  # every byte so far is in session.bytes_sent
        body = json.dumps({"path": "/raw", "value": 2}).encode()
        valid = pack_header(MessageType.STATE_PATCH, 0, 1, len(body), len(body), 1, 0) + body
        bad = b"XW" + pack_header(MessageType.PING, 0, 0, 0, 0, 99, 0)[2:]  # magic is "IW"
        server_side["message_offset"] = session.bytes_sent
        server_side["bad_offset"] = session.bytes_sent + len(valid)
        link = session.link
        assert isinstance(link, WebSocketLink)
        await link.websocket.send(valid + bad)  # around the session: no checks on the way out
        server_side["events"] = [event async for event in session]
        server_side["close"] = (link.websocket.close_code, link.websocket.close_reason)

    async def serve(http: _StaticServer, devtools_url: str) -> dict[str, Any]:
        server, ws_port = await start_server(handler)
        try:
            return await run_page(devtools_url, page_url(http, ws_port, ["msgpack", "json"]))
        finally:
            await aio.shutdown(server)

    page = browse(chromium, serve)
    context = f"page: {json.dumps(page, indent=1)}\nserver: {server_side}"
    offset = server_side["bad_offset"]

    error = page["error"]
    assert error is not None, context
    assert (error["name"], error["isProtocolError"]) == ("ProtocolError", True)
    assert (error["code"], error["offset"]) == ("bad_magic", offset), context
    assert error["messageOffset"] == server_side["message_offset"]
    # The message before the bad frame in the same feed() was returned; the error waited.
    assert (error["thrown"], error["decodedInSameFeed"]) == (False, ["state_patch"])
    assert [p["path"] for p in page["statePatches"]] == [STATE.path, "/raw"]
    # decoder.end() at close throws the very same error.
    same = {k: error[k] for k in ("name", "isProtocolError", "code", "offset", "message")}
    assert page["endError"] == {**same, "sameAsError": True}
    assert page["video"] is None and page["ping"] is None
    assert [m["type"] for m in page["sent"]] == ["hello"]  # no pointer: it never got that far

    # The page closed the WebSocket with "<code> at <offset>" (code 4002: a script may not
    # use 1002, see client.mjs).
    reason = f"bad_magic at {offset}"
    assert page["close"]["code"] == 4002 and page["close"]["reason"] == reason, context
    assert server_side["close"] == (4002, reason)
    assert [type(e) for e in server_side["events"]] == [ConnectionClosed]
    assert server_side["session"].error is None and server_side["session"].closed
