"""Fan-out: time and peak memory to plan and enqueue a 2,000-page PDF, against 10 pages.

The upload side runs on in-memory ports with a queue that keeps only a count, so what is
measured is the planning itself. Memory is measured two ways: tracemalloc's peak of Python
allocations in this process (warm, as a Lambda serving its second upload), and the peak resident
memory a fresh process adds (probe.py), which includes PDFium's native page tree.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from typing import Any

from .documents import blank_pdf
from .page_prep import run_probe
from .workloads import Planner

SMALL, LARGE = 10, 2000
REPEATS = 5
# "Flat": the large document may not take more than twice the small one's peak, plus 64 KiB of slack.
FLAT_FACTOR = 2.0
FLAT_SLACK_BYTES = 64 * 1024


def _python_peak(pages: int) -> tuple[float, int, int]:
    """Median seconds, and peak traced bytes, of planning a `pages`-page PDF; and the messages sent."""
    planner = Planner(blank_pdf(pages))
    planner.plan(-1)  # fills import-time and pydantic caches
    times, peaks = [], []
    for index in range(REPEATS):
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            started = time.perf_counter()
            outcome = planner.plan(index)
            times.append(time.perf_counter() - started)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        if outcome.page_count != pages:
            raise RuntimeError(f"planned {outcome.page_count} pages of {pages}")
        peaks.append(peak - before)
    return statistics.median(times), max(peaks), planner.queue.messages // (REPEATS + 1)


def measure(log: Any = print) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pages in (SMALL, LARGE):
        log(f"  planning {pages} pages")
        seconds, peak, messages = _python_peak(pages)
        rss = run_probe(f"plan-{pages}", REPEATS)
        result[str(pages)] = {
            "median_ms": round(seconds * 1000, 1),
            "python_peak_kib": round(peak / 1024, 1),
            "messages": messages,
            "process_peak_added_kib": rss["peak_added_kib"],
            "probe_median_ms": rss["median_ms"],
        }
    small, large = result[str(SMALL)], result[str(LARGE)]
    limit = small["python_peak_kib"] * FLAT_FACTOR + FLAT_SLACK_BYTES / 1024
    result["python_peak_ratio"] = round(large["python_peak_kib"] / small["python_peak_kib"], 2)
    result["flat_limit_kib"] = round(limit, 1)
    result["met"] = large["python_peak_kib"] <= limit
    return result
