"""pdf: counting PDF pages and drawing them at the size the model will use.

How the resolution is chosen per page (scan, PdfRenderDpi) is tested in test_pdf_resolution.py; the
sizes here are those of PdfRenderDpi = 0, which draws every page straight to the budget.

Every PDF is made here: with pypdfium2's page-object API where drawing matters, and by hand
(including a real RC4 password-protected file) where the file structure is the point.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import random
import struct
import threading
from collections.abc import Sequence

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocr_pipeline.errors import (
    DocumentEmpty,
    DocumentEncrypted,
    DocumentUnreadable,
    ImageError,
    InvalidRequest,
)
from ocr_pipeline.imaging import PreparationLimits, PreparedImage
from ocr_pipeline.pdf import MAX_RENDER_DPI, pdf_page_count, prepare_pdf_page
from ocr_pipeline.tokens import PixelBudget, smart_resize
from PIL import Image, ImageChops

from tests.support.images import decode
from tests.support.streams import CountingFile, StorageUnavailable

BUDGET = PixelBudget()
SMALL = PixelBudget(max_pixels=32 * 32 * 300)
# PdfRenderDpi = 0: every page drawn to the budget, the geometry these tests pin down.
AT_BUDGET = PreparationLimits(pdf_render_dpi=0)
A4 = (595.276, 841.89)
LETTER = (612.0, 792.0)


# --- making PDFs --------------------------------------------------------------------


def drawn_pdf(
    sizes: Sequence[tuple[float, float]],
    marks: Sequence[tuple[float, float, float, float]] | None = None,
    *,
    rotations: Sequence[int] | None = None,
    crop_boxes: Sequence[tuple[float, float, float, float] | None] | None = None,
    color: tuple[int, int, int] = (0, 0, 0),
    text: str | None = None,
) -> bytes:
    """One page per size, each with a filled rectangle `marks[i]` = (left, top, width, height) in
    points from the page's top-left corner (PDF space starts bottom-left), and optional text."""
    document = pdfium.PdfDocument.new()
    for index, (width, height) in enumerate(sizes):
        page = document.new_page(width, height)
        if marks is not None:
            left, top, mark_width, mark_height = marks[index]
            rect = pdfium_c.FPDFPageObj_CreateNewRect(left, height - top - mark_height, mark_width, mark_height)
            pdfium_c.FPDFPageObj_SetFillColor(rect, *color, 255)
            pdfium_c.FPDFPath_SetDrawMode(rect, pdfium_c.FPDF_FILLMODE_ALTERNATE, False)
            pdfium_c.FPDFPage_InsertObject(page, rect)
        if text is not None:
            add_text(document, page, text, height)
        pdfium_c.FPDFPage_GenerateContent(page)
        if rotations is not None:
            page.set_rotation(rotations[index])
        if crop_boxes is not None and crop_boxes[index] is not None:
            page.set_cropbox(*crop_boxes[index])  # type: ignore[misc]
        page.close()
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


def add_text(document: pdfium.PdfDocument, page: pdfium.PdfPage, text: str, height: float) -> None:
    """Lines of 9 pt Helvetica from the top of the page, 11.5 pt apart."""
    for number, line in enumerate(text.splitlines()):
        obj = pdfium_c.FPDFPageObj_NewTextObj(document, b"Helvetica", 9.0)
        wide = ctypes.create_string_buffer((line + "\x00").encode("utf-16-le"))
        pdfium_c.FPDFText_SetText(obj, ctypes.cast(wide, pdfium_c.FPDF_WIDESTRING))
        pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 40, height - 50 - number * 11.5)
        pdfium_c.FPDFPage_InsertObject(page, obj)


