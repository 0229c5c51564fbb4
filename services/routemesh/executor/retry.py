"""Retry pacing: exponential backoff with full jitter, Retry-After, and a retry budget per model."""

from __future__ import annotations

import random
import time


def backoff_s(try_number: int, initial_ms: int, max_ms: int, rng: random.Random,
              retry_after_s: float | None = None) -> float:
    """Seconds to wait before try `try_number` (2 = first retry): full jitter, never less than Retry-After."""
    ceiling = min(max_ms, initial_ms * 2 ** max(0, try_number - 2)) / 1000
    wait = rng.uniform(0, ceiling)
    return max(wait, retry_after_s or 0.0)


class RetryBudget:
    """Retries may add at most `ratio` of a model's requests (plus a small floor per second), so a failing
    provider sees no retry storm: a token bucket filled by requests and spent by retries."""

    def __init__(self, ratio: float = 0.2, floor_per_s: float = 1.0, cap: float = 20.0,
                 clock=time.monotonic):
        self.ratio = ratio
        self.floor_per_s = floor_per_s
        self.cap = cap
        self.clock = clock
        self._tokens = cap / 2
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.cap, self._tokens + (now - self._at) * self.floor_per_s)
        self._at = now

    def on_request(self) -> None:
        self._refill()
        self._tokens = min(self.cap, self._tokens + self.ratio)

    def try_spend(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
