"""Schedule events in the local stack: expressions read as EventBridge reads them, the event source a function's
`Schedule`/`ScheduleV2` event becomes, the Scheduled Event payload, and the timer that fires it."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ocr_devkit.stack.cfn import TemplateError, resolve_template
from ocr_devkit.stack.functions import function_spec
from ocr_devkit.stack.invocation import Ledger, RunnerOptions
from ocr_devkit.stack.schedules import (
    CronSchedule,
    RateSchedule,
    ScheduleError,
    ScheduleEventSource,
    ScheduleTrigger,
    parse_schedule,
    scheduled_event,
)

THURSDAY = datetime(2026, 12, 3, 7, 20, tzinfo=UTC)


# --- expressions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(2 hours)", 7200), ("rate(1 day)", 86_400)],
)
def test_a_rate_fires_every_interval(expression: str, seconds: int) -> None:
    schedule = parse_schedule(expression)

    assert schedule == RateSchedule(interval_s=seconds)
    assert (schedule.next_after(THURSDAY) - THURSDAY).total_seconds() == seconds


@pytest.mark.parametrize(
    "expression",
    ["rate(5 minute)", "rate(1 minutes)", "rate(0 minutes)", "rate(5 seconds)", "every 5 minutes", "rate(-1 day)"],
)
def test_a_rate_aws_refuses_is_a_template_error(expression: str) -> None:
    with pytest.raises(TemplateError):
        parse_schedule(expression)


@pytest.mark.parametrize(
    ("expression", "first", "second"),
    [
        # Every day at 10:00 UTC.
        ("cron(0 10 * * ? *)", datetime(2026, 12, 3, 10, 0), datetime(2026, 12, 4, 10, 0)),
        # Every 15 minutes.
        ("cron(0/15 * * * ? *)", datetime(2026, 12, 3, 7, 30), datetime(2026, 12, 3, 7, 45)),
        # 18:00 Monday to Friday: AWS numbers the days 1-7 from Sunday, so 2-6 is MON-FRI.
        ("cron(0 18 ? * 2-6 *)", datetime(2026, 12, 3, 18, 0), datetime(2026, 12, 4, 18, 0)),
        ("cron(0 18 ? * MON-FRI *)", datetime(2026, 12, 3, 18, 0), datetime(2026, 12, 4, 18, 0)),
        # Noon on the second Tuesday (3#2 would be Wednesday in 0-6 numbering).
        ("cron(0 12 ? * 3#2 *)", datetime(2026, 12, 8, 12, 0), datetime(2027, 1, 12, 12, 0)),
        # 10:15 on the last Friday of the month.
        ("cron(15 10 ? * 6L *)", datetime(2026, 12, 25, 10, 15), datetime(2027, 1, 29, 10, 15)),
        # Noon on the last day of the month; the year field limits it.
        ("cron(0 12 L * ? 2027)", datetime(2027, 1, 31, 12, 0), datetime(2027, 2, 28, 12, 0)),
        # The weekday nearest the 5th (Saturday the 5th of December: Friday the 4th).
        ("cron(0 8 5W * ? *)", datetime(2026, 12, 4, 8, 0), datetime(2027, 1, 5, 8, 0)),
    ],
)
def test_a_cron_fires_at_the_times_aws_names(expression: str, first: datetime, second: datetime) -> None:
    schedule = parse_schedule(expression)

    assert isinstance(schedule, CronSchedule)
    fired = schedule.next_after(THURSDAY)
    assert fired == first.replace(tzinfo=UTC)
    assert schedule.next_after(fired) == second.replace(tzinfo=UTC)


def test_a_cron_in_a_time_zone_fires_at_that_zone_s_wall_clock() -> None:
    schedule = parse_schedule("cron(0 9 * * ? *)", timezone="Asia/Shanghai")

    # 09:00 in Beijing is 01:00 UTC.
    assert schedule.next_after(THURSDAY) == datetime(2026, 12, 4, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 10 * * *)",  # five fields: a Unix cron, not AWS's
        "cron(0 10 * * * *)",  # neither day field is '?'
        "cron(0 10 ? * ? *)",  # both are
        "cron(0 10 ? * 8 *)",  # no eighth day of the week
        "cron(0 25 * * ? *)",  # no 25th hour
    ],
)
def test_a_cron_aws_refuses_is_a_template_error(expression: str) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(expression)


def test_an_unknown_time_zone_is_a_template_error() -> None:
    with pytest.raises(ScheduleError, match="time zone"):
        parse_schedule("cron(0 9 * * ? *)", timezone="Mars/Olympus")


# --- from the template ----------------------------------------------------------------------------------------

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  TickSchedule:
    Type: String
    Default: rate(5 minutes)
Resources:
  Ticker:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: app.handler
      CodeUri: ticker/
      Events:
        Tick:
          Type: Schedule
          Properties:
            Schedule: !Ref TickSchedule
        Paused:
          Type: Schedule
          Properties:
            Schedule: cron(0 3 * * ? *)
            Enabled: false
        WithInput:
          Type: Schedule
          Properties:
            Schedule: rate(1 hour)
            Name: nightly-rule
            Input: '{"drain": true}'
        Scheduler:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: cron(0 9 * * ? *)
            ScheduleExpressionTimezone: Asia/Shanghai
            State: DISABLED
        Api:
          Type: Api
          Properties: {Path: /tick, Method: get}
"""


