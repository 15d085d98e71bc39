"""PDF pages as images for the model, drawn by PDFium once, at the size the model will use.

A page has no pixels of its own, so there is nothing to shrink: we choose the resolution its
content needs (pdf_resolution.py: a scan's own, else PdfRenderDpi), work out the size the model
would resize the page drawn at that resolution to (smart_resize, which the budget caps: about
294 dpi for A4 at the default 8,388,608 pixels) and draw it once at exactly that size. PDFium
maps a page onto whatever rectangle it is given, so the drawing fills the patch-multiple size
with no padding or cropping; horizontal and vertical scales differ by the same fraction of a
percent that smart_resize gives a raster image. The page's `render` step says which resolution
was used and why.

PDFium is not thread-safe, so every call into it holds `_PDFIUM`. A file source is read on
demand through a PDFium file-access callback (trailer, cross-reference table, the page's
objects), so a page of a big document costs about what the page costs; a failure of the file
itself is raised as the file raised it, never as a broken document.
"""

from __future__ import annotations

import ctypes
import io
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from .errors import DocumentEmpty, DocumentEncrypted, DocumentUnreadable, InvalidRequest, OcrPipelineError
from .imaging import (
    DEFAULT_LIMITS,
    MAX_RENDER_DPI,
    PreparationLimits,
    PreparationStep,
    PreparedImage,
    RenderTarget,
    is_grey,
    prepare_rendered,
    render_target,
)
from .pdf_resolution import POINTS_PER_INCH, PageContent, RenderResolution, choose_resolution, inspect_page
from .tokens import PixelBudget

PdfSource = bytes | BinaryIO

__all__ = [
    "MAX_RENDER_DPI",
    "POINTS_PER_INCH",
    "open_page",
    "pdf_page_count",
    "pdf_page_resolutions",
    "prepare_pdf_page",
    "render_plan",
]

# PDFium keeps global state and must not be entered from two threads at once.
_PDFIUM = threading.Lock()

# Annotations (stamps, highlights, filled-in form appearances) are part of what a reader sees.
# Reverse byte order makes PDFium write RGBx, which Pillow maps without a copy.
_RENDER_FLAGS = pdfium_c.FPDF_ANNOT | pdfium_c.FPDF_REVERSE_BYTE_ORDER
_RENDER_FLAGS_GREY = pdfium_c.FPDF_ANNOT | pdfium_c.FPDF_GRAYSCALE
# The color check draws the page at this fraction of its size first (1/16 of the pixels).
PREVIEW_SCALE = 4
_GREY_DETAIL = f"drawn in grey: a color drawing at 1/{PREVIEW_SCALE} scale has only grey pixels"
_WHITE = 0xFFFFFFFF

_LOAD_ERRORS = {
    pdfium_c.FPDF_ERR_FILE: "the file cannot be read",
    pdfium_c.FPDF_ERR_FORMAT: "it is not a PDF, or is too damaged to open",
    pdfium_c.FPDF_ERR_PAGE: "its page tree is damaged",
}


def pdf_page_count(source: PdfSource) -> int:
    """The number of pages, read from the document's page tree without drawing anything.

    Raises DocumentEncrypted for a password-protected PDF, DocumentEmpty for one without
    pages and DocumentUnreadable for anything PDFium cannot open, or whose last page cannot
    be loaded.
    """
    with _PDFIUM, _document(source) as (document, _):
        count = len(document)
        # PDFium takes the page tree's /Count as written: a few hundred bytes claiming 5,000
        # pages would fan out work for pages that do not exist. Loading the last one proves it.
        document[count - 1].close()
        return count


def prepare_pdf_page(
    source: PdfSource,
    page_number: int,
    budget: PixelBudget,
    limits: PreparationLimits = DEFAULT_LIMITS,
) -> PreparedImage:
    """Page `page_number` (1-based) drawn at the resolution chosen for it and encoded like any image.

    The mapping's original space is the page as displayed (after its /Rotate, within its crop
    box) in PDF points, so the model's boxes map back to positions on the page.
    """
    steps: list[PreparationStep] = []
    with open_page(source, page_number, forms=True) as (page, page_count, forms_error):
        width, height = page.get_size()
        rotation = page.get_rotation()
        resolution, target = render_plan(page, budget, limits)
        grey = _looks_grey(page, target.content)
        image = _draw(page, target.content, grey=grey)
    steps.append(_render_step(page_number, page_count, (width, height), rotation, resolution, target))
    if grey:
        steps.append(PreparationStep(action="convert_mode", detail=_GREY_DETAIL))
    if forms_error is not None:
        steps.append(PreparationStep(action="forms_ignored", detail=f"form fields not drawn: {forms_error}"))
    return prepare_rendered(image, target, limits, source_format="PDF", original_size=(width, height), steps=steps)


