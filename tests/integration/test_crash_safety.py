"""A Recognize worker killed between paying for a page and recording it: the page is neither lost nor billed twice.

The local runner's worker process really dies (`os._exit`) right after the page result reached S3 and
before the page is recorded in DynamoDB, once. The runner sees the environment exit, the message comes
back after its (local) visibility delay, and a fresh worker finishes the document.
"""

from __future__ import annotations

import io
import json
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
# Run in its own process: moto keeps one state per process, and the integration session may hold one.
RUN = """
import json, sys
from ocr_devkit.run import RunOptions, run_pipeline
from ocr_devkit.summary import report_json
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
    # Given a 3-page PDF, and a Recognize worker that dies right after the first page result is in S3
    document = tmp_path / "statement.pdf"
    three_page_pdf(document)
    marker = tmp_path / "crashed"
    options = RunOptions(
        paths=[document],
        out_dir=tmp_path / "out",
        timeout_s=180,
        function_env={
            CRASH_AFTER_PUT: r"^jobs/[^/]+/pages/",
            CRASH_MARKER: str(marker),
            # The services alone must be crash-safe. (Powertools Idempotency would also hold the
            # redelivery until the dead invocation's in-progress record expires: 300 s here.)
            "IDEMPOTENCY_TABLE": "",
        },
    )

    # When the pipeline runs it
    result = subprocess.run(
        [sys.executable, "-c", RUN, options.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    # Then the worker really died after storing a page, and its message was delivered again
    assert marker.exists()
    log = (tmp_path / "out" / "logs" / "RecognizeFunction.log").read_text()
    assert log.count(f"[devkit] {CRASH_AFTER_PUT}") == 1
    recognize = report["stats"]["functions"]["RecognizeFunction"]
    assert recognize["failures"] >= 1 and recognize["retries"] >= 1

    # And the document completed whole
    (outcome,) = report["documents"]
    assert (outcome["status"], outcome["pages"], outcome["pages_failed"]) == ("completed", PAGES, [])

    # And the emulator recognized each page once: no request repeated, none beyond the page count
    emulator = report["stats"]["emulator"]
    assert emulator["requests"]["native"] == emulator["successes"] == PAGES
    assert emulator["repeated_requests"] == 0

    # And each page was billed exactly once
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    usage = Counter(e["data"]["page"] for e in events if e["event_type"] == "usage.recorded")
    assert usage == {page: 1 for page in range(1, PAGES + 1)}
    assert len({e["event_id"] for e in events}) == len(events)