@pytest.fixture
def ticker(tmp_path: Path) -> Any:
    (tmp_path / "ticker").mkdir()
    (tmp_path / "ticker" / "app.py").write_text("def handler(event, context):\n    return event\n")
    (tmp_path / "template.yaml").write_text(TEMPLATE)

    def spec(parameters: dict[str, str] | None = None) -> Any:
        resolved = resolve_template(tmp_path / "template.yaml", stack_name="sched", parameters=parameters)
        return function_spec(resolved, "Ticker")

    return spec


def test_a_function_s_schedule_events_become_event_sources(ticker: Any) -> None:
    spec = ticker()
    sources = {event.name: event for event in spec.events}

    assert set(sources) == {"Tick", "Paused", "WithInput", "Scheduler"}
    assert all(isinstance(source, ScheduleEventSource) for source in sources.values())
    tick = sources["Tick"]
    assert (tick.expression, tick.schedule, tick.enabled, tick.kind) == (
        "rate(5 minutes)",
        RateSchedule(300),
        True,
        "Schedule",
    )
    assert tick.resource_arn.startswith("arn:aws:events:us-east-1:")
    assert ":rule/sched-TickerTick-" in tick.resource_arn
    assert sources["Paused"].enabled is False
    assert sources["WithInput"].resource_arn.endswith(":rule/nightly-rule")
    scheduler = sources["Scheduler"]
    assert (scheduler.kind, scheduler.enabled) == ("ScheduleV2", False)
    assert scheduler.resource_arn.endswith(":schedule/default/TickerScheduler")
    assert scheduler.schedule == parse_schedule("cron(0 9 * * ? *)", timezone="Asia/Shanghai")
    # Still no local meaning: listed, not run.
    assert spec.skipped_events == ("Api (Api): no local event source",)


def test_the_schedule_parameter_reaches_the_event_source(ticker: Any) -> None:
    (tick, *_) = ticker({"TickSchedule": "rate(1 minute)"}).events

    assert tick.schedule == RateSchedule(60)


def test_a_bad_schedule_parameter_is_refused_with_where_it_is(ticker: Any) -> None:
    with pytest.raises(TemplateError, match="rate"):
        ticker({"TickSchedule": "rate(5 minute)"})


# --- the payload ----------------------------------------------------------------------------------------------


def test_a_tick_without_input_is_eventbridge_s_scheduled_event(ticker: Any) -> None:
    tick = next(event for event in ticker().events if event.name == "Tick")

    event = scheduled_event(tick, account_id="123456789012", region="us-east-1", fired_at=THURSDAY)

    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert event["version"] == "0"
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert (event["account"], event["region"]) == ("123456789012", "us-east-1")
    assert event["time"] == "2026-12-03T07:20:00Z"
    assert event["resources"] == [tick.resource_arn]
    assert event["detail"] == {}
    again = scheduled_event(tick, account_id="123456789012", region="us-east-1", fired_at=THURSDAY)
    assert again["id"] != event["id"]


