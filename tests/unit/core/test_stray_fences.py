"""No fence character leaks into `text`.

The vendor's table-parsing example ends `</```` (a closing tag cut short where the fence begins), and
truncated output can end with a fence cut to one or two backticks, or with a closing fence alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ocr_pipeline.results import parse_model_output, split_fence
from ocr_pipeline.tasks import OcrTask

VENDOR = Path(__file__).resolve().parents[2] / "fixtures" / "vendor"


def vendor_text(name: str) -> str:
    body = json.loads((VENDOR / name).read_text(encoding="utf-8"))
    return body["output"]["choices"][0]["message"]["content"][0]["text"]


def test_the_vendors_table_example_leaves_no_fence_or_tag_fragment_in_text_or_html():
    # Given the documented table reply, which ends "\n  </```"
    text = vendor_text("native_table_parsing_1.json")
    assert text.endswith("</```")
    # When it is parsed
    result = parse_model_output(OcrTask.TABLE_PARSING, text)
    # Then the text is cell text only: no backtick, no "<" or "/" line, and it starts with the first cell
    assert "`" not in result.text
    assert all(line.strip() not in ("<", "/", "</") for line in result.text.splitlines())
    assert result.text.startswith("ケース名テスト")
    # and the HTML keeps no fragment of the cut tag
    assert result.html is not None and not result.html.rstrip().endswith(("<", "</"))
    assert result.parse_warnings == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```html\n<table><tr><td>a</td></tr></table>\n``", ("html", "<table><tr><td>a</td></tr></table>")),
        ("```latex\n\\frac{a}{b}\n`", ("latex", "\\frac{a}{b}")),
        ('```json\n[{"x": 1}]``', ("json", '[{"x": 1}]')),
        ("<table><tr><td>a</td></tr></table>\n```", (None, "<table><tr><td>a</td></tr></table>")),
        ("hello\n```", (None, "hello")),
        ("use `x`", (None, "use `x`")),  # inline code is content
    ],
)
def test_a_fence_cut_short_or_closing_nothing_is_not_body(text, expected):
    assert split_fence(text) == expected


@pytest.mark.parametrize("tail", ["</", "</t", "</tr", "<", "<td"])
def test_a_table_cut_inside_a_tag_keeps_its_cells_and_no_fragment(tail):
    result = parse_model_output(OcrTask.TABLE_PARSING, f"```html\n<table><tr><td>a</td><td>b</td></tr>{tail}```")
    assert result.text == "a\tb"
    assert result.html == "<table><tr><td>a</td><td>b</td></tr>"


def test_text_ending_in_a_lone_closing_fence_keeps_its_text():
    result = parse_model_output(OcrTask.TEXT_RECOGNITION, "Invoice 12345\nTotal 9.50\n```")
    assert result.text == "Invoice 12345\nTotal 9.50"


def test_a_less_than_sign_in_a_cell_is_content():
    result = parse_model_output(OcrTask.TABLE_PARSING, "<table><tr><td>a < b</td></tr></table>")
    assert result.text == "a < b"
