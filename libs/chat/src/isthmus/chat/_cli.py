"""``isthmus-chat``: ``serve`` every front end, ``register`` an account, ``status`` of a server."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
import urllib.request
from collections.abc import Sequence

from ._config import ServerConfig, load_config
from ._errors import ChatError
from ._version import __version__

__all__ = ["main"]

_DEFAULTS = ServerConfig()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="isthmus-chat",
        description="A chat server for IRC clients, browsers and scripts over one shared state.",
    )
    p.add_argument("--version", action="version", version=f"isthmus-chat {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "serve",
        help="run the line-protocol, IRC and HTTP (REST, WebSocket, web page) front ends",
        description="Every flag also reads from ISTHMUS_CHAT_<NAME> (e.g. ISTHMUS_CHAT_LINE_PORT) "
        "and from a TOML or YAML file given with --config; flags win, then the environment, "
        "then the file.",
    )
    s.add_argument("--config", metavar="FILE", help="TOML or YAML settings file")
    s.add_argument("--host", help=f"address to bind (default {_DEFAULTS.host})")
    s.add_argument(
        "--line-port", type=int, help=f"seed line protocol port (default {_DEFAULTS.line_port})"
    )
    s.add_argument("--irc-port", type=int, help=f"IRC port (default {_DEFAULTS.irc_port})")
    s.add_argument(
        "--http-port",
        type=int,
        help=f"REST/WebSocket/web page port (default {_DEFAULTS.http_port})",
    )
    s.add_argument(
        "--no-line", dest="line", action="store_const", const=False, help="no line protocol"
    )
    s.add_argument("--no-irc", dest="irc", action="store_const", const=False, help="no IRC")
    s.add_argument("--no-http", dest="http", action="store_const", const=False, help="no HTTP")
    s.add_argument(
        "--db", help="SQLite file, :memory: or a postgresql:// DSN (default isthmus-chat.db)"
    )
    s.add_argument(
        "--redis", metavar="URL", help="redis:// URL of the backplane shared with other servers"
    )
    s.add_argument("--ssl-certfile", help="TLS certificate (PEM): TLS on every front end")
    s.add_argument("--ssl-keyfile", help="TLS private key (PEM)")
    s.add_argument("--server-name", help="name in IRC replies and the status")
    s.add_argument("--motd", help="IRC message of the day")
    s.add_argument("--default-rooms", help="comma-separated rooms that always exist (default main)")
    s.add_argument(
        "--require-account",
        dest="require_account",
        action="store_const",
        const=True,
        help="refuse guests: every client must log in",
    )
    s.add_argument(
        "--secret", help="hex key that signs session tokens (default: kept in the store)"
    )
    s.add_argument("--max-clients", type=int, help=f"default {_DEFAULTS.max_clients}")
    s.add_argument("--max-message-length", type=int, help=f"default {_DEFAULTS.max_message_length}")
    s.add_argument("--rate", type=float, help="messages per second per connection (0: unlimited)")
    s.add_argument("--burst", type=int, help="token-bucket size per connection")
    s.add_argument(
        "--send-queue-bytes", type=int, help="unsent bytes before a slow client is dropped"
    )
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--access-log",
        dest="access_log",
        action="store_const",
        const=True,
        help="log every HTTP request",
    )

    r = sub.add_parser("register", help="create an account in the server's database")
    r.add_argument("name")
    r.add_argument("--db", default=None, help="database (as for serve)")
    r.add_argument("--password", help="the password (default: prompt, or stdin when not a tty)")

    st = sub.add_parser("status", help="print GET /server/status of a running server")
    st.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP base URL")
    return p


_SERVE_KEYS = [
    "host",
    "line_port",
    "irc_port",
    "http_port",
    "line",
    "irc",
    "http",
    "db",
    "redis",
    "ssl_certfile",
    "ssl_keyfile",
    "server_name",
    "motd",
    "default_rooms",
    "require_account",
    "secret",
    "max_clients",
    "max_message_length",
    "rate",
    "burst",
    "send_queue_bytes",
    "log_level",
    "access_log",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``isthmus-chat`` command."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        flags = {k: getattr(args, k, None) for k in _SERVE_KEYS}
        try:
            config = load_config(flags, config_file=args.config)
        except (OSError, ValueError) as exc:
            print(f"isthmus-chat: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        from ._server import serve

        try:
            asyncio.run(serve(config))
        except (OSError, ChatError, ImportError) as exc:
            # A busy port, an unreachable database or Redis, a missing extra: one line, no trace.
            print(f"isthmus-chat: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "register":
        password = args.password
        if password is None:
            password = (
                getpass.getpass("password: ")
                if sys.stdin.isatty()
                else sys.stdin.readline().rstrip("\n")
            )
        config = load_config({"db": args.db})
        return asyncio.run(_register(config, args.name, password))
    if args.command == "status":
        with urllib.request.urlopen(args.url.rstrip("/") + "/server/status", timeout=10) as resp:
            print(json.dumps(json.loads(resp.read()), indent=2))
        return 0
    return 2  # pragma: no cover - argparse requires a command


async def _register(config: ServerConfig, name: str, password: str) -> int:
    from ._server import make_store
    from ._state import Chat

    async with Chat(store=make_store(config.db), default_rooms=()) as chat:
        try:
            await chat.register_account(name, password)
        except ChatError as exc:
            print(f"isthmus-chat: {exc}", file=sys.stderr)
            return 1
    print(f"account {name} created")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
