"""Lenient parsing, strict billing: a reply the vendor billed is kept, whatever the model wrote in it.

Only a body that cannot be read at all (not JSON, no choices, no usage) is asked for again; an odd
box or a Python-only literal in the model's text becomes a parse warning on a completed page, after
exactly one billed call. Attempts that were billed and still retried are counted, never hidden.
"""

from __future__ import annotations

import json

import httpx
import pytest
from aws_lambda_powertools import Metrics
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient
from ocr_pipeline.adapters.metrics import MetricsCallObserver
from ocr_pipeline.errors import InvalidRequest
from ocr_pipeline.field_checks import parse_validators
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.results import parse_json_lenient, parse_model_output
from ocr_pipeline.tasks import OcrTask, TaskOptions, parse_schema_text

from tests.support.fakes import INPUT, RESULTS, Pipeline, text_png
from tests.unit.adapters.test_client import NATIVE_OK, FakeClock, client_with, make_call, scripted
from tests.unit.adapters.test_metrics import emitted

GOOD_BOX = {
    "text": "Audience",
    "location": [52, 54, 250, 57, 249, 106, 52, 103],
    "rotate_rect": [150, 80, 49, 197, -89],
}
NO_RECT = {"text": "If you are a system administrator", "location": [51, 146, 1397, 159, 1397, 194, 51, 181]}
SHORT_RECT = {"text": "third line", "location": [1, 2, 3, 4, 5, 6, 7, 8], "rotate_rect": [1, 2, 3]}
USAGE = {"input_tokens": 1200, "output_tokens": 40, "total_tokens": 1240, "image_tokens": 1100}


def native_reply(text: str, ocr_result: dict | None = None, request_id: str = "req-ok") -> dict:
    item: dict = {"text": text}
    if ocr_result is not None:
        item["ocr_result"] = ocr_result
    return {
        "output": {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": [item]}}]},
        "usage": USAGE,
        "request_id": request_id,
    }


def pipeline_with(*responses: httpx.Response) -> tuple[Pipeline, object]:
    handler = scripted(*responses)
    client = QwenOcrClient(
        OcrServiceSettings(api_key="sk-test"),
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=lambda s: None,
        jitter=lambda: 0.0,
    )
    return Pipeline(ocr=client), handler


def run_one_page(p: Pipeline, **metadata: str) -> dict:
    p.store.put(INPUT, "scan.png", text_png(), content_type="image/png", metadata=metadata)
    job_id = p.upload.accept(UploadedObject(bucket=INPUT, key="scan.png")).job_id
    p.drain()
    return json.loads(p.store.get_text(RESULTS, f"results/scan.png/{job_id}.json"))


# --- one bad box --------------------------------------------------------------------------


def test_a_box_without_rotate_rect_loses_its_box_not_its_line():
    # Given words_info where the second entry has no rotate_rect and the third a short one
    result = parse_model_output(
        OcrTask.ADVANCED_RECOGNITION, "", {"words_info": [GOOD_BOX, NO_RECT, SHORT_RECT, "not an object"]}
    )
    # Then every line's text is kept, only the good box is, and each bad entry is named in a warning
    assert result.text == "Audience\nIf you are a system administrator\nthird line"
    assert [w.text for w in result.words] == ["Audience"]
    assert len(result.parse_warnings) == 3
    assert "words_info[1]" in result.parse_warnings[0] and "rotate_rect" in result.parse_warnings[0]
    assert "words_info[2]" in result.parse_warnings[1]
    assert "words_info[3]" in result.parse_warnings[2]


def test_a_box_with_only_its_rectangle_gets_its_corners_computed():
    box = {"text": "x", "rotate_rect": [100, 50, 20, 80, -90]}
    result = parse_model_output(OcrTask.ADVANCED_RECOGNITION, "", {"words_info": [box]})
    assert result.parse_warnings == [] and len(result.words[0].location) == 8


def test_a_reply_with_one_bad_box_is_called_once_and_completes_with_a_warning():
    # Given the service answers advanced recognition with one box lacking rotate_rect
    p, handler = pipeline_with(
        httpx.Response(200, json=native_reply("", {"words_info": [GOOD_BOX, NO_RECT]})),
        httpx.Response(200, json=native_reply("", {"words_info": [GOOD_BOX, NO_RECT]}, "req-again")),
    )
    # When a page goes through the pipeline
    document = run_one_page(p, **{"ocr-task": "advanced_recognition"})
    # Then it was called once, and the page completed with its text, its good box and a warning
    assert len(handler.seen) == 1
    (page,) = document["pages"]
    assert page["status"] == "done"
    assert page["text"] == "Audience\nIf you are a system administrator"
    assert len(page["words"]) == 1 and "rotate_rect" in page["parse_warnings"][0]
    assert page["billed_attempts"] == []
    (usage,) = p.bus.of_type("usage.recorded")
    assert (usage.data["input_tokens"], usage.data["output_tokens"]) == (1200, 40)


# --- JSON values only ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"Total": "12.80", "Items": ...}',
        "{'Total': b'12.80'}",
        "{'Codes': {1, 2}}",
        "{'Point': (1, 2)}",
        "{1: 'one'}",
        "{'x': 1j}",
        '{"Total": NaN}',
        '{"Total": Infinity}',
    ],
)
def test_python_only_literals_are_not_json(body):
    with pytest.raises(ValueError):
        parse_json_lenient(body)


