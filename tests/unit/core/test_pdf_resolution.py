"""pdf_resolution: a scanned page drawn at its scan's resolution, a vector page at PdfRenderDpi, both within the budget.

Every PDF is made here with pypdfium2's page-object API: a scan is one grey image stretched over
the page (or part of it) at a known number of pixels per point.
"""

from __future__ import annotations

import ctypes
import io

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from ocr_pipeline.imaging import DEFAULT_PDF_RENDER_DPI, PDF_RENDER_TO_BUDGET, PreparationLimits, PreparedImage
from ocr_pipeline.pdf import MAX_RENDER_DPI, pdf_page_resolutions, prepare_pdf_page
from ocr_pipeline.pdf_resolution import PageContent, choose_resolution
from ocr_pipeline.tokens import PixelBudget, image_tokens, smart_resize
from PIL import Image, ImageDraw

BUDGET = PixelBudget()
A4 = (595.28, 841.89)
AT_BUDGET = PreparationLimits(pdf_render_dpi=PDF_RENDER_TO_BUDGET)
# A PdfRenderDpi under the budget's 294 dpi for A4, named here so that the tests do not hang on the default.
VECTOR_DPI = 180
AT_VECTOR_DPI = PreparationLimits(pdf_render_dpi=VECTOR_DPI)


# --- making PDFs --------------------------------------------------------------------