def pdf_page_resolutions(
    source: PdfSource, limits: PreparationLimits = DEFAULT_LIMITS
) -> list[tuple[PageContent, RenderResolution]]:
    """Every page's content summary and the resolution it will be drawn at, read once, drawing nothing."""
    with _PDFIUM, _document(source) as (document, _):
        resolutions = []
        for index in range(len(document)):
            page = document[index]
            try:
                content = inspect_page(page)
            finally:
                page.close()
            resolutions.append((content, choose_resolution(content, limits.pdf_render_dpi)))
        return resolutions


def render_plan(
    page: pdfium.PdfPage, budget: PixelBudget, limits: PreparationLimits = DEFAULT_LIMITS
) -> tuple[RenderResolution, RenderTarget]:
    """The resolution chosen for the page and the size it is drawn at, within the budget.

    The caller holds the PDFium lock. `pdf_page_resolutions` makes the same decision for
    `ocr-pipeline estimate`, so an estimate sizes every page as the pipeline draws it.
    """
    content = inspect_page(page)
    resolution = choose_resolution(content, limits.pdf_render_dpi)
    scale = resolution.dpi / POINTS_PER_INCH
    return resolution, render_target(content.width * scale, content.height * scale, budget, limits)


@contextmanager
def open_page(
    source: PdfSource, page_number: int, *, forms: bool = False
) -> Iterator[tuple[pdfium.PdfPage, int, str | None]]:
    """Page `page_number` (1-based), the document's page count and any forms error, under the PDFium lock."""
    if page_number < 1:
        raise InvalidRequest(f"page numbers start at 1, got {page_number}", page=page_number)
    with _PDFIUM, _document(source, forms=forms) as (document, forms_error):
        page_count = len(document)
        if page_number > page_count:
            raise InvalidRequest(
                f"the document has {page_count} pages, there is no page {page_number}",
                page=page_number,
                page_count=page_count,
            )
        page = document[page_number - 1]
        try:
            yield page, page_count, forms_error
        finally:
            page.close()


def _render_step(
    page_number: int,
    page_count: int,
    size: tuple[float, float],
    rotation: int,
    resolution: RenderResolution,
    target: RenderTarget,
) -> PreparationStep:
    width, height = size
    pixels = target.content
    dpi = POINTS_PER_INCH * math.sqrt(pixels[0] * pixels[1] / (width * height))
    turned = f", turned {rotation}° by its /Rotate" if rotation else ""
    why = f"{resolution.dpi:.0f} dpi asked: {resolution.reason}"
    if target.bound == "max_pixels":
        why += f"; capped by the pixel budget (max_pixels {target.bound_pixels:,})"
    elif target.bound == "min_pixels":
        why += f"; raised to the pixel budget's floor (min_pixels {target.bound_pixels:,})"
    return PreparationStep(
        action="render",
        detail=f"page {page_number} of {page_count}: {width:.1f}x{height:.1f} pt{turned}, "
        f"drawn at {pixels[0]}x{pixels[1]} px (about {dpi:.0f} dpi; {why})",
    )


