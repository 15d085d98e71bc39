"""`ocr-pipeline draw`: the boxes advanced_recognition returned, with their text, on the original page.

The picture the vendor's FAQ describes (boxes and labels on the original image). Words in a
result are already in the original's space (`CoordinateMapping`): pixels of the upright image, or
PDF points of the page as displayed. A PDF page is therefore drawn by PDFium at a known scale
(pixels per point) and the points are multiplied by it; an image is used as it is, upright.

Labels need a font with CJK glyphs. The `local` extra installs Noto Sans CJK (package
`noto-cjk-sans-otc`); otherwise fontconfig is asked for a Chinese font, and failing that, Pillow's
own font is used with a warning, since CJK labels then show as empty boxes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ocr_pipeline.results import Word
from PIL import Image, ImageDraw, ImageFont, ImageOps

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (0, 128, 128), (128, 0, 0)]
BOX_FILL_ALPHA = 60
LABEL_BACKGROUND = (255, 255, 255, 215)
# Scale a PDF page is drawn at when the result does not say how the model saw it.
DEFAULT_PDF_SCALE = 2.0
# A CJK font family to prefer inside a collection: the vendor's documents are mostly Chinese.
_PREFERRED_FAMILY = "SC"

AnyFont = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class PageWords:
    """One page's words, in the original's coordinate space, and what is known about that space."""

    page: int
    words: list[Word]
    original_width: float | None
    original_height: float | None
    source_format: str | None
    # Prepared pixels per original unit: about 4 for a PDF page drawn at the default budget.
    scale: float | None


@dataclass(frozen=True)
class FontChoice:
    path: str | None
    index: int = 0
    warning: str | None = None

    def at(self, size: int) -> AnyFont:
        return _font(self.path, self.index, size)


# --- reading results ----------------------------------------------------------------------------


def pages_with_words(result: dict[str, Any]) -> list[PageWords]:
    """Pages that have boxes, from a run result (`pages`) or from `recognize --json` (`words`)."""
    if "pages" in result:
        entries = [(p.get("page", i + 1), p) for i, p in enumerate(result["pages"])]
    elif "words" in result:
        entries = [(1, result)]
    else:
        raise ValueError("not a result of `ocr-pipeline run` nor of `ocr-pipeline recognize --json`")
    pages: list[PageWords] = []
    for number, entry in entries:
        if not entry.get("words"):
            continue
        image = entry.get("image") or {}
        pages.append(
            PageWords(
                page=int(number),
                words=[Word.model_validate(w) for w in entry["words"]],
                original_width=image.get("original_width"),
                original_height=image.get("original_height"),
                source_format=image.get("source_format"),
                scale=image.get("scale_x"),
            )
        )
    return pages


# --- the page picture ---------------------------------------------------------------------------


def page_picture(page: PageWords, original: Path | None) -> tuple[Image.Image, float, list[str]]:
    """The page as an RGB image, the factor from word coordinates to its pixels, and warnings."""
    warnings: list[str] = []
    if original is None:
        scale = (page.scale or DEFAULT_PDF_SCALE) if page.source_format == "PDF" else 1.0
        width, height = _extent(page, scale)
        warnings.append("no --image given: boxes are drawn on a blank page of the original's size")
        return Image.new("RGB", (width, height), "white"), scale, warnings
    with original.open("rb") as file:
        is_pdf = file.read(1024).lstrip(b"\x00\t\n\r ").startswith(b"%PDF-")
    if is_pdf:
        scale = page.scale or DEFAULT_PDF_SCALE
        return _render_pdf_page(original, page.page, scale), scale, warnings
    with Image.open(original) as opened:
        if page.page > 1:
            opened.seek(page.page - 1)
        upright = ImageOps.exif_transpose(opened).convert("RGB")
    scale = 1.0
    if page.original_width and abs(upright.width - page.original_width) > 0.5:
        # Not the image the result was made from, or a resized copy: scale the boxes to it.
        scale = upright.width / page.original_width
        warnings.append(
            f"the image is {upright.width}x{upright.height} but the result was made on "
            f"{page.original_width}x{page.original_height}: boxes scaled by {scale:.3f}"
        )
    return upright, scale, warnings


def _extent(page: PageWords, scale: float) -> tuple[int, int]:
    if page.original_width and page.original_height:
        return math.ceil(page.original_width * scale), math.ceil(page.original_height * scale)
    xs = [x for w in page.words for x in w.location[0::2]]
    ys = [y for w in page.words for y in w.location[1::2]]
    return math.ceil(max(xs) * scale) + 20, math.ceil(max(ys) * scale) + 20


def _render_pdf_page(path: Path, page_number: int, scale: float) -> Image.Image:
    """The page as displayed (its /Rotate applied, within its crop box): the space of the words."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(path))
    try:
        page = document[page_number - 1]
        try:
            bitmap = page.render(scale=scale, may_draw_forms=True)
            return bitmap.to_pil().convert("RGB")
        finally:
            page.close()
    finally:
        document.close()


