"""A pacing rate limiter for producers that must not outrun an expensive consumer."""

from __future__ import annotations

import time


class RateLimiter:
    """Keeps the average rate at or below `per_second` units (pairs) since the first acquire."""

    def __init__(self, per_second: float | None) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError(f"rate limit: must be positive, got {per_second}")
        self.per_second = per_second
        self._start: float | None = None
        self._spent = 0.0

    def acquire(self, units: int) -> None:
        if self.per_second is None:
            return
        now = time.monotonic()
        if self._start is None:
            self._start = now
        self._spent += units
        wait = self._start + self._spent / self.per_second - now
        if wait > 0:
            time.sleep(wait)
