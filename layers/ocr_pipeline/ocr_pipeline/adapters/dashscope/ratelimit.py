"""The two stack-wide limits towards the OCR API, as one function instance keeps its share of them.

- `OcrMaxConcurrency` bounds the requests in flight across the stack. An instance holds at most
  `OcrCallsPerInstance` of them (`CallSlots`), and the page queue's event source mapping runs at most
  floor(OcrMaxConcurrency / OcrCallsPerInstance) instances (template.yaml looks the quotient up in a
  table, since CloudFormation has no arithmetic), so their sum never exceeds the limit.
- `OcrRequestsPerSecond` bounds the requests started per second across the stack. It is split evenly
  over those same instances (`RateLimiter`), so the sum never exceeds it, even in a burst.

Both count HTTP requests, retries and the halves of a page read again included: what the vendor's
quota counts. Neither needs a request of its own to enforce, and neither holds anything a dead
instance could leave behind: an instance that dies takes its share with it, and Lambda starts the
next one only when it is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache


class CallSlots:
    """At most `size` requests in flight from this process, whatever thread sends them."""

    def __init__(self, size: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._clock = clock
        self._free = threading.BoundedSemaphore(size)

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a free slot; False (without taking one) if none comes free before `deadline`."""
        if deadline is None:
            return self._free.acquire()
        return self._free.acquire(timeout=max(0.0, deadline - self._clock()))

    def release(self) -> None:
        self._free.release()


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
def shared_call_slots(size: int) -> CallSlots:
    """One bound per process: every client (one per model and region) draws from the same slots."""
    return CallSlots(size)


@cache
def shared_limiter(per_second: float) -> RateLimiter:
    """One limiter per rate and process: every client (one per model and region) draws from the same budget."""
    return RateLimiter(per_second)
