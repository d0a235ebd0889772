"""Sans-IO streaming policy: ack windows, latest-frame-wins, keyframes, settle and scaling.

These objects decide *what* to encode and *whom* to send it to; they never touch a socket, a
thread or a timer.  Time is passed in (``now``) or read from an injectable ``clock``, so an
application can drive them from asyncio, a Qt timer or a plain loop, and tests never sleep.

Server side, one :class:`StreamPolicy` per video stream::

    policy.submit(frame)                      # the renderer produced a picture
    while (job := policy.next_encode()) is not None:
        packet = encoder.encode(job.frame, force_keyframe=job.keyframe)
        dispatch = policy.packet_ready(packet)
        for client in dispatch.clients:
            send(client, job.frame_id, packet)
    policy.ack(client, frame_id)              # when the client's ack arrives

Client side, :class:`KeyframeRequester` re-sends a lost keyframe request.  For the view,
:class:`SettleDetector` asks for a high-quality still once the scene stops changing and
:class:`InteractionScaler` lowers the resolution while the user drags.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ._errors import FramesError

__all__ = [
    "ClientState",
    "ClientWindow",
    "Dispatch",
    "EncodeJob",
    "InteractionScaler",
    "KeyframeReason",
    "KeyframeRequester",
    "PolicyError",
    "SettleDetector",
    "StreamPolicy",
]

F = TypeVar("F")
C = TypeVar("C", bound=Hashable)
P = TypeVar("P", bound="_HasKeyframe")


class PolicyError(FramesError):
    """A call that breaks a policy's protocol: an ack of a frame never sent, a send into a full
    window, an unknown or duplicate client, a packet with no encode behind it."""


class _HasKeyframe(Protocol):
    @property
    def keyframe(self) -> bool: ...


def _check_seconds(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# per-client ack window
# --------------------------------------------------------------------------------------------


class ClientWindow:
    """Frames in flight to one client, at most ``window`` of them.

    Frame ids sent to a client must increase (gaps are fine: a client that skipped frames
    sees them).  Acks are cumulative: ``ack(k)`` acknowledges every frame ``<= k``; an ack at
    or below an earlier one is stale and ignored; an ack above the last id sent raises
    :class:`PolicyError` (the client acknowledges something it was never sent).
    """

    __slots__ = ("_acked", "_ids", "_last_sent", "_window")

    def __init__(self, window: int = 4) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._window = int(window)
        self._ids: deque[int] = deque()
        self._last_sent: int | None = None
        self._acked: int | None = None

    @property
    def window(self) -> int:
        """The most frames that may be in flight."""
        return self._window

    @property
    def in_flight(self) -> int:
        """Frames sent and not yet acknowledged."""
        return len(self._ids)

    @property
    def free(self) -> int:
        """How many more frames may be sent now."""
        return self._window - len(self._ids)

    @property
    def in_flight_ids(self) -> tuple[int, ...]:
        """The ids in flight, oldest first."""
        return tuple(self._ids)

    @property
    def last_sent(self) -> int | None:
        """The id of the newest frame sent, None before the first."""
        return self._last_sent

    @property
    def acked(self) -> int | None:
        """The highest id acknowledged, None before the first ack."""
        return self._acked

    def can_send(self) -> bool:
        """Whether another frame fits in the window."""
        return len(self._ids) < self._window

    def sent(self, frame_id: int) -> None:
        """Record that ``frame_id`` went out; PolicyError if the window is full or the id does
        not increase."""
        if self._last_sent is not None and frame_id <= self._last_sent:
            raise PolicyError(f"frame ids must increase: {frame_id} after {self._last_sent}")
        if len(self._ids) >= self._window:
            raise PolicyError(f"window full: {len(self._ids)} of {self._window} in flight")
        self._ids.append(frame_id)
        self._last_sent = frame_id

    def ack(self, frame_id: int) -> int:
        """Acknowledge every frame up to ``frame_id``; returns how many left the window."""
        if self._last_sent is None or frame_id > self._last_sent:
            raise PolicyError(
                f"ack of frame {frame_id}, which was not sent (last sent: {self._last_sent})"
            )
        if self._acked is not None and frame_id <= self._acked:
            return 0  # stale: reordered or duplicated acks
        self._acked = frame_id
        freed = 0
        ids = self._ids
        while ids and ids[0] <= frame_id:
            ids.popleft()
            freed += 1
        return freed


# --------------------------------------------------------------------------------------------
# server: one encoder, many clients
# --------------------------------------------------------------------------------------------


class KeyframeReason(enum.StrEnum):
    """Why a client waits for a keyframe."""

    #: The client joined and has no picture to predict from.
    JOIN = "join"
    #: The client asked (a decode error, or its :class:`KeyframeRequester` after a loss).
    REQUEST = "request"
    #: The client's window was full when a packet went out, so its reference chain broke.
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class EncodeJob(Generic[F]):
    """What :meth:`StreamPolicy.next_encode` asks the application to encode.

    ``keyframe`` means the encoder must produce a keyframe (IDR) for this frame; ``repeat``
    means ``frame`` was encoded before and is encoded again only so that a client waiting for
    a keyframe gets a picture of a scene that has not changed since.
    """

    frame: F
    frame_id: int
    keyframe: bool
    repeat: bool = False


@dataclass(frozen=True, slots=True)
class Dispatch(Generic[P, C]):
    """Where an encoded packet goes: send ``packet`` (with ``frame_id``) to each of
    ``clients``; ``skipped`` are the clients that do not get it."""

    packet: P
    frame_id: int
    keyframe: bool
    clients: tuple[C, ...]
    skipped: tuple[C, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientState(Generic[C]):
    """A snapshot of one client of a :class:`StreamPolicy`."""

    client_id: C
    window: int
    in_flight: int
    #: Why the client waits for a keyframe, None when its stream is decodable.
    needs_keyframe: KeyframeReason | None
    #: Packets sent to it and packets it skipped since it joined.
    sent: int
    skipped: int
    acked: int | None


class _Client:
    __slots__ = ("awaiting", "last_key", "need", "reserved", "sent", "skipped", "window")

    def __init__(self, window: int) -> None:
        self.window = ClientWindow(window)
        # Window slots promised to encodes in progress, so a pipelined encoder cannot
        # overfill the window: in_flight + reserved <= window always.
        self.reserved = 0
        # Forced-keyframe encodes in progress that reserved this client: they will satisfy
        # its need, so it can take what is encoded after them.
        self.awaiting = 0
        self.need: KeyframeReason | None = KeyframeReason.JOIN
        self.sent = 0
        self.skipped = 0
        self.last_key: int | None = None  # id of the newest keyframe sent to it

    def has_room(self) -> bool:
        return self.window.in_flight + self.reserved < self.window.window


class _Job(Generic[F]):
    __slots__ = ("box", "job", "reserved")

    def __init__(self, job: EncodeJob[F], box: tuple[F], reserved: list[_Client]) -> None:
        self.job = job
        self.box = box  # identifies the submission, to tell whether a newer one exists
        self.reserved = reserved


class StreamPolicy(Generic[F, C]):
    """Latest-frame-wins scheduling of one encoder for many clients with ack windows.

    * :meth:`submit` keeps only the newest frame not yet encoded; an older one is dropped
      *before* it is encoded (counted in :attr:`dropped`), so the application encodes only
      what will be sent.
    * :meth:`next_encode` returns an :class:`EncodeJob` only when some client can take the
      result (window space and a decodable stream or a keyframe coming); otherwise None and
      the frame keeps waiting, to be replaced by a newer one.
    * A client that joins or calls :meth:`request_keyframe` needs a keyframe.  The need is a
      property of the *client*, not of a queued frame: a newer frame never cancels it (the
      newest content is encoded as the keyframe), and it is cleared only when a keyframe is
      actually delivered to that client.  If nothing new was submitted, the last frame is
      encoded again as a keyframe so a client joining a still scene gets a picture.
    * :meth:`packet_ready` says which clients get a packet.  A client whose window is full
      skips it and, since later P-frames predict from it, needs a keyframe (reason SKIP); a
      client waiting for a keyframe skips P-frames.  So every client's stream starts with a
      keyframe and never has a P-frame after a gap.
    * Forced keyframes are at least ``min_keyframe_interval`` seconds apart, so a slow client
      that keeps skipping (or many clients joining at once) cannot flood everyone with
      keyframes; :meth:`wake_at` tells when a held-back keyframe becomes due.

    Call :meth:`next_encode` after :meth:`submit`, :meth:`ack`, :meth:`join` and
    :meth:`request_keyframe`, and at :meth:`wake_at`.  Encodes may be pipelined: each
    :meth:`packet_ready` (or :meth:`encode_failed`) answers the oldest job outstanding.
    Annotate the frame and client-id types: ``StreamPolicy[Frame, str](window=4)``.
    """

    def __init__(
        self,
        window: int = 4,
        *,
        min_keyframe_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.min_keyframe_interval = _check_seconds("min_keyframe_interval", min_keyframe_interval)
        self._clock = clock
        self._clients: dict[C, _Client] = {}
        # One-element boxes, so that None can be a frame too.
        self._pending: tuple[F] | None = None
        self._current: tuple[F] | None = None
        self._jobs: deque[_Job[F]] = deque()
        self._next_id = 0
        self._last_key_at: float | None = None
        #: Frames submitted, frames replaced before being encoded, encodes handed out
        #: (repeats included), keyframes dispatched.
        self.submitted = 0
        self.dropped = 0
        self.encoded = 0
        self.keyframes = 0

    # clients ---------------------------------------------------------------------------------

    def join(self, client_id: C, window: int | None = None) -> None:
        """Add a client (it needs a keyframe first); ``window`` overrides the default."""
        if client_id in self._clients:
            raise PolicyError(f"client {client_id!r} already joined")
        self._clients[client_id] = _Client(self.window if window is None else window)

    def leave(self, client_id: C) -> bool:
        """Forget a client; False if it was not there (closing twice is harmless)."""
        return self._clients.pop(client_id, None) is not None

    def request_keyframe(self, client_id: C | None = None, *, after: int | None = None) -> None:
        """The client (None: every client) needs a keyframe, e.g. after a decode error.

        Any keyframe delivered after the request repairs the client's decoder, since the
        transport keeps order.  ``after`` is the newest frame id the client had received when
        it asked: if a keyframe newer than that was already sent to it, the request crossed
        it in transit (a re-sent request, say) and is ignored instead of costing another.
        """
        targets = self._clients.values() if client_id is None else (self._get(client_id),)
        for c in targets:
            if after is not None and c.last_key is not None and c.last_key > after:
                continue  # a keyframe newer than what the client had seen is on its way
            if c.need is None:
                c.need = KeyframeReason.REQUEST

    def ack(self, client_id: C, frame_id: int) -> int:
        """A cumulative ack from a client; returns how many frames left its window."""
        return self._get(client_id).window.ack(frame_id)

    @property
    def clients(self) -> tuple[C, ...]:
        """The clients, in join order."""
        return tuple(self._clients)

    def client(self, client_id: C) -> ClientState[C]:
        """A snapshot of one client's window and keyframe state."""
        c = self._get(client_id)
        return ClientState(
            client_id=client_id,
            window=c.window.window,
            in_flight=c.window.in_flight,
            needs_keyframe=c.need,
            sent=c.sent,
            skipped=c.skipped,
            acked=c.window.acked,
        )

    def _get(self, client_id: C) -> _Client:
        try:
            return self._clients[client_id]
        except KeyError:
            raise PolicyError(f"unknown client {client_id!r}") from None

    # frames ----------------------------------------------------------------------------------

    def submit(self, frame: F) -> bool:
        """Offer a new frame; returns True if it replaced (dropped) one not yet encoded."""
        dropped = self._pending is not None
        if dropped:
            self.dropped += 1
        self.submitted += 1
        self._pending = self._current = (frame,)
        return dropped

    @property
    def pending(self) -> bool:
        """Whether a submitted frame waits to be encoded."""
        return self._pending is not None

    @property
    def encoding(self) -> int:
        """Encodes handed out and not yet answered by packet_ready or encode_failed."""
        return len(self._jobs)

    def _keyframe_allowed(self, now: float) -> bool:
        last = self._last_key_at
        # The same sum as wake_at(), so a timer set for wake_at() always finds it due.
        return last is None or now >= last + self.min_keyframe_interval

    def next_encode(self) -> EncodeJob[F] | None:
        """The next frame to encode and whether it must be a keyframe, or None when there is
        nothing to encode or no client could take it (every window full)."""
        now = self._clock()
        synced: list[_Client] = []
        needy: list[_Client] = []
        for c in self._clients.values():
            if not c.has_room():
                continue
            # A client promised an in-progress keyframe can take what is encoded after it.
            (synced if c.need is None or c.awaiting else needy).append(c)
        force = bool(needy) and self._keyframe_allowed(now)
        if self._pending is not None:
            box, repeat = self._pending, False
        elif force and self._current is not None:
            box, repeat = self._current, True
        else:
            return None
        recipients = synced + needy if force else synced
        if not recipients:
            return None
        job = EncodeJob(frame=box[0], frame_id=self._next_id, keyframe=force, repeat=repeat)
        self._next_id += 1
        for c in recipients:
            c.reserved += 1
        if force:
            self._last_key_at = now
            for c in recipients:
                c.awaiting += 1
        self._jobs.append(_Job(job, box, recipients))
        self._pending = None
        self.encoded += 1
        return job

    def packet_ready(self, packet: P) -> Dispatch[P, C]:
        """The encoder's packet for the oldest job: returns the clients to send it to and
        counts it as in flight to each of them."""
        if not self._jobs:
            raise PolicyError("packet_ready() without an encode from next_encode()")
        entry = self._jobs.popleft()
        job = entry.job
        self._release(entry)
        key = bool(packet.keyframe)
        if key:
            self.keyframes += 1
            if not job.keyframe:  # the encoder's own GOP keyframe also resets the spacing
                self._last_key_at = self._clock()
        to: list[C] = []
        skipped: list[C] = []
        for cid, c in self._clients.items():
            # A P-frame is useless to a client waiting for a keyframe.
            if (key or c.need is None) and c.has_room():
                c.window.sent(job.frame_id)
                c.sent += 1
                if key:
                    c.need = None
                    c.last_key = job.frame_id
                to.append(cid)
                continue
            if c.need is None:
                # Later P-frames predict from this one: the client's chain is broken.
                c.need = KeyframeReason.SKIP
            c.skipped += 1
            skipped.append(cid)
        return Dispatch(packet, job.frame_id, key, tuple(to), tuple(skipped))

    def encode_failed(self) -> None:
        """The oldest job's encode failed: release what it held.  Keyframe needs stay, and its
        frame is pending again if it is still the newest one submitted."""
        if not self._jobs:
            raise PolicyError("encode_failed() without an encode from next_encode()")
        entry = self._jobs.popleft()
        self._release(entry)
        # Restore the frame only if it is still the newest: never go back to older content.
        if self._pending is None and self._current is entry.box and not entry.job.repeat:
            self._pending = entry.box
        if entry.job.keyframe:
            self._last_key_at = None  # the keyframe never happened; do not hold the retry back

    def _release(self, entry: _Job[F]) -> None:
        for c in entry.reserved:
            c.reserved -= 1
            if entry.job.keyframe and c.awaiting:
                c.awaiting -= 1

    def wake_at(self) -> float | None:
        """The clock time at which :meth:`next_encode` may return a keyframe it holds back now
        (min_keyframe_interval), or None if nothing is held back."""
        if self._last_key_at is None or self._current is None:
            return None
        due = self._last_key_at + self.min_keyframe_interval
        waiting = any(
            c.need is not None and not c.awaiting and c.has_room() for c in self._clients.values()
        )
        return due if waiting and due > self._clock() else None


