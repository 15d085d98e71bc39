"""`ocr-pipeline run --mode batch`, end to end in its own process: upload, batch file, batch, poll, download.

Every page goes through the vendor's Batch File API (the emulator's), is billed once at the batch price,
and every document ends as it would in real time, with its lane stated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from ocr_pipeline.pricing import default_price_table

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_in_batch_mode(
    tmp_path_factory: pytest.TempPathFactory, name: str, samples: tuple[str, ...], *options: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`ocr-pipeline run --mode batch --json` on copies of some samples, with more options; its result and out/."""
    inputs = tmp_path_factory.mktemp(f"{name}-inputs")
    for sample in samples:
        shutil.copy(ROOT / "samples" / sample, inputs / sample)
    out = tmp_path_factory.mktemp(name)
    command = [sys.executable, "-m", "ocr_devkit.cli", "run", str(inputs), "--out", str(out), "--json"]
    command += ["--mode", "batch", "--ocr-region", "cn", "--model", "qwen-vl-ocr", "--batch-delay", "1", *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    return result, out


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    return run_in_batch_mode(tmp_path_factory, "batch-run", ("report.pdf", "receipt.png"))


@pytest.mark.timeout(1200)
def test_every_document_completes_through_the_batch_lane_billed_once_at_half_price(
    batch_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = batch_run
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    # Every document completed, in the batch lane
    assert {(d["key"], d["status"], d["lane"]) for d in report["documents"]} == {
        ("report.pdf", "completed", "batch"),
        ("receipt.png", "completed", "batch"),
    }
    # Each page billed once, at the batch price: half the real-time price of the same tokens
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    usage = [e["data"] for e in events if e["event_type"] == "usage.recorded"]
    pages = sum(d["pages"] for d in report["documents"])
    assert len(usage) == pages == 4
    assert len({(u["job_id"], u["page"]) for u in usage}) == pages
    assert {u["pricing"] for u in usage} == {"batch"}
    realtime = default_price_table().price_for("qwen-vl-ocr", "cn")
    for page in usage:
        at_realtime = (
            Decimal(page["input_tokens"]) * realtime.input_per_million
            + Decimal(page["output_tokens"]) * realtime.output_per_million
        ) / 1_000_000
        assert Decimal(page["cost"]) * 2 == at_realtime
    # And the run saw the batches through: none left open, none of its pages left queued
    figures = report["figures"]
    assert figures["pages_billed_batch"] == pages
    batch = report["stats"]["batch"]
    assert batch["batches_done"] >= 1
    assert (batch["batches_open"], batch["pages_queued"]) == (0, 0)
    # And the scheduled functions were invoked by the runner, on their timer
    functions = report["stats"]["functions"]
    assert functions["BatchSubmitFunction"]["invocations"] >= 1
    assert functions["BatchCollectFunction"]["invocations"] >= 1


@pytest.fixture(scope="module")
def faulty_batch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    # The first batch expires unanswered; every third line of each batch after it fails retryably; and
    # deliveries (SQS records, scheduled ticks) are repeated at random.
    faults = ("--batch-outcomes", "expired", "--batch-error-every", "3", "--duplicate-rate", "0.3", "--seed", "5")
    return run_in_batch_mode(tmp_path_factory, "faulty-batch-run", ("fax.tiff", "report.pdf", "receipt.png"), *faults)


@pytest.mark.timeout(1200)
def test_expired_batches_error_lines_and_repeated_deliveries_end_every_document_once_billed_once(
    faulty_batch_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = faulty_batch_run
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    stats = report["stats"]
    # Given faults that really happened: an expired batch, error lines, repeated deliveries
    vendor = stats["emulator"]
    assert vendor["batch"]["batches"]["expired"] == 1
    assert vendor["statuses"].get("500", 0) >= 1
    assert report["figures"]["duplicates_delivered"] > 0
    # Then every document ended once, completed
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    distinct = {e["event_id"]: e for e in events}.values()
    endings = [e["data"]["job_id"] for e in distinct if e["event_type"].startswith("document.")]
    assert sorted(endings) == sorted({d["job_id"] for d in report["documents"]})
    assert {d["status"] for d in report["documents"]} == {"completed"}
    # And each page was billed once, at the batch price, and answered by the vendor once
    usage = [e["data"] for e in distinct if e["event_type"] == "usage.recorded"]
    pages = sum(d["pages"] for d in report["documents"])
    assert len({(u["job_id"], u["page"]) for u in usage}) == len(usage) == pages
    assert {u["pricing"] for u in usage} == {"batch"}
    assert vendor["successes"] == pages
