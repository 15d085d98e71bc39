"""`ocr-pipeline run --mode batch`: the arguments, what the run sets up for the batch lane, its progress and
the summary's batch price. The run itself, end to end, is tests/integration/test_run_batch.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ocr_devkit import run as run_module
from ocr_devkit.cli import build_parser, main
from ocr_devkit.run import DocumentOutcome, RunOptions, RunReport, local_stack, ocr_backend, upload_metadata
from ocr_devkit.run_batch import SCHEDULE_INTERVAL_S, BatchProgressReader, batch_allowance_s
from ocr_devkit.summary import batch_figures, print_summary
from ocr_pipeline.pipeline.model import Lane

# --- arguments ------------------------------------------------------------------------------------------------


def test_run_defaults_to_the_real_time_lane() -> None:
    args = build_parser().parse_args(["run", "samples", "--out", "out"])

    assert (args.mode, args.batch_delay) == ("realtime", 3.0)


def test_run_takes_the_batch_lane_and_its_delay() -> None:
    args = build_parser().parse_args(["run", "samples", "--out", "out", "--mode", "batch", "--batch-delay", "0.5"])

    assert (args.mode, args.batch_delay) == ("batch", 0.5)


@pytest.mark.parametrize("argv", [["--mode", "bulk"], ["--batch-delay", "-1"], ["--batch-delay", "soon"]])
def test_a_bad_mode_or_delay_is_a_command_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "samples", "--out", "out", *argv])

    assert exit_info.value.code == 2


def test_run_in_batch_mode_where_the_lane_is_not_offered_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_stack(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the stack must not start")

    monkeypatch.setattr(run_module, "_run_pipeline", no_stack)

    code = main(["run", "samples", "--out", str(tmp_path), "--mode", "batch", "--ocr-region", "intl"])

    assert code == 3
    assert "error request.batch_unsupported" in capsys.readouterr().err


# --- what the run sets up -------------------------------------------------------------------------------------


def options(**fields: Any) -> RunOptions:
    return RunOptions(paths=[Path("samples")], out_dir=Path("out"), **fields)


def test_batch_uploads_carry_the_mode_and_real_time_uploads_do_not() -> None:
    assert upload_metadata(options(mode=Lane.BATCH, task="table_parsing")) == {
        "ocr-task": "table_parsing",
        "ocr-mode": "batch",
    }
    assert upload_metadata(options(task="table_parsing")) == {"ocr-task": "table_parsing"}


class FakeEmulator:
    """Records what the run asks of the emulator; serves nothing."""

    created: ClassVar[list[dict[str, Any]]] = []
    native_base = "http://127.0.0.1:9/api/v1"
    compatible_base = "http://127.0.0.1:9/compatible-mode/v1"

    def __init__(self, **kwargs: Any) -> None:
        FakeEmulator.created.append(kwargs)

    def __enter__(self) -> FakeEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def fake_emulator(monkeypatch: pytest.MonkeyPatch) -> type[FakeEmulator]:
    from ocr_devkit.emulator import server

    FakeEmulator.created = []
    monkeypatch.setattr(server, "EmulatorServer", FakeEmulator)
    return FakeEmulator


def test_the_batch_lane_points_the_stack_at_the_emulator_s_batch_api(fake_emulator: type[FakeEmulator]) -> None:
    with ocr_backend(options(mode=Lane.BATCH, batch_delay_s=1.5)) as (parameters, _, _):
        assert parameters["OcrBatchBaseUrl"] == FakeEmulator.compatible_base
        assert parameters["OcrBaseUrl"] == FakeEmulator.native_base
    assert fake_emulator.created[-1]["batch_completion_delay_s"] == 1.5


def test_the_real_time_lane_sets_nothing_of_the_batch_lane(fake_emulator: type[FakeEmulator]) -> None:
    with ocr_backend(options()) as (parameters, _, _):
        assert "OcrBatchBaseUrl" not in parameters
    assert "batch_completion_delay_s" not in fake_emulator.created[-1]


class FakeLocalStack:
    runner_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, template: Path, **kwargs: Any) -> None:
        FakeLocalStack.runner_options = dict(kwargs["runner_options"])

    def __enter__(self) -> FakeLocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(("mode", "interval"), [(Lane.BATCH, SCHEDULE_INTERVAL_S), (Lane.REALTIME, None)])
def test_only_the_batch_lane_runs_the_schedules_at_the_local_interval(
    mode: Lane, interval: float | None, fake_emulator: type[FakeEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocr_devkit.stack import local

    monkeypatch.setattr(local, "LocalStack", FakeLocalStack)

    with local_stack(options(mode=mode), log_dir=Path("logs")):
        pass

    assert FakeLocalStack.runner_options.get("schedule_interval_s") == interval


def test_the_wait_allows_for_the_schedules_and_the_batch_delay() -> None:
    assert batch_allowance_s(3.0) >= 2 * SCHEDULE_INTERVAL_S + 3.0


# --- progress -------------------------------------------------------------------------------------------------


class FakeSqs:
    def __init__(self) -> None:
        self.counts = {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {"Attributes": {name: self.counts[name] for name in AttributeNames}}


class FakeJobsTable:
    """The jobs table's partition of unfinished batches, read with Query as the reader must (never Scan)."""

    def __init__(self) -> None:
        self.unfinished: list[str] = []

    def get_paginator(self, operation: str) -> Any:
        assert operation == "query"
        return self

    def paginate(self, **request: Any) -> list[dict[str, Any]]:
        assert request["ExpressionAttributeValues"] == {":unfinished": {"S": "batches#unfinished"}}
        return [{"Items": [{"sk": {"S": key}} for key in self.unfinished]}]