def _scan_image(width_px: int, height_px: int) -> Image.Image:
    image = Image.new("L", (width_px, height_px), 255)
    ImageDraw.Draw(image).rectangle((width_px // 4, height_px // 4, width_px // 2, height_px // 3), fill=0)
    return image


def _insert_image(
    document: pdfium.PdfDocument, page: pdfium.PdfPage, dpi: float, box: tuple[float, float, float, float]
) -> None:
    """An image of `dpi` pixels per inch placed over `box` = (left, bottom, width, height) in points."""
    left, bottom, width, height = box
    image = pdfium.PdfImage.new(document)
    bitmap = pdfium.PdfBitmap.from_pil(_scan_image(round(width / 72 * dpi), round(height / 72 * dpi)))
    image.set_bitmap(bitmap)
    image.set_matrix(pdfium.PdfMatrix().scale(width, height).translate(left, bottom))
    page.insert_obj(image)


def _insert_text(document: pdfium.PdfDocument, page: pdfium.PdfPage, text: str, *, invisible: bool = False) -> None:
    obj = pdfium_c.FPDFPageObj_NewTextObj(document.raw, b"Helvetica", ctypes.c_float(10.0))
    wide = ctypes.create_string_buffer((text + "\x00").encode("utf-16-le"))
    pdfium_c.FPDFText_SetText(obj, ctypes.cast(wide, pdfium_c.FPDF_WIDESTRING))
    if invisible:
        # The text layer an OCR tool lays over a scan: searchable, never drawn.
        pdfium_c.FPDFTextObj_SetTextRenderMode(obj, pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE)
    pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 50, 780)
    pdfium_c.FPDFPage_InsertObject(page.raw, obj)


def make_pdf(
    *,
    size: tuple[float, float] = A4,
    scan_dpi: float | None = None,
    image_box: tuple[float, float, float, float] | None = None,
    text: str | None = None,
    invisible_text: bool = False,
) -> bytes:
    """One page: optionally an image at `scan_dpi` over `image_box` (the whole page by default), and a line of text."""
    document = pdfium.PdfDocument.new()
    page = document.new_page(*size)
    if scan_dpi is not None:
        _insert_image(document, page, scan_dpi, image_box or (0.0, 0.0, *size))
    if text is not None:
        _insert_text(document, page, text, invisible=invisible_text)
    page.gen_content()
    page.close()
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


def drawn_dpi(prepared: PreparedImage) -> float:
    """The resolution the page was drawn at: prepared pixels per point, times 72, averaged over both sides."""
    return 72 * (prepared.mapping.scale_x * prepared.mapping.scale_y) ** 0.5


def budget_size(size: tuple[float, float], budget: PixelBudget) -> tuple[int, int]:
    """(width, height) of a page drawn straight to the budget, as every page was before: from MAX_RENDER_DPI."""
    scale = MAX_RENDER_DPI / 72
    height, width = smart_resize(round(size[1] * scale), round(size[0] * scale), budget)
    return width, height


# --- scanned pages ------------------------------------------------------------------


@pytest.mark.parametrize("dpi", [100, 200, 300 - 20])
def test_a_scanned_page_is_drawn_at_the_resolution_of_its_scan(dpi: int) -> None:
    # Given an A4 page that is one grey scan at `dpi`
    data = make_pdf(scan_dpi=dpi)

    # When it is prepared at the default budget
    prepared = prepare_pdf_page(data, 1, BUDGET)

    # Then it is drawn at about the scan's resolution (whole patches move it by under 2 %), and
    # the render step says so
    assert drawn_dpi(prepared) == pytest.approx(dpi, rel=0.02)
    assert "the resolution of its scan" in prepared.steps[0].detail
    assert f"{dpi} dpi asked" in prepared.steps[0].detail
    assert "capped" not in prepared.steps[0].detail


def test_a_200_dpi_scan_costs_about_half_the_tokens_of_the_budget() -> None:
    # Given a 200-dpi A4 scan
    data = make_pdf(scan_dpi=200)

    # When prepared by default and with PdfRenderDpi = 0
    ours = prepare_pdf_page(data, 1, BUDGET)
    before = prepare_pdf_page(data, 1, BUDGET, AT_BUDGET)

    # Then the default sends (200/294)^2, under half, of the budget's image tokens
    ratio = image_tokens(ours.height, ours.width, BUDGET) / image_tokens(before.height, before.width, BUDGET)
    assert ratio == pytest.approx((200 / 294) ** 2, rel=0.03)


def test_a_scan_finer_than_the_budget_is_capped_by_it_and_says_so() -> None:
    # Given a 400-dpi A4 scan, When it is prepared at the default budget
    prepared = prepare_pdf_page(make_pdf(scan_dpi=400), 1, BUDGET)

    # Then it is exactly the budget's size (about 294 dpi), and the step names the cap
    assert (prepared.width, prepared.height) == budget_size(A4, BUDGET)
    assert prepared.width * prepared.height <= BUDGET.max_pixels
    assert "capped by the pixel budget (max_pixels 8,388,608)" in prepared.steps[0].detail


def test_a_scan_is_drawn_no_finer_than_a_small_budget_allows() -> None:
    small = PixelBudget(max_pixels=32 * 32 * 300)
    prepared = prepare_pdf_page(make_pdf(scan_dpi=200), 1, small)
    assert prepared.width * prepared.height <= small.max_pixels
    assert (prepared.width, prepared.height) == budget_size(A4, small)


def test_a_coarse_scan_on_a_tiny_page_is_raised_to_the_budget_floor() -> None:
    # Given a 2 x 1 inch page holding a 50-dpi scan (100 x 50 px), and a budget whose floor is 100 patches
    floor = PixelBudget(min_pixels=32 * 32 * 100)
    data = make_pdf(size=(144.0, 72.0), scan_dpi=50)

    # When it is prepared
    prepared = prepare_pdf_page(data, 1, floor)

    # Then it reaches the floor, and the step says why it is finer than the scan
    assert prepared.width * prepared.height >= floor.min_pixels
    assert "min_pixels 102,400" in prepared.steps[0].detail


def test_a_scan_in_a_scaled_form_xobject_counts_its_size_on_the_page() -> None:
    # Given a page whose whole content is a 100-dpi A4 scan, placed at half size as a form XObject
    source = pdfium.PdfDocument(make_pdf(scan_dpi=100))
    document = pdfium.PdfDocument.new()
    page = document.new_page(*A4)
    form = source.page_as_xobject(0, document).as_pageobject()
    form.set_matrix(pdfium.PdfMatrix().scale(0.5, 0.5))
    page.insert_obj(form)
    page.gen_content()
    page.close()
    buffer = io.BytesIO()
    document.save(buffer)

    # When its resolution is chosen
    ((content, resolution),) = pdf_page_resolutions(buffer.getvalue(), AT_VECTOR_DPI)

    # Then the scan covers a quarter of the page at twice the pixels per point: a detail, not the page
    assert content.image_coverage == pytest.approx(0.25, rel=0.01)
    assert content.image_dpi == pytest.approx(200, rel=0.01)
    assert resolution.dpi == VECTOR_DPI


# --- vector pages -------------------------------------------------------------------


def test_a_vector_page_is_drawn_at_pdf_render_dpi() -> None:
    # Given an A4 page of text
    data = make_pdf(text="Invoice 2024-001 total due 1,234.56")

    # When prepared with PdfRenderDpi 180 and 120
    finer = prepare_pdf_page(data, 1, BUDGET, AT_VECTOR_DPI)
    coarse = prepare_pdf_page(data, 1, BUDGET, PreparationLimits(pdf_render_dpi=120))

    # Then each is drawn at its dpi, and the step names PdfRenderDpi
    assert drawn_dpi(finer) == pytest.approx(VECTOR_DPI, rel=0.02)
    assert drawn_dpi(coarse) == pytest.approx(120, rel=0.02)
    assert "PdfRenderDpi, for a page of text and drawings" in finer.steps[0].detail


def test_the_default_pdf_render_dpi_is_what_a_vector_page_gets() -> None:
    prepared = prepare_pdf_page(make_pdf(text="Invoice"), 1, BUDGET)
    expected = min(DEFAULT_PDF_RENDER_DPI, 72 * (budget_size(A4, BUDGET)[0] / A4[0]))
    assert drawn_dpi(prepared) == pytest.approx(expected, rel=0.02)
    assert f"{DEFAULT_PDF_RENDER_DPI:.0f} dpi asked: PdfRenderDpi" in prepared.steps[0].detail


def test_a_vector_page_is_capped_by_the_budget() -> None:
    data = make_pdf(text="Invoice")
    prepared = prepare_pdf_page(data, 1, BUDGET, PreparationLimits(pdf_render_dpi=400))
    assert (prepared.width, prepared.height) == budget_size(A4, BUDGET)
    assert "capped by the pixel budget" in prepared.steps[0].detail


def test_a_page_with_a_small_logo_is_a_vector_page() -> None:
    # Given a page of text with a 600-dpi logo of 2 x 1 inches in a corner
    data = make_pdf(scan_dpi=600, image_box=(40.0, 740.0, 144.0, 72.0), text="Letterhead")

    # When prepared, Then the logo does not decide the resolution: PdfRenderDpi does
    prepared = prepare_pdf_page(data, 1, BUDGET, AT_VECTOR_DPI)
    assert drawn_dpi(prepared) == pytest.approx(VECTOR_DPI, rel=0.02)
    assert "PdfRenderDpi, for a page of text" in prepared.steps[0].detail


# --- scans with text ----------------------------------------------------------------


def test_a_coarse_scan_with_visible_text_on_it_is_drawn_at_the_larger_resolution() -> None:
    # Given a 100-dpi scan with a line of vector text over it (a stamp, a typed note)
    data = make_pdf(scan_dpi=100, text="APPROVED 2024-05-01")

    # When prepared, Then the text gets PdfRenderDpi, which is above the scan's
    prepared = prepare_pdf_page(data, 1, BUDGET, AT_VECTOR_DPI)
    assert drawn_dpi(prepared) == pytest.approx(VECTOR_DPI, rel=0.02)
    assert "for the text drawn over it" in prepared.steps[0].detail


def test_a_fine_scan_with_visible_text_keeps_the_scan_resolution() -> None:
    prepared = prepare_pdf_page(make_pdf(scan_dpi=280, text="APPROVED"), 1, BUDGET, AT_VECTOR_DPI)
    assert drawn_dpi(prepared) == pytest.approx(280, rel=0.02)


def test_an_invisible_text_layer_over_a_scan_does_not_raise_its_resolution() -> None:
    # Given a 100-dpi scan with the invisible text an OCR tool lays over it
    data = make_pdf(scan_dpi=100, text="searchable words", invisible_text=True)

    # When prepared, Then it is drawn at the scan's resolution
    prepared = prepare_pdf_page(data, 1, BUDGET, AT_VECTOR_DPI)
    assert drawn_dpi(prepared) == pytest.approx(100, rel=0.02)


# --- the old behaviour --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [make_pdf(scan_dpi=150), make_pdf(text="Invoice"), make_pdf(scan_dpi=100, text="APPROVED")],
    ids=["scan", "vector", "mixed"],
)
def test_pdf_render_dpi_0_draws_every_page_to_the_budget_as_before(data: bytes) -> None:
    prepared = prepare_pdf_page(data, 1, BUDGET, AT_BUDGET)
    assert (prepared.width, prepared.height) == budget_size(A4, BUDGET)
    assert "PdfRenderDpi=0: drawn to the pixel budget" in prepared.steps[0].detail


