"""Typed recognition results, and parsing of what the model writes.

The model answers in text that is often wrapped in a markdown fence (```json, ```html,
```latex). Built-in tasks may add a structured `ocr_result`. Parsing is lenient about
the wrapping and strict about the content: if a task's payload cannot be read we keep
the raw text and say so in `parse_warnings`, rather than inventing fields.

Nothing here raises on what the model wrote: a reply that was read has been billed, and asking
again costs as much and usually answers the same. A bad box loses its box, not its line; a
payload that is not JSON stays text. Only values JSON can hold ever leave this module.
"""

from __future__ import annotations

import ast
import json
import math
import re
from html.parser import HTMLParser
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .tasks import OcrTask

_FENCE = re.compile(r"```[ \t]*(?P<lang>[A-Za-z0-9_+-]*)[ \t]*\n?(?P<body>.*?)(?:```|\Z)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
# What is left of a closing fence cut short: one to three backticks alone on the last line, or
# two glued to the end (a single glued backtick may close inline code, so it stays).
_FENCE_TAIL = re.compile(r"(?:\n[ \t]*`{1,3}|``)\Z")
# A tag the output stopped in the middle of ("<", "</", "</t"): markup, never cell text.
_CUT_TAG = re.compile(r"<(?:/?[A-Za-z][A-Za-z0-9]*|/)?\Z")
NOT_JSON = "not JSON"
# Deeper than any reply we can use, and well inside the interpreter's recursion limit.
MAX_JSON_DEPTH = 64


class Word(BaseModel):
    """One located text line. Coordinates are absolute pixels, origin top-left."""

    model_config = ConfigDict(frozen=True)

    text: str
    # Corners top-left, top-right, bottom-right, bottom-left: x1, y1, ..., x4, y4.
    location: list[float] = Field(min_length=8, max_length=8)
    # Centre x, centre y, width, height, angle in degrees within [-90, 90].
    rotate_rect: list[float] = Field(min_length=5, max_length=5)


class RecognitionResult(BaseModel):
    """What one OCR call recognized. Only the fields the task produces are set."""

    task: OcrTask | None = None
    text: str = ""
    words: list[Word] | None = None
    kv: dict[str, Any] | None = None
    html: str | None = None
    latex: str | None = None
    raw_text: str = ""
    parse_warnings: list[str] = Field(default_factory=list)


def split_fence(text: str) -> tuple[str | None, str]:
    """Return (language, body) of the first fenced block, or (None, text) when unfenced.

    Handles the variants seen in the vendor's examples and in cut-off output: a closing fence
    glued to the body (```json\n[...]```), a missing closing fence on truncated output, a closing
    fence cut short (a last line of one or two backticks), and a closing fence with no opening one.
    No fence character is ever part of the body.
    """
    match = _FENCE.search(text)
    if match is None:
        return None, _strip_fence_tail(text)
    before = text[: match.start()].strip()
    if before and not match.group("lang") and not match.group("body").strip():
        # The only fence closes a block that was never opened: the text is what comes before it.
        return None, _strip_fence_tail(before)
    return (match.group("lang").lower() or None), _strip_fence_tail(match.group("body"))


def _strip_fence_tail(body: str) -> str:
    """The body without a fence cut short at its end: a last line of backticks, or two glued to it."""
    return _FENCE_TAIL.sub("", body.strip()).strip()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which is not a JSON value")


def _json_value(value: Any, depth: int = 0) -> Any:
    """`value` if it is made of JSON values only (what a Python literal may hold beyond them is refused)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested more than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"holds {value}, which is not a JSON number")
        return value
    if isinstance(value, list):
        return [_json_value(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("has an object key that is not a string")
        return {key: _json_value(item, depth + 1) for key, item in value.items()}
    # Ellipsis (`...`), bytes, tuples, sets, complex numbers: Python, not JSON.
    what = "`...` (Python's Ellipsis)" if value is Ellipsis else f"a Python {type(value).__name__}"
    raise ValueError(f"holds {what}, which JSON has no value for")


def parse_json_lenient(body: str) -> Any:
    """JSON as the model writes it: strict first, then without trailing commas, then Python literals.

    Whatever it returns is a JSON object or array of JSON values only, so it can be stored and sent
    as JSON; anything else (a Python-only literal such as `...` or `b'..'`, NaN, nesting deep enough
    to exhaust the parser) is ValueError with the reason, for the caller to keep the raw text.
    """
    for candidate in (body, _TRAILING_COMMA.sub(r"\1", body)):
        try:
            value = json.loads(candidate, parse_constant=_reject_constant)
        except json.JSONDecodeError:
            continue
        except RecursionError:
            raise ValueError("is nested deeper than the parser can follow") from None
        return _json_container(value)
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise ValueError(NOT_JSON) from None
    return _json_container(value)


def _json_container(value: Any) -> Any:
    if not isinstance(value, dict | list):
        raise ValueError("is not a JSON object or array")
    try:
        return _json_value(value)
    except RecursionError:
        raise ValueError(f"is nested more than {MAX_JSON_DEPTH} levels") from None


class _HtmlTextExtractor(HTMLParser):
    """Cell text of an HTML table: tabs between cells, newlines between rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._loose: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif data.strip():
            self._loose.append(data.strip())

    def text(self) -> str:
        lines = [*self._loose, *("\t".join(row) for row in self.rows if row)]
        return "\n".join(lines)


def html_to_text(html: str) -> str:
    extractor = _HtmlTextExtractor()
    extractor.feed(html)
    extractor.close()
    return extractor.text()


class _Lines:
    """Text lines with boxes, read one entry at a time: a bad box loses its box, never the reply."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.words: list[Word] = []
        self.texts: list[str] = []
        self.warnings: list[str] = []

    def add(self, index: int, item: Any) -> None:
        where = f"{self.origin}[{index}]"
        if not isinstance(item, dict):
            self.warnings.append(f"{where} is not an object; skipped")
            return
        text = item.get("text")
        if not isinstance(text, str):
            self.warnings.append(f"{where} has no text; skipped")
            return
        self.texts.append(text)
        try:
            self.words.append(_word(text, item))
        except (ValueError, TypeError) as exc:
            self.warnings.append(f"{where} ({text[:40]!r}) has no usable box ({_reason(exc)}); its text is kept")


def _word(text: str, item: dict[str, Any]) -> Word:
    rect = item.get("rotate_rect")
    if not isinstance(rect, list):
        raise ValueError("no rotate_rect")
    rect_values = [_number(v) for v in rect]
    location = item.get("location")
    if location is None:
        location = corners_of_rotate_rect(rect_values) if len(rect_values) == 5 else None
    if not isinstance(location, list):
        raise ValueError("no location")
    return Word(text=text, rotate_rect=rect_values, location=[_number(v) for v in location])


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a coordinate")
    return float(value)


def _reason(exc: Exception) -> str:
    # Pydantic's messages run over several lines; the first names the problem.
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _lines_from_ocr_result(ocr_result: dict[str, Any]) -> _Lines | None:
    entries = ocr_result.get("words_info")
    if entries is None:
        return None
    lines = _Lines("words_info")
    if not isinstance(entries, list):
        lines.warnings.append("words_info is not a list; no boxes read")
        return lines
    for index, item in enumerate(entries):
        lines.add(index, item)
    return lines


def _lines_from_text(payload: Any) -> _Lines | None:
    """Lines with boxes written in the text itself (compatible mode has no ocr_result)."""
    if isinstance(payload, dict):
        payload = payload.get("words_info") or payload.get("pos_list") or [payload]
    if not isinstance(payload, list):
        return None
    lines = _Lines("line")
    for index, item in enumerate(payload):
        lines.add(index, item)
    # Not one line with text: this is not a list of lines at all (the caller keeps the whole body).
    return lines if lines.texts else None


def corners_of_rotate_rect(rect: list[float]) -> list[float]:
    """Corners (TL, TR, BR, BL) of [cx, cy, w, h, angle] when the model gives only the rectangle.

    The vendor's angle convention (about -90 for a horizontal line, w and h swapped) means the
    rotated corners come out starting anywhere, so they are put in reading order afterwards.
    """
    cx, cy, w, h, angle = rect
    rad = math.radians(angle)
    cos_a, sin_a = math.cos(rad), math.sin(rad)
    points = [
        (cx + dx * cos_a - dy * sin_a, cy + dx * sin_a + dy * cos_a)
        for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    ]
    # Clockwise on screen (y grows downwards) is increasing atan2; start from the top-left-most corner.
    points.sort(key=lambda p: math.atan2(p[1] - cy, p[0] - cx))
    start = min(range(4), key=lambda i: (points[i][0] + points[i][1], points[i][1]))
    ordered = points[start:] + points[:start]
    return [round(v, 3) for point in ordered for v in point]


def _not_json(what: str, exc: ValueError) -> str:
    reason = str(exc)
    return f"{what} is not JSON" if reason == NOT_JSON else f"{what} is not JSON: it {reason}; kept as text"


def parse_model_output(task: OcrTask | None, text: str, ocr_result: dict[str, Any] | None = None) -> RecognitionResult:
    """Build the typed result of one call from the model's text and optional `ocr_result`."""
    ocr_result = ocr_result or {}
    lang, body = split_fence(text)
    result = RecognitionResult(task=task, raw_text=text)
    warnings = result.parse_warnings

    if task is OcrTask.ADVANCED_RECOGNITION or "words_info" in ocr_result:
        lines = _lines_from_ocr_result(ocr_result)
        if lines is None:
            try:
                lines = _lines_from_text(parse_json_lenient(body))
            except ValueError:
                lines = None
        if lines is None:
            warnings.append("no text boxes found in the reply")
            result.text = body
        else:
            warnings.extend(lines.warnings)
            result.words = lines.words
            result.text = "\n".join(lines.texts)
        return result

    if task is OcrTask.KEY_INFORMATION_EXTRACTION or "kv_result" in ocr_result:
        kv = ocr_result.get("kv_result")
        if kv is None:
            try:
                kv = parse_json_lenient(body)
            except ValueError as exc:
                warnings.append(_not_json("extraction reply", exc))
        if kv is not None and not isinstance(kv, dict):
            warnings.append("extraction reply is not a JSON object")
            kv = None
        result.kv = kv
        result.text = json.dumps(kv, ensure_ascii=False, indent=2) if kv is not None else body
        return result

    if task is OcrTask.TABLE_PARSING or lang == "html":
        # The vendor's own table example ends "</```": a closing tag cut short where the fence began.
        # Like the fence, it is wrapping, not content, and would leak "<" and "/" into the text.
        body = _CUT_TAG.sub("", body).rstrip()
        result.html = body
        result.text = html_to_text(body)
        return result

    if task in (OcrTask.DOCUMENT_PARSING, OcrTask.FORMULA_RECOGNITION) or lang in ("latex", "tex"):
        result.latex = body
        result.text = body
        return result

    if lang == "json":
        # A free prompt that asked for JSON: offer it as kv when it is an object.
        try:
            value = parse_json_lenient(body)
        except ValueError as exc:
            warnings.append(_not_json("reply fenced as JSON", exc))
            value = None
        if isinstance(value, dict):
            result.kv = value
    result.text = body
    return result
