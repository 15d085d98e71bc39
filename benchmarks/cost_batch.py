"""The batch lane's AWS bill per page (docs/batch-lane.md), beside the real-time rows of benchmarks/cost.py.

The same inputs as the real-time rows (the dense text PDF, the page images) are uploaded with
`ocr-mode: batch` to a local stack running model `qwen-vl-ocr` in region `cn`, where the vendor offers
the lane. Pages are prepared by BatchSubmitFunction, sent in a batch file, and settled by
BatchCollectFunction; both run on a schedule, which the local runner fires every
`SCHEDULE_INTERVAL_S` (2 s) instead of the template's rate(5 minutes), and the emulator completes a
batch `COMPLETION_DELAY_S` after its creation.

A scheduled run is billed whether or not it finds work, so each run of the two functions is sorted by
what its handler returned (`run_kind`):

* **working**: it moved pages or batches. These, the upload function's invocations and every request
  they signed are the per-page figure.
* **idle**: it found nothing to do. How many there are follows the clock, not the pages: they are left
  out of the per-page figure and priced instead as the schedules' fixed monthly cost, an idle run's
  billed time and requests (measured in a quiet window) times the ticks of a month at the template's rate.
* **waiting**: a collect run that found only batches the vendor had not finished. Their number follows
  the vendor's time (one each tick a batch stays open), not the pages: they are left out too, and one
  such poll is measured in a window of its own and priced per hour a batch stays open.

Requests are metered per function, not per run: a function's idle and waiting runs' requests are taken
off its total at their measured mean per run (`without_runs`).

No Lambda waits on the model in this lane (the submitter sends a file, the collector reads one when the
vendor is done), so the model latency L of the real-time rows does not apply: each input is measured
once. Durations are this machine's (see cost.py).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from ocr_devkit.run import RunOptions, local_pipeline, upload_metadata
from ocr_devkit.run_batch import SCHEDULE_INTERVAL_S
from ocr_devkit.stack.invocation import BilledUsage, InvocationResult
from ocr_devkit.stack.metering import ADMIN_CALLER, MeteredRequests
from ocr_devkit.stack.schedules import RateSchedule, parse_schedule
from ocr_pipeline.pipeline.model import Lane
from ocr_pipeline.pricing import default_price_table

from .cost_pricing import (
    FunctionUsage,
    LineItem,
    Metered,
    PriceList,
    RunProfile,
    cost_row,
    deployed_functions,
    lambda_items,
    qwen_usd,
    request_items,
    scaled,
    total_usd,
    without_runs,
)
from .documents import text_pdf

MODEL = "qwen-vl-ocr"
REGION = "cn"
SUBMIT = "BatchSubmitFunction"
COLLECT = "BatchCollectFunction"
SCHEDULED = (SUBMIT, COLLECT)
CONFIGURATION = f"batch lane ({MODEL}, {REGION})"
COMPLETION_DELAY_S = 1.0
# The quiet window in which idle runs are measured: several ticks of each schedule.
IDLE_WINDOW_S = 20.0
# A batch held open this long gives a window of waiting polls well inside it.
WAITING_DELAY_S = 20.0
WAITING_WINDOW_S = 8.0
# AWS prices a month as 730 hours.
HOURS_PER_MONTH = 730
TIMEOUT_S = 900.0
SETTLE_TIMEOUT_S = 120.0

RunKind = Literal["idle", "waiting", "working"]
# An input: its kind, its label, and its uploads (key, body, content type).
Input = tuple[str, str, list[tuple[str, bytes, str]]]
Log = Callable[[str], None]
# Counts a scheduled run reports that say nothing about work done.
_NOT_WORK = ("oldest_unfinished_s", "batches_open")


def run_kind(payload: Any) -> RunKind:
    """What a run of a batch function did, from the summary its handler returned.

    Idle: every count is zero. Waiting: a collect run whose only count is open batches it polled (not
    finished yet). Anything else is working, and so is a run that failed or returned no summary: its cost
    is counted with the pages rather than hidden."""
    if not isinstance(payload, dict):
        return "working"
    if any(value for key, value in payload.items() if key not in _NOT_WORK):
        return "working"
    return "waiting" if payload.get("batches_open") else "idle"


def ticks_per_month(expression: str) -> Decimal:
    """Runs a month (730 hours) of a `rate(...)` schedule; a cron's depends on its fields, not computed here."""
    schedule = parse_schedule(expression)
    if not isinstance(schedule, RateSchedule):
        raise ValueError(f"{expression!r}: only rate(...) schedules are priced per month")
    return Decimal(HOURS_PER_MONTH * 3600) / schedule.interval_s


