"""Per-stage timing of the frame path (capture, convert, encode, decode) as histograms.

A :class:`LatencyHistogram` is log-linear: values below ``2**(SUB_BITS + 1)`` ns get a bucket
each, above that every power of two is split into ``2**SUB_BITS`` buckets.  Memory is bounded
(a few thousand counters at most, whatever the number of samples), a record is a handful of
integer operations, and a percentile is within ``1 / 2**(SUB_BITS + 1)`` (0.4 %) of the exact
value interpolated the way ``numpy.percentile`` does by default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "STAGES",
    "FrameTimings",
    "LatencyHistogram",
    "StageSummary",
]

#: The stages a :class:`FrameTimings` lists first, in this order.
STAGES: tuple[str, ...] = ("capture", "convert", "encode", "decode")

SUB_BITS = 7
_SUB = 1 << SUB_BITS
_EXACT_BITS = SUB_BITS + 1  # values of up to this many bits have a bucket each


def _bucket_low(index: int) -> int:
    """The smallest value in bucket ``index`` (inverse of the mapping in record_ns)."""
    shift = max(0, (index >> SUB_BITS) - 1)
    return (index - (shift << SUB_BITS)) << shift


class LatencyHistogram:
    """A log-linear histogram of durations in integer nanoseconds.

    Safe for one writer with concurrent readers: readers copy the counters first, so a
    percentile is always computed from a consistent set of counts.
    """

    __slots__ = ("_counts", "_max", "_min", "_total")

    def __init__(self) -> None:
        self._counts: list[int] = []
        self._total = 0
        self._min = -1
        self._max = -1

    def record_ns(self, ns: int) -> None:
        """Add one duration in nanoseconds (negative values raise ValueError)."""
        if ns < 0:
            raise ValueError(f"a duration cannot be negative: {ns} ns")
        shift = ns.bit_length() - _EXACT_BITS
        index = ns if shift <= 0 else (shift << SUB_BITS) + (ns >> shift)
        # Extremes first: a reader that sees the count then always sees them set.
        if ns > self._max:
            self._max = ns
        if ns < self._min or self._min < 0:
            self._min = ns
        self._total += ns
        counts = self._counts
        if index >= len(counts):
            # Grows only to the largest bucket seen: 64-bit values need fewer than 8000.
            counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1

    def record(self, seconds: float) -> None:
        """Add one duration in seconds."""
        self.record_ns(round(seconds * 1e9))

    @property
    def count(self) -> int:
        """How many durations were recorded."""
        return sum(self._counts)

    @property
    def max_ns(self) -> int:
        """The largest duration (exact), 0 when empty."""
        return max(self._max, 0)

    @property
    def min_ns(self) -> int:
        """The smallest duration (exact), 0 when empty."""
        return max(self._min, 0)

    @property
    def mean_ns(self) -> float:
        """The mean duration (exact), 0.0 when empty."""
        n = self.count
        return self._total / n if n else 0.0

    def percentile_ns(self, q: float) -> float:
        """The ``q``-th percentile (0-100) in ns, linearly interpolated between order
        statistics like ``numpy.percentile``; NaN when empty."""
        return self.percentiles_ns((q,))[0]

    def percentiles_ns(self, qs: tuple[float, ...] | list[float]) -> list[float]:
        """Several percentiles from one consistent snapshot of the counters."""
        counts = list(self._counts)  # snapshot: the writer may be appending meanwhile
        lo_v, hi_v = self._min, self._max
        n = sum(counts)
        if n == 0:
            return [float("nan")] * len(qs)
        # Cumulative counts, computed once for all the ranks asked for.
        ends: list[int] = []
        acc = 0
        for c in counts:
            acc += c
            ends.append(acc)
        out: list[float] = []
        for q in qs:
            if not 0.0 <= q <= 100.0:
                raise ValueError(f"percentile must be in [0, 100], got {q!r}")
            pos = q / 100.0 * (n - 1)
            k = int(pos)
            frac = pos - k
            a = self._value_at(ends, k, lo_v, hi_v)
            b = a if frac == 0.0 else self._value_at(ends, k + 1, lo_v, hi_v)
            out.append(a + (b - a) * frac)
        return out

    @staticmethod
    def _value_at(ends: list[int], rank: int, lo_v: int, hi_v: int) -> float:
        """An estimate of the ``rank``-th smallest value (0-based): its bucket's midpoint,
        clamped to the exact minimum and maximum (which are returned as they are)."""
        if rank == 0:
            return float(lo_v)
        if rank >= ends[-1] - 1:
            return float(hi_v)
        # Binary search for the first bucket whose cumulative count exceeds rank.
        lo, hi = 0, len(ends) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if ends[mid] > rank:
                hi = mid
            else:
                lo = mid + 1
        low = _bucket_low(lo)
        width = _bucket_low(lo + 1) - low
        est = low + (width - 1) / 2.0
        return float(min(max(est, lo_v), hi_v))

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's samples to this one (e.g. from another thread)."""
        theirs = list(other._counts)
        if len(theirs) > len(self._counts):
            self._counts.extend([0] * (len(theirs) - len(self._counts)))
        for i, c in enumerate(theirs):
            if c:
                self._counts[i] += c
        self._total += other._total
        if other._max > self._max:
            self._max = other._max
        if other._min >= 0 and (self._min < 0 or other._min < self._min):
            self._min = other._min

    def reset(self) -> None:
        """Forget every sample."""
        self._counts = []
        self._total = 0
        self._min = self._max = -1


