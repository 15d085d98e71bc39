"""Pipeline throughput: a 200-page PDF through the local stack, against the ideal C / L pages per second.

The emulator answers every call after a fixed latency L and the stack keeps at most C calls in
flight (the template's OcrMaxConcurrency, over OcrMaxConcurrency / OcrCallsPerInstance instances), so
no pipeline can do better than C / L pages per second; what the pipeline adds per page (drawing and encoding the
page, reading and writing S3, DynamoDB and SNS) shows as the shortfall.

The PDF repeats a few distinct text-heavy A4 pages, and a warm-up document with the same pages
goes first: the emulator's CPU OCR engine (about a second per A4 page here, behind one lock)
then answers from its cache, so the emulator is not what is measured. Every page is still drawn,
encoded, sent, stored, recorded and billed, and the warm-up also starts the function workers,
so cold starts are not in the figure either (they have a measurement of their own).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ocr_devkit.run import TEMPLATE, RunOptions, calls_fitting, local_pipeline
from ocr_devkit.stack.cfn import load_template
from ocr_pipeline.pdf import pdf_page_count

from .documents import text_pdf

PAGES = 200
DISTINCT_PAGES = 4
LATENCY_MS = 1000
CONCURRENCY = 4
GOAL_SHARE_OF_IDEAL = 0.8
TIMEOUT_S = 900.0


def measure(
    *, pages: int = PAGES, latency_ms: int = LATENCY_MS, concurrency: int = CONCURRENCY, log: Any = print
) -> dict[str, Any]:
    chunk = int(load_template(TEMPLATE).parameters["PageChunkSize"]["Default"])
    document = text_pdf(pages, distinct=DISTINCT_PAGES)
    # First the distinct pages alone, one at a time: concurrent misses of the emulator's cache would
    # each run its engine. Then one batch per worker, so every worker has started before the measured run.
    warm_ups = [text_pdf(DISTINCT_PAGES), text_pdf(chunk * concurrency, distinct=DISTINCT_PAGES)]
    with tempfile.TemporaryDirectory(prefix="ocr-bench-") as scratch:
        options = RunOptions(
            paths=[], out_dir=Path(scratch), emulator_latency_ms=latency_ms, max_concurrency=concurrency
        )
        with local_pipeline(options, log_dir=Path(scratch) / "logs") as pipeline:
            for number, warm_up in enumerate(warm_ups, start=1):
                log(f"  warm-up {number}: {pdf_page_count(warm_up)} pages")
                _run_document(pipeline, f"bench/warm-up-{number}.pdf", warm_up)
            runner = pipeline.stack.runner
            before = len(runner.invocations("RecognizeFunction"))
            requests_before = pipeline.emulator.stats.get("successes", 0)
            log(f"  measured run: {pages} pages, L = {latency_ms} ms, C = {concurrency}")
            elapsed, completed = _run_document(pipeline, "bench/throughput.pdf", document)
            invocations = runner.invocations("RecognizeFunction")[before:]
            emulator_calls = pipeline.emulator.stats.get("successes", 0) - requests_before
            billed = sum(
                1
                for envelope in pipeline.recorder.envelopes
                if envelope.event_type == "usage.recorded"
                and envelope.data.get("source", {}).get("key") == "bench/throughput.pdf"
            )
    pages_per_s = pages / elapsed
    ideal = concurrency / (latency_ms / 1000)
    # How long a page held one of its instance's call slots: an invocation's time, times the calls it had
    # in flight, over the pages it carried (one message of `chunk` pages per call slot at most).
    calls = calls_fitting(concurrency)
    durations = [
        i.duration_ms * calls / pages_in(i.event) for i in invocations if i.ok and not i.duplicate and pages_in(i.event)
    ]
    per_page_ms = statistics.median(durations) if durations else None
    return {
        "pages": pages,
        "distinct_pages": DISTINCT_PAGES,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "page_chunk_size": chunk,
        "elapsed_s": round(elapsed, 2),
        "pages_per_s": round(pages_per_s, 3),
        "ideal_pages_per_s": round(ideal, 3),
        "share_of_ideal": round(pages_per_s / ideal, 3),
        "goal_share_of_ideal": GOAL_SHARE_OF_IDEAL,
        "met": pages_per_s / ideal >= GOAL_SHARE_OF_IDEAL and completed,
        "completed": completed,
        "usage_events": billed,
        "emulator_successes": emulator_calls,
        "recognize_invocations": len(invocations),
        "cold_starts_in_run": sum(1 for i in invocations if i.cold_start),
        "median_page_ms": round(per_page_ms, 1) if per_page_ms is not None else None,
        "median_overhead_per_page_ms": round(per_page_ms - latency_ms, 1) if per_page_ms is not None else None,
    }


def pages_in(event: Any) -> int:
    """Pages of the page messages an SQS event carried (0 for anything else)."""
    records = (event or {}).get("Records") or [] if isinstance(event, dict) else []
    return sum(len(json.loads(record.get("body") or "{}").get("pages") or []) for record in records)


def _run_document(pipeline: Any, key: str, body: bytes) -> tuple[float, bool]:
    """Seconds from the upload to its document.completed, and whether every page completed."""
    started = time.monotonic()
    pipeline.upload(key, body, content_type="application/pdf")
    final = pipeline.wait_for_documents({key}, TIMEOUT_S)
    elapsed = time.monotonic() - started
    envelope = final.get(key)
    if envelope is None or envelope.event_type != "document.completed":
        raise RuntimeError(f"{key} did not complete within {TIMEOUT_S:.0f} s: {envelope}")
    return elapsed, not envelope.data.get("pages_failed")
