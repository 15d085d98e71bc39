"""`run`'s summary says when a completed document is not all it seems: pages cut short or split, page warnings."""

from __future__ import annotations

from ocr_devkit.run import DocumentOutcome, RunReport, page_warnings
from ocr_devkit.summary import WARNINGS_SHOWN, print_summary


def test_page_warnings_are_read_from_the_document_result_in_page_order():
    document = {
        "pages": [
            {"page": 1, "warnings": []},
            {"page": 2, "warnings": ["image: Fax4Decode: Bad code word at line 68 of strip 0 (x 0)."]},
            {"page": 3},
        ]
    }
    assert page_warnings(document) == ["page 2: image: Fax4Decode: Bad code word at line 68 of strip 0 (x 0)."]


def outcome(key: str, **fields) -> DocumentOutcome:
    return DocumentOutcome(path=key, key=key, status="completed", pages=2, cost="0.001", currency="USD", **fields)


def test_the_summary_names_truncated_pages_and_prints_warnings(tmp_path, capsys):
    many = [f"page 1: image: message {n}" for n in range(WARNINGS_SHOWN + 2)]
    report = RunReport(
        documents=[
            outcome("clean.png"),
            outcome("fax.tif", warnings=["page 1: image: Fax4Decode: Bad code word"]),
            outcome("dense.pdf", pages_truncated=[2]),
            outcome("long.pdf", pages_split=[1]),
            outcome("noisy.tif", warnings=many, result_file="out/results/noisy.tif.json"),
        ],
        events_file=str(tmp_path / "events.jsonl"),
        event_counts={},
        elapsed_s=1.0,
    )
    print_summary(report)
    out = capsys.readouterr().out
    assert "pages [2] truncated" in out
    assert "pages [1] read in halves" in out
    assert "1 warning(s)" in out
    assert "fax.tif page 1: image: Fax4Decode: Bad code word" in out
    assert "noisy.tif: 2 more in out/results/noisy.tif.json" in out
    assert "clean.png" in out and "message 6" not in out
