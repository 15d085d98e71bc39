"""`ocr-pipeline run` on the bundled samples, as `make run` runs it, in its own process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = subprocess.run(
        [sys.executable, "-m", "ocr_devkit.cli", "run", str(ROOT / "samples"), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    return result, out


def test_the_damaged_sample_fails_and_the_run_says_so_with_exit_1(sample_run):
    result, _ = sample_run
    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout)
    statuses = {d["key"]: (d["status"], d["error_code"]) for d in report["documents"]}
    assert statuses.pop("damaged/truncated-scan.png") == ("failed", "image.unreadable")
    assert {status for status, _ in statuses.values()} == {"completed"}


def test_events_jsonl_has_all_three_event_types_and_one_bill_per_page(sample_run):
    result, out = sample_run
    report = json.loads(result.stdout)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert {e["event_type"] for e in events} == {"document.completed", "document.failed", "usage.recorded"}
    assert len({e["event_id"] for e in events}) == len(events)
    pages = sum(d["pages"] for d in report["documents"] if d["status"] == "completed")
    assert sum(e["event_type"] == "usage.recorded" for e in events) == pages


@pytest.mark.parametrize(("name", "pages"), [("report.pdf.json", 3), ("fax.tiff.json", 3)])
def test_multipage_samples_come_back_whole_and_in_order(sample_run, name, pages):
    _, out = sample_run
    document = json.loads((out / "results" / name).read_text())
    assert [p["page"] for p in document["pages"]] == list(range(1, pages + 1))
    for number, page in enumerate(document["pages"], start=1):
        # each sample page prints its own number; real recognized text proves the order
        assert f"page{number}" in page["text"].replace(" ", "").lower()


# About 4 minutes on two idle cores (CPU OCR in the emulator); the mark only guards against a hang.
@pytest.mark.timeout(1500)
def test_a_200_page_pdf_comes_back_as_one_result_in_order_with_one_bill_per_page(tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype("DejaVuSans.ttf", 28)
    pages = []
    for number in range(1, 201):
        page = Image.new("L", (620, 877), 255)
        ImageDraw.Draw(page).text((60, 80), f"Page {number} of the annual report", fill=0, font=font)
        pages.append(page)
    pdf = tmp_path / "annual report.pdf"
    pages[0].save(pdf, save_all=True, append_images=pages[1:], resolution=75)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "ocr_devkit.cli", "run", str(pdf), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads((out / "results" / "annual report.pdf.json").read_text())
    assert [p["page"] for p in document["pages"]] == list(range(1, 201))
    # The CPU OCR engine misreads a digit now and then ("1l"); a misread is tolerated, a page
    # carrying another page's number (a reordering) is not.
    read = [re.search(r"page(\d+)of", p["text"].replace(" ", "").lower()) for p in document["pages"]]
    numbers = [int(m.group(1)) if m else None for m in read]
    assert all(n in (None, expected) for expected, n in enumerate(numbers, start=1)), numbers
    assert sum(n is not None for n in numbers) >= 190
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    billed = sorted(e["data"]["page"] for e in events if e["event_type"] == "usage.recorded")
    assert billed == list(range(1, 201))
    assert sum(e["event_type"] == "document.completed" for e in events) == 1
