"""What each built-in task answers, built from recognized lines. Pure functions, no I/O.

Every format copies the vendor's response examples (Model Studio "Qwen-OCR", Japanese page of
2026-02-04, in /work/shared/reference/seeds/003_...):

- text_recognition / multi_lan: the lines joined by newlines, no fence.
- advanced_recognition: text is a ```json fence closed right after the array, as in the example;
  `ocr_result.words_info` items carry `rotate_rect`, `location` and `text`.
- key_information_extraction: a ```json fence around the object indented by 4 spaces, closed on its
  own line; `ocr_result.kv_result` holds the same object.
- table_parsing: a ```html fence around `<table>`, rows indented by 2 spaces and cells by 4.
- document_parsing: a ```latex fence around an article.
- formula_recognition: `$$ ... $$` with space-separated tokens and no fence.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape as html_escape
from typing import Any

from .engine import Line, Quad, group_rows
from .vendor import Task


@dataclass(frozen=True)
class TaskOutput:
    """The model's `text` and, for the tasks that have one, the structured `ocr_result`."""

    text: str
    ocr_result: dict[str, Any] | None = None


# --- geometry ---------------------------------------------------------------------


def location(quad: Quad) -> list[int]:
    """[x1, y1, ..., x4, y4], corners TL, TR, BR, BL, in whole pixels."""
    return [round(v) for point in quad for v in point]


def rotate_rect(quad: Quad) -> list[int]:
    """[cx, cy, w, h, angle] in the vendor's convention, which is OpenCV's minAreaRect before 4.5.

    In the vendor's example a line whose top edge runs slightly downhill to the right (about 1 degree)
    is `[cx, cy, 49, 197, -89]`: the angle lies in [-90, 0), and `w` is the side the angle points along,
    here the short one. A line running uphill keeps its long side as `w` with the (small, negative)
    angle itself. Values are truncated to integers, as the example's centre (150.75 -> 150) shows.
    """
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = quad
    cx = (x1 + x2 + x3 + x4) / 4
    cy = (y1 + y2 + y3 + y4) / 4
    long_side = (math.dist((x1, y1), (x2, y2)) + math.dist((x4, y4), (x3, y3))) / 2
    short_side = (math.dist((x1, y1), (x4, y4)) + math.dist((x2, y2), (x3, y3))) / 2
    tilt = math.degrees(math.atan2(y2 - y1, x2 - x1))
    # Bring the tilt into [-90, 90): text upside down is still a rectangle of the same shape.
    tilt = (tilt + 90) % 180 - 90
    if tilt < 0:
        width, height, angle = long_side, short_side, tilt
    else:
        width, height, angle = short_side, long_side, tilt - 90
    return [int(cx), int(cy), int(width), int(height), int(angle)]


# --- text_recognition, multi_lan, advanced_recognition ----------------------------------


def plain_text(lines: Sequence[Line]) -> str:
    """One line of output per line of text, in reading order."""
    return "\n".join(line.text for line in lines)


def words_info(lines: Sequence[Line]) -> list[dict[str, Any]]:
    return [
        {"rotate_rect": rotate_rect(line.quad), "location": location(line.quad), "text": line.text} for line in lines
    ]


def advanced_recognition(lines: Sequence[Line]) -> TaskOutput:
    """Boxes in both the text (what compatible mode sees) and `ocr_result.words_info`.

    The vendor's example text is a ```json fence around a list of `rotate_rect` records, closed
    directly after the list; ours names each record's text too, so the text alone is usable.
    """
    records = [{"rotate_rect": rotate_rect(line.quad), "text": line.text} for line in lines]
    text = "```json\n" + json.dumps(records, ensure_ascii=False) + "```"
    return TaskOutput(text=text, ocr_result={"words_info": words_info(lines)})


# --- key_information_extraction ---------------------------------------------------

_SEPARATOR = re.compile(r"\s*[:：=]\s*")
_LETTER = re.compile(r"[^\W\d_]")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
# Below this a key and a printed label do not name the same thing.
MIN_KEY_SIMILARITY = 0.5


@dataclass(frozen=True)
class Pair:
    key: str
    value: str


def key_value_pairs(lines: Sequence[Line]) -> list[Pair]:
    """Pairs printed as "Key: Value" (also "Key：Value", "Key = Value"), or as a label and a value side by side.

    A label with nothing after its colon takes the next segment on its row, else the next line.
    """
    ordered = [line for row in group_rows(lines) for line in row]
    rows = group_rows(lines)
    row_of = {id(line): index for index, row in enumerate(rows) for line in row}
    pairs: list[Pair] = []
    used: set[int] = set()
    for index, line in enumerate(ordered):
        if id(line) in used:
            continue
        parts = _SEPARATOR.split(line.text, maxsplit=1)
        # A label has a letter in it; "10:30" is a time, not a pair.
        if len(parts) == 2 and _LETTER.search(parts[0]):
            key, value = parts[0].strip(), parts[1].strip()
            if not value and index + 1 < len(ordered):
                following = ordered[index + 1]
                value = following.text.strip()
                used.add(id(following))
            pairs.append(Pair(key, value))
            continue
        row = rows[row_of[id(line)]]
        if len(row) == 2 and row[0] is line and id(row[1]) not in used:
            # A two-cell row without a colon: label on the left, value on the right.
            pairs.append(Pair(line.text.strip(), row[1].text.strip()))
            used.add(id(row[1]))
    return pairs


