"""The upload side's memory does not grow with the page count, beyond one SQS batch at a time.

Measured with tracemalloc (Python allocations); pdfium's own page-tree memory while counting
pages is native and is not seen here. tracemalloc counts every thread of its process, so the
measurement runs in a fresh interpreter, away from the threads other tests leave behind.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pypdfium2
from ocr_pipeline.pipeline.model import PAGE_QUEUE_MESSAGE, PageDispatch
from ocr_pipeline.pipeline.upload import UploadedObject

from tests.support.fakes import INPUT, Pipeline


class CountingQueue:
    """Accepts messages like SQS does: they leave the process, only their count (and any dispatch) stays."""

    def __init__(self) -> None:
        self.sent = 0
        self.pages = 0
        self.dispatches: list[PageDispatch] = []

    def send_all(self, bodies) -> None:
        for body in bodies:
            message = PAGE_QUEUE_MESSAGE.validate_json(body)
            if isinstance(message, PageDispatch):
                self.dispatches.append(message)
            else:
                self.sent += 1
                self.pages += len(message.pages)


def blank_pdf(pages: int) -> bytes:
    document = pypdfium2.PdfDocument.new()
    for _ in range(pages):
        document.new_page(595, 842)
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


def peak_bytes_to_accept(pages: int) -> tuple[int, CountingQueue]:
    p = Pipeline(page_chunk_size=4)
    queue = CountingQueue()
    p.intake.queue = queue
    p.store.put(INPUT, "docs/long.pdf", blank_pdf(pages), content_type="application/pdf")
    upload = UploadedObject(bucket=INPUT, key="docs/long.pdf")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        outcome = p.upload.accept(upload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.page_count == pages
    # The rest of the pages go out from the dispatch messages, as the page queue's consumer sends them.
    while queue.dispatches:
        dispatch = queue.dispatches.pop(0)
        p.intake.continue_dispatch(dispatch)
    return peak - before, queue


def measure_small_and_large() -> dict[str, int]:
    peak_bytes_to_accept(3)  # first use fills import-time and pydantic caches; measure warm, as Lambda runs
    small, small_queue = peak_bytes_to_accept(10)
    large, large_queue = peak_bytes_to_accept(2000)
    return {
        "small": small,
        "large": large,
        "small_pages": small_queue.pages,
        "large_pages": large_queue.pages,
        "large_messages": large_queue.sent,
    }


def test_planning_2000_pages_takes_no_more_memory_than_planning_10():
    script = "import json\nfrom tests.unit.pipeline.test_fanout_memory import measure_small_and_large as m\nprint(json.dumps(m()))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[3], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert (measured["small_pages"], measured["large_pages"]) == (10, 2000)
    assert measured["large_messages"] == 500
    # flat: the same order of magnitude, not 200 times more
    small, large = measured["small"], measured["large"]
    assert large < small * 2 + 64 * 1024, (small, large)
