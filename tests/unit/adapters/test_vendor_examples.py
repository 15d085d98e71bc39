"""Every response example in the vendor documentation parses into the typed result.

The fixtures are the vendor's JSON byte for byte; manifest.json records, for each, the
facts read off the example by hand (usage figures, keys, first box...).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ocr_pipeline.adapters.dashscope import WireProtocol
from ocr_pipeline.adapters.dashscope.wire import parse_reply
from ocr_pipeline.catalog import model_spec
from ocr_pipeline.ocr_service import OcrCall
from ocr_pipeline.results import split_fence
from ocr_pipeline.tasks import OcrTask, TaskOptions

VENDOR = Path(__file__).parents[2] / "fixtures" / "vendor"
MANIFEST = json.loads((VENDOR / "manifest.json").read_text(encoding="utf-8"))


def options_for(task: str) -> TaskOptions:
    if task == "prompt":
        return TaskOptions(prompt="the vendor's sample ticket prompt")
    return TaskOptions(task=OcrTask(task))


def parse_example(entry: dict):
    body = json.loads((VENDOR / entry["file"]).read_text(encoding="utf-8"))
    protocol = WireProtocol.DASHSCOPE if entry["mode"] == "native" else WireProtocol.OPENAI
    call = OcrCall(
        image_url="data:image/png;base64,AA==", options=options_for(entry["task"]), model=model_spec(entry["model"])
    )
    return parse_reply(protocol, body, call)


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_vendor_example_parses_with_its_documented_usage(entry):
    # Given a documented response / When it is parsed
    reply = parse_example(entry)
    expected = entry["expected"]
    # Then usage is what the example reports, and nothing was flagged as unreadable
    assert reply.usage.input_tokens == expected["usage"]["input_tokens"]
    assert reply.usage.output_tokens == expected["usage"]["output_tokens"]
    assert reply.usage.total_tokens == expected["usage"]["total_tokens"]
    if expected["usage"]["image_tokens"] is not None:
        assert reply.usage.image_tokens == expected["usage"]["image_tokens"]
        assert reply.usage.image_tokens_source == "api"
    assert reply.result.parse_warnings == []
    assert reply.request_id == (expected.get("request_id") or expected.get("id"))


@pytest.mark.parametrize(
    "entry", [e for e in MANIFEST if e["expected"].get("text_json_valid")], ids=lambda e: e["file"]
)
def test_json_answers_become_kv(entry):
    reply = parse_example(entry)
    assert reply.result.kv == entry["expected"]["text_json"]


def test_extraction_prefers_the_structured_kv_result():
    entry = next(e for e in MANIFEST if e["file"] == "native_key_information_extraction_1.json")
    reply = parse_example(entry)
    assert list(reply.result.kv) == entry["expected"]["kv_keys"]
    assert reply.result.kv == entry["expected"]["kv_result"]


def test_advanced_recognition_reads_words_info_not_the_bogus_text():
    entry = next(e for e in MANIFEST if e["task"] == "advanced_recognition")
    reply = parse_example(entry)
    words = reply.result.words
    assert words is not None and len(words) == entry["expected"]["words_count"]
    first = entry["expected"]["first_word"]
    assert (words[0].text, words[0].location, words[0].rotate_rect) == (
        first["text"],
        first["location"],
        first["rotate_rect"],
    )
    assert words[-1].text == entry["expected"]["last_word_text"]
    # the text is the recognized lines, not the vendor's placeholder pos_list JSON
    assert reply.result.text.splitlines()[0] == "Audience"
    assert "pos_list" not in reply.result.text


def test_table_example_gives_html_and_cell_text_even_though_it_is_cut_off():
    entry = next(e for e in MANIFEST if e["task"] == "table_parsing")
    reply = parse_example(entry)
    assert reply.result.html is not None and reply.result.html.startswith("<table")
    assert reply.result.html.count("<tr>") == entry["expected"]["html_tr_open"]
    assert "\t" in reply.result.text  # cells became tab-separated text


@pytest.mark.parametrize("task", ["document_parsing", "formula_recognition"])
def test_latex_tasks_give_latex_without_the_fence(task):
    entry = next(e for e in MANIFEST if e["task"] == task)
    reply = parse_example(entry)
    raw = json.loads((VENDOR / entry["file"]).read_text(encoding="utf-8"))["output"]["choices"][0]["message"]
    _, body = split_fence(raw["content"][0]["text"])
    assert reply.result.latex == body
    assert not reply.result.latex.startswith("```")


@pytest.mark.parametrize("task", ["text_recognition", "multi_lan"])
def test_plain_text_tasks_keep_the_text(task):
    entry = next(e for e in MANIFEST if e["task"] == task)
    reply = parse_example(entry)
    assert reply.result.text.startswith(entry["expected"]["text_startswith"].strip())
    assert reply.result.html is None and reply.result.latex is None and reply.result.kv is None
