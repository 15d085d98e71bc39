"""The resolution a PDF page is drawn at: the pixels its content carries, never the budget by default.

The pixel budget (max_pixels) is a ceiling, not a target: a page drawn to it always costs about
8,000 image tokens, whatever it holds. So each page gets the resolution its content needs, which
the budget then caps (and lifts to its floor, min_pixels), as smart_resize does for an image:

- a scanned page (its largest image covers at least SCAN_COVERAGE of the page) is drawn at the
  resolution of that scan, its pixels per point: more pixels would only interpolate the scan;
- a page of text and drawings, or whose images are small (logos, signatures), is drawn at
  `pdf_render_dpi` (the template's PdfRenderDpi), chosen by measurement (benchmarks/pdf_dpi.py);
- a scan carrying visible text or form fields on top is drawn at the larger of the two;
- `pdf_render_dpi` = PDF_RENDER_TO_BUDGET draws every page to the budget, as before.

The decision reads only the page's object tree (types, image pixel sizes, placement matrices),
never pixels, so `ocr-pipeline estimate` makes the same decision as the pipeline, page by page.
"""

from __future__ import annotations

import ctypes
import math

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from pydantic import BaseModel, ConfigDict

from .imaging import MAX_RENDER_DPI, PDF_RENDER_TO_BUDGET

POINTS_PER_INCH = 72
# An image covering at least half the page is the page (a scan, a photographed page); smaller
# ones (logos, signatures, figures) are details of a page whose text is vector.
SCAN_COVERAGE = 0.5
# Form XObjects nest; PDFium itself stops at this depth when it draws.
_MAX_FORM_DEPTH = 15
# Annotations that draw nothing a reader sees.
_SILENT_ANNOTATIONS = frozenset({pdfium_c.FPDF_ANNOT_LINK, pdfium_c.FPDF_ANNOT_POPUP})


class PageContent(BaseModel):
    """What the drawing decision reads from a page: its size and its largest image, from the object tree."""

    model_config = ConfigDict(frozen=True)

    # The page as displayed (crop box, /Rotate applied), in points.
    width: float
    height: float
    # The largest image by its area on the page: its share of the page and its pixels per inch there.
    image_coverage: float = 0.0
    image_dpi: float | None = None
    # Text a reader sees (not the invisible text layer an OCR tool lays over a scan), or annotations.
    has_visible_text: bool = False

    @property
    def is_scan(self) -> bool:
        return self.image_dpi is not None and self.image_coverage >= SCAN_COVERAGE


class RenderResolution(BaseModel):
    """The resolution chosen for a page, and why, as the page's `render` step says it."""

    model_config = ConfigDict(frozen=True)

    dpi: float
    reason: str


def choose_resolution(content: PageContent, pdf_render_dpi: float) -> RenderResolution:
    """The dpi to draw the page at before the budget caps it, and why (see the module docstring)."""
    if pdf_render_dpi == PDF_RENDER_TO_BUDGET:
        chosen = RenderResolution(
            dpi=MAX_RENDER_DPI, reason=f"PdfRenderDpi={PDF_RENDER_TO_BUDGET}: drawn to the pixel budget"
        )
    elif content.is_scan and content.image_dpi is not None:
        scan = f"the resolution of its scan ({content.image_dpi:.0f} dpi, {content.image_coverage:.0%} of the page)"
        if content.has_visible_text and pdf_render_dpi > content.image_dpi:
            # Text drawn over a scan (a stamp, a filled-in field, a typed note) must stay as legible as
            # on a vector page, and the scan must not lose its own pixels: the larger resolution keeps
            # both, and the budget still caps it.
            chosen = RenderResolution(
                dpi=pdf_render_dpi, reason=f"PdfRenderDpi, above {scan}, for the text drawn over it"
            )
        else:
            chosen = RenderResolution(dpi=min(content.image_dpi, MAX_RENDER_DPI), reason=scan)
    else:
        chosen = RenderResolution(dpi=pdf_render_dpi, reason="PdfRenderDpi, for a page of text and drawings")
    return _within_min_side(chosen, content)