# --- drawing ------------------------------------------------------------------------------------


def draw_words(picture: Image.Image, words: list[Word], scale: float, font: FontChoice) -> Image.Image:
    """Translucent boxes with outlines, each labelled with its text along its top edge."""
    base = picture.convert("RGBA")
    boxes = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(boxes)
    line = max(2, round(min(base.size) / 400))
    quads = [[(x * scale, y * scale) for x, y in zip(w.location[0::2], w.location[1::2], strict=True)] for w in words]
    for i, quad in enumerate(quads):
        color = PALETTE[i % len(PALETTE)]
        draw.polygon(quad, fill=(*color, BOX_FILL_ALPHA), outline=(*color, 255), width=line)
    composed = Image.alpha_composite(base, boxes)
    for i, (word, quad) in enumerate(zip(words, quads, strict=True)):
        _label(composed, word.text, quad, PALETTE[i % len(PALETTE)], font)
    return composed.convert("RGB")


def _label(
    canvas: Image.Image, text: str, quad: list[tuple[float, float]], color: tuple[int, int, int], font: FontChoice
) -> None:
    (x1, y1), (x2, y2), _, (x4, y4) = quad
    if not text.strip():
        return
    box_height = math.hypot(x4 - x1, y4 - y1)
    face = font.at(max(10, min(48, round(box_height * 0.6))))
    left, top, right, bottom = (math.floor(v) for v in face.getbbox(text))
    pad = 2
    tile = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), LABEL_BACKGROUND)
    ImageDraw.Draw(tile).text((pad - left, pad - top), text, font=face, fill=(*(c // 2 for c in color), 255))
    # The label sits on the box's top edge, outside it, turned like the edge.
    angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
    turned = tile.rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True)
    # Where the tile's bottom-left corner lands in the turned tile, relative to its centre.
    theta = math.radians(angle)
    dx, dy = -tile.width / 2, tile.height / 2
    corner = (dx * math.cos(theta) - dy * math.sin(theta), dx * math.sin(theta) + dy * math.cos(theta))
    x = x1 - (turned.width / 2 + corner[0])
    y = y1 - (turned.height / 2 + corner[1])
    if y < 0:  # no room above the first line: put the label just inside the box
        y += tile.height
    canvas.alpha_composite(turned, (round(x), round(y)))


# --- fonts --------------------------------------------------------------------------------------


@cache
def find_cjk_font() -> FontChoice:
    """A font that has Chinese, Japanese and Korean glyphs, or Pillow's own with a warning."""
    try:
        import noto_cjk_sans_otc  # type: ignore[import-not-found]

        path = str(noto_cjk_sans_otc.FONT_PATH)
        return FontChoice(path, _preferred_index(path))
    except ImportError:
        pass
    fc_list = shutil.which("fc-list")
    if fc_list:
        found = subprocess.run([fc_list, ":lang=zh", "file"], capture_output=True, text=True, check=False).stdout
        paths = sorted(line.split(":")[0].strip() for line in found.splitlines() if line.strip())
        if paths:
            return FontChoice(paths[0], _preferred_index(paths[0]))
    return FontChoice(
        None,
        warning="no CJK font found: Chinese, Japanese and Korean labels show as empty boxes "
        "(install the `local` extra, which brings Noto Sans CJK, or pass --font)",
    )


def font_from_file(path: str) -> FontChoice:
    return FontChoice(path, _preferred_index(path))


def _preferred_index(path: str) -> int:
    """In a collection (.ttc), the Simplified Chinese face if there is one."""
    if not path.lower().endswith((".ttc", ".otc")):
        return 0
    for index in range(32):
        try:
            family, _ = ImageFont.truetype(path, 12, index=index).getname()
        except OSError:
            break
        if family and family.split()[-1] == _PREFERRED_FAMILY:
            return index
    return 0


@cache
def _font(path: str | None, index: int, size: int) -> AnyFont:
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size, index=index)


# --- files --------------------------------------------------------------------------------------


def draw_result(
    result: dict[str, Any],
    out: Path,
    *,
    page: int | None = None,
    original: Path | None = None,
    font: FontChoice | None = None,
    max_side: int | None = None,
) -> tuple[PageWords, list[str]]:
    """Draw one page of `result` to `out` (PNG); returns the page drawn and warnings."""
    pages = pages_with_words(result)
    if not pages:
        raise ValueError("the result has no boxes: only advanced_recognition returns them")
    chosen = pages[0] if page is None else next((p for p in pages if p.page == page), None)
    if chosen is None:
        total = len(result["pages"]) if isinstance(result.get("pages"), list) else 1
        if page is not None and not 1 <= page <= total:
            raise ValueError(f"the result has {total} page(s); there is no page {page}")
        raise ValueError(f"page {page} has no boxes; pages with boxes: {', '.join(str(p.page) for p in pages)}")
    font = font or find_cjk_font()
    picture, scale, warnings = page_picture(chosen, original)
    drawn = draw_words(picture, chosen.words, scale, font)
    if max_side and max(drawn.size) > max_side:
        drawn.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    drawn.save(out, "PNG", optimize=True)
    if font.warning and any(ord(c) > 0x2E7F for w in chosen.words for c in w.text):
        warnings.append(font.warning)
    return chosen, warnings


def write_run_overlays(result_file: Path, original: Path, out_dir: Path) -> list[Path]:
    """`run --overlays`: one PNG per page with boxes, named after the result file."""
    result = json.loads(result_file.read_text(encoding="utf-8"))
    if "pages" not in result:
        return []  # a failed document: its result file is the outcome, with no pages
    written: list[Path] = []
    for page in pages_with_words(result):
        target = out_dir / f"{result_file.stem}.page{page.page}.png"
        _, warnings = draw_result(result, target, page=page.page, original=original)
        for warning in warnings:
            print(f"warning: {target.name}: {warning}", file=sys.stderr)
        written.append(target)
    return written


def command_draw(args: argparse.Namespace) -> int:
    from ocr_pipeline.errors import InvalidRequest

    source = Path(args.result)
    if not source.is_file():
        raise InvalidRequest(f"no such file: {source}")
    original = Path(args.image) if args.image else None
    if original is not None and not original.is_file():
        raise InvalidRequest(f"no such file: {original}")
    try:
        result = json.loads(source.read_text(encoding="utf-8"))
        font = font_from_file(args.font) if args.font else None
        chosen, warnings = draw_result(
            result, Path(args.output), page=args.page, original=original, font=font, max_side=args.max_side
        )
    except (ValueError, OSError) as error:
        raise InvalidRequest(str(error)) from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.output}: page {chosen.page}, {len(chosen.words)} boxes", file=sys.stderr)
    return 0


def add_commands(commands: Any) -> None:
    draw = commands.add_parser("draw", help="draw advanced_recognition boxes and their text on the original page")
    draw.add_argument("result", help="a result file of `run` (out/results/*.json) or the output of `recognize --json`")
    draw.add_argument("--page", type=int, default=None, help="page number (default: the first page with boxes)")
    draw.add_argument("--image", help="the original image or PDF (default: a blank page of its size)")
    draw.add_argument("-o", "--output", required=True, help="PNG file to write")
    draw.add_argument("--font", help="a TrueType/OpenType font file for the labels (default: a CJK font)")
    draw.add_argument("--max-side", type=int, default=None, help="shrink the picture to at most this many pixels")
    draw.set_defaults(handler=command_draw)
