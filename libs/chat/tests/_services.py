"""Throwaway real servers for the tests: one redis-server and one PostgreSQL cluster per session.

Both listen on 127.0.0.1 on a free port and keep their files in a temporary folder removed at
the end. PostgreSQL refuses to run as root: as root, ``initdb`` and ``postgres`` run as the
``postgres`` user (or ``nobody``). Without the binaries the tests that need them are skipped,
unless ``ISTHMUS_REQUIRE_SERVICES=1`` (CI), which makes that a failure.

The leak check in ``conftest.py`` ignores the processes listed by :func:`service_pids` (and
their children: PostgreSQL forks a backend per connection).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

REQUIRED = os.environ.get("ISTHMUS_REQUIRE_SERVICES") == "1"
_STARTUP_TIMEOUT = 30.0
_PIDS: set[int] = set()


def service_pids() -> set[int]:
    """The pids of the servers started here (the leak check ignores them and their children)."""
    return set(_PIDS)


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (ISTHMUS_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Service:
    """A server process with its own temporary folder."""

    name = "service"

    def __init__(self, base: Path, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base = base
        self.port = port
        self.proc = proc
        self.log = log
        _PIDS.add(proc.pid)
        atexit.register(self.stop)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (``sig`` first, SIGKILL after 10 s) and remove its folder."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _PIDS.discard(self.proc.pid)
        shutil.rmtree(self.base, ignore_errors=True)


def _spawn(argv: list[str], log: Path, user: pwd.struct_passwd | None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        if user is None:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            env={**os.environ, "HOME": str(log.parent), "USER": user.pw_name},
        )


def _wait(svc: _Service, ready: Callable[[], bool]) -> bool:
    """Poll ``ready()`` until true; False if the process exited first (say, port taken)."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if svc.proc.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(0.02)
    svc.stop(signal.SIGKILL)
    pytest.fail(f"{svc.name} did not start in {_STARTUP_TIMEOUT:.0f} s:\n{svc.log_tail()}")


# --------------------------------------------------------------------------------------- redis


class RedisServer(_Service):
    """``redis-server`` without persistence."""

    name = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def start_redis(port: int | None = None) -> RedisServer:
    """Start a redis-server on ``port`` (default: a free one). Skips (or fails under
    ISTHMUS_REQUIRE_SERVICES=1) if redis-server is missing."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(exe, os.X_OK):
        _unavailable("redis-server is not installed (apt-get install redis-server)")
    for _attempt in range(1 if port else 3):
        base = Path(tempfile.mkdtemp(prefix="isthmus-redis-"))
        use = port or free_port()
        log = base / "redis.log"
        argv = [exe, "--port", str(use), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        argv += ["no", "--dir", str(base), "--daemonize", "no", "--databases", "1"]
        svc = RedisServer(base, use, _spawn(argv, log, None), log)
        if _wait(svc, svc.ping):
            return svc
        tail = svc.log_tail()
        svc.stop()
        if "Address already in use" not in tail:
            pytest.fail(f"redis-server failed to start:\n{tail}")
    pytest.fail(f"redis-server: port {port or 'free ports'} in use")


# ------------------------------------------------------------------------------------ postgres


def _pg_bindir() -> Path | None:
    env = os.environ.get("ISTHMUS_PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for c in candidates:
        if (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


class PostgresServer(_Service):
    """A PostgreSQL cluster (trust authentication, user ``postgres``) tuned for tests: no fsync
    (the tests kill chat servers, never PostgreSQL), no autovacuum."""

    name = "postgres"
    _counter = itertools.count(1)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def ready(self) -> bool:
        return "ready to accept connections" in self.log_tail()

    async def new_database(self) -> str:
        """Create an empty database; returns its DSN."""
        import asyncpg

        name = f"chat_{next(self._counter)}"
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)

    def stop(self, sig: int = signal.SIGINT) -> None:  # SIGINT: PostgreSQL's fast shutdown
        super().stop(sig)


def _pg_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    _unavailable("running as root and there is no postgres or nobody user to run PostgreSQL")
    return None


def start_postgres() -> PostgresServer:
    """initdb into a temporary folder and start postgres on a free port."""
    bindir = _pg_bindir()
    if bindir is None:
        _unavailable("PostgreSQL is not installed (apt-get install postgresql)")
        raise AssertionError  # unreachable: _unavailable raises
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable("asyncpg is not installed")
    user = _pg_user()
    # As root the server runs as another user, who must be able to reach the folder: /tmp.
    base = Path(tempfile.mkdtemp(prefix="isthmus-pg-", dir="/tmp" if user else None))
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    data = base / "data"
    log = base / "postgres.log"
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    initdb += ["--no-sync", "-E", "UTF8", "--locale=C"]
    proc = _spawn(initdb, base / "initdb.log", user)
    if proc.wait(120) != 0:
        text = (base / "initdb.log").read_text(errors="replace")[-3000:]
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{text}")
    for _attempt in range(3):
        port = free_port()
        argv = [str(bindir / "postgres"), "-D", str(data), "-k", str(base), "-p", str(port)]
        for setting in (
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "full_page_writes=off",
            "autovacuum=off",
            "max_connections=200",
            "shared_buffers=32MB",
        ):
            argv += ["-c", setting]
        svc = PostgresServer(base, port, _spawn(argv, log, user), log)
        if _wait(svc, svc.ready):
            return svc
        tail = svc.log_tail()
        _PIDS.discard(svc.proc.pid)
        if "could not bind" not in tail and "already in use" not in tail:
            svc.stop()
            pytest.fail(f"postgres failed to start:\n{tail}")
    shutil.rmtree(base, ignore_errors=True)
    pytest.fail("postgres: no free port after 3 attempts")


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session."""
    svc = start_redis()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session."""
    svc = start_postgres()
    try:
        yield svc
    finally:
        svc.stop()


@pytest_asyncio.fixture
async def pg_dsn(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """The DSN of a fresh, empty database for one test."""
    yield await postgres_server.new_database()
