"""Documents as pages: telling PDFs and TIFFs from single images, counting and preparing pages."""

from __future__ import annotations

from ..errors import ImageError, ImageUnreadable
from ..imaging import PreparationLimits, PreparedImage, prepare_image
from ..tokens import PixelBudget
from .model import DocumentKind

_SNIFF_BYTES = 16


class DocumentUnreadable(ImageError):
    """A PDF or multi-page TIFF that cannot be opened: broken, encrypted or empty."""

    code = "document.unreadable"


class DocumentEncrypted(DocumentUnreadable):
    code = "document.encrypted"


class DocumentEmpty(DocumentUnreadable):
    code = "document.empty"


def sniff_length() -> int:
    return _SNIFF_BYTES


def detect_kind(head: bytes) -> DocumentKind:
    """From the first bytes, never from the name or content type, which users get wrong."""
    if head.lstrip(b"\x00\t\n\r ").startswith(b"%PDF-"):
        return DocumentKind.PDF
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return DocumentKind.TIFF
    return DocumentKind.IMAGE


def count_pages(data: bytes, kind: DocumentKind) -> int:
    if kind is DocumentKind.PDF:
        from .pdf import pdf_page_count

        return pdf_page_count(data)
    if kind is DocumentKind.TIFF:
        from ..imaging import probe_image

        return max(1, probe_image(data).frame_count)
    return 1


def prepare_page(
    data: bytes, kind: DocumentKind, page: int, budget: PixelBudget, limits: PreparationLimits
) -> PreparedImage:
    """Page `page` (1-based) of the document, prepared for the model."""
    if kind is DocumentKind.PDF:
        from .pdf import prepare_pdf_page

        return prepare_pdf_page(data, page, budget, limits)
    if kind is DocumentKind.TIFF:
        from ..imaging import prepare_image_frame

        return prepare_image_frame(data, page - 1, budget, limits)
    if page != 1:
        raise ImageUnreadable(f"a single image has no page {page}")
    return prepare_image(data, budget, limits)
