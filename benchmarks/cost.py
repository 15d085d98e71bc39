"""The pipeline's own AWS bill per page, against the Qwen bill it exists to run.

For each configuration (named template-parameter overrides, `CONFIGURATIONS`) the local stack runs
with the emulator answering every call after a model latency L (`LATENCIES_MS`) on three inputs: a
dense text PDF, a batch of page images (each its own upload), and one page sent as a single image.
What AWS would bill is counted from the local stack, not estimated:

* Lambda: every invocation of every function, its billed duration (rounded up to 1 ms, a cold start's
  initialization included) times the function's configured MemorySize, at its Architectures' price.
* Every request the functions and Lambda's SQS pollers sign (`ocr_devkit.stack.metering`), in AWS's
  billing units, plus the upload's own PutObject (the bucket owner pays it).
* Qwen: the cost the pipeline's `usage.recorded` events report, page by page.

A receive that found the queue empty is left out of the per-page figure and reported apart: how many
there are follows the clock, not the pages (locally a poll waits 1 s, on AWS up to 20 s).

The PDF repeats one dense A4 page and the images are that page drawn at 150 dpi, so the emulator's OCR
engine answers from its cache (a warm-up at L = 0 reads the page once, as PDF page and as image),
and the warm-up also starts every function's workers, so no cold start falls in a measured run.
Durations are this machine's: its CPU (shared with other work), not the share of a core Lambda gives
a function of that memory size; at L = 8 s the model's wait dominates them.

The batch lane's rows (cost_batch.py) run the same PDF and images after the configurations; alone, into
the existing report: `python -m benchmarks.cost --batch-lane`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
from ocr_devkit.run import TEMPLATE, RunOptions, local_pipeline
from ocr_devkit.stack.cfn import load_template
from ocr_devkit.stack.metering import ADMIN_CALLER

from . import machine
from .cost_batch import Input, measure_batch_lane, upload_and_wait
from .cost_pricing import (
    FunctionUsage,
    Metered,
    PriceList,
    cost_row,
    deployed_functions,
    lambda_items,
    load_prices,
    qwen_usd,
    request_items,
    total_usd,
)
from .documents import text_pdf
from .report import merge_batch_lane, render_markdown

# Each row: a name and the template parameters it overrides ("as deployed" keeps every default).
# Each lever that is a template parameter is one row; the template's defaults are the first. The
# stack-wide limit is the template's default (32 calls in flight) where the row's calls per instance
# allow it, so those rows differ only in how the calls are spread over instances, or in what a page
# costs Qwen; 32 calls per instance need two instances' worth (64).
# The run's own RunOptions would set the limits otherwise, so every row names both.
_TEMPLATE_PARAMETERS = load_template(TEMPLATE).parameters
DEPLOYED_LIMITS = {
    name: str(_TEMPLATE_PARAMETERS[name]["Default"]) for name in ("OcrMaxConcurrency", "OcrCallsPerInstance")
}
CONFIGURATIONS: list[tuple[str, dict[str, str]]] = [
    ("as deployed", DEPLOYED_LIMITS),
    ("one call per instance", {**DEPLOYED_LIMITS, "OcrCallsPerInstance": "1"}),
    ("PDF pages drawn to the budget", {**DEPLOYED_LIMITS, "PdfRenderDpi": "0"}),
    ("32 calls per instance", {"OcrMaxConcurrency": "64", "OcrCallsPerInstance": "32"}),
]
# Architecture and memory are not parameters: each row is priced again as the functions were before
# (x86_64, RecognizeFunction at 1,536 MB), on the same measured durations (the local stack does not
# slow a function down by its memory size, so only the price differs).
BEFORE_ARCHITECTURE = "x86_64"
BEFORE_MEMORY_MB = {"RecognizeFunction": 1536}
LATENCIES_MS = (2000, 8000)
PDF_PAGES = 50
IMAGES = 12
# One distinct dense page, repeated: the emulator's CPU OCR engine reads it once (minutes on a loaded machine)
# and answers from its cache after that. What AWS bills per page does not depend on what the page says.
DISTINCT_PAGES = 1
IMAGE_DPI = 150
CONCURRENCY = 4
GOAL_RATIO = 0.05
GOAL_LATENCY_MS = 8000
SETTLE_TIMEOUT_S = 400.0
NOT_COUNTED = [
    "CloudWatch Logs ingestion and storage (each function's log lines; Lambda's REPORT lines)",
    "CloudWatch metrics (Powertools' embedded-metric-format metrics) and alarms",
    "X-Ray traces (Tracing: Active)",
    "KMS requests (the topic's and queues' encryption keys: SNS and SQS ask KMS for data keys)",
    "data transfer (none inside one region; to DashScope over the internet)",
    "S3 and DynamoDB storage (per GB-month, not per page), and S3 lifecycle transitions",
    "the free tiers (every figure is at the list price)",
    "SQS receives that found the queue empty (reported apart: they follow the clock, not the pages)",
]

Log = Callable[[str], None]


def page_images(pages: int, dpi: int = IMAGE_DPI) -> list[bytes]:
    """PNG images of the text PDF's pages at `dpi`, as a scanner would deliver them."""
    document = pdfium.PdfDocument(text_pdf(pages))
    images: list[bytes] = []
    try:
        for page in document:
            bitmap = page.render(scale=dpi / 72, grayscale=True)
            buffer = io.BytesIO()
            bitmap.to_pil().save(buffer, "PNG")
            images.append(buffer.getvalue())
            page.close()
    finally:
        document.close()
    return images