def test_a_tick_with_input_sends_the_input(ticker: Any) -> None:
    with_input = next(event for event in ticker().events if event.name == "WithInput")

    assert scheduled_event(with_input, account_id="1", region="us-east-1", fired_at=THURSDAY) == {"drain": True}


# --- the timer ------------------------------------------------------------------------------------------------


def _trigger(fire: Any, *, interval_s: float | None, concurrency: int = 1, **kwargs: Any) -> ScheduleTrigger:
    source = ScheduleEventSource(
        name="Tick", expression="rate(5 minutes)", schedule=RateSchedule(300), resource_arn="arn:aws:events:rule/x"
    )
    return ScheduleTrigger(
        label="Fn.Tick",
        event=source,
        fire=fire,
        payload=lambda due: {"time": due},
        ledger=kwargs.pop("ledger", Ledger(["Fn"], RunnerOptions(log_dir=Path(".")))),
        stopping=kwargs.pop("stopping", threading.Event()),
        concurrency=concurrency,
        interval_s=interval_s,
        **kwargs,
    )


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


def test_the_interval_override_replaces_the_schedule_s_rate() -> None:
    trigger = _trigger(lambda event: None, interval_s=2.5)

    assert trigger.next_after(THURSDAY) == datetime(2026, 12, 3, 7, 20, 2, 500_000, tzinfo=UTC)


def test_without_an_override_the_schedule_s_own_time_is_next() -> None:
    trigger = _trigger(lambda event: None, interval_s=None)

    assert trigger.next_after(THURSDAY) == datetime(2026, 12, 3, 7, 25, tzinfo=UTC)


def test_the_timer_fires_with_each_tick_s_time_until_stopped() -> None:
    payloads: list[Any] = []
    stopping = threading.Event()
    trigger = _trigger(payloads.append, interval_s=0.02, stopping=stopping)

    trigger.start()
    _wait_for(lambda: len(payloads) >= 3)
    stopping.set()
    trigger.join()
    trigger.shutdown()
    fired = len(payloads)
    time.sleep(0.1)

    assert len(payloads) == fired == trigger.ticks
    times = [payload["time"] for payload in payloads]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_stopping_waits_for_the_tick_in_progress_and_fires_no_more() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []
    stopping = threading.Event()
    ledger = Ledger(["Fn"], RunnerOptions(log_dir=Path(".")))

    def slow(event: Any) -> None:
        started.set()
        release.wait(5)
        finished.append(True)

    trigger = _trigger(slow, interval_s=0.01, stopping=stopping, ledger=ledger)
    trigger.start()
    assert started.wait(5)
    # The tick in progress counts as in flight, as any invocation does (wait_until_idle sees it).
    assert ledger.in_flight_count == 1
    stopping.set()
    trigger.join()
    threading.Timer(0.05, release.set).start()
    trigger.shutdown()

    assert finished == [True]
    assert ledger.in_flight_count == 0
    assert trigger.ticks == 1  # its single slot was busy: later ticks waited, then the timer stopped


def test_a_tick_that_raises_does_not_stop_the_timer() -> None:
    calls: list[Any] = []
    stopping = threading.Event()

    def failing(event: Any) -> None:
        calls.append(event)
        raise RuntimeError("boom")

    trigger = _trigger(failing, interval_s=0.01, stopping=stopping)
    trigger.start()
    _wait_for(lambda: len(calls) >= 2)
    stopping.set()
    trigger.join()
    trigger.shutdown()

    assert len(calls) >= 2


def test_a_disabled_schedule_s_source_says_so(ticker: Any) -> None:
    paused = next(event for event in ticker().events if event.name == "Paused")

    assert paused.enabled is False
    assert isinstance(paused.schedule, CronSchedule)
