"""Schedule events (SAM `Schedule` and `ScheduleV2`): EventBridge's timer, run by the local stack.

A function's `Schedule` event becomes an EventBridge rule on AWS, a `ScheduleV2` event an EventBridge
Scheduler schedule; both invoke the function asynchronously. Kept locally:

* The payload: EventBridge's "Scheduled Event" (`scheduled_event`), or the event's `Input` when it has one.
* Asynchronous invocation: the runner hands each tick to `AsyncInvoker.run`, so a failed tick is retried
  as any async event is (the function's MaximumRetryAttempts, then its OnFailure destination or DLQ),
  billed and counted in the same ledger.
* `Enabled: false` (Schedule) and `State: DISABLED` (ScheduleV2): the schedule never fires.
* `rate(N unit)`: every N units, the first tick one interval after the start. `cron(...)`: AWS's six
  fields (minutes, hours, day of month, month, day of week 1-7 = SUN-SAT, year), in UTC or the
  ScheduleV2 event's ScheduleExpressionTimezone, computed with croniter. A malformed expression is a
  TemplateError, as CloudFormation refuses it.

Local shortcuts (same semantics, faster clock):

* `RunnerOptions.schedule_interval_s`: when set, every schedule fires at that interval instead (rate and
  cron alike), since nobody waits five minutes in a test or a local run.
* A tick that comes while the schedule already has as many invocations running as the runner allows
  waits for one of them to end, and the ticks missed meanwhile are not made up (EventBridge would queue
  each of them as one more async event). A scheduled function that drains work loses nothing by it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .cfn import PARTITION, ResolvedTemplate, TemplateError, generated_name
from .invocation import Ledger

logger = logging.getLogger(__name__)

SCHEDULE_EVENT_TYPES = ("Schedule", "ScheduleV2")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86_400}
_RATE = re.compile(r"^rate\(\s*(\d+)\s+([a-z]+)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


class ScheduleError(TemplateError):
    """A schedule expression AWS would refuse, or one the local stack cannot compute."""


@dataclass(frozen=True)
class RateSchedule:
    interval_s: int

    def next_after(self, moment: datetime) -> datetime:
        return moment + timedelta(seconds=self.interval_s)


@dataclass(frozen=True)
class CronSchedule:
    """AWS's cron, translated to croniter's fields: minute hour dom month dow second year."""

    expression: str
    fields: str
    timezone: str = "UTC"

    def next_after(self, moment: datetime) -> datetime:
        from croniter import croniter

        zone = ZoneInfo(self.timezone)
        following = croniter(self.fields, moment.astimezone(zone)).get_next(datetime)
        return following.astimezone(UTC)


Schedule = RateSchedule | CronSchedule


def parse_schedule(expression: str, timezone: str = "UTC") -> Schedule:
    """`rate(...)` or `cron(...)` as EventBridge reads them; ScheduleError for anything else."""
    text = expression.strip()
    rate = _RATE.match(text)
    if rate is not None:
        value, unit = int(rate.group(1)), rate.group(2)
        singular = unit.removesuffix("s")
        # AWS wants `rate(1 minute)` and `rate(5 minutes)`, and refuses the other spellings.
        if singular not in _RATE_UNITS or value < 1 or (unit == singular) != (value == 1):
            raise ScheduleError(f"{expression!r}: use rate(1 minute|hour|day) or rate(N minutes|hours|days), N > 1")
        return RateSchedule(interval_s=value * _RATE_UNITS[singular])
    cron = _CRON.match(text)
    if cron is None:
        raise ScheduleError(f"{expression!r}: a schedule is rate(...) or cron(...)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"{expression!r}: unknown time zone {timezone!r}") from exc
    schedule = CronSchedule(expression=text, fields=_croniter_fields(expression, cron.group(1)), timezone=timezone)
    try:
        schedule.next_after(datetime.now(UTC))
    except Exception as exc:  # croniter's own errors: a field it cannot read, or no time ever matches
        raise ScheduleError(f"{expression!r}: not computed locally ({exc})") from exc
    return schedule


def _croniter_fields(expression: str, body: str) -> str:
    fields = body.split()
    if len(fields) != 6:
        raise ScheduleError(
            f"{expression!r}: AWS cron has six fields: minutes hours day-of-month month day-of-week year"
        )
    minutes, hours, day_of_month, month, day_of_week, year = fields
    # AWS: one of the two day fields is `?`, the other says which days.
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ScheduleError(f"{expression!r}: exactly one of day-of-month and day-of-week must be '?'")
    days = "*" if day_of_month == "?" else day_of_month
    weekdays = "*" if day_of_week == "?" else ",".join(_weekday_item(expression, i) for i in day_of_week.split(","))
    return f"{minutes} {hours} {days} {month} {weekdays} 0 {year}"


def _weekday_item(expression: str, item: str) -> str:
    """One item of AWS's day-of-week (1-7 = SUN-SAT; `nL` the month's last such day; `n#k` its k-th) in
    croniter's terms (0-6 = SUN-SAT; `Ln`; `n#k`)."""
    upper = item.upper()
    if upper == "L":  # the week's last day
        return "6"
    if upper.endswith("L"):
        return f"L{_weekday(expression, upper[:-1])}"
    if "#" in upper:
        day, nth = upper.split("#", 1)
        return f"{_weekday(expression, day)}#{nth}"
    base, slash, step = upper.partition("/")
    if base != "*":
        base = "-".join(_weekday(expression, part) for part in base.split("-"))
    return base + slash + step