def cost_inputs(document: bytes, images: list[bytes]) -> list[Input]:
    """The PDF as one upload, IMAGES page images each its own, and one page image alone."""
    return [
        ("pdf", f"{PDF_PAGES}-page text PDF", [("doc.pdf", document, "application/pdf")]),
        (
            "images",
            f"{IMAGES} page images (PNG, {IMAGE_DPI} dpi)",
            [(f"img-{i:02d}.png", images[i % DISTINCT_PAGES], "image/png") for i in range(IMAGES)],
        ),
        ("single", "1 page image (PNG)", [("single.png", images[0], "image/png")]),
    ]


def measure(*, configurations: list[tuple[str, dict[str, str]]] | None = None, log: Log = print) -> dict[str, Any]:
    prices = load_prices()
    images = page_images(DISTINCT_PAGES)
    document = text_pdf(PDF_PAGES, distinct=DISTINCT_PAGES)
    rows: list[dict[str, Any]] = []
    idle: dict[str, Any] = {}
    failures: list[dict[str, Any]] = []
    for name, overrides in configurations or CONFIGURATIONS:
        log(f"  configuration {name!r}: {overrides or 'template defaults'}")
        try:
            with tempfile.TemporaryDirectory(prefix="ocr-bench-cost-") as scratch:
                options = RunOptions(paths=[], out_dir=Path(scratch), max_concurrency=CONCURRENCY)
                with local_pipeline(options, log_dir=Path(scratch) / "logs", extra_parameters=overrides) as pipeline:
                    run = _ConfiguredRun(pipeline, prices, log)
                    run.warm_up(images)
                    for latency_ms in LATENCIES_MS:
                        pipeline.emulator.faults.latency_ms = latency_ms
                        for kind, label, uploads in cost_inputs(document, images):
                            prefix = f"cost/{len(rows)}/"
                            log(f"    L = {latency_ms} ms: {label}")
                            row = run.measure(prefix, uploads)
                            row.update(
                                configuration=name, overrides=overrides, latency_ms=latency_ms, input=kind, label=label
                            )
                            rows.append(row)
                    idle[name] = run.idle_receives_per_minute
        except Exception as exc:  # one configuration that does not settle must not hide the others
            log(f"    failed: {type(exc).__name__}: {exc}")
            failures.append({"configuration": name, "overrides": overrides, "error": f"{type(exc).__name__}: {exc}"})
    batch_lane = _batch_lane(document, images, prices, log)
    # The goal is the template's defaults' (the first configuration); the other rows show each lever.
    deployed = (configurations or CONFIGURATIONS)[0][0]
    goal_rows = [
        r for r in rows if r["configuration"] == deployed and r["input"] == "pdf" and r["latency_ms"] == GOAL_LATENCY_MS
    ]
    return {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "prices": {
            "date_read": prices.date_read,
            "note": prices.note,
            "sources": prices.sources,
            "region": "us-east-1",
        },
        "latencies_ms": list(LATENCIES_MS),
        "concurrency": CONCURRENCY,
        "rows": rows,
        "idle_empty_receives_per_minute": idle,
        "failed_configurations": failures,
        "batch_lane": batch_lane,
        "not_counted": NOT_COUNTED,
        "goal_ratio": GOAL_RATIO,
        "goal_latency_ms": GOAL_LATENCY_MS,
        "met": bool(goal_rows) and all(r["ratio"] is not None and r["ratio"] <= GOAL_RATIO for r in goal_rows),
    }


