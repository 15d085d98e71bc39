"""PdfRenderDpi: the lowest resolution at which vector pages read as they read drawn to the pixel budget.

Text-heavy A4 pages (10-pt body text, and 8-, 7- and 6-pt small print in sans and serif) are drawn
to the budget (PdfRenderDpi = 0, the behaviour before the resolution was chosen per page) and at
each candidate resolution, and read by the emulator's OCR engine through the pipeline's own
client. A resolution matches when every page's recognized text has the same characters as the
page's text drawn to the budget, in the same order; the spaces between words are left out of the
comparison because the engine's spacing shifts between any two drawings (exact equality is reported
too). The chosen default is the lowest resolution at which it and every higher candidate match, and when none does, the budget (a default of MAX_RENDER_DPI, which the
budget caps). The returned usage gives the tokens each resolution costs.

samples/report.pdf (a 150-dpi scan) is read before (drawn to the budget) and after (the default
settings, at its scan's resolution), with its recognized text compared the same way.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from ocr_pipeline.imaging import DEFAULT_PDF_RENDER_DPI, MAX_RENDER_DPI, PDF_RENDER_TO_BUDGET, PreparationLimits
from ocr_pipeline.pdf import pdf_page_count, prepare_pdf_page
from ocr_pipeline.tokens import PixelBudget

from .documents import small_print_pdf, text_pdf
from .recognition import EmulatorReader

CANDIDATE_DPIS = (72, 96, 120, 150, 175, 200, 250)
# (font, point size) of the small-print pages, after one page of 10-pt Helvetica body text.
SMALL_PRINT = [("Helvetica", 8.0), ("Times-Roman", 7.0), ("Helvetica", 6.0)]
SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "report.pdf"


def _read(reader: EmulatorReader, document: bytes, page: int, dpi: float, budget: PixelBudget) -> dict[str, Any]:
    prepared = prepare_pdf_page(document, page, budget, PreparationLimits(pdf_render_dpi=dpi))
    text, usage = reader.read(prepared.data, prepared.mime_type, prepared.width, prepared.height)
    return {"text": text, "image_tokens": usage.image_tokens, "input_tokens": usage.input_tokens}


def _same_ignoring_spaces(a: str, b: str) -> bool:
    # The engine's spacing between words shifts with the drawing ("grew by" / "grewby") even between
    # two fine drawings of one page, so the characters decide; exact equality is reported beside them.
    return re.sub(r"\s+", "", a) == re.sub(r"\s+", "", b)


def _similarity(a: str, b: str) -> float:
    return round(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio(), 4)


def _pages() -> list[tuple[str, bytes, int]]:
    pages = [("Helvetica 10 pt", text_pdf(1), 1)]
    small = small_print_pdf(SMALL_PRINT)
    pages += [(f"{font} {size:g} pt", small, index + 1) for index, (font, size) in enumerate(SMALL_PRINT)]
    return pages


def lowest_matching(rows: list[dict[str, Any]]) -> int | None:
    """The lowest dpi from which every higher candidate matches too (None if even the highest does not)."""
    chosen = None
    for row in sorted(rows, key=lambda r: r["dpi"], reverse=True):
        if not row["text_unchanged"]:
            break
        chosen = row["dpi"]
    return chosen


def measure(reader: EmulatorReader, log: Any = print) -> dict[str, Any]:
    budget = PixelBudget()
    pages = _pages()
    log(f"  {len(pages)} text-heavy pages drawn to the budget")
    reference = [_read(reader, document, page, PDF_RENDER_TO_BUDGET, budget) for _, document, page in pages]
    rows = []
    for dpi in CANDIDATE_DPIS:
        reads = [_read(reader, document, page, dpi, budget) for _, document, page in pages]
        matched = [read["text"] == ref["text"] for read, ref in zip(reads, reference, strict=True)]
        same = [_same_ignoring_spaces(read["text"], ref["text"]) for read, ref in zip(reads, reference, strict=True)]
        tokens = round(sum(r["image_tokens"] for r in reads) / len(reads))
        log(
            f"  at {dpi} dpi: {sum(same)}/{len(pages)} pages read unchanged ignoring spaces, {sum(matched)} exactly, "
            f"{tokens} image tokens a page"
        )
        rows.append(
            {
                "dpi": dpi,
                "pages_matched": sum(matched),
                "pages": len(pages),
                "text_unchanged_exactly": all(matched),
                "pages_matched_ignoring_spaces": sum(same),
                "text_unchanged": all(same),
                "similarity_min": min(_similarity(r["text"], f["text"]) for r, f in zip(reads, reference, strict=True)),
                "image_tokens_per_page": tokens,
                "unmatched": [name for (name, _, _), ok in zip(pages, same, strict=True) if not ok],
            }
        )
    chosen = lowest_matching(rows)
    return {
        "pages": [name for name, _, _ in pages],
        "budget_image_tokens_per_page": round(sum(r["image_tokens"] for r in reference) / len(reference)),
        "budget_lines_read": sum(len(r["text"].splitlines()) for r in reference),
        "rows": rows,
        "lowest_matching_dpi": chosen,
        "default_dpi": DEFAULT_PDF_RENDER_DPI,
        "sample": _sample(reader, budget, log),
        # No candidate reads unchanged: only the budget keeps the text, and the default must draw there.
        "met": (MAX_RENDER_DPI if chosen is None else chosen) == DEFAULT_PDF_RENDER_DPI,
    }


def _sample(reader: EmulatorReader, budget: PixelBudget, log: Any) -> dict[str, Any]:
    document = SAMPLE.read_bytes()
    count = pdf_page_count(document)
    log(f"  {SAMPLE.name}: {count} pages before and after")
    before = [_read(reader, document, page, PDF_RENDER_TO_BUDGET, budget) for page in range(1, count + 1)]
    after = [_read(reader, document, page, DEFAULT_PDF_RENDER_DPI, budget) for page in range(1, count + 1)]

    def per_page(reads: list[dict[str, Any]], key: str) -> int:
        return round(sum(r[key] for r in reads) / len(reads))

    return {
        "file": f"samples/{SAMPLE.name}",
        "pages": count,
        "before_image_tokens_per_page": per_page(before, "image_tokens"),
        "before_input_tokens_per_page": per_page(before, "input_tokens"),
        "after_image_tokens_per_page": per_page(after, "image_tokens"),
        "after_input_tokens_per_page": per_page(after, "input_tokens"),
        "text_unchanged_exactly": all(b["text"] == a["text"] for b, a in zip(before, after, strict=True)),
        "text_unchanged": all(_same_ignoring_spaces(b["text"], a["text"]) for b, a in zip(before, after, strict=True)),
    }