@dataclass(frozen=True, slots=True)
class StageSummary:
    """Percentiles of one stage, in seconds."""

    stage: str
    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float


class _Timer:
    """The context manager of :meth:`FrameTimings.time` (a class: cheaper than a generator)."""

    __slots__ = ("_hist", "_start")

    def __init__(self, hist: LatencyHistogram) -> None:
        self._hist = hist
        self._start = 0

    def __enter__(self) -> _Timer:
        self._start = time.perf_counter_ns()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Recorded even when the block raises: a slow failure is worth seeing.
        self._hist.record_ns(time.perf_counter_ns() - self._start)


class FrameTimings:
    """Histograms of per-frame stage durations: "capture", "convert", "encode", "decode" and
    any other name recorded.

    ::

        timings = FrameTimings()
        with timings.time("encode"):
            packet = encoder.encode(frame)
        timings.record("decode", 0.0021)
        print(timings.format_table())
    """

    __slots__ = ("_stages",)

    def __init__(self, stages: tuple[str, ...] = STAGES) -> None:
        self._stages: dict[str, LatencyHistogram] = {s: LatencyHistogram() for s in stages}

    def histogram(self, stage: str) -> LatencyHistogram:
        """The histogram of ``stage``, created empty on first use."""
        hist = self._stages.get(stage)
        if hist is None:
            hist = self._stages[stage] = LatencyHistogram()
        return hist

    @property
    def stages(self) -> tuple[str, ...]:
        """Stage names: the defaults first, then others in the order first seen."""
        return tuple(self._stages)

    def record(self, stage: str, seconds: float) -> None:
        """Record a duration of ``stage`` in seconds."""
        self.histogram(stage).record_ns(round(seconds * 1e9))

    def record_ns(self, stage: str, ns: int) -> None:
        """Record a duration of ``stage`` in nanoseconds."""
        self.histogram(stage).record_ns(ns)

    def time(self, stage: str) -> _Timer:
        """A context manager recording how long its block took (``time.perf_counter_ns``)."""
        return _Timer(self.histogram(stage))

    def percentile(self, stage: str, q: float) -> float:
        """The ``q``-th percentile (0-100) of ``stage`` in seconds; NaN if none recorded."""
        return self.histogram(stage).percentile_ns(q) / 1e9

    def summary(self) -> dict[str, StageSummary]:
        """Count, mean, p50, p95, p99 and max of every stage (empty stages included)."""
        out: dict[str, StageSummary] = {}
        for stage, hist in list(self._stages.items()):
            n = hist.count
            p50, p95, p99 = hist.percentiles_ns((50.0, 95.0, 99.0))
            out[stage] = StageSummary(
                stage=stage,
                count=n,
                mean=hist.mean_ns / 1e9,
                p50=p50 / 1e9,
                p95=p95 / 1e9,
                p99=p99 / 1e9,
                max=hist.max_ns / 1e9 if n else float("nan"),
            )
        return out

    def format_table(self) -> str:
        """The summary as an aligned text table in milliseconds (stages never recorded are
        left out)."""
        head = ("stage", "count", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms")
        rows = [
            (
                s.stage,
                str(s.count),
                *(f"{v * 1e3:.3f}" for v in (s.mean, s.p50, s.p95, s.p99, s.max)),
            )
            for s in self.summary().values()
            if s.count
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in [head, *rows]
        ]
        return "\n".join(lines)

    def reset(self) -> None:
        """Forget every sample of every stage."""
        for hist in list(self._stages.values()):
            hist.reset()
