"""Sign-in attempts, rate-limited per address and per email (in memory: per web process).

A sliding window: at most ``limit`` attempts per key in ``window`` seconds. Spread over several
web processes, an attacker gets ``limit`` per process, still far too few to guess a link.
"""

from __future__ import annotations

import time
from collections import deque


class RateLimiter:
    """Counts attempts per key over a sliding window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        """Record an attempt for ``key``; False when it is over the limit (not recorded then)."""
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self._hits) > 100_000:  # a flood of distinct keys: forget the idle ones
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
        return True