# --------------------------------------------------------------------------------------------
# client: keyframe requests that survive loss
# --------------------------------------------------------------------------------------------


class KeyframeRequester:
    """Client side: when to send a keyframe request, re-sent every ``timeout`` seconds until a
    keyframe arrives (a request, or the keyframe answering it, may be lost or dropped).

    It starts out waiting (a joining client has nothing to decode).  :meth:`lost` (a decode
    error) and a gap in frame ids seen by :meth:`on_packet` make it wait again.
    """

    __slots__ = ("_last_id", "_requested_at", "requests", "timeout", "waiting")

    def __init__(self, timeout: float = 0.25, *, waiting: bool = True) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.timeout = float(timeout)
        #: Whether packets are useless until a keyframe arrives.
        self.waiting = waiting
        #: How many requests :meth:`need_keyframe` has asked for.
        self.requests = 0
        self._requested_at: float | None = None
        self._last_id: int | None = None

    @property
    def last_id(self) -> int | None:
        """The newest frame id seen by :meth:`on_packet`: send it with a request, as
        ``StreamPolicy.request_keyframe(after=...)``."""
        return self._last_id

    def lost(self) -> None:
        """The decoder failed or state was lost: wait for a keyframe, ask at once."""
        if not self.waiting:
            self.waiting = True
            self._requested_at = None

    def need_keyframe(self, now: float) -> bool:
        """Whether to send a keyframe request now: at once when waiting starts, then every
        ``timeout`` seconds until a keyframe arrives.  A True answer counts as sent."""
        if not self.waiting:
            return False
        if self._requested_at is not None and now < self._requested_at + self.timeout:
            return False
        self._requested_at = now
        self.requests += 1
        return True

    def on_packet(self, keyframe: bool, frame_id: int | None = None) -> bool:
        """A packet arrived; returns whether to decode it.  ``frame_id`` (consecutive per
        stream) lets a gap, i.e. a packet that never arrived, start waiting for a keyframe."""
        if frame_id is not None:
            gap = self._last_id is not None and frame_id != self._last_id + 1
            self._last_id = frame_id
            if gap and not keyframe:
                self.lost()
        if keyframe:
            self.waiting = False
            self._requested_at = None
            return True
        return not self.waiting

    def due_at(self) -> float | None:
        """When :meth:`need_keyframe` will next say True (None: not waiting; the time of the
        last request plus timeout, or -inf if a request is due right away)."""
        if not self.waiting:
            return None
        if self._requested_at is None:
            return float("-inf")
        return self._requested_at + self.timeout


