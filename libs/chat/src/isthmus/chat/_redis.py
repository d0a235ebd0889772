"""Redis pub/sub backplane: several server processes share rooms, presence and direct messages.

Every node publishes on one channel what it made durable (messages), what happened (events,
room changes, clients connecting and leaving) and a heartbeat; every node subscribes and applies
what the others publish. Numbering and history stay the store's job: nodes that share a store
(PostgreSQL, or one SQLite file on one machine) also share history and sequence numbers.

Delivery is best effort, as Redis pub/sub is. While the connection to Redis is down, payloads
queued for it are dropped once the reconnect fails, and nothing published by others arrives:
messages stay in the store (clients get them from history, or on resume); presence heals when the
connection comes back, as the node then announces its clients and asks the others for theirs.
A node that stops publishing heartbeats for three intervals is declared gone and its clients
quit on the other nodes.

Needs the ``redis`` extra: ``pip install "isthmus-chat[redis]"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._state import Backplane

__all__ = ["RedisBackplane"]

log = logging.getLogger("isthmus.chat")

_BACKOFF_MAX = 5.0
_BATCH = 1000  # payloads per pipelined round trip


def _redis() -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:
        raise ImportError(
            "RedisBackplane needs redis-py: pip install 'isthmus-chat[redis]'"
        ) from exc
    return redis


class RedisBackplane(Backplane):
    """A :class:`Backplane` over one Redis pub/sub channel (redis-py's asyncio client).

    ``url`` is a ``redis://`` (or ``rediss://``, ``unix://``) URL; every node of one deployment
    uses the same ``channel``. ``node_id`` names this process (default: host, pid and a random
    suffix); ``heartbeat`` is the interval in seconds of the liveness beats (a node silent for
    three intervals is gone); at most ``max_queue`` payloads wait for Redis (the oldest are
    dropped beyond that).

    :meth:`start` raises :class:`ConnectionError` if Redis cannot be reached; afterwards the
    backplane reconnects by itself, with exponential backoff, and logs what it lost.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        channel: str = "isthmus-chat",
        node_id: str | None = None,
        heartbeat: float = 2.0,
        max_queue: int = 100_000,
    ) -> None:
        self._redis = _redis()
        self.url = url
        self.channel = channel
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.heartbeat = heartbeat
        #: Payloads dropped: queue overflow, or a publish that failed while Redis was down.
        self.dropped = 0
        self._queue: deque[bytes] = deque(maxlen=max_queue)
        self._wake: asyncio.Event | None = None
        self._peers: dict[str, float] = {}  # node id -> when we last heard from it (monotonic)
        self._on_remote: Callable[[dict[str, Any]], None] | None = None
        self._pub: Any = None
        self._sub: Any = None
        self._sub_client: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._beat = self._encode({"t": "beat", "node": self.node_id})

    @property
    def peers(self) -> list[str]:
        """The other nodes heard from recently."""
        return sorted(self._peers)

    @staticmethod
    def _encode(payload: dict[str, Any]) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

    def _client(self) -> Any:
        r = self._redis
        return r.asyncio.Redis.from_url(
            self.url,
            # No silent retries inside redis-py: a drop must reach our loops, which resubscribe
            # and tell the chat to resynchronise presence.
            retry=r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0),
            socket_connect_timeout=5,
            socket_keepalive=True,
        )

    # ------------------------------------------------------------- lifecycle

    async def start(self, on_remote: Callable[[dict[str, Any]], None]) -> None:
        """Subscribe, then start the reader and writer tasks. :class:`ConnectionError` if
        Redis cannot be reached."""
        self._on_remote = on_remote
        self._wake = asyncio.Event()
        try:
            self._pub = self._client()
            await self._pub.ping()
            await self._subscribe()
        except (self._redis.RedisError, OSError) as exc:
            await self._close_connections()
            raise ConnectionError(f"redis backplane at {self.url}: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read_loop(), name="isthmus.chat redis reader")
        self._writer = loop.create_task(self._write_loop(), name="isthmus.chat redis writer")

    def publish(self, payload: dict[str, Any]) -> None:
        """Queue ``payload`` (JSON-encoded now) for the writer task; never blocks."""
        if self._closing or self._wake is None:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(self._encode(payload))
        self._wake.set()

    async def close(self) -> None:
        """Publish what is queued and a goodbye (a few seconds at most), stop, disconnect."""
        if self._closing:
            return
        self._closing = True
        if self._writer is not None and self._wake is not None:
            self._queue.append(self._encode({"t": "bye", "node": self.node_id}))
            self._wake.set()
            with contextlib.suppress(Exception):  # too slow (TimeoutError) or it had failed
                await asyncio.wait_for(asyncio.shield(self._writer), 3.0)
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._reader = self._writer = None
        await self._close_connections()

    async def _subscribe(self) -> None:
        self._sub_client = self._client()
        self._sub = self._sub_client.pubsub(ignore_subscribe_messages=True)
        await self._sub.subscribe(self.channel)

    async def _close_subscription(self) -> None:
        sub, client, self._sub, self._sub_client = self._sub, self._sub_client, None, None
        with contextlib.suppress(Exception):
            if sub is not None:
                await sub.aclose()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()

    async def _close_connections(self) -> None:
        await self._close_subscription()
        pub, self._pub = self._pub, None
        with contextlib.suppress(Exception):
            if pub is not None:
                await pub.aclose()

    # ------------------------------------------------------------- reader

    def _deliver(self, payload: dict[str, Any]) -> None:
        assert self._on_remote is not None
        try:
            self._on_remote(payload)
        except Exception:
            log.exception("redis backplane: applying a payload failed: %.200r", payload)

    async def _read_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self._sub is None:
                    await self._subscribe()
                    log.warning("redis backplane: reconnected to %s", self.url)
                backoff = 0.1
                # Announce ourselves (and ask for the others' clients) on every (re)subscribe.
                self._deliver({"t": "up", "node": self.node_id})
                await self._read()
            except asyncio.CancelledError:
                raise
            except (self._redis.RedisError, OSError, TimeoutError) as exc:
                log.warning(
                    "redis backplane: subscription to %s lost (%s); retrying in %.1f s",
                    self.url,
                    exc or type(exc).__name__,
                    backoff,
                )
                await self._close_subscription()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _read(self) -> None:
        sub = self._sub
        hb = self.heartbeat
        heard = time.monotonic()
        while True:
            msg = await sub.get_message(ignore_subscribe_messages=True, timeout=hb)
            now = time.monotonic()
            if msg is not None and msg.get("type") == "message":
                heard = now
                self._handle(msg["data"], now)
            elif now - heard > 3 * hb:
                # Not even our own heartbeats come back: the connection is dead or stuck.
                raise TimeoutError(f"nothing received for {now - heard:.1f} s")
            self._expire(now)

    def _handle(self, data: bytes, now: float) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            log.warning("redis backplane: dropped a payload that is not JSON: %.200r", data)
            return
        if not isinstance(payload, dict):
            return
        node = payload.get("node")
        if not isinstance(node, str) or node == self.node_id:
            return
        kind = payload.get("t")
        if kind == "bye":
            if self._peers.pop(node, None) is not None:
                self._deliver({"t": "gone", "node": node})
            return
        if node not in self._peers:
            self._peers[node] = now
            log.info("redis backplane: node %s is up", node)
            if kind not in ("hello", "sync"):
                # A node we had given up on (or missed the hello of): ask for its clients.
                self._deliver({"t": "up", "node": self.node_id})
        self._peers[node] = now
        if kind != "beat":
            self._deliver(payload)

    def _expire(self, now: float) -> None:
        limit = 3 * self.heartbeat
        for node, seen in list(self._peers.items()):
            if now - seen > limit:
                del self._peers[node]
                log.warning("redis backplane: node %s silent for %.1f s: gone", node, now - seen)
                self._deliver({"t": "gone", "node": node})

    # ------------------------------------------------------------- writer

    async def _write_loop(self) -> None:
        assert self._wake is not None
        wake = self._wake
        queue = self._queue
        backoff = 0.1
        next_beat = time.monotonic() + self.heartbeat
        while True:
            if not queue:
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.0, next_beat - time.monotonic()))
            wake.clear()
            if time.monotonic() >= next_beat and not self._closing:
                queue.append(self._beat)
                next_beat = time.monotonic() + self.heartbeat
            if not queue:
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), _BATCH))]
            try:
                pipe = self._pub.pipeline(transaction=False)
                for data in batch:
                    pipe.publish(self.channel, data)
                await pipe.execute()
            except (self._redis.RedisError, OSError, TimeoutError) as exc:
                self.dropped += len(batch)
                log.warning(
                    "redis backplane: publishing to %s failed (%s); %d payloads lost, "
                    "retrying in %.1f s",
                    self.url,
                    exc or type(exc).__name__,
                    len(batch),
                    backoff,
                )
                if self._closing:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            else:
                backoff = 0.1
