"""The inputs the benchmarks measure on, made here so that every run measures the same bytes.

A text-heavy A4 page is vector text (Helvetica, 10 pt, 64 lines of about 80 characters), the way
office software and report generators write PDFs; a phone photo is a 12 MP JPEG of a printed page.
"""

from __future__ import annotations

import ctypes
import io
import random

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageDraw, ImageFilter, ImageFont

A4_POINTS = (595.28, 841.89)
PHONE_PHOTO_SIZE = (4032, 3024)  # 12.2 MP, the usual 4:3 sensor of a phone camera

_WORDS = [
    "invoice",
    "total",
    "amount",
    "payment",
    "due",
    "date",
    "customer",
    "account",
    "number",
    "quantity",
    "price",
    "tax",
    "shipping",
    "address",
    "order",
    "reference",
    "description",
    "balance",
    "period",
    "service",
    "delivery",
    "contract",
    "annual",
    "revenue",
    "cost",
    "report",
    "the",
    "of",
    "and",
    "to",
    "in",
    "for",
    "on",
    "with",
    "by",
    "from",
    "is",
    "are",
    "be",
    "this",
    "that",
]
_LINES_PER_PAGE = 64
_WORDS_PER_LINE = 12


def page_lines(page: int, seed: int = 7) -> list[str]:
    """The lines printed on page `page` (1-based) of a text document: numbered, and different per page."""
    rng = random.Random(f"{seed}/{page}")
    return [
        f"{page}.{line} " + " ".join(rng.choice(_WORDS) for _ in range(_WORDS_PER_LINE))
        for line in range(1, _LINES_PER_PAGE + 1)
    ]


def text_pdf(pages: int, *, distinct: int | None = None, seed: int = 7) -> bytes:
    """An A4 PDF of `pages` text-heavy pages; with `distinct`, the page contents repeat every `distinct` pages."""
    document = pdfium.PdfDocument.new()
    try:
        for index in range(pages):
            content = index % distinct + 1 if distinct else index + 1
            page = document.new_page(*A4_POINTS)
            for row, text in enumerate(page_lines(content, seed)):
                _add_text(document, page, text, x=50.0, y=800.0 - 12.0 * row)
            page.gen_content()
            page.close()
        return _saved(document)
    finally:
        document.close()


def small_print_pdf(prints: list[tuple[str, float]], seed: int = 7) -> bytes:
    """One A4 page per (standard font, point size): the lines of `page_lines`, set solid at that size.

    Small print (6-8 pt: footnotes, terms, dense tables) is what a lower drawing resolution loses first.
    """
    document = pdfium.PdfDocument.new()
    try:
        for index, (font, size) in enumerate(prints):
            page = document.new_page(*A4_POINTS)
            for row, text in enumerate(page_lines(index + 1, seed)):
                _add_text(document, page, text, x=50.0, y=800.0 - 1.25 * size * row, font=font, size=size)
            page.gen_content()
            page.close()
        return _saved(document)
    finally:
        document.close()


def _add_text(
    document: pdfium.PdfDocument,
    page: pdfium.PdfPage,
    text: str,
    *,
    x: float,
    y: float,
    font: str = "Helvetica",
    size: float = 10.0,
) -> None:
    # pypdfium2 has no helper that creates text, so this goes through PDFium's own editing API.
    text_object = pdfium_c.FPDFPageObj_NewTextObj(document.raw, font.encode("ascii"), ctypes.c_float(size))
    utf16 = (text + "\0").encode("utf-16-le")
    pdfium_c.FPDFText_SetText(text_object, ctypes.cast(ctypes.c_char_p(utf16), pdfium_c.FPDF_WIDESTRING))
    pdfium_c.FPDFPageObj_Transform(text_object, 1, 0, 0, 1, x, y)
    pdfium_c.FPDFPage_InsertObject(page.raw, text_object)


def blank_pdf(pages: int) -> bytes:
    """A4 pages with nothing on them: for measuring what planning costs per page, not per byte."""
    document = pdfium.PdfDocument.new()
    try:
        for _ in range(pages):
            document.new_page(*A4_POINTS).close()
        buffer = io.BytesIO()
        document.save(buffer)
        return buffer.getvalue()
    finally:
        document.close()


def phone_photo_jpeg(seed: int = 11) -> bytes:
    """A 12 MP JPEG of a printed page photographed in room light: uneven paper, sensor noise, slight blur."""
    width, height = PHONE_PHOTO_SIZE
    # Light falls off from the top left, as from a window.
    light = Image.linear_gradient("L").resize((width, height)).point(lambda v: 235 - v // 6)
    noise = Image.effect_noise((width, height), 18)
    paper = Image.merge(
        "RGB", (light, light.point(lambda v: v - 4), light.point(lambda v: v - 14))
    )  # warm white balance
    paper = Image.blend(paper, Image.merge("RGB", (noise, noise, noise)), 0.08)
    draw = ImageDraw.Draw(paper)
    font = _font(54)
    top = 260
    for row, text in enumerate(page_lines(1, seed)[:40]):
        draw.text((300, top + 66 * row), text, fill=(38, 36, 40), font=font)
    photo = paper.filter(ImageFilter.GaussianBlur(1.2))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def _saved(document: pdfium.PdfDocument) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