def handmade_pdf(objects: Sequence[bytes], trailer: bytes = b"") -> bytes:
    """Objects 1..n with a classic cross-reference table; object 1 is the catalogue."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref)
    return bytes(out)


# The padding string of the standard security handler (PDF 1.7, 7.6.3.3).
PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes, owner_password: bytes = b"owner") -> bytes:
    """A one-page PDF under the standard security handler, 40-bit RC4 (V 1, R 2).

    The page has no strings or streams, so nothing but /O and /U needs computing
    (algorithms 3, 2 and 4 of PDF 1.7, 7.6.3.4).
    """

    def padded(password: bytes) -> bytes:
        return (password + PASSWORD_PAD)[:32]

    permissions = -44
    file_id = hashlib.md5(b"ocr-pipeline test").digest()
    owner_entry = rc4(hashlib.md5(padded(owner_password)).digest()[:5], padded(user_password))
    key = hashlib.md5(padded(user_password) + owner_entry + struct.pack("<i", permissions) + file_id).digest()[:5]
    user_entry = rc4(key, PASSWORD_PAD)
    return handmade_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] >>",
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
            % (owner_entry.hex().encode(), user_entry.hex().encode(), permissions),
        ],
        b"/Encrypt 4 0 R /ID [<%s> <%s>] " % (file_id.hex().encode(), file_id.hex().encode()),
    )


def form_pdf() -> bytes:
    """A text field whose value has no appearance stream: only form filling draws it."""
    return handmade_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [4 0 R] /NeedAppearances true"
            b" /DA (/Helv 0 Tf 0 g) /DR << /Font << /Helv 5 0 R >> >> >> >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Annots [4 0 R] >>",
            b"<< /Type /Annot /Subtype /Widget /FT /Tx /T (name) /V (HELLO WORLD) /Rect [20 80 280 140]"
            b" /F 4 /DA (/Helv 24 Tf 0 g) /P 3 0 R >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


# --- reading results ------------------------------------------------------------------


def dark_box(image: Image.Image) -> tuple[int, int, int, int]:
    box = image.convert("L").point(lambda v: 255 if v < 128 else 0).getbbox()
    assert box is not None, "nothing dark on the page"
    return box


def mark_in_points(prepared: PreparedImage) -> tuple[float, float, float, float]:
    """The dark box, mapped back to points on the page as displayed (left, top, right, bottom)."""
    left, top, right, bottom = dark_box(decode(prepared))
    x0, y0 = prepared.mapping.to_original_point(left, top)
    x1, y1 = prepared.mapping.to_original_point(right, bottom)
    return x0, y0, x1, y1


def finest(size: tuple[float, float], budget: PixelBudget) -> tuple[int, int]:
    """(width, height) the documented rule gives a page drawn at MAX_RENDER_DPI."""
    scale = MAX_RENDER_DPI / 72
    height, width = smart_resize(round(size[1] * scale), round(size[0] * scale), budget)
    return width, height


# --- counting -------------------------------------------------------------------------


def test_a_three_page_pdf_has_three_pages_from_bytes_and_from_a_file() -> None:
    data = drawn_pdf([A4, A4, LETTER])
    assert pdf_page_count(data) == 3
    assert pdf_page_count(io.BytesIO(data)) == 3


# --- size: straight to the budget (PdfRenderDpi = 0) --------------------------------------


@pytest.mark.parametrize(
    ("size", "budget"),
    [(A4, BUDGET), (LETTER, BUDGET), ((252.0, 144.0), BUDGET), (A4, SMALL), ((842.0, 595.0), SMALL)],
    ids=["a4", "letter", "business-card", "a4-small-budget", "landscape-small-budget"],
)
def test_each_page_is_drawn_at_smart_resize_of_the_page_at_the_budget(
    size: tuple[float, float], budget: PixelBudget
) -> None:
    # Given a one-page PDF of that size
    data = drawn_pdf([size], [(50, 50, 40, 40)])

    # When it is prepared with PdfRenderDpi = 0
    prepared = prepare_pdf_page(data, 1, budget, AT_BUDGET)

    # Then it is exactly smart_resize of the page at MAX_RENDER_DPI, in whole patches, within
    # the budget, drawn once (no resize step) and lossless
    assert (prepared.width, prepared.height) == finest(size, budget)
    assert prepared.width % 32 == prepared.height % 32 == 0
    assert prepared.width * prepared.height <= budget.max_pixels
    actions = [step.action for step in prepared.steps]
    assert actions[0] == "render" and "resize" not in actions and "pad" not in actions
    assert prepared.mime_type == "image/png"
    assert decode(prepared).size == (prepared.width, prepared.height)


def test_an_a4_page_drawn_to_the_default_budget_uses_nearly_all_of_it() -> None:
    # Given an A4 page, When it is prepared at the default budget with PdfRenderDpi = 0
    prepared = prepare_pdf_page(drawn_pdf([A4], [(50, 50, 40, 40)]), 1, BUDGET, AT_BUDGET)

    # Then it is about 8.3 MP (about 294 dpi), not the 0.5 MP of 72 dpi
    assert prepared.width * prepared.height >= 0.98 * BUDGET.max_pixels
    assert prepared.mapping.scale_x * 72 == pytest.approx(294, abs=2)
    assert prepared.mapping.scale_y * 72 == pytest.approx(294, abs=2)


def test_a_budget_above_the_vendor_limit_is_capped_at_max_output_pixels() -> None:
    generous = PixelBudget(max_pixels=32 * 32 * 20000)
    prepared = prepare_pdf_page(drawn_pdf([(1684.0, 2384.0)], [(50, 50, 40, 40)]), 1, generous, AT_BUDGET)
    assert prepared.width * prepared.height <= 15_680_000
    capped = generous.model_copy(update={"max_pixels": 15_680_000})
    assert (prepared.width, prepared.height) == finest((1684.0, 2384.0), capped)


# --- what lands where -----------------------------------------------------------------


def test_each_page_gets_its_own_content_in_order() -> None:
    # Given three pages whose block stands 100 pt further right on each
    data = drawn_pdf([A4] * 3, [(50 + 100 * index, 80, 60, 60) for index in range(3)])

    for index in range(3):
        # When page index+1 is prepared
        left, top, right, bottom = mark_in_points(prepare_pdf_page(data, index + 1, SMALL))

        # Then its block is where that page has it
        assert (left + right) / 2 == pytest.approx(80 + 100 * index, abs=3)
        assert (top + bottom) / 2 == pytest.approx(110, abs=3)


def test_pixels_map_back_to_points_on_the_page() -> None:
    # Given an A4 page with a block from (100, 200) to (250, 260) pt, measured from the top-left
    prepared = prepare_pdf_page(drawn_pdf([A4], [(100, 200, 150, 60)]), 1, BUDGET)

    # When the block's corners in the prepared image are mapped back
    left, top, right, bottom = mark_in_points(prepared)

    # Then they are the block's corners in points, to a fraction of a point
    assert (left, top) == (pytest.approx(100, abs=0.5), pytest.approx(200, abs=0.5))
    assert (right, bottom) == (pytest.approx(250, abs=0.5), pytest.approx(260, abs=0.5))
    assert (prepared.mapping.original_width, prepared.mapping.original_height) == pytest.approx(A4, abs=0.01)


def test_a_page_rotated_by_90_is_drawn_as_displayed() -> None:
    # Given a portrait 400x600 pt page with /Rotate 90 and a block in its own top-left corner
    data = drawn_pdf([(400.0, 600.0)], [(20, 20, 60, 40)], rotations=[90])

    # When it is prepared
    prepared = prepare_pdf_page(data, 1, SMALL)

    # Then it is landscape, the original space is the displayed 600x400 pt, the block has turned
    # clockwise into the top-right corner (its 60x40 now 40x60), and the rotation is recorded
    assert prepared.width > prepared.height
    assert (prepared.mapping.original_width, prepared.mapping.original_height) == pytest.approx((600, 400), abs=0.01)
    left, top, right, bottom = mark_in_points(prepared)
    assert (left, top, right, bottom) == (
        pytest.approx(600 - 20 - 40, abs=3),
        pytest.approx(20, abs=3),
        pytest.approx(600 - 20, abs=3),
        pytest.approx(20 + 60, abs=3),
    )
    assert "/Rotate" in prepared.steps[0].detail


def test_only_the_crop_box_is_drawn() -> None:
    # Given an A4 page cropped to a 300x200 pt window whose top-left is 100 pt in and 200 pt down,
    # with a block 50 pt inside that window
    crop = (100.0, A4[1] - 400, 400.0, A4[1] - 200)  # left, bottom, right, top in PDF space
    data = drawn_pdf([A4], [(150, 250, 40, 40)], crop_boxes=[crop])

    # When it is prepared
    prepared = prepare_pdf_page(data, 1, SMALL)

    # Then the page as displayed is the window, and the block sits 50 pt into it
    assert (prepared.mapping.original_width, prepared.mapping.original_height) == pytest.approx((300, 200), abs=0.01)
    assert prepared.width / prepared.height == pytest.approx(1.5, rel=0.05)
    left, top, _, _ = mark_in_points(prepared)
    assert (left, top) == (pytest.approx(50, abs=2), pytest.approx(50, abs=2))


def test_a_color_page_stays_color_and_a_grey_page_becomes_grey() -> None:
    red = prepare_pdf_page(drawn_pdf([A4], [(50, 50, 100, 100)], color=(220, 0, 0)), 1, SMALL)
    black = prepare_pdf_page(drawn_pdf([A4], [(50, 50, 100, 100)]), 1, SMALL)
    assert decode(red).mode == "RGB"
    left, top, right, bottom = dark_box(decode(red))
    assert decode(red).getpixel(((left + right) // 2, (top + bottom) // 2)) == (220, 0, 0)
    assert decode(black).mode == "L"
    assert [s.action for s in black.steps if s.action == "convert_mode"] == ["convert_mode"]
    assert [s.action for s in red.steps if s.action == "convert_mode"] == []


def test_a_small_color_mark_keeps_an_a4_page_in_color() -> None:
    # Given a black-on-white A4 page with one red square of 2 x 2 points (8 x 8 px at the default budget)
    document = drawn_pdf([A4], [(300, 400, 2, 2)], color=(200, 30, 30), text="Invoice 2024-001")

    # When it is prepared at the default budget
    prepared = prepare_pdf_page(document, 1, BUDGET)

    # Then the square is still red: the color check's preview saw it
    image = decode(prepared)
    assert image.mode == "RGB"
    redder = ImageChops.subtract(image.getchannel("R"), image.getchannel("G")).point(lambda v: 255 if v > 100 else 0)
    box = redder.getbbox()
    assert box is not None
    left, top = prepared.mapping.to_original_point(box[0], box[1])
    assert (left, top) == (pytest.approx(300, abs=1), pytest.approx(400, abs=1))


def test_a_grey_page_is_drawn_in_grey_with_its_own_grey_levels() -> None:
    # Given a page with a mid-grey rectangle, When it is prepared
    grey = decode(prepare_pdf_page(drawn_pdf([A4], [(50, 50, 100, 100)], color=(90, 90, 90)), 1, SMALL))

    # Then it is stored as grey, and the rectangle keeps its level
    assert grey.mode == "L"
    left, top, right, bottom = dark_box(grey)
    assert grey.getpixel(((left + right) // 2, (top + bottom) // 2)) == pytest.approx(90, abs=2)


def test_form_field_values_are_drawn() -> None:
    # Given a text field whose value only form filling draws (it has no appearance stream)
    prepared = prepare_pdf_page(form_pdf(), 1, SMALL)

    # When prepared, Then the value is on the page, inside the field's rectangle (20..280, 60..120 pt from the top)
    left, top, right, bottom = mark_in_points(prepared)
    assert 20 <= left < right <= 280
    assert 60 <= top < bottom <= 120


def test_text_is_drawn_sharp_enough_to_read() -> None:
    # Given a page of 9 pt text, When it is prepared at the default budget
    prepared = prepare_pdf_page(drawn_pdf([A4], text="The quick brown fox 0123456789\n" * 3), 1, BUDGET)

    # Then the glyphs are anti-aliased (grey levels between black and white), not a blur
    histogram = decode(prepared).histogram()
    assert sum(histogram[:64]) > 500
    assert sum(histogram[64:192]) > 100


# --- file sources -----------------------------------------------------------------------


def test_a_file_and_its_bytes_give_the_same_page() -> None:
    data = drawn_pdf([A4, LETTER], [(50, 50, 40, 40), (300, 300, 80, 20)], text="Hello")
    for page in (1, 2):
        from_bytes = prepare_pdf_page(data, page, SMALL)
        assert prepare_pdf_page(io.BytesIO(data), page, SMALL) == from_bytes
        assert prepare_pdf_page(CountingFile(data), page, SMALL) == from_bytes


def raster_pdf(pages: int, seed: int = 0) -> bytes:
    """A PDF of noise pages (incompressible JPEGs of about 40 kB each), as Pillow writes it."""
    rnd = random.Random(seed)
    images = [Image.frombytes("L", (200, 200), rnd.randbytes(40_000)) for _ in range(pages)]
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=72)
    return buffer.getvalue()


def test_one_page_of_a_big_pdf_file_reads_a_small_part_of_it() -> None:
    # Given a 150-page PDF of about 40 kB per page, as a file
    data = raster_pdf(150)
    source = CountingFile(data)

    # When page 120 is prepared from it
    prepared = prepare_pdf_page(source, 120, SMALL)

    # Then it is that page, and under a tenth of the file was read
    assert prepared == prepare_pdf_page(data, 120, SMALL)
    assert source.bytes_read < len(data) / 10


@pytest.mark.parametrize(
    "error",
    [StorageUnavailable("S3 said 503"), ConnectionResetError("connection reset by peer")],
    ids=["typed", "os-error"],
)
@pytest.mark.parametrize("where", ["cross-reference table", "page image"])
def test_a_file_that_fails_while_a_page_is_read_raises_its_own_error(error: Exception, where: str) -> None:
    # Given a PDF file whose storage fails once, either while PDFium opens it (the table at the
    # end) or while it draws page 1 (inside the page's image), where PDFium would otherwise
    # report a damaged file, or quietly draw the page without its image
    data = raster_pdf(3)
    at = data.rindex(b"xref") if where == "cross-reference table" else data.index(b"stream") + 1000
    source = CountingFile(data, failing=(at, at + 1), error=error)

    # When the page is prepared, Then the storage's own error escapes
    with pytest.raises(type(error)) as caught:
        prepare_pdf_page(source, 1, SMALL)
    assert caught.value is error


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"%PDF-1.7\n", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\ntrailer\n", b"hello, world" * 10],
    ids=["empty", "header-only", "truncated", "not-a-pdf"],
)
def test_broken_bytes_are_an_unreadable_document(data: bytes) -> None:
    for attempt in (lambda: pdf_page_count(data), lambda: prepare_pdf_page(io.BytesIO(data), 1, SMALL)):
        with pytest.raises(DocumentUnreadable) as caught:
            attempt()
        assert caught.value.code == "document.unreadable"


def test_a_pdf_without_pages_is_an_empty_document() -> None:
    # Given a well-formed PDF whose page tree is empty
    data = handmade_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])

    # When it is counted or prepared, Then it is empty, with a stable code
    for attempt in (lambda: pdf_page_count(data), lambda: prepare_pdf_page(data, 1, SMALL)):
        with pytest.raises(DocumentEmpty) as caught:
            attempt()
        assert caught.value.code == "document.empty"


def test_a_password_protected_pdf_is_an_encrypted_document() -> None:
    # Given a PDF with a user password, which opens with that password (so it is a real one)
    data = encrypted_pdf(b"secret")
    with pdfium.PdfDocument(data, password="secret") as unlocked:
        assert len(unlocked) == 1

    # When it is counted or prepared without one, Then it is encrypted, with a stable code
    for attempt in (
        lambda: pdf_page_count(data),
        lambda: prepare_pdf_page(data, 1, SMALL),
        lambda: pdf_page_count(io.BytesIO(data)),
    ):
        with pytest.raises(DocumentEncrypted) as caught:
            attempt()
        assert caught.value.code == "document.encrypted"


def test_a_pdf_with_only_an_owner_password_opens() -> None:
    # Given a PDF encrypted with an empty user password (permissions only), Then it is read
    data = encrypted_pdf(b"")
    assert pdf_page_count(data) == 1
    assert prepare_pdf_page(data, 1, SMALL).width > 0


@pytest.mark.parametrize("page", [0, -1, 4])
def test_a_page_out_of_range_is_an_invalid_request(page: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        prepare_pdf_page(drawn_pdf([A4] * 3), page, SMALL)
    assert caught.value.code == "request.invalid"


def test_pages_are_drawn_correctly_from_several_threads_at_once() -> None:
    # Given four different documents and what each gives when prepared alone
    documents = [drawn_pdf([A4], [(40 + 90 * index, 60, 50, 50)], text=f"document {index}") for index in range(4)]
    expected = [prepare_pdf_page(data, 1, SMALL) for data in documents]

    # When each is prepared five times from its own thread, all at once
    results: dict[int, list[PreparedImage]] = {index: [] for index in range(4)}

    def work(index: int) -> None:
        for _ in range(5):
            results[index].append(prepare_pdf_page(io.BytesIO(documents[index]), 1, SMALL))

    threads = [threading.Thread(target=work, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every result is the one drawn alone
    for index in range(4):
        assert results[index] == [expected[index]] * 5


# --- hostile files ------------------------------------------------------------------------


def _samples() -> list[bytes]:
    return [
        drawn_pdf([A4, (300.0, 200.0)], [(50, 50, 40, 40), (10, 10, 20, 20)], rotations=[0, 90], text="x"),
        raster_pdf(2),
        form_pdf(),
        encrypted_pdf(b""),
    ]


SAMPLES = _samples()
FUZZ_BUDGET = PixelBudget(max_pixels=32 * 32 * 64)


@st.composite
def mutated_pdf(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    position = st.integers(0, len(data) - 1)
    for index, value in draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=8)):
        data[index] = value
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


hostile_pdfs = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda tail: b"%PDF-1.7\n" + tail, st.binary(max_size=512)),
    mutated_pdf(),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile_pdfs, page=st.integers(1, 2), as_file=st.booleans())
def test_any_bytes_either_give_a_page_or_raise_a_typed_error(data: bytes, page: int, as_file: bool) -> None:
    # Given random, prefixed or mutated PDF bytes, When counted and prepared,
    # Then nothing but a document, image or request error escapes
    source = io.BytesIO(data) if as_file else data
    for attempt in (
        lambda: pdf_page_count(source),
        lambda: prepare_pdf_page(source, page, FUZZ_BUDGET, PreparationLimits(max_encoded_bytes=10_000_000)),
    ):
        try:
            attempt()
        except (DocumentUnreadable, ImageError, InvalidRequest) as exc:
            assert exc.code.startswith(("document.", "image.", "request."))


def test_the_hostile_samples_are_valid_to_begin_with() -> None:
    # A fuzzer mutating broken samples would exercise nothing but the error path.
    for data in SAMPLES:
        assert pdf_page_count(data) >= 1
        assert prepare_pdf_page(data, 1, FUZZ_BUDGET).width >= 32
