"""The resolutions a PDF page may be drawn at (the template's PdfRenderDpi and its bounds)."""

from __future__ import annotations

# The finest resolution worth drawing a PDF page at: beyond it, more pixels cost tokens without
# helping recognition. At the default budget only pages under about 23 square inches (smaller
# than A6: labels, receipts, cards) reach it; on bigger ones the budget binds first.
MAX_RENDER_DPI = 600
# The resolution a PDF page of text and drawings is drawn at (the template's PdfRenderDpi): the
# lowest at which the emulator's OCR engine reads text-heavy pages, 6-pt print included, with the
# same characters as drawn to the budget (spaces between words aside, which shift between any two
# drawings); benchmarks/pdf_dpi.py measures it.
DEFAULT_PDF_RENDER_DPI = 150
# PdfRenderDpi = 0: every PDF page, scans included, is drawn to the pixel budget, as before the
# resolution was chosen per page.
PDF_RENDER_TO_BUDGET = 0