# --------------------------------------------------------------------------------------------
# view: a still when the scene settles, a smaller picture while the user interacts
# --------------------------------------------------------------------------------------------


class SettleDetector:
    """Asks once for a high-quality still after the scene has not changed for
    ``settle_after`` seconds, and not again until it changes.

    Call :meth:`changed` whenever the scene changes (camera, data, layers); :meth:`poll`
    returns True exactly once per settled period.  Nothing fires before the first change.
    """

    __slots__ = ("_changed_at", "_fired", "settle_after")

    def __init__(self, settle_after: float = 0.3) -> None:
        self.settle_after = _check_seconds("settle_after", settle_after)
        self._changed_at: float | None = None
        self._fired = True

    def changed(self, now: float) -> None:
        """The scene changed at ``now``."""
        self._changed_at = now
        self._fired = False

    def settled(self, now: float) -> bool:
        """Whether nothing has changed for ``settle_after`` seconds."""
        return self._changed_at is None or now >= self._changed_at + self.settle_after

    def poll(self, now: float) -> bool:
        """True once when the scene has just settled: time to send the high-quality still."""
        if self._fired or not self.settled(now):
            return False
        self._fired = True
        return True

    def due_at(self) -> float | None:
        """When :meth:`poll` will say True, None if it will not until the next change."""
        if self._fired or self._changed_at is None:
            return None
        return self._changed_at + self.settle_after


