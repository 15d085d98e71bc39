"""Documents as pages: telling PDFs and TIFFs from single images, counting and preparing pages.

Sources are seekable binary files so that a page can be read without loading the document.
The imaging stack (Pillow) and PDFium are imported by the functions that need them: telling a
document's kind needs neither, and a single image's pages need no counting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from ..errors import InvalidRequest
from .model import DocumentKind

if TYPE_CHECKING:
    from ..imaging import PreparationLimits, PreparedImage
    from ..tokens import PixelBudget

SNIFF_BYTES = 16


def detect_kind(head: bytes) -> DocumentKind:
    """From the first bytes, never from the name or content type, which users get wrong."""
    if head.lstrip(b"\x00\t\n\r ").startswith(b"%PDF-"):
        return DocumentKind.PDF
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return DocumentKind.TIFF
    return DocumentKind.IMAGE


def count_pages(source: BinaryIO, kind: DocumentKind, limits: PreparationLimits) -> int:
    if kind is DocumentKind.PDF:
        from ..pdf import pdf_page_count

        return pdf_page_count(source)
    if kind is DocumentKind.TIFF:
        from ..imaging import probe_image

        return max(1, probe_image(source, limits).frame_count)
    return 1


def prepare_page(
    source: BinaryIO, kind: DocumentKind, page: int, budget: PixelBudget, limits: PreparationLimits
) -> PreparedImage:
    """Page `page` (1-based) of the document, prepared for the model."""
    if kind is DocumentKind.PDF:
        from ..pdf import prepare_pdf_page

        return prepare_pdf_page(source, page, budget, limits)
    if kind is DocumentKind.IMAGE and page != 1:
        raise InvalidRequest(f"a single image has no page {page}")
    from ..imaging import prepare_image

    return prepare_image(source, budget, limits, frame=page - 1)
