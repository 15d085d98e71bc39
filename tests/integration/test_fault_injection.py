"""`ocr-pipeline run --fault-rate 0.3 --duplicate-rate 0.3 --kill-rate 0.15` on a mixed corpus: nothing lost,
nothing billed twice, and the bill the same as without faults.

The emulator fails 30 % of the OCR calls (429, 500, hung connections, malformed JSON), the runner
delivers 30 % of the messages twice and kills 15 % of the workers mid-invocation. Every document must
still end, completed or failed, once, with one billing event per recognized page, and every page billed
the tokens a fault-free run bills it.

A worker killed between publishing an event and recording that it did publishes it again on
redelivery: the same event, with the same id (only `occurred_at` may differ). SNS delivers at least
once anyway, so consumers drop repeats by id (docs/events.md); the run reports them as
`repeated_event_ids`, and the checks below count events by id.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RATE = "0.3"
# Any seed works; this one spreads the first ten calls' faults over all four kinds.
SEED = "23"
KILL_RATE = "0.15"
FAULT_KINDS = {"throttle", "server_error", "hang", "malformed"}


def _text_page(text: str, size: tuple[int, int]) -> Image.Image:
    page = Image.new("L", size, 255)
    font = ImageFont.truetype("DejaVuSans.ttf", 28)
    ImageDraw.Draw(page).text((40, 60), text, fill=0, font=font)
    return page


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _pdf(title: str, pages: int) -> bytes:
    images = [_text_page(f"{title} page {n} of {pages}", (620, 877)) for n in range(1, pages + 1)]
    return _encoded(images[0], "PDF", save_all=True, append_images=images[1:], resolution=75)


def mixed_corpus(folder: Path) -> dict[str, int]:
    """Images, multi-page PDFs and corrupt files; returns each file's page count (1 for broken ones)."""
    rng = random.Random(7)
    files = {
        "receipt.png": _encoded(_text_page("Receipt 4711 total 12.50 EUR", (640, 200)), "PNG"),
        "letter.jpg": _encoded(_text_page("Dear customer, thank you", (640, 240)).convert("RGB"), "JPEG"),
        "label.png": _encoded(_text_page("Parcel label 0815", (520, 160)), "PNG"),
        "annual report.pdf": _pdf("Annual report", 4),
        "contract.pdf": _pdf("Contract", 3),
        "truncated scan.png": _encoded(_text_page("cut off", (640, 400)), "PNG")[:700],
        "noise.pdf": rng.randbytes(4096),
        "fake header.pdf": b"%PDF-1.7\n" + rng.randbytes(4096),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {"annual report.pdf": 4, "contract.pdf": 3}


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    multipage = mixed_corpus(corpus)
    out = tmp_path_factory.mktemp("fault-run")
    command = [sys.executable, "-m", "ocr_devkit.cli", "run", str(corpus), "--out", str(out), "--json"]
    command += ["--fault-rate", RATE, "--duplicate-rate", RATE, "--kill-rate", KILL_RATE, "--seed", SEED]
    # (a worker killed inside its idempotency record holds its page until its own timeout, 300 s; the
    # kill dice can land on the same page's next invocation too, so the run allows for two in a row)
    report, events = run([*command, "--timeout", "1200"], out)
    calm = tmp_path_factory.mktemp("fault-free-run")
    _calm_report, calm_events = run(
        [sys.executable, "-m", "ocr_devkit.cli", "run", str(corpus), "--out", str(calm), "--json"], calm
    )
    return report, events, multipage, calm_events


def run(command: list[str], out: Path) -> tuple[dict, list[dict]]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return json.loads(result.stdout), events


def distinct_events(events: list[dict]) -> list[dict]:
    """Each event once, by id; an event published again must be the same event (its time aside)."""
    first: dict[str, dict] = {}
    for event in events:
        seen = first.setdefault(event["event_id"], event)
        assert {**seen, "occurred_at": None} == {**event, "occurred_at": None}, event["event_id"]
    return list(first.values())


def billed(events: list[dict]) -> dict[tuple[str, int], tuple[int, int, str]]:
    """Each billed page's tokens and cost, by source key and page (job ids differ between runs)."""
    return {
        (e["data"]["source"]["key"], e["data"]["page"]): (
            e["data"]["input_tokens"],
            e["data"]["output_tokens"],
            e["data"]["cost"],
        )
        for e in events
        if e["event_type"] == "usage.recorded"
    }


@pytest.mark.timeout(2400)
def test_under_faults_and_duplicates_every_page_is_billed_once_and_every_document_ends(fault_run, capsys):
    # Given a mixed corpus run with 30 % faulty OCR calls and 30 % duplicated deliveries
    report, events, multipage, calm_events = fault_run
    figures = report["figures"]
    with capsys.disabled():
        print("\nfault-injection run (--fault-rate 0.3 --duplicate-rate 0.3 --kill-rate 0.15):", json.dumps(figures))

    # Then faults really were injected, of every kind, and messages really were delivered twice
    assert figures["faults_injected"] > 0
    assert {kind for kind, count in figures["faults_by_kind"].items() if count} == FAULT_KINDS
    assert figures["retries"] > 0
    assert figures["duplicates_delivered"] > 0
    assert figures["duplicates_dropped"] > 0
    assert figures["workers_killed"] > 0

    # And every document ended, completed or failed, exactly once
    statuses = {d["key"]: d["status"] for d in report["documents"]}
    assert set(statuses.values()) <= {"completed", "failed"}, statuses
    unique = distinct_events(events)
    finals = Counter(e["data"]["job_id"] for e in unique if e["event_type"].startswith("document."))
    assert set(finals.values()) == {1}
    assert figures["completed"] + figures["failed"] == figures["documents"] == 8

    # And the broken files failed with their stable codes, the good ones came back whole
    codes = {d["key"]: d["error_code"] for d in report["documents"] if d["status"] == "failed"}
    assert codes == {
        "truncated scan.png": "image.unreadable",
        "noise.pdf": "image.unsupported_format",
        "fake header.pdf": "document.unreadable",
    }
    pages = {d["key"]: d["pages"] for d in report["documents"] if d["status"] == "completed"}
    assert pages == {"receipt.png": 1, "letter.jpg": 1, "label.png": 1, **multipage}

    # And one billing event (by id) per recognized page, for distinct pages; any repeat is reported
    usage = [(e["data"]["job_id"], e["data"]["page"]) for e in unique if e["event_type"] == "usage.recorded"]
    recognized = sum(d["pages"] - len(d["pages_failed"]) for d in report["documents"] if d["status"] == "completed")
    assert len(usage) == len(set(usage)) == recognized == figures["pages_recognized"]
    assert figures["repeated_event_ids"] == len(events) - len(unique)
    assert figures["billing_events"] == sum(e["event_type"] == "usage.recorded" for e in events)

    # And the bill is the fault-free run's, page for page
    assert billed(events) == billed(calm_events)
