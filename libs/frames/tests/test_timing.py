"""Per-stage timing histograms: bounded error against numpy.percentile, bounded memory, the
context manager, summaries and the table."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.frames import _timing
from isthmus.frames._timing import STAGES, FrameTimings, LatencyHistogram, StageSummary

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Bucket midpoints are within half a bucket, 1/2**(SUB_BITS+1) of the value: 0.39 %.
REL = 1.0 / (1 << (_timing.SUB_BITS + 1))
QS = (0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0)


def assert_close_to_numpy(hist: LatencyHistogram, values: np.ndarray | list[int]) -> None:
    exact = np.percentile(np.asarray(values, dtype=np.float64), QS)
    got = hist.percentiles_ns(QS)
    for q, e, g in zip(QS, exact, got, strict=True):
        assert abs(g - e) <= REL * e + 1e-6, (q, e, g)


def filled(values: np.ndarray | list[int]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.record_ns(int(v))
    return h


def test_small_values_are_exact() -> None:
    values = list(range(256)) * 3
    h = filled(values)
    assert h.count == 768 and h.min_ns == 0 and h.max_ns == 255
    assert h.percentiles_ns(QS) == pytest.approx(list(np.percentile(values, QS)), abs=1e-9)


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: rng.lognormal(mean=15.0, sigma=1.0, size=5000),  # ms-scale latencies
        lambda rng: rng.uniform(1e3, 1e9, size=5000),
        lambda rng: rng.exponential(2e6, size=5000),
        lambda rng: np.concatenate([rng.normal(4e6, 2e5, 4900), rng.uniform(5e7, 2e8, 100)]),
    ],
    ids=["lognormal", "uniform", "exponential", "bimodal-tail"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_match_numpy_on_random_data(draw: object, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.abs(draw(rng)).astype(np.int64)  # type: ignore[operator]
    assert_close_to_numpy(filled(values), values)


@SETTINGS
@given(st.lists(st.integers(0, 2**62), min_size=1, max_size=200))
def test_percentiles_match_numpy_on_any_data(values: list[int]) -> None:
    assert_close_to_numpy(filled(values), values)


@SETTINGS
@given(st.lists(st.integers(0, 10**10), min_size=1, max_size=60), st.floats(0.0, 100.0))
def test_single_percentile_bounds_and_monotonicity(values: list[int], q: float) -> None:
    h = filled(values)
    p = h.percentile_ns(q)
    assert min(values) <= p <= max(values)
    assert h.percentile_ns(0.0) == min(values) and h.percentile_ns(100.0) == max(values)
    assert h.percentiles_ns([0.0, q, 100.0]) == sorted(h.percentiles_ns([0.0, q, 100.0]))


def test_memory_is_bounded_by_the_range_not_the_count() -> None:
    h = LatencyHistogram()
    for v in range(0, 200_000_000, 997):
        h.record_ns(v)
    size = len(h._counts)
    for v in range(0, 200_000_000, 991):  # as many samples again: no growth
        h.record_ns(v)
    assert len(h._counts) == size < 4000
    h.record_ns(2**63 - 1)  # the largest 64-bit duration still fits a small table
    assert len(h._counts) <= 64 << _timing.SUB_BITS
    assert h.count == len(range(0, 200_000_000, 997)) + len(range(0, 200_000_000, 991)) + 1


def test_empty_histogram_and_bad_input() -> None:
    h = LatencyHistogram()
    assert h.count == 0 and h.max_ns == 0 and h.min_ns == 0 and h.mean_ns == 0.0
    assert math.isnan(h.percentile_ns(50.0))
    with pytest.raises(ValueError, match="negative"):
        h.record_ns(-1)
    h.record_ns(5)
    for q in (-1.0, 100.5, float("nan")):
        with pytest.raises(ValueError, match="percentile"):
            h.percentile_ns(q)


def test_mean_min_max_are_exact_and_seconds_are_converted() -> None:
    h = LatencyHistogram()
    h.record(0.001)
    h.record(0.003)
    assert (h.count, h.min_ns, h.max_ns, h.mean_ns) == (2, 1_000_000, 3_000_000, 2_000_000.0)


def test_merge_equals_recording_everything_in_one() -> None:
    rng = np.random.default_rng(7)
    a_vals, b_vals = rng.integers(0, 10**8, 500), rng.integers(10**6, 10**9, 300)
    a, b, both = filled(a_vals), filled(b_vals), filled(np.concatenate([a_vals, b_vals]))
    a.merge(b)
    assert a.count == both.count and a.min_ns == both.min_ns and a.max_ns == both.max_ns
    assert a.mean_ns == pytest.approx(both.mean_ns)
    assert a.percentiles_ns(QS) == both.percentiles_ns(QS)
    empty = LatencyHistogram()
    empty.merge(LatencyHistogram())
    assert empty.count == 0
    empty.merge(b)
    assert empty.min_ns == b.min_ns
    a.reset()
    assert a.count == 0 and math.isnan(a.percentile_ns(50))


def test_frame_timings_stages_record_and_percentile() -> None:
    t = FrameTimings()
    assert list(t.stages) == list(STAGES) == ["capture", "convert", "encode", "decode"]
    for ms in range(1, 101):
        t.record("encode", ms / 1000)
    t.record_ns("upload", 2_000_000)  # any stage name
    assert list(t.stages) == [*STAGES, "upload"]
    assert t.percentile("encode", 50) == pytest.approx(0.0505, rel=REL)
    assert t.percentile("encode", 100) == pytest.approx(0.1)
    assert t.percentile("upload", 50) == pytest.approx(0.002)
    assert math.isnan(t.percentile("capture", 50))
    assert t.histogram("encode").count == 100


def test_time_context_manager_uses_perf_counter_ns(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([1_000, 4_000_000, 10_000, 2_010_000])
    monkeypatch.setattr(time, "perf_counter_ns", lambda: next(ticks))
    t = FrameTimings()
    with t.time("encode") as timer:
        assert timer is not None
    with pytest.raises(RuntimeError), t.time("encode"):
        raise RuntimeError("encoder died")  # still recorded: slow failures matter
    h = t.histogram("encode")
    assert h.count == 2 and h.max_ns == 3_999_000 and h.min_ns == 2_000_000


def test_summary_and_table() -> None:
    t = FrameTimings()
    for i in range(1000):
        t.record_ns("capture", 1_000_000 + i * 1000)
        t.record_ns("encode", 5_000_000)
    s = t.summary()
    assert list(s) == list(STAGES)
    cap = s["capture"]
    assert isinstance(cap, StageSummary) and cap.count == 1000
    exact = np.percentile(1_000_000 + np.arange(1000) * 1000, [50, 95, 99]) / 1e9
    assert [cap.p50, cap.p95, cap.p99] == pytest.approx(list(exact), rel=REL)
    assert cap.max == pytest.approx(0.001999) and cap.mean == pytest.approx(0.0014995)
    assert s["encode"].p99 == pytest.approx(0.005)
    assert s["decode"].count == 0 and math.isnan(s["decode"].p50) and math.isnan(s["decode"].max)
    table = t.format_table()
    lines = table.splitlines()
    assert lines[0].split() == [
        "stage",
        "count",
        "mean",
        "ms",
        "p50",
        "ms",
        "p95",
        "ms",
        "p99",
        "ms",
        "max",
        "ms",
    ]
    assert [ln.split()[0] for ln in lines[1:]] == ["capture", "encode"]  # empty stages left out
    assert lines[2].split()[1:] == ["1000", "5.000", "5.000", "5.000", "5.000", "5.000"]
    assert len({len(ln) for ln in lines}) == 1  # aligned columns
    t.reset()
    assert t.summary()["capture"].count == 0
    assert t.format_table().split() == lines[0].split()


def test_one_writer_with_a_concurrent_reader() -> None:
    t = FrameTimings()
    n = 50_000
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                for s in t.summary().values():
                    assert s.count == 0 or s.p50 <= s.p99 <= s.max
                t.format_table()
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(n):
            t.record_ns("encode", 1000 + i)
            if i % 5000 == 0:
                t.record_ns(f"stage{i}", i)  # new stages appear while the reader iterates
    finally:
        done.set()
        reader.join()
    assert not errors
    assert t.histogram("encode").count == n
