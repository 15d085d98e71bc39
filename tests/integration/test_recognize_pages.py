"""`recognize` reads one page of a PDF or multi-page TIFF (`--page N`), or all of them (`--all-pages`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ocr_devkit import cli

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_recognize_reads_one_page_or_every_page_of_a_document(capsys):
    # (against the offline emulator, which `recognize` starts by default)
    assert cli.main(["recognize", str(ROOT / "samples/report.pdf"), "--page", "2", "--json"]) == cli.EXIT_OK
    page = json.loads(capsys.readouterr().out)
    assert page["page"] == 2 and "2.1" in page["text"]

    assert cli.main(["recognize", str(ROOT / "samples/fax.tiff"), "--all-pages", "--json"]) == cli.EXIT_OK
    pages = json.loads(capsys.readouterr().out)["pages"]
    assert len(pages) >= 2 and [p["page"] for p in pages] == list(range(1, len(pages) + 1))

    assert cli.main(["recognize", str(ROOT / "samples/report.pdf"), "--page", "99"]) == cli.EXIT_DOCUMENT_FAILED
    assert "there is no page 99" in capsys.readouterr().err
