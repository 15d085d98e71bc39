"""What the runner is told to do (`RunnerOptions`) and what it keeps of what it did (`Ledger`).

The worker pool, the pollers and the runner all write to one `Ledger`: per-function stats, the recent
invocations, the async events that failed every attempt, and how many deliveries are in flight.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunnerOptions:
    log_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)  # applied last, to every worker
    retry_delay_s: float | None = 1.0  # None: failed SQS records wait out the queue's VisibilityTimeout
    poll_wait_s: int = 1  # ReceiveMessage WaitTimeSeconds: also bounds how long stop() waits for pollers
    default_max_concurrency: int = 2  # per SQS event source without ScalingConfig.MaximumConcurrency
    async_concurrency: int = 2  # S3/SNS invocations in flight per event source
    concurrency_cap: int | None = None  # caps every source's concurrency (a laptop is not a Lambda fleet)
    duplicate_rate: float = 0.0
    # A share of invocations whose worker dies midway, right after one of its AWS calls (or after its
    # handler returned, before answering), as a Lambda environment can (out of memory, a host failure).
    kill_rate: float = 0.0
    seed: int | None = None
    init_timeout_s: float = 30.0  # a cold start (handler import) longer than this fails the invocation
    deliver_s3_test_events: bool = True  # hand S3's s3:TestEvent to the handler, as the hidden queue receives it
    history_size: int = 1000
    functions: tuple[str, ...] | None = None  # run only these logical ids (None: all)
    # Every Schedule/ScheduleV2 event fires at this interval instead of its rate or cron (None: as declared).
    schedule_interval_s: float | None = None


@dataclass
class InvocationResult:
    request_id: str
    function: str
    ok: bool
    payload: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0
    cold_start: bool = False
    init_ms: float | None = None
    timed_out: bool = False
    worker_pid: int | None = None
    source: str = "invoke"
    attempt: int = 1
    duplicate: bool = False
    writes: int | None = None  # successful state-changing AWS calls, when the workers count them
    deferred: tuple[str, ...] = ()  # receipt handles whose visibility the function set itself
    event: Any = None


@dataclass
class FunctionStats:
    invocations: int = 0
    failures: int = 0  # invocations that failed (an error, a timeout, a dead worker)
    records_failed: int = 0  # SQS records a handler reported in batchItemFailures (given back to retry)
    timeouts: int = 0
    retries: int = 0  # SQS records delivered again, async re-invocations
    duplicates: int = 0  # deliveries invoked twice on purpose (duplicate_rate)
    duplicates_dropped: int = 0  # of those, invocations that succeeded and changed nothing
    dropped_events: int = 0  # async events that failed every attempt
    cold_starts: int = 0
    cold_start_ms: list[float] = field(default_factory=list)
    workers_killed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cold_start_mean_ms"] = sum(self.cold_start_ms) / len(self.cold_start_ms) if self.cold_start_ms else None
        data["cold_start_max_ms"] = max(self.cold_start_ms) if self.cold_start_ms else None
        return data


@dataclass(frozen=True)
class BilledUsage:
    """What Lambda bills a function for: invocations, and the duration of each rounded up to 1 ms.

    A cold start's initialization counts too (Lambda bills the INIT phase of on-demand functions). The
    milliseconds are this machine's: its CPU, not the share of a core that Lambda gives the memory size.
    """

    invocations: int = 0
    billed_ms: int = 0

    def plus(self, result: InvocationResult) -> BilledUsage:
        init_ms = result.init_ms if result.cold_start and result.init_ms is not None else 0.0
        return BilledUsage(self.invocations + 1, self.billed_ms + math.ceil(init_ms + result.duration_ms))


class IdleTimeoutError(TimeoutError):
    """wait_until_idle gave up; the message says what was still busy."""


class UnknownFunctionError(KeyError):
    pass


class Ledger:
    """Thread-safe bookkeeping of every invocation, and the dice that decide which deliveries repeat."""

    def __init__(self, functions: list[str], options: RunnerOptions) -> None:
        self._lock = threading.Lock()
        self._stats = {logical_id: FunctionStats() for logical_id in functions}
        self._billed = {logical_id: BilledUsage() for logical_id in functions}
        self._history: deque[InvocationResult] = deque(maxlen=options.history_size)
        self._failed_events: deque[dict[str, Any]] = deque(maxlen=options.history_size)
        self._random = random.Random(options.seed)
        self._duplicate_rate = options.duplicate_rate
        self._in_flight = 0

    def record(self, result: InvocationResult, *, killed: bool) -> None:
        with self._lock:
            stats = self._stats[result.function]
            self._billed[result.function] = self._billed[result.function].plus(result)
            stats.invocations += 1
            stats.failures += 0 if result.ok else 1
            stats.timeouts += 1 if result.timed_out else 0
            stats.workers_killed += 1 if killed else 0
            stats.duplicates += 1 if result.duplicate else 0
            if result.cold_start and result.init_ms is not None:
                stats.cold_starts += 1
                stats.cold_start_ms.append(result.init_ms)
            self._history.append(result)

    def count(self, function: str, **increments: int) -> None:
        with self._lock:
            stats = self._stats[function]
            for name, value in increments.items():
                setattr(stats, name, getattr(stats, name) + value)

    def record_failed_event(self, function: str, event: Any, error: dict[str, Any] | None) -> None:
        with self._lock:
            self._failed_events.append({"function": function, "event": event, "error": error})

    def should_duplicate(self) -> bool:
        with self._lock:
            return self._duplicate_rate > 0 and self._random.random() < self._duplicate_rate

    # -- deliveries in flight -------------------------------------------------------------------------------------

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @property
    def in_flight_count(self) -> int:
        with self._lock:
            return self._in_flight

    # -- reading --------------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, FunctionStats]:
        with self._lock:
            return {
                name: replace(stats, cold_start_ms=list(stats.cold_start_ms)) for name, stats in self._stats.items()
            }

    def billing(self) -> dict[str, BilledUsage]:
        with self._lock:
            return dict(self._billed)

    def history(self) -> list[InvocationResult]:
        with self._lock:
            return list(self._history)

    def failed_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._failed_events)
