"""Typed recognition results, and parsing of what the model writes.

The model answers in text that is often wrapped in a markdown fence (```json, ```html,
```latex). Built-in tasks may add a structured `ocr_result`. Parsing is lenient about
the wrapping and strict about the content: if a task's payload cannot be read we keep
the raw text and say so in `parse_warnings`, rather than inventing fields.
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


class Word(BaseModel):
    """One located text line. Coordinates are absolute pixels, origin top-left."""

    model_config = ConfigDict(frozen=True)

    text: str
    # Corners top-left, top-right, bottom-right, bottom-left: x1, y1, ..., x4, y4.
    location: list[float] = Field(min_length=8, max_length=8)
    # Centre x, centre y, width, height, angle in degrees within [-90, 90].
    rotate_rect: list[float] = Field(min_length=5, max_length=5)


class RecognitionResult(BaseModel):
    """What one OCR call recognised. Only the fields the task produces are set."""

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

    Handles the variants seen in the vendor's examples: a closing fence glued to the
    body (```json\\n[...]```), and a missing closing fence on truncated output.
    """
    match = _FENCE.search(text)
    if match is None:
        return None, text.strip()
    return (match.group("lang").lower() or None), match.group("body").strip()


def parse_json_lenient(body: str) -> Any:
    """JSON as the model writes it: strict first, then without trailing commas, then Python literals."""
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(_TRAILING_COMMA.sub(r"\1", body))
    except json.JSONDecodeError:
        pass
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise ValueError("not JSON") from None
    if isinstance(value, dict | list):
        return value
    raise ValueError("not a JSON object or array")


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


def _words_from_ocr_result(ocr_result: dict[str, Any]) -> list[Word]:
    return [Word.model_validate(item) for item in ocr_result.get("words_info") or []]


def _words_from_text(payload: Any) -> list[Word] | None:
    """Lines with boxes written in the text itself (compatible mode has no ocr_result)."""
    if isinstance(payload, dict):
        payload = payload.get("words_info") or payload.get("pos_list") or [payload]
    if not isinstance(payload, list):
        return None
    words: list[Word] = []
    for item in payload:
        if not isinstance(item, dict) or "text" not in item or "rotate_rect" not in item:
            return None
        rect = [float(v) for v in item["rotate_rect"]]
        location = item.get("location") or corners_of_rotate_rect(rect)
        words.append(Word(text=str(item["text"]), rotate_rect=rect, location=[float(v) for v in location]))
    return words


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


def parse_model_output(task: OcrTask | None, text: str, ocr_result: dict[str, Any] | None = None) -> RecognitionResult:
    """Build the typed result of one call from the model's text and optional `ocr_result`."""
    ocr_result = ocr_result or {}
    lang, body = split_fence(text)
    result = RecognitionResult(task=task, raw_text=text)
    warnings = result.parse_warnings

    if task is OcrTask.ADVANCED_RECOGNITION or "words_info" in ocr_result:
        words = _words_from_ocr_result(ocr_result) if "words_info" in ocr_result else None
        if words is None:
            try:
                words = _words_from_text(parse_json_lenient(body))
            except ValueError:
                words = None
        if words is None:
            warnings.append("no text boxes found in the reply")
            result.text = body
        else:
            result.words = words
            result.text = "\n".join(word.text for word in words)
        return result

    if task is OcrTask.KEY_INFORMATION_EXTRACTION or "kv_result" in ocr_result:
        kv = ocr_result.get("kv_result")
        if kv is None:
            try:
                kv = parse_json_lenient(body)
            except ValueError:
                warnings.append("extraction reply is not JSON")
        if kv is not None and not isinstance(kv, dict):
            warnings.append("extraction reply is not a JSON object")
            kv = None
        result.kv = kv
        result.text = json.dumps(kv, ensure_ascii=False, indent=2) if kv is not None else body
        return result

    if task is OcrTask.TABLE_PARSING or lang == "html":
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
        except ValueError:
            value = None
        if isinstance(value, dict):
            result.kv = value
    result.text = body
    return result
