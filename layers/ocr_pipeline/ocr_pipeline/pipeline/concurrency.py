"""Work handed to another thread keeps the context of the unit of work it belongs to.

Log keys that say whose work a line is about (job, pages, correlation id) live in context
variables, one set per unit of work, because several units run at once in one instance. A thread
of a pool starts with an empty context, so work is submitted inside a copy of the submitter's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def in_context(executor: Executor, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Submit `work` to run in a copy of this thread's context (its log keys included)."""
    context = contextvars.copy_context()

    def run() -> T:
        return context.run(work, *args, **kwargs)

    return executor.submit(run)
