"""The batch lane's cost arithmetic: which scheduled runs count, what idle runs cost a month, and taking
idle runs' requests off a function's metered total."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from ocr_pipeline.pipeline.batch_collection import CollectionReport
from ocr_pipeline.pipeline.batch_submission import SubmissionReport

from benchmarks.cost_batch import monthly_items, per_run_usd, run_kind, ticks_per_month
from benchmarks.cost_pricing import Metered, RunProfile, load_prices, total_usd, without_runs
from benchmarks.report import merge_batch_lane

PRICES = load_prices()
ARM_GB_S = Decimal("0.0000133334")
LAMBDA_REQUEST = Decimal("0.0000002")
SQS_REQUEST = Decimal("0.0000004")
RRU = Decimal("0.000000125")

# What the handlers return for a run that did nothing (functions/batch_submit/app.py, batch_collect/app.py).
IDLE_SUBMIT = {key: value for key, value in vars(SubmissionReport()).items() if key != "models"}
IDLE_COLLECT = vars(CollectionReport())


def test_a_run_that_found_nothing_is_idle():
    assert run_kind(IDLE_SUBMIT) == "idle"
    assert run_kind(IDLE_COLLECT) == "idle"
    # A batch seen unfinished but not open yet (the submitter still fills it) is nothing for the collector to do
    assert run_kind({**IDLE_COLLECT, "oldest_unfinished_s": 4.2}) == "idle"


def test_a_collect_run_that_only_polled_unfinished_batches_is_waiting():
    assert run_kind({**IDLE_COLLECT, "batches_open": 1, "oldest_unfinished_s": 3.0}) == "waiting"


@pytest.mark.parametrize(
    "payload",
    [
        {**IDLE_SUBMIT, "pages_submitted": 50, "batches_opened": 1, "messages_deleted": 50},
        {**IDLE_SUBMIT, "batches_waiting": 1},  # the vendor could not be reached: the run still staged a batch
        {**IDLE_COLLECT, "batches_closed": {"completed": 1}, "pages_settled": 12},
        {**IDLE_COLLECT, "batches_open": 1, "pages_sent_again": 3},
    ],
)
def test_a_run_that_moved_pages_or_batches_is_working(payload):
    assert run_kind(payload) == "working"


@pytest.mark.parametrize("payload", [None, "Task timed out", {"errorMessage": "boom"}])
def test_a_failed_run_counts_with_the_pages_rather_than_apart(payload):
    assert run_kind(payload) == "working"


def test_rate_five_minutes_is_8760_runs_in_a_730_hour_month():
    assert ticks_per_month("rate(5 minutes)") == 8760
    assert ticks_per_month("rate(1 hour)") == 730


def test_a_cron_schedule_is_not_priced_per_month():
    with pytest.raises(ValueError, match="only rate"):
        ticks_per_month("cron(0 12 * * ? *)")


def test_a_month_of_idle_runs_is_one_runs_cost_times_the_ticks():
    # Given 4 idle runs of a 1,280 MB arm64 function, 4,000 ms billed in all, each with one empty receive
    profile = RunProfile(
        "BatchSubmitFunction",
        runs=4,
        billed_ms=4000,
        requests=(Metered("sqs", "ReceiveMessage (empty)", "request", 4, 4.0),),
    )
    # When a month at rate(5 minutes) is priced
    items = monthly_items(profile, 1280, "arm64", PRICES, Decimal(8760))
    # Then each of the 8,760 runs is billed 1 s at 1.25 GB, one invocation and one SQS request
    by_name = {item.name: item for item in items}
    assert by_name["Lambda BatchSubmitFunction (1280 MB, arm64)"].quantity == Decimal("10950")
    assert by_name["Lambda requests"].quantity == 8760
    assert by_name["SQS ReceiveMessage (empty)"].quantity == 8760
    per_run = Decimal("1.25") * ARM_GB_S + LAMBDA_REQUEST + SQS_REQUEST
    assert total_usd(items) == 8760 * per_run
    assert per_run_usd(profile, 1280, "arm64", PRICES) == per_run


def test_no_measured_run_gives_no_monthly_figure():
    with pytest.raises(ValueError, match="no BatchCollectFunction run"):
        monthly_items(RunProfile("BatchCollectFunction", 0, 0, ()), 512, "arm64", PRICES, Decimal(8760))


def test_idle_runs_requests_are_taken_off_at_their_mean_per_run():
    # Given a function's metered requests over a run in which 3 of its runs were idle (on two queues' worth of lines)
    metered = [
        Metered("dynamodb", "Query", "rru", 5, 5.0),
        Metered("sqs", "ReceiveMessage (empty)", "request", 4, 4.0),
        Metered("sqs", "ReceiveMessage", "request", 6, 6.0),
        Metered("s3", "PutObject", "s3_tier1", 2, 2.0),
    ]
    # And idle runs measured alone: 5 runs, each one Query and one empty receive
    idle = RunProfile(
        "BatchSubmitFunction",
        runs=5,
        billed_ms=5000,
        requests=(
            Metered("dynamodb", "Query", "rru", 5, 5.0),
            Metered("sqs", "ReceiveMessage (empty)", "request", 5, 5.0),
        ),
    )
    # When the 3 idle runs are taken off
    working, shortfalls = without_runs(metered, idle, 3)
    # Then what the working runs signed is left, and nothing was short
    assert {(m.service, m.action): (m.calls, m.quantity) for m in working} == {
        ("dynamodb", "Query"): (2, 2.0),
        ("sqs", "ReceiveMessage (empty)"): (1, 1.0),
        ("sqs", "ReceiveMessage"): (6, 6.0),
        ("s3", "PutObject"): (2, 2.0),
    }
    assert shortfalls == []


def test_lines_of_one_kind_are_summed_before_the_idle_runs_are_taken_off():
    # Given the same action on two resources (two tables' Query lines)
    metered = [Metered("dynamodb", "Query", "rru", 1, 1.0), Metered("dynamodb", "Query", "rru", 1, 1.0)]
    idle = RunProfile("BatchCollectFunction", 2, 20, (Metered("dynamodb", "Query", "rru", 2, 2.0),))
    working, shortfalls = without_runs(metered, idle, 1)
    assert [(m.action, m.calls, m.quantity) for m in working] == [("Query", 1, 1.0)]
    assert shortfalls == []


def test_more_idle_requests_than_counted_is_reported_not_hidden():
    # Given a run that counted fewer Queries than its idle runs alone would have made
    metered = [Metered("dynamodb", "Query", "rru", 1, 1.0)]
    idle = RunProfile("BatchCollectFunction", 1, 10, (Metered("dynamodb", "Query", "rru", 1, 1.0),))
    # When 2 idle runs are taken off
    working, shortfalls = without_runs(metered, idle, 2)
    # Then the line stays at zero (dropped), and the shortfall is named
    assert working == []
    assert shortfalls == ["dynamodb Query: 1 counted, 2 expected of those runs"]


def test_no_idle_run_leaves_the_requests_as_counted():
    metered = [Metered("sqs", "ReceiveMessage", "request", 3, 3.0)]
    idle = RunProfile("BatchSubmitFunction", 4, 4000, (Metered("sqs", "ReceiveMessage (empty)", "request", 4, 4.0),))
    assert without_runs(metered, idle, 0) == ([Metered("sqs", "ReceiveMessage", "request", 3, 3.0)], [])


def test_a_batch_lane_measured_alone_is_merged_into_the_cost_result_once():
    # Given a report assembled from separate runs, and a batch lane measured twice after it
    report: dict[str, Any] = {"results": {"cost": {"rows": []}}, "assembled_from": "fanout; cost"}
    first = {"rows": [], "measured_at": "2026-12-03 08:00 UTC", "commit": "aaa"}
    second = {"rows": [], "measured_at": "2026-12-03 09:00 UTC", "commit": "bbb"}
    # When both are merged in turn
    merge_batch_lane(report, first)
    merge_batch_lane(report, second)
    # Then the cost result holds the last, and the report says once where its figures come from
    assert report["results"]["cost"]["batch_lane"] is second
    assert report["assembled_from"].startswith("fanout; cost; and ")
    assert report["assembled_from"].count("batch-lane rows") == 1
    assert "2026-12-03 09:00 UTC on commit bbb" in report["assembled_from"]
