"""Retry with exponential backoff and a circuit breaker, per node (``options`` in manifests)."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CircuitBreaker", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Try an input up to ``attempts`` times, waiting ``base * factor**n`` (capped, jittered).

    Manifest form: ``options: {retry: {attempts: 3, base: 0.05, factor: 2, max: 2.0}}`` or
    ``retry: 3``.
    """

    attempts: int = 1
    base: float = 0.05
    factor: float = 2.0
    max: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1")
        if self.base < 0 or self.factor < 1 or self.max < 0:
            raise ValueError("retry backoff needs base >= 0, factor >= 1, max >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        d = min(self.max, self.base * self.factor ** (attempt - 1))
        return d * (1 + self.jitter * (2 * random.random() - 1)) if self.jitter else d

    @classmethod
    def from_options(cls, spec: Any) -> RetryPolicy:
        """From a manifest value: None, an int (attempts), a mapping, or a RetryPolicy."""
        if spec is None or spec is False:
            return cls()
        if isinstance(spec, RetryPolicy):
            return spec
        if isinstance(spec, bool):
            return cls(attempts=3)
        if isinstance(spec, int):
            return cls(attempts=spec)
        if isinstance(spec, Mapping):
            return cls(**{k: spec[k] for k in spec})
        raise ValueError(f"invalid retry option {spec!r}")


class CircuitBreaker:
    """Open after ``threshold`` consecutive failures; after ``reset_after`` s let one try through.

    Closed: everything passes.  Open: inputs are refused (``CircuitOpenError``).  Half-open:
    one input passes; success closes the circuit, failure opens it again.
    ``threshold=0`` disables it.
    """

    __slots__ = ("clock", "failures", "opened_at", "reset_after", "state", "threshold")

    def __init__(self, threshold: int = 0, reset_after: float = 30.0, clock: Any = None) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self.failures = 0
        self.state = "closed"
        self.opened_at = 0.0
        self.clock = clock or time.monotonic

    def allow(self) -> bool:
        """Whether an input may go to the node now."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self.opened_at >= self.reset_after:
            self.state = "half-open"
            return True
        return False

    def success(self) -> None:
        """The node handled an input."""
        if self.threshold:
            self.failures = 0
            self.state = "closed"

    def failure(self) -> None:
        """The node failed on an input."""
        if not self.threshold:
            return
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            self.state = "open"
            self.opened_at = self.clock()

    @classmethod
    def from_options(cls, spec: Any) -> CircuitBreaker:
        """From a manifest value: None, an int (threshold), or ``{threshold, reset_after}``."""
        if spec is None or spec is False:
            return cls()
        if isinstance(spec, CircuitBreaker):
            return spec
        if isinstance(spec, int) and not isinstance(spec, bool):
            return cls(threshold=spec)
        if isinstance(spec, Mapping):
            return cls(**{k: spec[k] for k in spec})
        raise ValueError(f"invalid circuit_breaker option {spec!r}")
