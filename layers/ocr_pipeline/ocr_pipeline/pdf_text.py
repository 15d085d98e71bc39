"""A PDF page's embedded text layer, and whether it can stand in for OCR.

Reading the layer costs a fraction of drawing the page and nothing at the model, but a text
layer is only worth trusting when it is the page's content: a scanned page carries its words
as pixels (sometimes with an invisible OCR layer of unknown quality on top), a page may show
pictures of text, and fonts without a Unicode mapping extract as replacement characters.
`read_text_layer` gathers the facts from PDFium; `judge_text_layer` decides from the facts
alone, so the rule can be read and tested without a PDF.
"""

from __future__ import annotations

import unicodedata

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from pydantic import BaseModel, ConfigDict, Field

# PDFium is entered under pdf.py's lock and through its opener, which turns every PDFium
# failure into a typed document error and reads a file source by ranges.
from .pdf import PdfSource, open_page


class TextLayerFacts(BaseModel):
    """What PDFium says about one page's text and pictures."""

    model_config = ConfigDict(frozen=True)

    text: str
    # Characters other than whitespace, as extracted.
    visible_chars: int = Field(ge=0)
    # Characters that carry no reading: U+FFFD, control and private-use code points, or
    # glyphs PDFium reports as having a broken Unicode mapping.
    unreadable_chars: int = Field(ge=0)
    text_objects: int = Field(ge=0)
    invisible_text_objects: int = Field(ge=0)
    # Share of the page's box covered by images (overlaps counted twice, capped at 1).
    image_coverage: float = Field(ge=0, le=1)


class TextLayerRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Fewer characters than this (a page number, a stamp over a scan) is no evidence that the
    # page's content is in the layer, and such a page costs little to OCR anyway.
    min_visible_chars: int = Field(default=20, ge=1)
    # A few unmapped glyphs (a symbol font's bullets) do not spoil a page; more mean a font
    # whose text cannot be read back.
    max_unreadable_share: float = Field(default=0.02, ge=0, le=1)
    # Invisible text is what OCR tools lay over scans; we would rather read the page ourselves.
    max_invisible_share: float = Field(default=0.0, ge=0, le=1)
    # A picture this large may hold text the layer lacks (a scan, a pasted screenshot); logos
    # and signatures stay well below it.
    max_image_coverage: float = Field(default=0.15, ge=0, le=1)


DEFAULT_RULE = TextLayerRule()


class TextLayerVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    complete: bool
    reason: str


def judge_text_layer(facts: TextLayerFacts, rule: TextLayerRule = DEFAULT_RULE) -> TextLayerVerdict:
    """Complete only when every check passes; the reason names the first that does not."""
    if facts.image_coverage > rule.max_image_coverage:
        return TextLayerVerdict(complete=False, reason=f"images cover {facts.image_coverage:.0%} of the page")
    if facts.visible_chars < rule.min_visible_chars:
        return TextLayerVerdict(complete=False, reason=f"only {facts.visible_chars} characters of text")
    if facts.text_objects and facts.invisible_text_objects / facts.text_objects > rule.max_invisible_share:
        return TextLayerVerdict(
            complete=False, reason=f"{facts.invisible_text_objects} of {facts.text_objects} text objects are invisible"
        )
    if facts.unreadable_chars / facts.visible_chars > rule.max_unreadable_share:
        return TextLayerVerdict(
            complete=False, reason=f"{facts.unreadable_chars} of {facts.visible_chars} characters are unreadable"
        )
    return TextLayerVerdict(complete=True, reason=f"{facts.visible_chars} characters, no large images")


def read_text_layer(source: PdfSource, page_number: int) -> TextLayerFacts:
    """The facts about page `page_number` (1-based). Raises the document errors pdf.py raises."""
    with open_page(source, page_number) as (page, _, _):
        textpage = page.get_textpage()
        try:
            text, visible, unreadable = _text(textpage)
        finally:
            textpage.close()
        text_objects, invisible = _text_objects(page)
        coverage = _image_coverage(page)
    return TextLayerFacts(
        text=text,
        visible_chars=visible,
        unreadable_chars=unreadable,
        text_objects=text_objects,
        invisible_text_objects=invisible,
        image_coverage=coverage,
    )


def _text(textpage: pdfium.PdfTextPage) -> tuple[str, int, int]:
    count = textpage.count_chars()
    if count <= 0:
        return "", 0, 0
    # PDFium ends lines with CRLF; the model's plain text uses LF.
    text = textpage.get_text_range(0, count).replace("\r\n", "\n").replace("\r", "\n")
    mapping_errors = sum(1 for i in range(count) if pdfium_c.FPDFText_HasUnicodeMapError(textpage, i) == 1)
    visible = sum(1 for ch in text if not ch.isspace())
    unreadable = sum(1 for ch in text if not ch.isspace() and _unreadable(ch))
    return text.strip(), visible, max(unreadable, mapping_errors)


def _unreadable(ch: str) -> bool:
    return ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Co", "Cs")


def _text_objects(page: pdfium.PdfPage) -> tuple[int, int]:
    total = invisible = 0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_TEXT]):
        total += 1
        if pdfium_c.FPDFTextObj_GetTextRenderMode(obj) == pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE:
            invisible += 1
    return total, invisible


def _image_coverage(page: pdfium.PdfPage) -> float:
    left, bottom, right, top = page.get_bbox()
    page_area = (right - left) * (top - bottom)
    if page_area <= 0:
        return 1.0
    covered = 0.0
    # Only the page's own objects have bounds in page space. A form XObject that holds an image
    # anywhere inside counts with its whole box: on doubt, the page goes to OCR.
    for obj in page.get_objects(max_depth=1):
        if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE or (
            obj.type == pdfium_c.FPDF_PAGEOBJ_FORM
            and any(True for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], form=obj))
        ):
            o_left, o_bottom, o_right, o_top = obj.get_bounds()
            width = min(right, o_right) - max(left, o_left)
            height = min(top, o_top) - max(bottom, o_bottom)
            if width > 0 and height > 0:
                covered += width * height
    return min(1.0, covered / page_area)