def profile_items(profile: RunProfile, memory_mb: int, architecture: str, prices: PriceList) -> list[LineItem]:
    """What a profile's runs cost in total: their Lambda time and requests, and their invocations."""
    usage = FunctionUsage(profile.function, memory_mb, architecture, profile.runs, profile.billed_ms)
    return lambda_items([usage], prices) + request_items(profile.requests, prices)


def per_run_usd(profile: RunProfile, memory_mb: int, architecture: str, prices: PriceList) -> Decimal:
    if not profile.runs:
        raise ValueError(f"no {profile.function} run was measured")
    return total_usd(profile_items(profile, memory_mb, architecture, prices)) / profile.runs


def monthly_items(
    profile: RunProfile, memory_mb: int, architecture: str, prices: PriceList, runs_per_month: Decimal
) -> list[LineItem]:
    """A month of runs like the profile's: its runs' cost scaled to `runs_per_month`."""
    if not profile.runs:
        raise ValueError(f"no {profile.function} run was measured")
    return scaled(profile_items(profile, memory_mb, architecture, prices), runs_per_month / profile.runs)


@dataclass(frozen=True)
class _Mark:
    """The stack read at one moment with no invocation in flight: requests so far, invocations so far."""

    requests: dict[tuple[str, str, str, str, str], tuple[int, float]]
    invocations: frozenset[str]
    billing: dict[str, BilledUsage]


def measure_batch_lane(
    inputs: list[Input], image: bytes, prices: PriceList, *, concurrency: int, log: Log = print
) -> dict[str, Any]:
    """A row per input (its kind, label and uploads), uploaded with `ocr-mode: batch`; `image` is the page
    read in the warm-up and held in an open batch for the waiting polls."""
    log(f"  {CONFIGURATION}")
    with tempfile.TemporaryDirectory(prefix="ocr-bench-cost-batch-") as scratch:
        options = RunOptions(
            paths=[],
            out_dir=Path(scratch),
            max_concurrency=concurrency,
            mode=Lane.BATCH,
            model=MODEL,
            region=REGION,
            batch_delay_s=COMPLETION_DELAY_S,
        )
        with local_pipeline(options, log_dir=Path(scratch) / "logs") as pipeline:
            run = _BatchLaneRun(pipeline, prices, upload_metadata(options), log)
            cold_init_ms = run.warm_up(image, concurrency)
            idle = run.idle_profiles()
            waiting = run.waiting_profile(image)
            rows = []
            for kind, label, uploads in inputs:
                log(f"    {label}")
                row = run.measure(f"cost-batch/{kind}/", uploads, idle, waiting)
                row.update(configuration=CONFIGURATION, overrides={}, latency_ms=None, input=kind, label=label)
                rows.append(row)
            schedules = run.schedules(idle, cold_init_ms)
            poll = run.waiting_poll(waiting)
    return {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "configuration": CONFIGURATION,
        "model": MODEL,
        "region": REGION,
        "local_schedule_interval_s": SCHEDULE_INTERVAL_S,
        "completion_delay_s": COMPLETION_DELAY_S,
        "rows": rows,
        "schedules": schedules,
        "fixed_usd_per_month": sum(s["usd_per_month"] for s in schedules.values()),
        "fixed_usd_per_month_every_tick_cold": sum(s["usd_per_month_every_tick_cold"] for s in schedules.values()),
        "waiting_poll": poll,
        "warnings": run.warnings,
    }


