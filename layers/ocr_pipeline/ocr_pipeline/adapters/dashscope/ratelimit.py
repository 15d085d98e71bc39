"""A requests-per-second cap towards the OCR API, shared by every client in the process.

The stack-wide limit (`OcrRequestsPerSecond`) is split evenly over the at most `OcrMaxConcurrency`
function instances that can call the API at once, so the sum never exceeds it, even in a burst.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart (a token bucket holding one token)."""

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.interval_s = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start = 0.0

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for this request's slot; False (without taking it) if the slot comes after `deadline`."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            if deadline is not None and start > deadline:
                return False
            self._next_start = start + self.interval_s
        if start > now:
            self._sleep(start - now)
        return True


@cache
def shared_limiter(per_second: float) -> RateLimiter:
    """One limiter per rate and process: every client (one per model and region) draws from the same budget."""
    return RateLimiter(per_second)