def _within_min_side(chosen: RenderResolution, content: PageContent) -> RenderResolution:
    # A page drawn under the vendor's 11 px per side would be refused as too small, which it was not at
    # the budget: such a page (a strip, a stamp-sized page) is drawn just big enough.
    short = min(content.width, content.height)
    floor = POINTS_PER_INCH * 11 / short if short > 0 else chosen.dpi
    if chosen.dpi >= floor or floor > MAX_RENDER_DPI:
        return chosen
    return RenderResolution(dpi=floor, reason=f"{chosen.reason}, raised to 11 px on its short side")


def inspect_page(page: pdfium.PdfPage) -> PageContent:
    """The page's size and largest image, read from its object tree (the caller holds the PDFium lock)."""
    width, height = page.get_size()
    largest = _Largest()
    visible_text = _walk(page.raw, form=None, scale=1.0, depth=0, largest=largest)
    visible_text = visible_text or _has_visible_annotations(page)
    page_area = width * height
    if largest.pixels == 0 or largest.area <= 0 or page_area <= 0:
        return PageContent(width=width, height=height, has_visible_text=visible_text)
    return PageContent(
        width=width,
        height=height,
        image_coverage=min(1.0, largest.area / page_area),
        image_dpi=POINTS_PER_INCH * math.sqrt(largest.pixels / largest.area),
        has_visible_text=visible_text,
    )


class _Largest:
    """The image with the largest area on the page so far: its area in square points and its pixel count."""

    def __init__(self) -> None:
        self.area = 0.0
        self.pixels = 0


def _walk(page: object, form: object | None, scale: float, depth: int, largest: _Largest) -> bool:
    """Record the largest image under `form` (the page itself when None); whether any visible text is there.

    `scale` is the area factor of the enclosing forms: an object's area on the page is the
    determinant of its matrix times theirs, whatever rotation or skew they apply.
    """
    count = pdfium_c.FPDFPage_CountObjects(page) if form is None else pdfium_c.FPDFFormObj_CountObjects(form)
    visible_text = False
    for index in range(max(0, count)):
        obj = pdfium_c.FPDFPage_GetObject(page, index) if form is None else pdfium_c.FPDFFormObj_GetObject(form, index)
        if not obj:
            continue
        kind = pdfium_c.FPDFPageObj_GetType(obj)
        if kind == pdfium_c.FPDF_PAGEOBJ_TEXT:
            visible_text = visible_text or (
                pdfium_c.FPDFTextObj_GetTextRenderMode(obj) != pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE
            )
        elif kind == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            area = _area_factor(obj) * scale
            pixels = _pixel_count(obj)
            if area > largest.area and pixels > 0:
                largest.area, largest.pixels = area, pixels
        elif kind == pdfium_c.FPDF_PAGEOBJ_FORM and depth < _MAX_FORM_DEPTH:
            inner = _walk(page, obj, scale * _area_factor(obj), depth + 1, largest)
            visible_text = visible_text or inner
    return visible_text


def _area_factor(obj: object) -> float:
    matrix = pdfium_c.FS_MATRIX()
    if not pdfium_c.FPDFPageObj_GetMatrix(obj, matrix):
        return 0.0
    # An image is the unit square mapped by its matrix: its area is the determinant's magnitude.
    return abs(matrix.a * matrix.d - matrix.b * matrix.c)


def _pixel_count(obj: object) -> int:
    width, height = ctypes.c_uint(), ctypes.c_uint()
    if not pdfium_c.FPDFImageObj_GetImagePixelSize(obj, width, height):
        return 0
    return width.value * height.value


def _has_visible_annotations(page: pdfium.PdfPage) -> bool:
    for index in range(max(0, pdfium_c.FPDFPage_GetAnnotCount(page.raw))):
        annotation = pdfium_c.FPDFPage_GetAnnot(page.raw, index)
        if not annotation:
            continue
        try:
            if pdfium_c.FPDFAnnot_GetSubtype(annotation) not in _SILENT_ANNOTATIONS:
                return True
        finally:
            pdfium_c.FPDFPage_CloseAnnot(annotation)
    return False
