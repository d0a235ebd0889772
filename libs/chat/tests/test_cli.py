"""Configuration by flag, environment and file, and the ``isthmus-chat`` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _client import LineClient
from isthmus.chat import Chat, SQLiteStore
from isthmus.chat._cli import main
from isthmus.chat._config import ServerConfig, load_config


def test_defaults_are_the_seeds() -> None:
    cfg = load_config({}, env={})
    assert (cfg.line_port, cfg.irc_port, cfg.http_port, cfg.host) == (
        10010,
        6667,
        8000,
        "127.0.0.1",
    )
    limits = cfg.limits()
    assert (limits.max_clients, limits.max_message_length) == (100, 255)


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "chat.toml"
    toml.write_text(
        "line_port = 1\nirc_port = 2\nhttp_port = 3\nmax_clients = 7\nrequire_account = true\n"
    )
    env = {"ISTHMUS_CHAT_IRC_PORT": "20", "ISTHMUS_CHAT_HTTP_PORT": "30"}
    cfg = load_config({"http_port": 300, "line_port": None}, env=env, config_file=toml)
    assert (cfg.line_port, cfg.irc_port, cfg.http_port) == (1, 20, 300)
    assert cfg.max_clients == 7 and cfg.require_account is True
    assert cfg.limits().max_clients == 7


def test_yaml_file_with_a_chat_table_and_the_config_env_variable(tmp_path: Path) -> None:
    yml = tmp_path / "chat.yaml"
    yml.write_text("chat:\n  db: ':memory:'\n  default-rooms: [lobby, dev]\n  rate: 2.5\n")
    cfg = load_config({}, env={"ISTHMUS_CHAT_CONFIG": str(yml), "ISTHMUS_CHAT_LINE": "off"})
    assert cfg.db == ":memory:" and cfg.default_rooms == ["lobby", "dev"] and cfg.rate == 2.5
    assert cfg.line is False


def test_bad_settings_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown setting"):
        load_config({}, env={}, config_file=_write(tmp_path / "x.toml", "bogus = 1\n"))
    with pytest.raises(ValueError):
        load_config({}, env={"ISTHMUS_CHAT_LINE_PORT": "ten"})
    with pytest.raises(ValueError, match="boolean"):
        load_config({}, env={"ISTHMUS_CHAT_IRC": "maybe"})


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_help_names_the_anchor_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--line-port",
        "--irc-port",
        "--http-port",
        "--host",
        "--db",
        "--redis",
        "--ssl-certfile",
        "--ssl-keyfile",
        "--config",
        "--max-clients",
    ):
        assert flag in out


def test_register_creates_an_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "c.db"
    assert main(["register", "alice", "--db", str(db), "--password", "pw1234"]) == 0
    assert main(["register", "alice", "--db", str(db), "--password", "pw1234"]) == 1

    async def check() -> str:
        async with Chat(store=SQLiteStore(db)) as chat:
            return await chat.authenticate("alice", "pw1234")

    assert asyncio.run(check()) == "alice"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "isthmus.chat._cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_port(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}: {out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.asyncio
async def test_serve_line_only_survives_restart_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    db = str(tmp_path / "chat.db")
    args = ("--no-irc", "--no-http", "--line-port", str(port), "--db", db)
    with _serve(*args) as proc:
        _wait_port(port, proc)
        c = await LineClient.open(port)
        assert await c.ask("HELLO main:alice") == "OK HELLO alice main"
        assert (await c.ask("SEND main kept")).startswith("OK SEND main 1")
        await c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    with _serve(*args, env={"ISTHMUS_CHAT_MAX_CLIENTS": "1"}) as proc:
        _wait_port(port, proc)
        c = await LineClient.open(port)
        d = await LineClient.open(port)
        assert await c.ask("HELLO main:bob") == "OK HELLO bob main"
        assert (await d.ask("HELLO main:carol")).startswith("ERR HELLO LIMIT_EXCEEDED")
        c.send("HISTORY main")
        assert (await c.until("HIST")).endswith(" kept")
        status = json.loads((await c.ask("STATUS", "STATUS")).split(" ", 1)[1])
        assert status["max_clients"] == 1
        await c.close()
        await d.close()


def test_an_unusable_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with _serve("--no-irc", "--no-http", "--line-port", str(port), "--db", ":memory:") as proc:
            assert proc.wait(20) == 1
            assert proc.stdout is not None
            assert "address already in use" in proc.stdout.read().lower()


def test_server_config_limits_roundtrip() -> None:
    cfg = ServerConfig(max_clients=5, rate=0, send_queue_bytes=1024)
    limits = cfg.limits()
    assert (limits.max_clients, limits.rate, limits.send_queue_bytes) == (5, 0, 1024)


def test_an_unreachable_database_is_one_line_not_a_traceback() -> None:
    port = _free_port()  # nothing listens there
    dsn = f"postgresql://nobody@127.0.0.1:{port}/chat"
    with _serve("--no-irc", "--no-http", "--line-port", "0", "--db", dsn) as proc:
        assert proc.wait(30) == 1
        assert proc.stdout is not None
        out = proc.stdout.read()
        assert "isthmus-chat:" in out and "Traceback" not in out
