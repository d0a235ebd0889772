"""Server configuration from defaults, a file, the environment and flags, in that order.

Every setting has a flag (``--line-port``), an environment variable (``ISTHMUS_CHAT_LINE_PORT``)
and a key in a TOML or YAML file (``line_port``, given with ``--config`` or
``ISTHMUS_CHAT_CONFIG``). Later sources win.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ._model import Limits

__all__ = ["ServerConfig", "load_config"]

ENV_PREFIX = "ISTHMUS_CHAT_"


@dataclass
class ServerConfig:
    """Everything ``isthmus-chat serve`` needs. Ports of 0 pick free ports."""

    host: str = "127.0.0.1"
    line_port: int = 10010  #: the seed's port
    irc_port: int = 6667
    http_port: int = 8000
    line: bool = True  #: serve the line protocol
    irc: bool = True  #: serve IRC
    http: bool = True  #: serve REST, WebSocket and the web page
    db: str = "isthmus-chat.db"  #: a SQLite path, ``:memory:``, or a ``postgresql://`` DSN
    redis: str | None = None  #: a ``redis://`` URL: share rooms with other server processes
    ssl_certfile: str | None = None  #: TLS on every front end when given
    ssl_keyfile: str | None = None
    server_name: str = "isthmus.chat"
    motd: str | None = None
    default_rooms: list[str] = field(default_factory=lambda: ["main"])
    require_account: bool = False
    secret: str | None = None  #: hex token-signing key; persisted in the store when unset
    log_level: str = "info"
    access_log: bool = False
    irc_ping_interval: float = 120.0
    # limits (see Limits)
    max_clients: int = 100
    max_message_length: int = 255
    max_nick_length: int = 32
    max_rooms: int = 10_000
    max_rooms_per_client: int = 100
    send_queue_bytes: int = 4 * 1024 * 1024
    rate: float = 20.0
    burst: int = 40
    ws_message_bytes: int = 16 * 1024

    def limits(self) -> Limits:
        """The :class:`Limits` these settings describe."""
        names = {f.name for f in fields(Limits)}
        return dataclasses.replace(
            Limits(), **{k: v for k, v in dataclasses.asdict(self).items() if k in names}
        )


def _coerce(name: str, value: Any) -> Any:
    """Convert a string (from the environment) or a file value to the field's type."""
    f = {f.name: f for f in fields(ServerConfig)}.get(name)
    if f is None:
        raise ValueError(f"unknown setting {name!r}")
    kind = str(f.type)
    if value is None:
        return None
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: expected a boolean, got {value!r}")
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    if kind.startswith("list"):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return [str(v) for v in value]
    return str(value)


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = tomllib.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings")
    # Allow the settings under a [chat] / chat: table as well as at the top level.
    inner = data.get("chat")
    return dict(inner) if isinstance(inner, dict) else data


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> ServerConfig:
    """Defaults, then the file, then ``ISTHMUS_CHAT_*`` variables, then ``flags`` (None = unset)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        for k, v in _read_file(Path(path)).items():
            values[k.replace("-", "_")] = _coerce(k.replace("-", "_"), v)
    for f in fields(ServerConfig):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = _coerce(f.name, raw)
    for k, v in (flags or {}).items():
        if v is not None:
            values[k] = _coerce(k, v)
    return ServerConfig(**values)
