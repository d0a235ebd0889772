"""examples/chat-app/chat_app.py as a real program: every front end of isthmus-chat, a bot on IRC.

``--demo`` runs as a subprocess on free ports: a line-protocol client and a WebSocket client talk
to each other and to the IRC bot, and every message must reach all three. The bot also runs in
this process against a ``ChatServer``, answering ``!time`` to a line-protocol client. Serving
mode prints how to connect and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from _proc_tokens import assert_none_left

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "chat-app" / "chat_app.py"
TOKEN_VAR = "ISTHMUS_CHAT_APP_TEST"

pytest.importorskip("isthmus.chat")
pytest.importorskip("irc.client_aio")
pytest.importorskip("websockets")
pytest.importorskip("rich")
pytest.importorskip("uvicorn")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(token: str) -> dict[str, str]:
    env = {**os.environ, TOKEN_VAR: token, "COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
    for name in list(env):
        if name.startswith("ISTHMUS_CHAT_"):  # the example's flags say everything
            del env[name]
    return env


def _example() -> ModuleType:
    folder = str(EXAMPLE.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("chat_app")


def test_demo_every_message_crosses_every_front_end(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    line_port, irc_port, http_port = _free_ports(3)
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--demo",
            "--json",
            "--line-port",
            str(line_port),
            "--irc-port",
            str(irc_port),
            "--http-port",
            str(http_port),
            "--db",
            str(tmp_path / "chat.db"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=_env(token),
        cwd=tmp_path,
        check=False,
    )
    assert_none_left(TOKEN_VAR, token)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["ok"]
    assert report["ports"] == {"line": line_port, "irc": irc_port, "http": http_port}

    messages = report["messages"]
    senders = {m["from"] for m in messages}
    assert senders == {"alice", "bob", "chatbot"}
    for m in messages:
        assert m["seen"] == {"line": True, "irc": True, "websocket": True}, m
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    texts = [m["text"] for m in messages]
    assert "!time" in texts and "!who" in texts and "bye!" in texts

    bot = report["bot"]
    assert re.fullmatch(r"alice: it is \d\d:\d\d:\d\d UTC, .+", bot["time"]), bot
    assert bot["time"] in texts
    who = bot["who"]
    assert who.startswith("bob: 3 in #main: ") and all(
        n in who for n in ("alice", "bob", "chatbot")
    )

    # Each front end received the others in its own protocol.
    received = report["received"]
    assert any(line.startswith("MSG main bob ") for line in received["line"])
    assert any(
        line.startswith(":alice!") and " PRIVMSG #main :" in line for line in received["irc"]
    )
    pushed = [json.loads(raw) for raw in received["websocket"]]
    assert {(p["type"], p["from"]) for p in pushed} >= {
        ("message", "alice"),
        ("message", "chatbot"),
    }
    # The SQLite file given with --db has the conversation.
    assert (tmp_path / "chat.db").is_file()


def test_the_bot_answers_time_to_a_line_protocol_client() -> None:
    app = _example()
    from isthmus.chat import ChatServer, ServerConfig

    async def scenario() -> str:
        config = ServerConfig(line_port=0, irc_port=0, http=False, db=":memory:")
        async with ChatServer(config) as server:
            bot = app.ChatBot("timebot", "#main")
            await bot.start("127.0.0.1", server.irc_port)
            heard: list[tuple[str, str]] = []
            answered = asyncio.Event()

            def on_message(nick: str, text: str, raw: str) -> None:
                heard.append((nick, text))
                if nick == "timebot" and text.startswith("carol: "):
                    answered.set()

            carol = app.LineClient(on_message)
            try:
                await carol.open("127.0.0.1", server.line_port)
                assert (await carol.command("HELLO main:carol")).startswith("OK HELLO carol")
                assert (await carol.command("SEND main !time")).startswith("OK SEND main ")
                await asyncio.wait_for(answered.wait(), 10)
            finally:
                await carol.close()
                await bot.close()
            assert ("timebot", "welcome, carol! say !time or !who") in heard
            return next(t for n, t in heard if n == "timebot" and t.startswith("carol: "))

    answer = asyncio.run(scenario())
    m = re.fullmatch(r"carol: it is (\d\d):(\d\d):(\d\d) UTC, (\w+ \d\d \w+ \d{4})", answer)
    assert m, answer
    said = datetime.datetime.strptime(
        f"{m.group(4)} {m.group(1)}:{m.group(2)}:{m.group(3)}", "%A %d %B %Y %H:%M:%S"
    ).replace(tzinfo=datetime.UTC)
    assert abs((datetime.datetime.now(datetime.UTC) - said).total_seconds()) < 120


def _wait_for_output(proc: subprocess.Popen[str], needle: bytes, timeout: float) -> bytes:
    """Read the process's stdout raw until ``needle`` shows up (or fail)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        seen += chunk
        if needle in seen:
            return seen
        if not chunk and proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"no {needle!r} in the output:\n{seen.decode(errors='replace')}\n{err}")


def test_serving_prints_how_to_connect_and_stops_on_sigterm(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    line_port, irc_port, http_port = _free_ports(3)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--line-port",
            str(line_port),
            "--irc-port",
            str(irc_port),
            "--http-port",
            str(http_port),
            "--db",
            ":memory:",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(token),
        cwd=tmp_path,
    )
    try:
        out = _wait_for_output(proc, b"HELLO main:", 60).decode()
        assert f"http://127.0.0.1:{http_port}/" in out
        assert f"irssi -c 127.0.0.1 -p {irc_port}" in out
        assert f"nc 127.0.0.1 {line_port}" in out
        # The server is up on the line port: a client gets the bot's welcome.
        with socket.create_connection(("127.0.0.1", line_port), timeout=10) as s:
            s.sendall(b"HELLO main:dave\n")
            got = b""
            while b"welcome, dave!" not in got:
                chunk = s.recv(4096)
                assert chunk, got
                got += chunk
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_none_left(TOKEN_VAR, token)
    assert proc.returncode == 0, err


def test_help_lists_the_options() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--host", "--line-port", "--irc-port", "--http-port", "--db", "--demo", "--json"):
        assert flag in proc.stdout


def test_bad_options_are_usage_errors() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--line-port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "usage:" in proc.stderr