def test_batch_progress_counts_pages_queued_batches_open_and_batches_done() -> None:
    sqs, table = FakeSqs(), FakeJobsTable()
    reader = BatchProgressReader(sqs, "queue-url", table, "jobs")

    # Pages wait in the batch queue, some received by the submit function
    sqs.counts = {"ApproximateNumberOfMessages": "3", "ApproximateNumberOfMessagesNotVisible": "2"}
    assert reader.read().model_dump() == {"pages_queued": 5, "batches_open": 0, "batches_done": 0}

    # Two batches are made
    sqs.counts = {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    table.unfinished = ["b1", "b2"]
    assert reader.read().model_dump() == {"pages_queued": 0, "batches_open": 2, "batches_done": 0}

    # One settles, and a retry batch opens
    table.unfinished = ["b2", "b3"]
    assert reader.read().model_dump() == {"pages_queued": 0, "batches_open": 2, "batches_done": 1}

    # All settle
    table.unfinished = []
    assert reader.read().model_dump() == {"pages_queued": 0, "batches_open": 0, "batches_done": 3}


# --- the summary ----------------------------------------------------------------------------------------------


def usage_event(page: int, pricing: str, cost: str | None, **data: Any) -> str:
    body = {
        "model": "qwen-vl-ocr",
        "region": "cn",
        "input_tokens": 1000,
        "output_tokens": 200,
        "cost": cost,
        "currency": "USD" if cost is not None else None,
        "pricing": pricing,
        "page": page,
        **data,
    }
    return json.dumps({"event_id": f"u{page}", "event_type": "usage.recorded", "data": body})


def test_the_summary_states_the_batch_price_and_what_real_time_would_have_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two pages billed at the batch price (1,200 tokens at 0.3585 per million) and one in real time
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                usage_event(1, "batch", "0.0004302"),
                usage_event(2, "batch", "0.0004302"),
                usage_event(3, "realtime", "0.0008604"),
            ]
        )
        + "\n"
    )

    figures = batch_figures(events)

    assert figures == {
        "pages_billed_batch": 2,
        "batch_cost": "0.0008604",
        "batch_cost_at_realtime_price": "0.0017208",
        "batch_currency": "USD",
    }
    report = RunReport(
        documents=[
            DocumentOutcome(
                path="a.pdf", key="a.pdf", status="completed", lane="batch", pages=2, cost="0.0008604", currency="USD"
            )
        ],
        events_file=str(events),
        event_counts={"usage.recorded": 3},
        elapsed_s=1.0,
        stats={"batch": {"pages_queued": 0, "batches_open": 0, "batches_done": 1}},
    )
    print_summary(report)
    out = capsys.readouterr().out
    assert "0.0008604 USD (batch)" in out
    assert "batch lane: 2 pages billed at the batch price, 0.0008604 USD (0.0017208 USD at the real-time price)" in out
    assert "batches done 1" in out


def test_an_unpriced_batch_page_leaves_the_sums_out_rather_than_understating_them(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(usage_event(1, "batch", "0.0004302") + "\n" + usage_event(2, "batch", None) + "\n")

    figures = batch_figures(events)

    assert figures["pages_billed_batch"] == 2
    assert figures["batch_cost"] is None and figures["batch_cost_at_realtime_price"] is None


def test_a_real_time_run_has_no_batch_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(usage_event(1, "realtime", "0.0008604") + "\n")
    report = RunReport(documents=[], events_file=str(events), event_counts={}, elapsed_s=1.0)

    print_summary(report)

    assert "batch lane" not in capsys.readouterr().out
    assert batch_figures(events)["pages_billed_batch"] == 0


def test_the_progress_display_adds_one_line_for_the_batch_lane() -> None:
    from ocr_devkit.run_batch import BatchProgress
    from ocr_devkit.summary import ProgressDisplay
    from rich.console import Console

    display = ProgressDisplay()
    display.update({"report.pdf": (1, 3)}, set())
    display.update_batches(BatchProgress(pages_queued=2, batches_open=1, batches_done=0))
    display.update_batches(BatchProgress(pages_queued=0, batches_open=0, batches_done=1))
    console = Console(width=160, record=True)
    console.print(display.progress.make_tasks_table(display.progress.tasks))
    lines = console.export_text().splitlines()

    assert len(lines) == 2
    assert lines[0].startswith("report.pdf") and "1/3 pages" in lines[0]
    assert lines[1].startswith("batch lane: 0 page(s) queued · 0 batch(es) open · 1 done")
    assert "pages" not in lines[1].removeprefix("batch lane: 0 page(s) queued")
