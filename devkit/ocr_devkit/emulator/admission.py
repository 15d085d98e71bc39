"""Who gets the emulator's OCR engine, and who is turned away: load shedding in front of one CPU engine.

The engine reads one image at a time. Callers give up after their read timeout (the functions' client
sends no deadline, so the emulator cannot see it), and a busy machine can make each page take tens of
seconds. Without a bound, requests pile up behind the engine; the engine then reads pages whose callers
have already gone, while those callers' retries queue behind them, and every page ends in a timeout.

So a request waiting for the engine is, in this order:

* dropped when the emulator stops (`Verdict.STOPPING`);
* dropped unread when its client has closed the connection (`Verdict.ABANDONED`): the engine never
  runs for a caller that cannot receive the answer;
* answered at once with the vendor's throttling reply (429 `Throttling.RateQuota`, with Retry-After)
  when it has waited, or would have to wait, longer than `max_wait_s` (`Verdict.SHED`): the client
  backs off and retries, or gives the page back to its queue, instead of timing out;
* otherwise it keeps waiting, and enters the engine when its turn comes (`Verdict.ADMIT`).

The next request in line is never shed: it keeps the engine busy when the current page is done, where
shedding it would leave the engine idle until some retry comes. The expected wait is the requests
ahead (the one in the engine included) times the mean time of the recent engine calls.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

# A request gives up its place after waiting this long for the engine; the functions' client reads
# for up to 120 s, and an answer later than a fraction of that is likely to be too late on a busy machine.
DEFAULT_MAX_WAIT_S = 30.0
# How often a waiting request looks at its connection and the clock.
POLL_INTERVAL_S = 0.2
# The mean engine time is of the last calls only: a machine's load changes during a run.
SERVICE_TIME_WINDOW = 8
# The shortest Retry-After sent with a shed request (the header takes whole seconds).
MIN_RETRY_AFTER_S = 1


class Verdict(Enum):
    ADMIT = "admit"
    WAIT = "wait"
    SHED = "shed"
    ABANDONED = "abandoned"
    STOPPING = "stopping"


def verdict(
    *,
    turn_free: bool,
    waited_s: float,
    ahead: int,
    mean_service_s: float | None,
    max_wait_s: float,
    client_gone: bool,
    stopping: bool,
) -> Verdict:
    """What to do now with a request that waits for the engine (see the module's docstring).

    `ahead` counts the requests before this one, the one in the engine included; `mean_service_s` is
    None until an engine call has been timed.
    """
    if stopping:
        return Verdict.STOPPING
    if client_gone:
        return Verdict.ABANDONED
    if turn_free:
        return Verdict.ADMIT
    if ahead <= 1:
        return Verdict.WAIT
    if waited_s >= max_wait_s:
        return Verdict.SHED
    if mean_service_s is not None and waited_s + ahead * mean_service_s > max_wait_s:
        return Verdict.SHED
    return Verdict.WAIT


def retry_after_s(ahead: int, mean_service_s: float | None) -> int:
    """Whole seconds until a shed request, sent again, would be next in line (and so not shed again).

    No longer: a client retries within its own invocation when the wait fits its deadline, where a
    longer one would give the page back to its queue and spend one of its receives.
    """
    if mean_service_s is None:
        return MIN_RETRY_AFTER_S
    return max(MIN_RETRY_AFTER_S, math.ceil((ahead - 1) * mean_service_s))


def peer_closed(connection: socket.socket) -> bool:
    """Whether the client has closed (or reset) its end, without consuming what it may have sent.

    Once a request's body is read, its client sends nothing until the reply: a readable socket then
    means end of stream, unless the client pipelines its next request (data to peek at).
    """
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return False
        return connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class Refused(Exception):
    """A request that does not get the engine: why, and for a shed one, when to come back."""

    def __init__(self, why: Verdict, retry_after_s: int = MIN_RETRY_AFTER_S) -> None:
        super().__init__(why.value)
        self.why = why
        self.retry_after_s = retry_after_s


@dataclass
class AdmissionStats:
    admitted: int = 0
    shed: int = 0
    abandoned: int = 0
    longest_wait_s: float = 0.0


class EngineAdmission:
    """A fair (first come, first served) turn at the engine, with the verdicts above. Thread-safe."""

    def __init__(
        self,
        *,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        stopping: threading.Event,
        poll_interval_s: float = POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_wait_s <= 0:
            raise ValueError(f"max_wait_s must be positive, not {max_wait_s}")
        self.max_wait_s = max_wait_s
        self._stopping = stopping
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._condition = threading.Condition()
        self._queue: deque[object] = deque()  # tickets of the waiting requests, in arrival order
        self._busy = False
        self._service_times: deque[float] = deque(maxlen=SERVICE_TIME_WINDOW)
        self.stats = AdmissionStats()

    @property
    def mean_service_s(self) -> float | None:
        with self._condition:
            return sum(self._service_times) / len(self._service_times) if self._service_times else None

    def reset_stats(self) -> None:
        with self._condition:
            self.stats = AdmissionStats()

    @contextlib.contextmanager
    def turn(self, client_gone: Callable[[], bool]) -> Iterator[None]:
        """Hold the engine for the `with` block, or raise `Refused` (see `verdict`)."""
        ticket = object()
        arrived = self._clock()
        with self._condition:
            self._queue.append(ticket)
            try:
                while True:
                    waited = self._clock() - arrived
                    ahead = self._queue.index(ticket) + (1 if self._busy else 0)
                    mean = sum(self._service_times) / len(self._service_times) if self._service_times else None
                    decision = verdict(
                        turn_free=not self._busy and self._queue[0] is ticket,
                        waited_s=waited,
                        ahead=ahead,
                        mean_service_s=mean,
                        max_wait_s=self.max_wait_s,
                        client_gone=client_gone(),
                        stopping=self._stopping.is_set(),
                    )
                    if decision is Verdict.ADMIT:
                        self._busy = True
                        self.stats.admitted += 1
                        self.stats.longest_wait_s = max(self.stats.longest_wait_s, round(waited, 2))
                        break
                    if decision is Verdict.SHED:
                        self.stats.shed += 1
                        raise Refused(decision, retry_after_s(ahead, mean))
                    if decision is Verdict.ABANDONED:
                        self.stats.abandoned += 1
                        raise Refused(decision)
                    if decision is Verdict.STOPPING:
                        raise Refused(decision)
                    self._condition.wait(self._poll_interval_s)
            finally:
                self._queue.remove(ticket)
                self._condition.notify_all()
        started = self._clock()
        try:
            yield
        finally:
            with self._condition:
                self._service_times.append(self._clock() - started)
                self._busy = False
                self._condition.notify_all()
