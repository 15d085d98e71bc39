"""Work handed to another thread keeps the context of the unit of work it belongs to.

Log keys that say whose work a line is about (job, pages, correlation id) live in context
variables, one set per unit of work, because several units run at once in one instance. A thread
of a pool starts with an empty context, so work is submitted inside a copy of the submitter's.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def in_context(executor: Executor, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Submit `work` to run in a copy of this thread's context (its log keys included)."""
    context = contextvars.copy_context()

    def run() -> T:
        return context.run(work, *args, **kwargs)

    return executor.submit(run)


class ByteBudget:
    """At most `limit` bytes claimed at once across threads; a claim larger than the limit waits until it is alone.

    Claims wait in no particular order: a large claim may wait while smaller ones fit, but never longer
    than the claims already made take to end, since a claim alone always fits.
    """

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._clock = clock
        self._claimed = 0
        self._changed = threading.Condition()

    @contextmanager
    def claim(self, size: int, *, deadline: float | None = None) -> Iterator[bool]:
        """Hold `size` bytes of the budget for the block; yields False (holding nothing) if `deadline` came first."""
        with self._changed:
            fits = self._changed.wait_for(
                lambda: self._claimed == 0 or self._claimed + size <= self.limit,
                timeout=None if deadline is None else max(0.0, deadline - self._clock()),
            )
            if fits:
                self._claimed += size
        try:
            yield fits
        finally:
            if fits:
                with self._changed:
                    self._claimed -= size
                    self._changed.notify_all()