def _even(n: float) -> int:
    # 4:2:0 chroma needs even dimensions; round down but never below 2.
    return max(2, int(n) // 2 * 2)


class InteractionScaler:
    """A lower resolution while the user interacts, full resolution once idle.

    :meth:`interaction` on every pointer drag, wheel or key event; :meth:`size` returns
    ``full`` scaled by ``interacting_scale`` until ``hold`` seconds pass without one.  Sizes
    are rounded down to even numbers (4:2:0), the full size included.
    """

    __slots__ = ("_full", "_last", "hold", "interacting_scale")

    def __init__(
        self, full: tuple[int, int], interacting_scale: float = 0.5, hold: float = 0.2
    ) -> None:
        if not 0.0 < interacting_scale <= 1.0:
            raise ValueError(f"interacting_scale must be in (0, 1], got {interacting_scale!r}")
        self.interacting_scale = float(interacting_scale)
        self.hold = _check_seconds("hold", hold)
        self._full = self._check_size(full)
        self._last: float | None = None

    @staticmethod
    def _check_size(size: tuple[int, int]) -> tuple[int, int]:
        w, h = size
        if w < 2 or h < 2:
            raise ValueError(f"size must be at least 2x2, got {w}x{h}")
        return _even(w), _even(h)

    @property
    def full(self) -> tuple[int, int]:
        """The full (even) size."""
        return self._full

    @property
    def reduced(self) -> tuple[int, int]:
        """The (even) size used while interacting."""
        w, h = self._full
        s = self.interacting_scale
        return _even(w * s), _even(h * s)

    def resize(self, full: tuple[int, int]) -> None:
        """The view's full size changed."""
        self._full = self._check_size(full)

    def interaction(self, now: float) -> None:
        """The user interacted at ``now``."""
        self._last = now

    def interacting(self, now: float) -> bool:
        """Whether an interaction happened less than ``hold`` seconds ago."""
        return self._last is not None and now - self._last < self.hold

    def size(self, now: float) -> tuple[int, int]:
        """The (even) size to render and encode at ``now``."""
        return self.reduced if self.interacting(now) else self._full