def _batch_lane(document: bytes, images: list[bytes], prices: PriceList, log: Log) -> dict[str, Any]:
    """The batch lane's rows (cost_batch.py), on the real-time rows' PDF and images."""
    try:
        inputs = [entry for entry in cost_inputs(document, images) if entry[0] in ("pdf", "images")]
        return measure_batch_lane(inputs, images[0], prices, concurrency=CONCURRENCY, log=log)
    except Exception as exc:  # the real-time rows stand without it
        log(f"    batch lane failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


class _ConfiguredRun:
    """One configuration's running stack: warms it up, then measures one input at a time."""

    def __init__(self, pipeline: Any, prices: PriceList, log: Log) -> None:
        self.pipeline = pipeline
        self.prices = prices
        self.log = log
        self.functions = deployed_functions(pipeline.stack)
        self.idle_receives_per_minute: float | None = None

    def _upload_and_wait(self, uploads: list[tuple[str, bytes, str]]) -> dict[str, Any]:
        # A record that found a claim held by a sibling comes back when the claim's lease ends
        # (settings.claim_lease_s, 120 s and more) and then has nothing left to do; its invocation is billed
        # like any other, so the stack is waited on that long.
        return upload_and_wait(self.pipeline, uploads, settle_timeout_s=SETTLE_TIMEOUT_S)

    def warm_up(self, images: list[bytes]) -> None:
        """Each distinct page read once at L = 0 (the emulator's cache), one at a time; then every function's
        workers started with as many uploads at once as the stack runs in parallel."""
        self.pipeline.emulator.faults.latency_ms = 0
        self.log("    warm-up at L = 0")
        self._upload_and_wait([("warm-up/distinct.pdf", text_pdf(DISTINCT_PAGES), "application/pdf")])
        for number, image in enumerate(images):
            self._upload_and_wait([(f"warm-up/distinct-{number}.png", image, "image/png")])
        parallel = [(f"warm-up/parallel-{n}.png", images[n % len(images)], "image/png") for n in range(CONCURRENCY)]
        self._upload_and_wait(
            [
                *parallel,
                ("warm-up/parallel.pdf", text_pdf(DISTINCT_PAGES * 4, distinct=DISTINCT_PAGES), "application/pdf"),
            ]
        )
        # The pollers' empty receives while nothing happens: what a quiet stack pays for by the minute.
        meter = self.pipeline.stack.meter
        meter.reset()
        started = time.monotonic()
        time.sleep(10.0)
        empty = sum(
            r.calls for r in meter.snapshot() if r.action == "ReceiveMessage (empty)" and r.caller != ADMIN_CALLER
        )
        self.idle_receives_per_minute = round(empty * 60 / (time.monotonic() - started), 1)

    def measure(self, prefix: str, uploads: list[tuple[str, bytes, str]]) -> dict[str, Any]:
        stack = self.pipeline.stack
        keys = {prefix + key for key, _, _ in uploads}
        billed_before = stack.runner.billing()
        stack.meter.reset()
        started = time.monotonic()
        final = self._upload_and_wait([(prefix + key, body, kind) for key, body, kind in uploads])
        elapsed = time.monotonic() - started
        metered = stack.meter.snapshot()
        billed_after = stack.runner.billing()
        functions = [
            FunctionUsage(
                logical_id,
                memory_mb,
                architecture,
                billed_after[logical_id].invocations - billed_before[logical_id].invocations,
                billed_after[logical_id].billed_ms - billed_before[logical_id].billed_ms,
            )
            for logical_id, (memory_mb, architecture) in self.functions.items()
        ]
        input_bucket = self.pipeline.input_bucket
        counted = [
            Metered(r.service, r.action, r.unit, r.calls, r.quantity)
            for r in metered
            if r.action != "ReceiveMessage (empty)"
            and (r.caller != ADMIN_CALLER or (r.service, r.action, r.resource) == ("s3", "PutObject", input_bucket))
        ]
        empty_receives = sum(
            r.calls for r in metered if r.action == "ReceiveMessage (empty)" and r.caller != ADMIN_CALLER
        )
        pages = sum(int(final[key].data["page_count"]) for key in keys)
        qwen = qwen_usd(self.pipeline.recorder.envelopes, keys)
        items = lambda_items(functions, self.prices) + request_items(counted, self.prices)
        row = cost_row(
            items, functions, counted, pages=pages, qwen_usd=qwen, elapsed_s=elapsed, empty_receives=empty_receives
        )
        before = [
            replace(f, architecture=BEFORE_ARCHITECTURE, memory_mb=BEFORE_MEMORY_MB.get(f.function, f.memory_mb))
            for f in functions
        ]
        aws_before = total_usd(lambda_items(before, self.prices) + request_items(counted, self.prices))
        row["aws_usd_per_page_x86_64_1536"] = float(aws_before / pages)
        return row


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.cost --batch-lane`: measure only the batch lane's rows and put them into the
    existing benchmarks/report.json and BENCHMARKS.md, the real-time rows kept as they were measured."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost")
    parser.add_argument("--batch-lane", action="store_true", required=True, help="measure the batch lane only")
    parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    report_path, markdown_path = root / "benchmarks" / "report.json", root / "BENCHMARKS.md"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    if "error" in report["results"].get("cost", {"error": "absent"}):
        parser.error("benchmarks/report.json has no cost result to add the batch lane to: run the cost benchmark")
    started = time.monotonic()
    log = _stderr
    batch_lane = _batch_lane(
        text_pdf(PDF_PAGES, distinct=DISTINCT_PAGES), page_images(DISTINCT_PAGES), load_prices(), log
    )
    batch_lane["seconds"] = round(time.monotonic() - started, 1)
    batch_lane["commit"] = machine.describe(root)["commit"]
    merge_batch_lane(report, batch_lane)
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(render_markdown(report), encoding="utf-8")
    log(f"wrote {report_path.relative_to(root)} and {markdown_path.relative_to(root)}")
    return 1 if "error" in batch_lane else 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