def _normalize(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text.casefold()).split())


def key_similarity(name: str, label: str) -> float:
    """How well a schema key (or its description) names a printed label, from 0 to 1."""
    a, b = _normalize(name), _normalize(label)
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    if a.replace(" ", "") == b.replace(" ", ""):
        return 0.95
    words_a, words_b = set(a.split()), set(b.split())
    if a in b or b in a:
        return 0.8 * min(len(words_a), len(words_b)) / max(len(words_a), len(words_b)) + 0.1
    return 0.7 * len(words_a & words_b) / len(words_a | words_b)


def _matches(key: str, hint: Any, pairs: Sequence[Pair]) -> list[Pair]:
    """Pairs whose label names `key` (or, failing that, the schema's description of it), best first."""
    scored: list[tuple[float, int, Pair]] = []
    for order, pair in enumerate(pairs):
        score = key_similarity(key, pair.key)
        # A description such as "the invoice number, digits only" names the label it describes.
        described = isinstance(hint, str) and bool(_normalize(pair.key))
        if score < MIN_KEY_SIMILARITY and described and f" {_normalize(pair.key)} " in f" {_normalize(hint)} ":
            score = MIN_KEY_SIMILARITY
        if score >= MIN_KEY_SIMILARITY:
            scored.append((score, order, pair))
    best = max((score for score, _, _ in scored), default=0.0)
    return [pair for score, _, pair in sorted(scored, key=lambda item: item[1]) if score == best]


def fill_schema(schema: dict[str, Any], pairs: Sequence[Pair]) -> dict[str, Any]:
    """The schema with its values filled from the printed pairs; null where the image has nothing.

    A dict value is a nested schema. A list value is the template of its elements: element i takes
    the i-th occurrence of each of the template's keys, so repeated "Item: ..." lines become a list.
    """
    filled: dict[str, Any] = {}
    for key, hint in schema.items():
        if isinstance(hint, dict):
            filled[key] = fill_schema(hint, pairs)
        elif isinstance(hint, list):
            filled[key] = _fill_list(key, hint[0] if hint else None, pairs)
        else:
            found = _matches(key, hint, pairs)
            filled[key] = found[0].value if found else None
    return filled


def _fill_list(key: str, template: Any, pairs: Sequence[Pair]) -> list[Any]:
    if isinstance(template, dict):
        columns = {name: _all_values(name, hint, pairs) for name, hint in template.items()}
        count = max((len(values) for values in columns.values()), default=0)
        return [
            {name: (values[i] if i < len(values) else None) for name, values in columns.items()} for i in range(count)
        ]
    return [pair.value for pair in _matches(key, template, pairs)]


def _all_values(name: str, hint: Any, pairs: Sequence[Pair]) -> list[Any]:
    if isinstance(hint, dict):
        # A nested object inside list elements: one element's worth, from the best matches.
        return [fill_schema(hint, pairs)]
    return [pair.value for pair in _matches(name, hint, pairs)]