def test_python_literals_that_are_json_values_still_read():
    assert parse_json_lenient("{'Total': '12.80', 'Paid': True, 'Note': None, 'Items': [1, 2.5]}") == {
        "Total": "12.80",
        "Paid": True,
        "Note": None,
        "Items": [1, 2.5],
    }


@pytest.mark.parametrize("body", ["[" * 100_000, "{'a': " * 5_000 + "1" + "}" * 5_000, "[" * 200 + "]" * 200])
def test_nesting_past_the_parser_is_a_value_error_never_a_recursion_error(body):
    with pytest.raises(ValueError):
        parse_json_lenient(body)


def test_an_extraction_answered_with_an_ellipsis_is_called_once_and_kept_as_text():
    # Given a stand-in that answers an extraction with `...` where a value should be
    answer = '```json\n{"Total": "12.80", "Items": ...}\n```'
    p, handler = pipeline_with(
        httpx.Response(200, json=native_reply(answer)), httpx.Response(200, json=native_reply(answer))
    )
    # When a page goes through the pipeline
    document = run_one_page(p, **{"ocr-task": "key_information_extraction"})
    # Then one call was made, the page completed, its text is the raw answer, and it says why
    assert len(handler.seen) == 1
    (page,) = document["pages"]
    assert page["status"] == "done" and page["kv"] is None
    assert page["text"] == '{"Total": "12.80", "Items": ...}'
    assert "Ellipsis" in page["parse_warnings"][0]
    assert len(p.bus.of_type("document.completed")) == 1


def test_a_free_prompt_fenced_as_json_but_not_json_says_so():
    result = parse_model_output(None, "```json\n{'total': b'12'}\n```")
    assert result.kv is None and result.parse_warnings and result.text == "{'total': b'12'}"


def test_schema_text_and_validators_nested_past_the_parser_are_refused_not_crashed():
    with pytest.raises(InvalidRequest):
        parse_schema_text("[" * 100_000)
    with pytest.raises(ValueError):
        parse_validators('{"a": ' + "[" * 100_000)


# --- billed attempts ---------------------------------------------------------------------------


def test_only_an_unreadable_body_is_retried_and_a_billed_one_is_counted():
    # Given a first reply that carries usage but no output, then a good one
    clock = FakeClock()
    handler = scripted(
        httpx.Response(200, json={"usage": USAGE, "request_id": "req-lost"}),
        httpx.Response(200, json=NATIVE_OK),
    )
    # When the call is made
    outcome = client_with(handler, clock=clock).recognize(make_call(TaskOptions()))
    # Then it was retried, and the lost attempt is counted with its tokens
    assert outcome.attempts == 2
    (lost,) = outcome.billed_attempts
    assert (lost.input_tokens, lost.output_tokens, lost.request_id, lost.reason) == (
        1200,
        40,
        "req-lost",
        "ocr.malformed_response",
    )


def test_a_body_that_is_not_json_is_retried_but_not_counted_as_billed():
    handler = scripted(httpx.Response(200, content=b"<html>proxy error</html>"), httpx.Response(200, json=NATIVE_OK))
    outcome = client_with(handler).recognize(make_call(TaskOptions()))
    assert outcome.attempts == 2 and outcome.billed_attempts == []


def test_billed_retries_show_on_the_page_and_in_a_metric_but_the_tenant_pays_one_call(capsys):
    # Given a service whose first reply is billed but unreadable
    metrics = Metrics(namespace="OcrPipeline", service="ocr-pipeline")
    metrics.clear_metrics()
    handler = scripted(
        httpx.Response(200, json={"output": {"choices": []}, "usage": USAGE, "request_id": "req-lost"}),
        httpx.Response(200, json=native_reply("hello", request_id="req-ok")),
    )
    client = QwenOcrClient(
        OcrServiceSettings(api_key="sk-test"),
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=lambda s: None,
        jitter=lambda: 0.0,
        observer=MetricsCallObserver(metrics),
    )
    p = Pipeline(ocr=client)
    # When a page goes through the pipeline
    document = run_one_page(p)
    # Then the page names the lost attempt with its tokens
    (page,) = document["pages"]
    assert page["attempts"] == 2
    assert [a["request_id"] for a in page["billed_attempts"]] == ["req-lost"]
    assert page["billed_attempts"][0]["input_tokens"] == 1200
    # and the tenant's usage event is the successful call alone
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["request_id"] == "req-ok"
    assert (usage.data["input_tokens"], usage.data["output_tokens"]) == (1200, 40)
    # and the waste has its own metric
    metrics.flush_metrics()
    totals: dict[str, float] = {}
    for record in emitted(capsys):
        for name, value in record.items():
            if isinstance(value, int | float):
                totals[name] = totals.get(name, 0) + value
    assert totals["OcrAttemptsBilledInVain"] == 1
    assert totals["OcrTokensBilledInVain"] == 1240
    metrics.clear_metrics()
