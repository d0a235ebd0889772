"""The sans-IO streaming policy: ack windows, latest-frame-wins scheduling with keyframes that
are never lost, client-side keyframe re-requests, settle detection and interaction scaling.

Time comes from a fake clock or is passed in; nothing sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from isthmus.frames._errors import FramesError
from isthmus.frames._policy import (
    ClientWindow,
    EncodeJob,
    InteractionScaler,
    KeyframeReason,
    KeyframeRequester,
    PolicyError,
    SettleDetector,
    StreamPolicy,
)
from isthmus.frames._types import Packet

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def packet(job: EncodeJob[str] | EncodeJob[int], keyframe: bool | None = None) -> Packet:
    """What an obedient encoder returns for ``job`` (``keyframe`` overrides it)."""
    key = job.keyframe if keyframe is None else keyframe
    return Packet(payload=b"", pts=job.frame_id, keyframe=key, codec="h264", width=2, height=2)


def make(window: int = 4, interval: float = 0.25) -> tuple[StreamPolicy[str, str], Clock]:
    clock = Clock()
    return StreamPolicy(window=window, min_keyframe_interval=interval, clock=clock), clock


def encode_and_send(
    policy: StreamPolicy[str, str], **kw: bool
) -> tuple[EncodeJob[str], tuple[str, ...]]:
    job = policy.next_encode()
    assert job is not None
    return job, policy.packet_ready(packet(job, **kw)).clients


# --------------------------------------------------------------------------------------------
# ClientWindow
# --------------------------------------------------------------------------------------------


def test_window_limits_frames_in_flight() -> None:
    w = ClientWindow(window=2)
    assert w.can_send() and w.free == 2
    w.sent(0)
    w.sent(1)
    assert not w.can_send() and w.in_flight == 2 and w.in_flight_ids == (0, 1)
    with pytest.raises(PolicyError, match="window full"):
        w.sent(2)
    assert w.ack(0) == 1
    assert w.can_send()
    w.sent(5)  # ids may skip (frames this client did not get)
    assert w.in_flight_ids == (1, 5) and w.last_sent == 5


def test_window_acks_are_cumulative_and_stale_ones_ignored() -> None:
    w = ClientWindow(window=8)
    for i in (0, 1, 2, 4, 7):
        w.sent(i)
    assert w.ack(3) == 3  # 3 was never sent to this client, but acks 0..2
    assert w.in_flight_ids == (4, 7) and w.acked == 3
    assert w.ack(1) == 0  # reordered / duplicated ack
    assert w.ack(3) == 0
    assert w.acked == 3 and w.in_flight == 2
    assert w.ack(7) == 2
    assert w.in_flight == 0


def test_window_rejects_acks_of_unsent_frames_and_decreasing_ids() -> None:
    w = ClientWindow(window=2)
    with pytest.raises(PolicyError, match="not sent"):
        w.ack(0)
    w.sent(3)
    with pytest.raises(PolicyError, match="not sent"):
        w.ack(4)
    with pytest.raises(PolicyError, match="increase"):
        w.sent(3)
    with pytest.raises(PolicyError, match="increase"):
        w.sent(2)
    assert isinstance(PolicyError("x"), FramesError)
    with pytest.raises(ValueError, match="window"):
        ClientWindow(window=0)


@SETTINGS
@given(
    window=st.integers(1, 6),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=80),
)
def test_window_matches_a_model(window: int, ops: list[tuple[bool, int]]) -> None:
    w = ClientWindow(window=window)
    in_flight: list[int] = []
    next_id, acked = 0, -1
    for is_send, n in ops:
        if is_send:
            if len(in_flight) < window:
                next_id += n % 3  # gaps
                w.sent(next_id)
                in_flight.append(next_id)
                next_id += 1
            else:
                with pytest.raises(PolicyError):
                    w.sent(next_id)
        else:
            if next_id == 0 or n >= next_id:
                with pytest.raises(PolicyError):
                    w.ack(n if next_id == 0 else next_id + n)
                continue
            freed = w.ack(n)
            expect = [i for i in in_flight if i <= n] if n > acked else []
            assert freed == len(expect)
            in_flight = [i for i in in_flight if i not in expect]
            acked = max(acked, n)
        assert w.in_flight == len(in_flight) <= window
        assert w.in_flight_ids == tuple(in_flight)


# --------------------------------------------------------------------------------------------
# StreamPolicy
# --------------------------------------------------------------------------------------------


def test_join_starts_with_a_keyframe_then_p_frames() -> None:
    policy, _ = make()
    policy.join("a")
    assert policy.client("a").needs_keyframe is KeyframeReason.JOIN
    policy.submit("f0")
    job, to = encode_and_send(policy)
    assert (job.frame, job.frame_id, job.keyframe, job.repeat) == ("f0", 0, True, False)
    assert to == ("a",)
    assert policy.client("a").needs_keyframe is None
    policy.submit("f1")
    job, to = encode_and_send(policy)
    assert (job.frame, job.frame_id, job.keyframe) == ("f1", 1, False)
    assert to == ("a",)
    assert policy.keyframes == 1 and policy.encoded == 2


def test_latest_frame_wins_and_drops_happen_before_encoding() -> None:
    policy, _ = make()
    policy.join("a")
    assert policy.submit("f0") is False
    assert policy.submit("f1") is True
    assert policy.submit("f2") is True
    assert policy.dropped == 2 and policy.submitted == 3
    job = policy.next_encode()
    assert job is not None and job.frame == "f2"
    assert not policy.pending
    assert policy.next_encode() is None  # nothing new: nothing to encode
    assert policy.encoded == 1


def test_nothing_is_encoded_without_clients() -> None:
    policy, _ = make()
    policy.submit("f0")
    assert policy.next_encode() is None
    assert policy.pending and policy.encoded == 0


def test_encoding_stops_when_every_window_is_full_and_resumes_on_ack() -> None:
    policy, _ = make(window=2)
    policy.join("a")
    policy.join("b")
    for i in range(2):
        policy.submit(f"f{i}")
        _, to = encode_and_send(policy)
        assert to == ("a", "b")
    policy.submit("f2")
    policy.submit("f3")
    assert policy.next_encode() is None  # saturated: f3 waits, nothing is encoded
    assert policy.client("a").in_flight == 2 and policy.encoded == 2
    assert policy.ack("a", 0) == 1
    job = policy.next_encode()
    assert job is not None and job.frame == "f3" and not job.keyframe
    d = policy.packet_ready(packet(job))
    # b's window was full: it skips f3 and so needs a keyframe before any later P-frame.
    assert d.clients == ("a",) and d.skipped == ("b",)
    assert policy.client("b").needs_keyframe is KeyframeReason.SKIP
    assert policy.client("b").skipped == 1


def test_a_skipped_client_gets_a_keyframe_once_it_has_room() -> None:
    policy, clock = make(window=1)
    policy.join("slow")
    policy.join("fast", window=8)
    policy.submit("f0")
    encode_and_send(policy)  # keyframe 0 to both
    policy.submit("f1")
    job, to = encode_and_send(policy)
    assert not job.keyframe and to == ("fast",)
    policy.ack("slow", 0)
    clock.advance(1.0)
    policy.submit("f2")
    job, to = encode_and_send(policy)
    assert job.keyframe and to == ("slow", "fast")
    assert policy.client("slow").needs_keyframe is None


def test_a_keyframe_is_never_dropped_by_a_newer_frame() -> None:
    policy, clock = make()
    policy.join("a")
    policy.submit("f0")
    encode_and_send(policy)
    clock.advance(1.0)
    policy.request_keyframe("a")
    assert policy.client("a").needs_keyframe is KeyframeReason.REQUEST
    policy.submit("f1")
    policy.submit("f2")  # replaces f1 before encoding, but not the keyframe
    job = policy.next_encode()
    assert job is not None and job.frame == "f2" and job.keyframe


def test_a_client_joining_a_still_scene_gets_the_last_frame_again_as_a_keyframe() -> None:
    policy, clock = make()
    policy.join("a")
    policy.submit("f0")
    encode_and_send(policy)
    clock.advance(1.0)
    policy.join("b")
    job = policy.next_encode()
    assert job is not None and (job.frame, job.keyframe, job.repeat) == ("f0", True, True)
    d = policy.packet_ready(packet(job))
    assert d.clients == ("a", "b")  # a must take the IDR too, or its next P-frame breaks
    assert policy.next_encode() is None


def test_a_joining_client_before_any_frame_waits_for_one() -> None:
    policy, _ = make()
    policy.join("a")
    assert policy.next_encode() is None
    policy.submit("f0")
    job = policy.next_encode()
    assert job is not None and job.keyframe


def test_forced_keyframes_are_spaced_by_min_keyframe_interval() -> None:
    policy, clock = make(interval=0.5)
    policy.join("a")
    policy.join("b")
    policy.submit("f0")
    encode_and_send(policy)
    assert policy.wake_at() is None
    clock.advance(0.1)
    policy.request_keyframe("b")
    policy.submit("f1")
    job, to = encode_and_send(policy)
    assert not job.keyframe and to == ("a",)  # b is held back, a keeps streaming
    assert policy.wake_at() == pytest.approx(100.5)
    assert policy.next_encode() is None  # nothing new and the keyframe is not due yet
    clock.advance(0.4)
    assert policy.wake_at() is None
    due = policy.next_encode()
    assert due is not None and due.keyframe and due.repeat and due.frame == "f1"
    assert policy.packet_ready(packet(due)).clients == ("a", "b")


def test_an_encoders_own_keyframe_resyncs_waiting_clients() -> None:
    policy, clock = make(interval=10.0)
    policy.join("a")
    policy.submit("f0")
    encode_and_send(policy)
    policy.request_keyframe("a")
    policy.join("b")
    policy.submit("f1")
    assert policy.next_encode() is None  # every client waits for a keyframe that is not due
    clock.advance(10.0)
    job = policy.next_encode()
    assert job is not None and job.keyframe
    policy.packet_ready(packet(job))
    # A GOP keyframe the policy did not ask for also serves clients that wait for one.
    policy.request_keyframe("b")
    policy.submit("f2")
    policy.join("c")
    job = policy.next_encode()
    assert job is not None and not job.keyframe  # not due: a P-frame for a
    d = policy.packet_ready(packet(job, keyframe=True))
    assert d.keyframe and d.clients == ("a", "b", "c")
    assert all(policy.client(c).needs_keyframe is None for c in policy.clients)
    assert policy.keyframes == 3


def test_an_encoder_ignoring_force_keyframe_leaves_the_need_in_place() -> None:
    policy, clock = make()
    policy.join("a")
    policy.submit("f0")
    job = policy.next_encode()
    assert job is not None and job.keyframe
    d = policy.packet_ready(packet(job, keyframe=False))
    assert d.clients == () and d.skipped == ("a",)
    assert policy.client("a").needs_keyframe is KeyframeReason.JOIN
    clock.advance(1.0)
    job = policy.next_encode()
    assert job is not None and job.keyframe


def test_a_request_crossing_a_keyframe_in_transit_is_ignored() -> None:
    policy, clock = make()
    policy.join("a")
    policy.submit("f0")
    encode_and_send(policy)  # keyframe 0
    policy.submit("f1")
    encode_and_send(policy)  # P 1
    policy.request_keyframe("a", after=1)  # a decode error after frame 1
    clock.advance(1.0)
    policy.submit("f2")
    job, _ = encode_and_send(policy)
    assert job.keyframe and job.frame_id == 2
    # The client's requester re-sent its request before keyframe 2 arrived: already answered.
    policy.request_keyframe("a", after=1)
    assert policy.client("a").needs_keyframe is None
    policy.request_keyframe("a", after=2)  # a new failure after the keyframe: a real request
    assert policy.client("a").needs_keyframe is KeyframeReason.REQUEST


def test_request_keyframe_for_every_client() -> None:
    policy, clock = make()
    for c in "abc":
        policy.join(c)
    policy.submit("f0")
    encode_and_send(policy)
    policy.request_keyframe()
    assert {policy.client(c).needs_keyframe for c in "abc"} == {KeyframeReason.REQUEST}
    clock.advance(1.0)
    policy.submit("f1")
    job, to = encode_and_send(policy)
    assert job.keyframe and to == ("a", "b", "c")


def test_pipelined_encodes_reserve_window_space() -> None:
    policy, _ = make(window=2)
    policy.join("a")
    jobs = []
    for i in range(3):
        policy.submit(f"f{i}")
        jobs.append(policy.next_encode())
    assert jobs[2] is None and policy.encoding == 2  # 2 in the encoder fill a's window
    for j in jobs[:2]:
        assert j is not None
        assert policy.packet_ready(packet(j)).clients == ("a",)
    assert policy.client("a").in_flight == 2
    assert [j.keyframe for j in jobs[:2] if j] == [True, False]


def test_a_client_waiting_on_a_keyframe_in_the_encoder_takes_what_follows() -> None:
    policy, _ = make()
    policy.join("a")
    policy.submit("f0")
    first = policy.next_encode()
    policy.submit("f1")
    second = policy.next_encode()
    assert first is not None and second is not None
    assert first.keyframe and not second.keyframe  # no second IDR for the same join
    assert policy.packet_ready(packet(first)).clients == ("a",)
    assert policy.packet_ready(packet(second)).clients == ("a",)


def test_encode_failed_releases_and_retries() -> None:
    policy, _ = make()
    policy.join("a")
    policy.submit("f0")
    job = policy.next_encode()
    assert job is not None and job.keyframe
    policy.encode_failed()
    assert policy.pending and policy.encoding == 0
    job = policy.next_encode()
    assert job is not None and job.frame == "f0" and job.keyframe  # retried at once
    assert policy.packet_ready(packet(job)).clients == ("a",)


def test_encode_failed_never_goes_back_to_older_content() -> None:
    policy, _ = make()
    policy.join("a")
    policy.submit("f0")
    policy.next_encode()
    policy.submit("f1")
    policy.next_encode()
    policy.encode_failed()  # f0 failed, but f1 is already in the encoder
    assert not policy.pending


def test_clients_leaving_and_rejoining_during_an_encode() -> None:
    policy, clock = make(window=1)
    policy.join("a")
    policy.submit("f0")
    encode_and_send(policy)
    policy.ack("a", 0)
    policy.submit("f1")
    job = policy.next_encode()
    assert job is not None and not job.keyframe
    assert policy.leave("a") is True
    assert policy.leave("a") is False
    policy.join("a")  # the same id, a new client: it must not get the P-frame
    d = policy.packet_ready(packet(job))
    assert d.clients == () and d.skipped == ("a",)
    state = policy.client("a")
    assert state.in_flight == 0 and state.needs_keyframe is KeyframeReason.JOIN
    clock.advance(1.0)
    policy.submit("f2")
    job, to = encode_and_send(policy)
    assert job.keyframe and to == ("a",)


def test_policy_protocol_errors() -> None:
    policy, _ = make()
    with pytest.raises(PolicyError, match="without an encode"):
        policy.packet_ready(Packet(b"", 0, True, "h264", 2, 2))
    with pytest.raises(PolicyError, match="without an encode"):
        policy.encode_failed()
    with pytest.raises(PolicyError, match="unknown client"):
        policy.ack("nobody", 0)
    with pytest.raises(PolicyError, match="unknown client"):
        policy.request_keyframe("nobody")
    with pytest.raises(PolicyError, match="unknown client"):
        policy.client("nobody")
    policy.join("a")
    with pytest.raises(PolicyError, match="already joined"):
        policy.join("a")
    with pytest.raises(PolicyError, match="not sent"):
        policy.ack("a", 0)
    with pytest.raises(ValueError, match="window"):
        StreamPolicy[str, str](window=0)
    with pytest.raises(ValueError, match="min_keyframe_interval"):
        StreamPolicy[str, str](min_keyframe_interval=-1)


def test_client_state_snapshot() -> None:
    policy, _ = make(window=3)
    policy.join("a")
    policy.submit("f0")
    encode_and_send(policy)
    s = policy.client("a")
    assert (s.client_id, s.window, s.in_flight, s.needs_keyframe, s.sent, s.skipped, s.acked) == (
        "a",
        3,
        1,
        None,
        1,
        0,
        None,
    )
    policy.ack("a", 0)
    assert policy.client("a").acked == 0 and policy.client("a").in_flight == 0
    assert policy.clients == ("a",)


# The whole policy against a model of clients and their decoders: random joins, leaves,
# submits, (pipelined, failing, disobedient) encodes, acks, keyframe requests and clock steps.


@dataclass
class Decoder:
    """What a client has received, and whether it can decode the next P-frame."""

    window: int
    ok: bool = False
    received: list[tuple[int, bool]] = field(default_factory=list)
    acked: int = -1

    @property
    def in_flight(self) -> int:
        return sum(1 for i, _ in self.received if i > self.acked)


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.policy: StreamPolicy[int, int] = StreamPolicy(
            window=2, min_keyframe_interval=0.25, clock=self.clock
        )
        self.decoders: dict[int, Decoder] = {}
        self.encoder: deque[tuple[EncodeJob[int], bool]] = deque()  # job, undisturbed
        self.next_client = 0
        self.last_frame = -1

    @initialize(window=st.integers(1, 4))
    def setup(self, window: int) -> None:
        self.policy.window = window

    def _pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.decoders)))

    def _disturb(self) -> None:
        self.encoder = deque((job, False) for job, _ in self.encoder)

    @precondition(lambda self: len(self.decoders) < 5)
    @rule(window=st.one_of(st.none(), st.integers(1, 4)))
    def join(self, window: int | None) -> None:
        cid = self.next_client
        self.next_client += 1
        self.policy.join(cid, window)
        self.decoders[cid] = Decoder(self.policy.window if window is None else window)

    @precondition(lambda self: self.decoders)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        cid = self._pick(data)
        assert self.policy.leave(cid)
        del self.decoders[cid]
        self._disturb()

    @rule()
    def submit(self) -> None:
        pending = self.policy.pending
        self.last_frame += 1
        assert self.policy.submit(self.last_frame) is pending

    @rule()
    def encode(self) -> None:
        job = self.policy.next_encode()
        if job is not None:
            # Latest frame wins: what is encoded is always the newest picture.
            assert job.frame == self.last_frame
            self.encoder.append((job, True))

    @precondition(lambda self: self.encoder)
    @rule(gop_keyframe=st.integers(0, 9), obey=st.integers(0, 9))
    def packet_out(self, gop_keyframe: int, obey: int) -> None:
        # Mostly an obedient encoder; sometimes its own GOP keyframe, or a forced one ignored.
        self._packet_out(gop=gop_keyframe == 0, obey=obey > 0)

    def _packet_out(self, gop: bool = False, obey: bool = True) -> None:
        job, undisturbed = self.encoder.popleft()
        key = (job.keyframe and obey) or gop
        d = self.policy.packet_ready(packet(job, keyframe=key))
        assert d.frame_id == job.frame_id and d.keyframe == key
        assert set(d.clients) | set(d.skipped) == set(self.decoders)
        assert not set(d.clients) & set(d.skipped)
        if undisturbed and key == job.keyframe:
            # Nothing was encoded in vain: some client takes every packet it asked for.
            assert d.clients
        for cid, dec in self.decoders.items():
            if cid in d.clients:
                # Never a P-frame without an unbroken chain back to a keyframe.
                assert key or dec.ok
                dec.ok = dec.ok or key
                dec.received.append((job.frame_id, key))
            else:
                dec.ok = False  # later P-frames predict from the one it missed

    @precondition(lambda self: self.encoder)
    @rule()
    def encode_fails(self) -> None:
        self.encoder.popleft()
        self.policy.encode_failed()
        # Jobs already in the encoder were planned on top of the lost one (a P-frame after a
        # keyframe that never came): the clients may rightly skip them.
        self._disturb()

    @precondition(lambda self: any(d.received for d in self.decoders.values()))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(c for c, d in self.decoders.items() if d.received)))
        upto = data.draw(st.sampled_from([i for i, _ in self.decoders[cid].received]))
        self._ack(cid, upto)

    def _ack(self, cid: int, upto: int) -> None:
        dec = self.decoders[cid]
        freed = self.policy.ack(cid, upto)
        expect = sum(1 for i, _ in dec.received if dec.acked < i <= upto)
        assert freed == expect
        dec.acked = max(dec.acked, upto)

    @precondition(lambda self: self.decoders)
    @rule(data=st.data(), stale=st.booleans())
    def request_keyframe(self, data: st.DataObject, stale: bool) -> None:
        cid = self._pick(data)
        dec = self.decoders[cid]
        ids = [i for i, _ in dec.received]
        # A stale request was sent before some of what the client has now received.
        after = data.draw(st.sampled_from(ids)) if stale and ids else (ids[-1] if ids else None)
        self.policy.request_keyframe(cid, after=after)
        if not any(k and (after is None or i > after) for i, k in dec.received):
            dec.ok = False
        self._disturb()

    @rule()
    def request_every_keyframe(self) -> None:
        self.policy.request_keyframe()
        for dec in self.decoders.values():
            dec.ok = False
        self._disturb()

    @rule(dt=st.sampled_from([0.0, 0.05, 0.25, 1.0]))
    def tick(self, dt: float) -> None:
        self.clock.advance(dt)

    @invariant()
    def windows_hold(self) -> None:
        for cid, dec in self.decoders.items():
            s = self.policy.client(cid)
            assert s.in_flight == dec.in_flight <= dec.window
            # The policy knows exactly which clients cannot decode.
            assert (s.needs_keyframe is None) == dec.ok

    def teardown(self) -> None:
        # Liveness: once the encoder drains, acks flow and time passes, every client —
        # however it got there — ends up with a decodable stream.
        while self.encoder:
            self._packet_out()
        if self.last_frame < 0:
            self.submit()
        for _ in range(2):
            for cid, dec in self.decoders.items():
                if dec.received:
                    self._ack(cid, dec.received[-1][0])
            self.clock.advance(1.0)
            self.encode()
            while self.encoder:
                self._packet_out()
        assert all(dec.ok for dec in self.decoders.values())


PolicyMachine.TestCase.settings = settings(SETTINGS, max_examples=300, stateful_step_count=60)
test_policy_state_machine = PolicyMachine.TestCase


# --------------------------------------------------------------------------------------------
# KeyframeRequester
# --------------------------------------------------------------------------------------------


def test_requester_asks_at_once_then_every_timeout_until_a_keyframe() -> None:
    r = KeyframeRequester(timeout=0.25)
    assert r.due_at() == float("-inf")  # waiting from the start: ask at once
    assert r.need_keyframe(10.0)
    assert not r.need_keyframe(10.0)
    assert not r.need_keyframe(10.2)
    assert r.due_at() == pytest.approx(10.25)
    assert r.need_keyframe(10.25)  # the request (or its answer) was lost: ask again
    assert r.requests == 2
    assert r.on_packet(keyframe=False) is False  # nothing to predict from: drop it
    assert r.on_packet(keyframe=True) is True
    assert not r.waiting and r.due_at() is None
    assert not r.need_keyframe(20.0)
    assert r.on_packet(keyframe=False) is True


def test_requester_after_a_decode_error() -> None:
    r = KeyframeRequester(waiting=False)
    assert not r.need_keyframe(0.0)
    r.lost()
    assert r.need_keyframe(1.0)
    r.lost()  # a second error while waiting does not cause a burst of requests
    assert not r.need_keyframe(1.1)
    assert r.need_keyframe(1.25)


def test_requester_notices_gaps_in_frame_ids() -> None:
    r = KeyframeRequester()
    assert r.on_packet(keyframe=True, frame_id=4)
    assert r.on_packet(keyframe=False, frame_id=5)
    assert r.on_packet(keyframe=False, frame_id=7) is False  # 6 never came
    assert r.waiting and r.need_keyframe(0.0)
    assert r.last_id == 7  # sent along: request_keyframe(after=7) on the server
    assert r.on_packet(keyframe=False, frame_id=8) is False
    assert r.on_packet(keyframe=True, frame_id=12)  # a keyframe after a gap is fine
    assert r.on_packet(keyframe=False, frame_id=13)
    with pytest.raises(ValueError, match="timeout"):
        KeyframeRequester(timeout=0)


@SETTINGS
@given(
    events=st.lists(
        st.tuples(st.floats(0.0, 0.4), st.sampled_from(["poll", "poll", "key", "lost"])),
        max_size=60,
    )
)
def test_requester_never_floods_and_never_gives_up(events: list[tuple[float, str]]) -> None:
    r = KeyframeRequester(timeout=0.25)
    now = 0.0
    asked: list[float] = []  # requests of the current waiting period
    total = 0
    for dt, what in events:
        now += dt
        if what == "key":
            r.on_packet(keyframe=True)
            asked = []
        elif what == "lost":
            if not r.waiting:
                asked = []
            r.lost()
        else:
            waiting, due = r.waiting, r.due_at()
            ask = r.need_keyframe(now)
            # While waiting, a poll at or after the due time always asks; never otherwise.
            assert ask == (waiting and due is not None and now >= due)
            if ask:
                # Within one waiting period requests are at least `timeout` apart.
                assert not asked or now - asked[-1] >= 0.25
                asked.append(now)
                total += 1
    assert r.requests == total


# --------------------------------------------------------------------------------------------
# SettleDetector and InteractionScaler
# --------------------------------------------------------------------------------------------


def test_settle_detector_fires_once_per_settled_period() -> None:
    s = SettleDetector(settle_after=0.3)
    assert not s.poll(0.0) and s.due_at() is None  # nothing changed yet
    s.changed(1.0)
    assert s.due_at() == pytest.approx(1.3)
    assert not s.poll(1.1) and not s.settled(1.1)
    s.changed(1.2)  # still moving: the still waits
    assert not s.poll(1.4)
    assert s.poll(1.5)
    assert not s.poll(1.6) and not s.poll(9.0) and s.settled(9.0)
    assert s.due_at() is None
    s.changed(10.0)
    assert s.poll(10.3)


@SETTINGS
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), max_size=50))
def test_settle_detector_fires_only_after_quiet(events: list[tuple[float, bool]]) -> None:
    s = SettleDetector(settle_after=0.3)
    now, last_change, fired_since_change = 0.0, None, False
    for dt, change in events:
        now += dt
        if change:
            s.changed(now)
            last_change, fired_since_change = now, False
            continue
        fired = s.poll(now)
        if fired:
            assert last_change is not None and now >= last_change + 0.3
            assert not fired_since_change
            fired_since_change = True
        else:
            assert last_change is None or fired_since_change or now < last_change + 0.3


def test_interaction_scaler_halves_while_interacting() -> None:
    s = InteractionScaler(full=(1920, 1080), interacting_scale=0.5, hold=0.25)
    assert s.size(0.0) == (1920, 1080) and not s.interacting(0.0)
    s.interaction(1.0)
    assert s.size(1.0) == (960, 540) and s.interacting(1.1)
    assert s.size(1.125) == (960, 540)
    assert s.size(1.25) == (1920, 1080)
    s.resize((801, 601))
    assert s.full == (800, 600)  # odd sizes rounded down for 4:2:0
    s.interaction(2.0)
    assert s.size(2.0) == s.reduced == (400, 300)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="interacting_scale"):
            InteractionScaler(full=(64, 64), interacting_scale=bad)
    with pytest.raises(ValueError, match="size"):
        InteractionScaler(full=(1, 64))


@SETTINGS
@given(
    w=st.integers(2, 8192),
    h=st.integers(2, 8192),
    scale=st.floats(0.01, 1.0),
    t=st.floats(0.0, 1.0),
)
def test_interaction_scaler_sizes_are_even_and_bounded(
    w: int, h: int, scale: float, t: float
) -> None:
    s = InteractionScaler(full=(w, h), interacting_scale=scale, hold=0.2)
    s.interaction(0.0)
    rw, rh = s.size(t)
    fw, fh = s.full
    assert rw % 2 == rh % 2 == fw % 2 == fh % 2 == 0
    assert 2 <= rw <= fw <= w and 2 <= rh <= fh <= h
    assert s.size(t) == (s.reduced if t < 0.2 else s.full)
