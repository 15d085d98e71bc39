"""A Recognize worker killed between paying for a page and recording it: the page is neither lost nor billed twice.

The local runner's worker process really dies (`os._exit`) right after the page result reached S3 and
before the page is recorded in DynamoDB, once. The runner sees the environment exit, the messages come
back after their (local) visibility delay, and a fresh worker finishes the document.

Each instance keeps several calls in flight (OcrCallsPerInstance 2, OcrMaxConcurrency 4, one page per
message so that a delivery, and two instances, carry several), so the worker dies with another call
open: that call is lost and asked for again, the stored page never is.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from ocr_devkit.run import RunOptions
from ocr_devkit.stack.worker import CRASH_AFTER_PUT, CRASH_MARKER
from PIL import Image, ImageDraw, ImageFont

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PAGES = 3
CALLS_PER_INSTANCE = 2
MAX_CONCURRENCY = 4
# Run in its own process: moto keeps one state per process, and the integration session may hold one.
# The emulator's request log is written out as it stops (argv[2]).
RUN = """
import json, sys
from pathlib import Path
from ocr_devkit.emulator.server import EmulatorServer
from ocr_devkit.run import RunOptions, run_pipeline
from ocr_devkit.summary import report_json
stop = EmulatorServer.stop
def stop_and_keep_the_log(self):
    if self._httpd is not None:
        Path(sys.argv[2]).write_text(json.dumps(self.requests))
    stop(self)
EmulatorServer.stop = stop_and_keep_the_log
print(json.dumps(report_json(run_pipeline(RunOptions.model_validate_json(sys.argv[1])))))
"""


def three_page_pdf(path: Path) -> None:
    font = ImageFont.truetype("DejaVuSans.ttf", 28)
    pages = []
    for number in range(1, PAGES + 1):
        page = Image.new("L", (620, 877), 255)
        ImageDraw.Draw(page).text((60, 80), f"Statement page {number}", fill=0, font=font)
        pages.append(page)
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=pages[1:], resolution=75)
    path.write_bytes(buffer.getvalue())


@pytest.mark.timeout(300)
def test_a_worker_killed_after_storing_a_page_result_neither_loses_nor_rebills_it(tmp_path):
    # Given a 3-page PDF, instances with two calls in flight, a model that takes 1.5 s to answer, and a
    # Recognize worker that dies right after the first page result is in S3
    document = tmp_path / "statement.pdf"
    three_page_pdf(document)
    marker = tmp_path / "crashed"
    options = RunOptions(
        paths=[document],
        out_dir=tmp_path / "out",
        timeout_s=180,
        max_concurrency=MAX_CONCURRENCY,
        calls_per_instance=CALLS_PER_INSTANCE,
        emulator_latency_ms=1500,
        function_env={
            CRASH_AFTER_PUT: r"^jobs/[^/]+/pages/",
            CRASH_MARKER: str(marker),
            "PAGE_CHUNK_SIZE": "1",
            # The services alone must be crash-safe. (Powertools Idempotency would also hold the
            # redelivery until the dead invocation's in-progress record expires: 300 s here.)
            "IDEMPOTENCY_TABLE": "",
        },
    )

    # When the pipeline runs it
    result = subprocess.run(
        [sys.executable, "-c", RUN, options.model_dump_json(), str(tmp_path / "requests.json")],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    # Then the worker really died after storing a page, and its messages were delivered again
    assert marker.exists()
    log = (tmp_path / "out" / "logs" / "RecognizeFunction.log").read_text()
    assert log.count(f"[devkit] {CRASH_AFTER_PUT}") == 1
    stored_before_dying = int(re.search(r"s3 key jobs/[^/]+/pages/(\d{6})\.json", log).group(1))
    recognize = report["stats"]["functions"]["RecognizeFunction"]
    assert recognize["failures"] >= 1 and recognize["retries"] >= 1

    # And the document completed whole
    (outcome,) = report["documents"]
    assert (outcome["status"], outcome["pages"], outcome["pages_failed"]) == ("completed", PAGES, [])

    # And several calls were in flight at once, never more than OcrMaxConcurrency
    emulator = report["stats"]["emulator"]
    assert 1 < emulator["most_open_at_once"] <= MAX_CONCURRENCY

    # And each page was billed exactly once
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    usage = [e["data"] for e in events if e["event_type"] == "usage.recorded"]
    assert Counter(u["page"] for u in usage) == {page: 1 for page in range(1, PAGES + 1)}
    assert len({e["event_id"] for e in events}) == len(events)

    # And the page stored before the worker died was asked for once: its stored result was reused
    requests = json.loads((tmp_path / "requests.json").read_text())
    assert emulator["requests"]["native"] == emulator["successes"] == len(requests)
    asked = Counter(r["digest"] for r in requests)
    (billed,) = [u["request_id"] for u in usage if u["page"] == stored_before_dying]
    (stored,) = [r["digest"] for r in requests if r["request_id"] == billed]
    assert asked[stored] == 1
    # And the worker lost at most its other call in flight: no page was asked for more than twice
    assert len(asked) == PAGES
    assert emulator["repeated_requests"] == len(requests) - PAGES <= CALLS_PER_INSTANCE - 1
