"""Latency statistics that stay small however long the showcase runs.

A log-linear histogram with 1 % wide buckets (from 10 ns to 100 s) keeps the whole run; percentiles
come from it with 1 % resolution, the minimum and maximum are exact.  A short window of raw samples
gives the live figures.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

_RATIO = 1.01
_LOG_RATIO = math.log(_RATIO)
_LO_NS = 10.0
_BUCKETS = int(math.log(1e11 / _LO_NS) / _LOG_RATIO) + 2


@dataclass
class LatencyHistogram:
    counts: np.ndarray = field(default_factory=lambda: np.zeros(_BUCKETS, dtype=np.int64))
    total: int = 0
    min_ns: float = math.inf
    max_ns: float = 0.0

    def add(self, lat_ns: np.ndarray) -> None:
        if lat_ns.size == 0:
            return
        clipped = np.maximum(lat_ns.astype(np.float64), _LO_NS)
        idx = np.minimum((np.log(clipped / _LO_NS) / _LOG_RATIO).astype(np.int64), _BUCKETS - 1)
        self.counts += np.bincount(idx, minlength=_BUCKETS)
        self.total += int(lat_ns.size)
        self.min_ns = min(self.min_ns, float(lat_ns.min()))
        self.max_ns = max(self.max_ns, float(lat_ns.max()))

    def percentile_ns(self, q: float) -> float:
        """The ``q``-th percentile (0..100); the bucket's geometric middle, clamped to min/max."""
        if self.total == 0:
            return math.nan
        rank = max(1, math.ceil(self.total * q / 100.0))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        mid = _LO_NS * _RATIO ** (i + 0.5)
        return min(max(mid, self.min_ns), self.max_ns)


@dataclass
class Batch:
    """What the consumer reports a few times a second."""

    t: float  # parent's monotonic time of arrival
    messages: int
    nbytes: int
    lat_ns: np.ndarray


class Window:
    """The last ``seconds`` of batches, for live throughput and latency figures."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.batches: deque[Batch] = deque()

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.trim(batch.t)

    def trim(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        while self.batches and self.batches[0].t < now - self.seconds:
            self.batches.popleft()

    def rates(self, now: float | None = None) -> tuple[float, float]:
        """(messages/s, bytes/s) over the window."""
        self.trim(now)
        if not self.batches:
            return 0.0, 0.0
        span = min(self.seconds, max((now or time.monotonic()) - self.started, 1e-3))
        msgs = sum(b.messages for b in self.batches)
        nbytes = sum(b.nbytes for b in self.batches)
        return msgs / span, nbytes / span

    def percentiles_ns(self, *qs: float) -> list[float]:
        lat = [b.lat_ns for b in self.batches if b.lat_ns.size]
        if not lat:
            return [math.nan for _ in qs]
        allv = np.concatenate(lat)
        return [float(v) for v in np.percentile(allv, qs)]