def _weekday(expression: str, day: str) -> str:
    if day in _DAYS:
        return day
    if day.isdigit() and 1 <= int(day) <= 7:
        return str(int(day) - 1)
    raise ScheduleError(f"{expression!r}: day of week {day!r} is not 1-7 or SUN-SAT")


@dataclass(frozen=True)
class ScheduleEventSource:
    """A function's Schedule or ScheduleV2 event: the runner invokes it asynchronously on a timer."""

    name: str
    expression: str
    schedule: Schedule
    resource_arn: str  # the rule's (Schedule) or the schedule's (ScheduleV2): the payload's `resources`
    enabled: bool = True
    input: str | None = None  # sent instead of the Scheduled Event payload
    kind: Literal["Schedule", "ScheduleV2"] = "Schedule"


def schedule_source(
    resolved: ResolvedTemplate, function: str, name: str, kind: str, props: Mapping[str, Any], where: str
) -> ScheduleEventSource:
    """The event source of one `Schedule`/`ScheduleV2` event of a function's `Events`."""
    expression = props.get("Schedule") if kind == "Schedule" else props.get("ScheduleExpression")
    if not isinstance(expression, str):
        raise ScheduleError(f"{where}.Properties: needs a schedule expression, rate(...) or cron(...)")
    timezone = str(props.get("ScheduleExpressionTimezone") or "UTC")
    schedule = parse_schedule(expression, timezone)
    state = str(props.get("State") or "ENABLED").upper()
    enabled = props.get("Enabled", True)
    enabled = enabled.strip().lower() == "true" if isinstance(enabled, str) else bool(enabled)
    raw_input = props.get("Input")
    if raw_input is not None:
        try:
            json.loads(str(raw_input))
        except ValueError as exc:
            raise ScheduleError(f"{where}.Properties.Input: not JSON ({exc})") from exc
    account, region = resolved.account_id, resolved.region
    if kind == "Schedule":
        rule = str(props.get("Name") or generated_name(resolved.stack_name, f"{function}{name}", "AWS::Events::Rule"))
        arn = f"arn:{PARTITION}:events:{region}:{account}:rule/{rule}"
    else:
        group = str(props.get("GroupName") or "default")
        schedule_name = str(props.get("Name") or f"{function}{name}")
        arn = f"arn:{PARTITION}:scheduler:{region}:{account}:schedule/{group}/{schedule_name}"
    return ScheduleEventSource(
        name=name,
        expression=expression,
        schedule=schedule,
        resource_arn=arn,
        enabled=enabled and state != "DISABLED",
        input=None if raw_input is None else str(raw_input),
        kind="Schedule" if kind == "Schedule" else "ScheduleV2",
    )


def scheduled_event(source: ScheduleEventSource, *, account_id: str, region: str, fired_at: datetime) -> Any:
    """What the function receives for one tick."""
    if source.input is not None:
        return json.loads(source.input)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events" if source.kind == "Schedule" else "aws.scheduler",
        "account": account_id,
        "time": fired_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [source.resource_arn],
        "detail": {},
    }


def utc_now() -> datetime:
    return datetime.now(UTC)


class ScheduleTrigger:
    """One schedule's timer thread: at each tick, `fire(payload)` runs on one of `concurrency` threads."""

    def __init__(
        self,
        *,
        label: str,
        event: ScheduleEventSource,
        fire: Callable[[Any], None],
        payload: Callable[[datetime], Any],
        ledger: Ledger,
        stopping: threading.Event,
        concurrency: int = 1,
        interval_s: float | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.label = label
        self.event = event
        self.kind = event.kind
        self.fire = fire
        self.payload = payload
        self.ledger = ledger
        self.stopping = stopping
        self.concurrency = max(1, concurrency)
        self.interval_s = interval_s
        self.clock = clock
        self.ticks = 0
        self.slots = threading.Semaphore(self.concurrency)
        self.executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"ocr-stack-{label}")
        self.thread: threading.Thread | None = None

    def next_after(self, moment: datetime) -> datetime:
        if self.interval_s is not None:
            return moment + timedelta(seconds=self.interval_s)
        return self.event.schedule.next_after(moment)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._tick, name=f"ocr-stack-schedule-{self.label}", daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(5)

    def shutdown(self) -> None:
        """Wait for the invocations in progress (call after `stopping` is set and `join`).

        A tick handed over just before the stop still runs (against a closed pool it ends at once), so
        every tick counted in flight leaves it again.
        """
        self.executor.shutdown(wait=True)

    def depth(self, sqs: Any) -> int:
        return 0  # a timer has no queue; its invocations in flight are the ledger's

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "type": self.kind,
            "schedule": self.event.expression,
            "interval_s": self.interval_s,
            "concurrency": self.concurrency,
        }

    def _tick(self) -> None:
        due = self.next_after(self.clock())
        while not self.stopping.is_set():
            wait_s = (due - self.clock()).total_seconds()
            if wait_s > 0 and self.stopping.wait(wait_s):
                return
            while not self.slots.acquire(timeout=0.2):
                if self.stopping.is_set():
                    return
            if self.stopping.is_set():
                self.slots.release()
                return
            self.ticks += 1
            self.ledger.enter()
            try:
                self.executor.submit(self._run, self.payload(due))
            except Exception:
                self.slots.release()
                self.ledger.leave()
                logger.exception("scheduling %s failed", self.label)
            now = self.clock()
            due = self.next_after(due)
            while due <= now:  # ticks missed while every slot was busy are not made up (module docstring)
                due = self.next_after(due)

    def _run(self, event: Any) -> None:
        try:
            self.fire(event)
        except Exception:
            logger.exception("invoking %s failed", self.label)
        finally:
            self.slots.release()
            self.ledger.leave()
