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


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    inputs = tmp_path_factory.mktemp("batch-inputs")
    for sample in ("report.pdf", "receipt.png"):
        shutil.copy(ROOT / "samples" / sample, inputs / sample)
    out = tmp_path_factory.mktemp("batch-run")
    command = [sys.executable, "-m", "ocr_devkit.cli", "run", str(inputs), "--out", str(out), "--json"]
    command += ["--mode", "batch", "--ocr-region", "cn", "--model", "qwen-vl-ocr", "--batch-delay", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    return result, out


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