def _looks_grey(page: pdfium.PdfPage, size: tuple[int, int]) -> bool:
    """Whether a color drawing of the page at 1/PREVIEW_SCALE of `size` has only grey pixels.

    Most pages are black on white, and for them the full drawing can go straight into a grey
    bitmap: a third of the memory to fill and to encode, and no per-pixel check of 8 million
    pixels afterwards. Color survives the preview's averaging (a red pixel among white ones
    is pink), so only color too faint and too small to tint one preview pixel is lost.
    """
    width, height = (max(1, side // PREVIEW_SCALE) for side in size)
    preview = _draw(page, (width, height), grey=False)
    try:
        return is_grey(preview)
    finally:
        preview.close()


def _draw(page: pdfium.PdfPage, size: tuple[int, int], *, grey: bool) -> Image.Image:
    """The page, as displayed, mapped onto exactly `size` pixels on white, in color (RGBX) or grey (L)."""
    width, height = size
    if grey:
        bitmap = pdfium.PdfBitmap.new_native(width, height, pdfium_c.FPDFBitmap_Gray)
        flags = _RENDER_FLAGS_GREY
    else:
        bitmap = pdfium.PdfBitmap.new_native(width, height, pdfium_c.FPDFBitmap_BGRx, rev_byteorder=True)
        flags = _RENDER_FLAGS
    try:
        pdfium_c.FPDFBitmap_FillRect(bitmap, 0, 0, width, height, _WHITE)
        # Rotation 0 means "as the page says": PDFium applies /Rotate itself.
        pdfium_c.FPDF_RenderPageBitmap(bitmap, page, 0, 0, width, height, 0, flags)
        if page.formenv:
            # Form fields are drawn after the page, as PDFium's form-fill API asks.
            pdfium_c.FPDF_FFLDraw(page.formenv, bitmap, page, 0, 0, width, height, 0, flags)
        # The image shares the bitmap's Python-owned buffer, which outlives the PDFium bitmap.
        return bitmap.to_pil()
    finally:
        bitmap.close()


# --- opening -----------------------------------------------------------------------


class _FileAccess:
    """PDFium's FPDF_FILEACCESS over a caller's seekable binary file.

    PDFium calls `_get_block` from inside its own functions, where an exception cannot pass:
    ctypes would print it and PDFium would see a failed read, then report a damaged file or,
    while drawing, quietly draw less. So the first exception is kept, and raised once PDFium
    returns.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.failure: Exception | None = None
        self.size = stream.seek(0, io.SEEK_END)
        self.struct = pdfium_c.FPDF_FILEACCESS()
        self.struct.m_FileLen = self.size
        # Kept on self: PDFium holds the function pointer for as long as the document is open.
        self._callback = type(self.struct.m_GetBlock)(self._get_block)
        self.struct.m_GetBlock = self._callback
        self.struct.m_Param = None

    def _get_block(self, _param: object, position: int, buffer: ctypes._Pointer[ctypes.c_ubyte], size: int) -> int:
        if self.failure is not None:
            return 0
        try:
            self._stream.seek(position)
            address = ctypes.addressof(buffer.contents)
            filled = 0
            while filled < size:
                chunk = self._stream.read(size - filled)
                if not chunk:
                    return 0
                ctypes.memmove(address + filled, chunk, len(chunk))
                filled += len(chunk)
            return 1
        except Exception as exc:
            self.failure = exc
            return 0


@contextmanager
def _document(source: PdfSource, *, forms: bool = False) -> Iterator[tuple[pdfium.PdfDocument, str | None]]:
    """The open document and, when forms were asked for but could not be set up, why.

    The caller must hold `_PDFIUM`. Everything PDFium or pypdfium2 raises, here or in the
    caller's block, becomes a typed document error, except our own errors and a failure of the
    file source, which pass through.
    """
    access = None if isinstance(source, bytes | bytearray) else _FileAccess(source)
    try:
        with _opened(source, access) as document:
            forms_error = None
            if forms:
                # Must come before any page is loaded.
                try:
                    document.init_forms()
                except pdfium.PdfiumError as exc:
                    forms_error = str(exc)
            yield document, forms_error
    except Exception as exc:
        if access is not None and access.failure is not None and access.failure is not exc:
            raise access.failure from None
        if isinstance(exc, OcrPipelineError) or (access is not None and exc is access.failure):
            raise
        raise DocumentUnreadable(f"cannot read this PDF: {exc}", cause=type(exc).__name__) from exc
    if access is not None and access.failure is not None:
        # PDFium carried on past a failed read: what it produced is not the document.
        raise access.failure


@contextmanager
def _opened(source: PdfSource, access: _FileAccess | None) -> Iterator[pdfium.PdfDocument]:
    # The raw loaders rather than PdfDocument(source): pypdfium2 leaves a document that opened
    # with zero pages unclosed when it raises, and would read a file without our failure capture.
    if access is None:
        assert isinstance(source, bytes | bytearray)
        # PDFium reads this memory until the document is closed; `data` keeps it alive until then.
        data = bytes(source)
        raw = pdfium_c.FPDF_LoadMemDocument64(data, len(data), None)
    else:
        raw = pdfium_c.FPDF_LoadCustomDocument(access.struct, None)
    if not raw:
        raise _load_error(pdfium_c.FPDF_GetLastError())
    document = pdfium.PdfDocument(raw)
    try:
        if len(document) < 1:
            raise DocumentEmpty("the PDF has no pages")
        yield document
    finally:
        document.close()


def _load_error(code: int) -> DocumentUnreadable:
    if code == pdfium_c.FPDF_ERR_PASSWORD:
        return DocumentEncrypted("the PDF is protected by a password", pdfium_error=code)
    if code == pdfium_c.FPDF_ERR_SECURITY:
        return DocumentEncrypted("the PDF is encrypted with a scheme PDFium does not support", pdfium_error=code)
    reason = _LOAD_ERRORS.get(code, "PDFium cannot open it")
    return DocumentUnreadable(f"cannot open this PDF: {reason}", pdfium_error=code)