def upload_and_wait(
    pipeline: Any,
    uploads: list[tuple[str, bytes, str]],
    *,
    settle_timeout_s: float,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Upload each (key, body, content type), wait until every document completed, then until the stack is idle.

    A page's usage.recorded may follow its document.completed, so the stack must settle before anything is read.
    """
    for key, body, content_type in uploads:
        pipeline.upload(key, body, content_type=content_type, metadata=metadata)
    final: dict[str, Any] = pipeline.wait_for_documents({key for key, _, _ in uploads}, TIMEOUT_S)
    failed = [key for key, _, _ in uploads if getattr(final.get(key), "event_type", None) != "document.completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} document(s) did not complete: {failed[:3]}")
    pipeline.stack.wait_until_idle(timeout=settle_timeout_s)
    pipeline.recorder.poll(wait_s=1)
    return final


class _BatchLaneRun:
    """The running stack of the batch lane: warm-up, the idle and waiting windows, then each input."""

    def __init__(self, pipeline: Any, prices: PriceList, metadata: dict[str, str], log: Log) -> None:
        self.pipeline = pipeline
        self.prices = prices
        self.metadata = metadata
        self.log = log
        self.functions = deployed_functions(pipeline.stack)
        self.warnings: list[str] = []

    # -- reading the stack ----------------------------------------------------------------------------------------

    def _mark(self) -> _Mark:
        """Requests and invocations so far, read while nothing runs (a tick that starts meanwhile: read again)."""
        runner, meter = self.pipeline.stack.runner, self.pipeline.stack.meter
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if runner.busy()["in_flight"]:
                time.sleep(0.02)
                continue
            seen = frozenset(result.request_id for result in runner.invocations())
            requests = {_key(r): (r.calls, r.quantity) for r in meter.snapshot()}
            billing = runner.billing()
            if not runner.busy()["in_flight"] and seen == frozenset(r.request_id for r in runner.invocations()):
                return _Mark(requests, seen, billing)
        raise RuntimeError("the stack never had a moment with nothing in flight")

    def _since(self, start: _Mark, end: _Mark) -> tuple[list[MeteredRequests], list[InvocationResult]]:
        requests = []
        for key, (calls, quantity) in end.requests.items():
            before_calls, before_quantity = start.requests.get(key, (0, 0.0))
            if calls - before_calls:
                caller, service, action, resource, unit = key
                requests.append(
                    MeteredRequests(
                        caller, service, action, resource, unit, calls - before_calls, quantity - before_quantity
                    )
                )
        invocations = [
            r for r in self.pipeline.stack.runner.invocations() if r.request_id in end.invocations - start.invocations
        ]
        for function, usage in end.billing.items():
            counted = sum(1 for r in invocations if r.function == function)
            if counted != usage.invocations - start.billing[function].invocations:
                raise RuntimeError(f"{function}: the runner's history lost invocations (raise its history_size)")
        return requests, invocations

    def _upload_and_wait(self, uploads: list[tuple[str, bytes, str]]) -> dict[str, Any]:
        return upload_and_wait(self.pipeline, uploads, settle_timeout_s=SETTLE_TIMEOUT_S, metadata=self.metadata)

    # -- the phases -----------------------------------------------------------------------------------------------

    def warm_up(self, image: bytes, concurrency: int) -> dict[str, float]:
        """The page read once as PDF page and as image (the emulator's cache), and the upload function's
        instances started by as many uploads at once as the stack runs; returns each function's first
        initialization, in ms (this machine's)."""
        self.log("    warm-up")
        self._upload_and_wait(
            [
                ("warm-up/distinct.pdf", text_pdf(1), "application/pdf"),
                *[(f"warm-up/image-{n}.png", image, "image/png") for n in range(concurrency)],
            ]
        )
        return {
            function: float(stats.cold_start_ms[0])
            for function, stats in self.pipeline.stack.runner.stats().items()
            if stats.cold_start_ms
        }

    def idle_profiles(self) -> dict[str, RunProfile]:
        """Each scheduled function's runs while there is nothing to do."""
        self.log(f"    idle runs ({IDLE_WINDOW_S:g} s)")
        start = self._mark()
        time.sleep(IDLE_WINDOW_S)
        requests, invocations = self._since(start, self._mark())
        busy = [r for r in invocations if r.function in SCHEDULED and run_kind(r.payload) != "idle"]
        if busy:
            raise RuntimeError(f"a scheduled run found work in the quiet window: {busy[0].payload}")
        return {function: _profile(function, requests, invocations) for function in SCHEDULED}

    def waiting_profile(self, image: bytes) -> RunProfile:
        """Collect runs that poll one open batch the vendor has not finished."""
        self.log(f"    polls of an open batch ({WAITING_WINDOW_S:g} s)")
        faults = self.pipeline.emulator.batch_faults
        faults.configure(completion_delay_s=WAITING_DELAY_S)
        try:
            before = frozenset(r.request_id for r in self.pipeline.stack.runner.invocations())
            self.pipeline.upload("waiting/one.png", image, content_type="image/png", metadata=self.metadata)
            self._first_waiting_poll(before)
            start = self._mark()
            time.sleep(WAITING_WINDOW_S)
            end = self._mark()
            requests, invocations = self._since(start, end)
        finally:
            faults.configure(completion_delay_s=COMPLETION_DELAY_S)
        polls = [r for r in invocations if r.function == COLLECT]
        if not polls or any(run_kind(r.payload) != "waiting" for r in polls):
            raise RuntimeError(f"the open batch's window holds other collect runs: {[r.payload for r in polls]}")
        self.pipeline.wait_for_documents({"waiting/one.png"}, TIMEOUT_S)
        self.pipeline.stack.wait_until_idle(timeout=SETTLE_TIMEOUT_S)
        return _profile(COLLECT, requests, invocations)

    def _first_waiting_poll(self, before: frozenset[str]) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(
                r.function == COLLECT and r.request_id not in before and run_kind(r.payload) == "waiting"
                for r in self.pipeline.stack.runner.invocations()
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("no collect run found the batch open")

    def measure(
        self, prefix: str, uploads: list[tuple[str, bytes, str]], idle: dict[str, RunProfile], waiting: RunProfile
    ) -> dict[str, Any]:
        keys = {prefix + key for key, _, _ in uploads}
        start = self._mark()
        started = time.monotonic()
        final = self._upload_and_wait([(prefix + key, body, kind) for key, body, kind in uploads])
        elapsed = time.monotonic() - started
        metered, invocations = self._since(start, self._mark())
        kinds = {function: {"working": 0, "idle": 0, "waiting": 0} for function in SCHEDULED}
        billed: dict[str, BilledUsage] = {}
        for result in invocations:
            if result.function in SCHEDULED:
                kind = run_kind(result.payload)
                kinds[result.function][kind] += 1
                if kind != "working":
                    continue
            billed[result.function] = billed.get(result.function, BilledUsage()).plus(result)
        functions = [
            FunctionUsage(function, memory_mb, architecture, usage.invocations, usage.billed_ms)
            for function, (memory_mb, architecture) in self.functions.items()
            if (usage := billed.get(function))
        ]
        counted = self._working_requests(metered, kinds, idle, waiting)
        pages = sum(int(final[key].data["page_count"]) for key in keys)
        usage_events = [
            e
            for e in self.pipeline.recorder.envelopes
            if e.event_type == "usage.recorded" and (e.data.get("source") or {}).get("key") in keys
        ]
        pricing = sorted({str(e.data.get("pricing")) for e in usage_events})
        if pricing != ["batch"]:
            self.warnings.append(f"{prefix}: usage events priced {pricing}, not only batch")
        items = lambda_items(functions, self.prices) + request_items(counted, self.prices)
        row = cost_row(
            items,
            functions,
            counted,
            pages=pages,
            qwen_usd=qwen_usd(self.pipeline.recorder.envelopes, keys),
            elapsed_s=elapsed,
            empty_receives=sum(
                r.calls
                for r in metered
                if r.action == "ReceiveMessage (empty)" and r.caller not in (ADMIN_CALLER, *SCHEDULED)
            ),
        )
        row["scheduled_runs"] = kinds
        row["qwen_pricing"] = pricing
        row["qwen_usd_per_page_realtime"] = float(_realtime_usd(usage_events) / pages)
        return row

    def _working_requests(
        self,
        metered: list[MeteredRequests],
        kinds: dict[str, dict[str, int]],
        idle: dict[str, RunProfile],
        waiting: RunProfile,
    ) -> list[Metered]:
        """The requests of the working runs and of the other functions, and the upload's own PutObject.

        The other functions' empty receives are their SQS pollers' (they follow the clock, as in cost.py);
        the scheduled functions' own requests are taken less their idle and waiting runs'."""
        input_bucket = self.pipeline.input_bucket
        counted: list[Metered] = []
        for r in metered:
            if r.caller == ADMIN_CALLER:
                if (r.service, r.action, r.resource) == ("s3", "PutObject", input_bucket):
                    counted.append(Metered(r.service, r.action, r.unit, r.calls, r.quantity))
            elif r.caller not in SCHEDULED and r.action != "ReceiveMessage (empty)":
                counted.append(Metered(r.service, r.action, r.unit, r.calls, r.quantity))
        for function in SCHEDULED:
            own = [Metered(r.service, r.action, r.unit, r.calls, r.quantity) for r in metered if r.caller == function]
            own, short = without_runs(own, idle[function], kinds[function]["idle"])
            self.warnings += [f"{function} idle runs: {s}" for s in short]
            if function == COLLECT:
                own, short = without_runs(own, waiting, kinds[function]["waiting"])
                self.warnings += [f"{function} waiting polls: {s}" for s in short]
            counted += own
        return counted

    # -- what follows the clock -----------------------------------------------------------------------------------

    def schedules(self, idle: dict[str, RunProfile], cold_init_ms: dict[str, float]) -> dict[str, dict[str, Any]]:
        """Each schedule at its template rate: a month of idle runs, warm and (if every tick started cold)
        with a cold start's initialization added to each."""
        out: dict[str, dict[str, Any]] = {}
        for function in SCHEDULED:
            memory_mb, architecture = self.functions[function]
            profile = idle[function]
            expression = self._schedule(function)
            ticks = ticks_per_month(expression)
            items = monthly_items(profile, memory_mb, architecture, self.prices, ticks)
            init_ms = cold_init_ms.get(function, 0.0)
            cold = RunProfile(
                function, profile.runs, profile.billed_ms + round(init_ms * profile.runs), profile.requests
            )
            out[function] = {
                "schedule": expression,
                "ticks_per_month": float(ticks),
                "idle_runs_measured": profile.runs,
                "billed_ms_per_idle_run": round(profile.billed_ms / profile.runs, 1),
                "requests_per_idle_run": _requests_per_run(profile, self.prices),
                "usd_per_idle_run": float(per_run_usd(profile, memory_mb, architecture, self.prices)),
                "usd_per_month": float(total_usd(items)),
                "line_items_per_month": [item.to_dict() for item in items],
                "cold_start_init_ms": init_ms,
                "usd_per_month_every_tick_cold": float(
                    total_usd(monthly_items(cold, memory_mb, architecture, self.prices, ticks))
                ),
            }
        return out

    def waiting_poll(self, waiting: RunProfile) -> dict[str, Any]:
        memory_mb, architecture = self.functions[COLLECT]
        expression = self._schedule(COLLECT)
        per_poll = per_run_usd(waiting, memory_mb, architecture, self.prices)
        polls_per_hour = ticks_per_month(expression) / HOURS_PER_MONTH
        return {
            "polls_measured": waiting.runs,
            "billed_ms_per_poll": round(waiting.billed_ms / waiting.runs, 1),
            "requests_per_poll": _requests_per_run(waiting, self.prices),
            "usd_per_poll": float(per_poll),
            "schedule": expression,
            "usd_per_open_batch_hour": float(per_poll * polls_per_hour),
        }

    def _schedule(self, function: str) -> str:
        """The function's Schedule event's expression, as the template resolves it (its parameter's default)."""
        events = self.pipeline.stack.template.properties(function)["Events"]
        return str(next(e["Properties"]["Schedule"] for e in events.values() if e["Type"] == "Schedule"))


def _key(r: MeteredRequests) -> tuple[str, str, str, str, str]:
    return (r.caller, r.service, r.action, r.resource, r.unit)


def _profile(function: str, requests: list[MeteredRequests], invocations: list[InvocationResult]) -> RunProfile:
    """The runs of `function` among `invocations`, and the requests it signed meanwhile."""
    usage = BilledUsage()
    for result in invocations:
        if result.function == function:
            usage = usage.plus(result)
    own = tuple(Metered(r.service, r.action, r.unit, r.calls, r.quantity) for r in requests if r.caller == function)
    return RunProfile(function, usage.invocations, usage.billed_ms, own)


def _requests_per_run(profile: RunProfile, prices: PriceList) -> dict[str, float]:
    """A run's requests in billing units, by line item (as "DynamoDB Query")."""
    return {
        item.name: round(float(item.quantity) / profile.runs, 3) for item in request_items(profile.requests, prices)
    }


def _realtime_usd(usage_events: list[Any]) -> Decimal:
    """What the same pages' tokens cost in real time, at the same model and region (the price table's)."""
    price = default_price_table().price_for(MODEL, REGION)
    tokens = [(e.data["input_tokens"], e.data["output_tokens"]) for e in usage_events]
    return sum(
        (
            (Decimal(inp) * price.input_per_million + Decimal(out) * price.output_per_million) / 1_000_000
            for inp, out in tokens
        ),
        Decimal(0),
    )
