"""A token bucket per connection."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` spends one if there is one.

    Time comes from ``clock`` (monotonic by default) so tests can drive it.
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self, n: float = 1.0) -> bool:
        """Spend ``n`` tokens; False (and nothing spent) if the bucket holds fewer."""
        if self.rate <= 0:
            return True  # rate 0 means unlimited
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens < n:
            self._tokens = tokens
            return False
        self._tokens = tokens - n
        return True

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        now = self._clock()
        return min(self.burst, self._tokens + (now - self._stamp) * self.rate)