# --- the decision alone -------------------------------------------------------------


def test_the_decision_follows_the_coverage_threshold_and_the_render_dpi() -> None:
    scan = PageContent(width=A4[0], height=A4[1], image_coverage=0.9, image_dpi=240.0)
    figure = scan.model_copy(update={"image_coverage": 0.3})
    assert choose_resolution(scan, 150).dpi == 240
    assert choose_resolution(figure, 150).dpi == 150
    assert choose_resolution(scan.model_copy(update={"has_visible_text": True}), 300).dpi == 300
    assert choose_resolution(scan.model_copy(update={"image_dpi": 1200.0}), 150).dpi == MAX_RENDER_DPI
    assert choose_resolution(scan, PDF_RENDER_TO_BUDGET).dpi == MAX_RENDER_DPI


def test_a_tiny_page_is_drawn_big_enough_for_the_vendor() -> None:
    # Given a 5 x 300 pt strip of text, which 72 dpi would draw 5 px wide
    content = PageContent(width=5.0, height=300.0)

    # When its resolution is chosen at 72 dpi, Then it is raised to 11 px on its short side
    resolution = choose_resolution(content, 72)
    assert resolution.dpi * 5.0 / 72 == pytest.approx(11)
    assert "raised to 11 px" in resolution.reason


def test_pdf_render_dpi_is_bounded() -> None:
    with pytest.raises(ValueError):
        PreparationLimits(pdf_render_dpi=-1)
    with pytest.raises(ValueError):
        PreparationLimits(pdf_render_dpi=MAX_RENDER_DPI + 1)