def extract_all(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Every printed pair; the first occurrence of a label wins."""
    found: dict[str, Any] = {}
    for pair in pairs:
        found.setdefault(pair.key, pair.value)
    return found


def key_information_extraction(lines: Sequence[Line], result_schema: dict[str, Any] | None) -> TaskOutput:
    pairs = key_value_pairs(lines)
    kv = fill_schema(result_schema, pairs) if result_schema is not None else extract_all(pairs)
    return TaskOutput(text=json_fence(kv), ocr_result={"kv_result": kv})


def json_fence(value: Any) -> str:
    """JSON as the vendor's extraction examples print it: 4-space indent, fence closed on its own line."""
    return "```json\n" + json.dumps(value, ensure_ascii=False, indent=4) + "\n```"


# --- table_parsing -----------------------------------------------------------------


def column_bands(rows: Sequence[Sequence[Line]]) -> list[tuple[float, float]]:
    """Column extents from the rows that have several cells: overlapping x-ranges are one column.

    Rows with a single segment (titles, notes) are left out, since one wide title would otherwise
    merge every column into one.
    """
    spans = sorted((line.left, line.right) for row in rows if len(row) > 1 for line in row)
    bands: list[tuple[float, float]] = []
    for left, right in spans:
        if bands and left <= bands[-1][1]:
            bands[-1] = (bands[-1][0], max(bands[-1][1], right))
        else:
            bands.append((left, right))
    return bands


def _band_of(line: Line, bands: Sequence[tuple[float, float]]) -> int:
    """The column a segment belongs to: the band it overlaps most, else the nearest one."""

    def overlap(band: tuple[float, float]) -> float:
        return min(band[1], line.right) - max(band[0], line.left)

    return max(range(len(bands)), key=lambda i: overlap(bands[i]))


def table_cells(lines: Sequence[Line]) -> list[list[str]]:
    """Rows clustered by y and cells by column, as a full grid (empty strings where nothing is printed)."""
    rows = group_rows(lines)
    bands = column_bands(rows) or [(0.0, math.inf)]
    grid: list[list[str]] = []
    for row in rows:
        cells: list[list[str]] = [[] for _ in bands]
        for line in row:
            cells[_band_of(line, bands)].append(line.text)
        grid.append([" ".join(parts) for parts in cells])
    return grid


def table_html(lines: Sequence[Line]) -> str:
    out = ["```html", "<table>"]
    for row in table_cells(lines):
        out.append("  <tr>")
        out.extend(f"    <td>{html_escape(cell, quote=False)}</td>" for cell in row)
        out.append("  </tr>")
    out += ["</table>", "```"]
    return "\n".join(out)


# --- document_parsing ----------------------------------------------------------------

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
# A row whose box is this much taller than the typical line, alone in its paragraph, is a heading.
HEADING_HEIGHT_RATIO = 1.3
# A vertical gap larger than this share of the typical line height starts a new paragraph.
PARAGRAPH_GAP_RATIO = 0.75


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def paragraphs(lines: Sequence[Line]) -> list[list[list[Line]]]:
    """Rows grouped into paragraphs by the vertical gaps between them."""
    rows = group_rows(lines)
    if not rows:
        return []
    typical = statistics.median(line.height for line in lines)
    result: list[list[list[Line]]] = [[rows[0]]]
    for previous, row in itertools.pairwise(rows):
        gap = min(line.top for line in row) - max(line.bottom for line in previous)
        if gap > PARAGRAPH_GAP_RATIO * typical:
            result.append([row])
        else:
            result[-1].append(row)
    return result


def document_latex(lines: Sequence[Line]) -> str:
    """An article with one paragraph per block of text; a lone, taller line becomes a section heading."""
    typical = statistics.median(line.height for line in lines) if lines else 0.0
    blocks: list[str] = []
    for paragraph in paragraphs(lines):
        text = latex_escape(" ".join(line.text for row in paragraph for line in row))
        tall = all(line.height >= HEADING_HEIGHT_RATIO * typical for row in paragraph for line in row)
        blocks.append(f"\\section{{{text}}}" if len(paragraph) == 1 and tall else text)
    body = "\n\n".join(blocks)
    return "```latex\n\\documentclass{article}\n\n\\begin{document}\n\n" + body + "\n\n\\end{document}\n```"


# --- formula_recognition -------------------------------------------------------------

_MATH_SYMBOLS = {
    "×": r"\times",
    "÷": r"\div",
    "±": r"\pm",
    "≤": r"\leq",
    "≥": r"\geq",
    "≠": r"\neq",
    "≈": r"\approx",
    "∞": r"\infty",
    "→": r"\rightarrow",
    "√": r"\sqrt",
    "∑": r"\sum",
    "∫": r"\int",
    "∂": r"\partial",
    "·": r"\cdot",
    "π": r"\pi",
    "α": r"\alpha",
    "β": r"\beta",
    "γ": r"\gamma",
    "δ": r"\delta",
    "θ": r"\theta",
    "λ": r"\lambda",
    "μ": r"\mu",
    "σ": r"\sigma",
    "Ω": r"\Omega",
    "%": r"\%",
    "#": r"\#",
    "&": r"\&",
    "$": r"\$",
}
_LATEX_TOKEN = re.compile(r"\\[A-Za-z]+|\S")


def formula_latex(lines: Sequence[Line]) -> str:
    """Each line as display math, one token per symbol as in the vendor's `$$\\tilde { Q } ( x ) ...$$`.

    Text the reader returns is not LaTeX; mapping the common symbols and spacing the tokens is as
    close as an OCR engine gets.
    """
    formulas = []
    for line in lines:
        tokens = [_MATH_SYMBOLS.get(token, token) for token in _LATEX_TOKEN.findall(line.text)]
        if tokens:
            formulas.append("$$" + " ".join(tokens) + "$$")
    return "\n".join(formulas)


# --- dispatch -----------------------------------------------------------------------


def task_output(task: Task, lines: Sequence[Line], *, result_schema: dict[str, Any] | None = None) -> TaskOutput:
    """The model's answer to `task` for these lines (in reading order)."""
    if task is Task.ADVANCED_RECOGNITION:
        return advanced_recognition(lines)
    if task is Task.KEY_INFORMATION_EXTRACTION:
        return key_information_extraction(lines, result_schema)
    if task is Task.TABLE_PARSING:
        return TaskOutput(text=table_html(lines))
    if task is Task.DOCUMENT_PARSING:
        return TaskOutput(text=document_latex(lines))
    if task is Task.FORMULA_RECOGNITION:
        return TaskOutput(text=formula_latex(lines))
    return TaskOutput(text=plain_text(lines))
