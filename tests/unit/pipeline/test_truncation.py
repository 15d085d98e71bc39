"""A page the model's output limit cut short is never recorded as a plain success.

The vendor says so in `finish_reason`: "length" when `max_tokens` stopped the answer, in the native
reply's `output.choices[0]` and the compatible reply's `choices[0]` alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from aws_lambda_powertools import Metrics
from ocr_devkit.stack.cfn import resolve_template
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient, WireProtocol
from ocr_pipeline.adapters.metrics import MeteredEventBus
from ocr_pipeline.bootstrap import read_pipeline_settings
from ocr_pipeline.errors import ConfigurationError
from ocr_pipeline.pipeline.config import TruncationPolicy
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.tasks import TaskOptions

from tests.support.fakes import INPUT, RESULTS, Pipeline, text_png
from tests.unit.adapters.test_client import COMPATIBLE_OK, NATIVE_OK, client_with, make_call, scripted
from tests.unit.adapters.test_metrics import emitted

ROOT = Path(__file__).resolve().parents[3]
ENV = {"RESULT_BUCKET": "r", "TOPIC_ARN": "arn:aws:sns:us-east-1:1:t", "PAGE_QUEUE_URL": "q", "JOBS_TABLE": "j"}


def cut(reply: dict, *, native: bool = True) -> dict:
    """The reply with its finish_reason set to "length"."""
    reply = json.loads(json.dumps(reply))
    choices = reply["output"]["choices"] if native else reply["choices"]
    choices[0]["finish_reason"] = "length"
    return reply


@pytest.mark.parametrize(
    ("protocol", "body", "truncated"),
    [
        (WireProtocol.DASHSCOPE, NATIVE_OK, False),
        (WireProtocol.DASHSCOPE, cut(NATIVE_OK), True),
        (WireProtocol.OPENAI, COMPATIBLE_OK, False),
        (WireProtocol.OPENAI, cut(COMPATIBLE_OK, native=False), True),
    ],
)
def test_finish_reason_is_read_in_both_protocols(protocol, body, truncated):
    handler = scripted(httpx.Response(200, json=body))
    outcome = client_with(handler, protocol=protocol).recognize(make_call(TaskOptions()))
    assert outcome.reply.finish_reason == ("length" if truncated else "stop")
    assert outcome.reply.truncated is truncated
    # A cut answer was billed and is what the model wrote: it is not retried.
    assert outcome.attempts == 1 and len(handler.seen) == 1


def test_a_server_that_sends_no_finish_reason_is_not_called_truncated():
    body = json.loads(json.dumps(NATIVE_OK))
    del body["output"]["choices"][0]["finish_reason"]
    outcome = client_with(scripted(httpx.Response(200, json=body))).recognize(make_call(TaskOptions()))
    assert outcome.reply.finish_reason is None and not outcome.reply.truncated


def run_pages(*bodies: dict, capsys=None) -> tuple[Pipeline, dict, Metrics]:
    handler = scripted(*[httpx.Response(200, json=body) for body in bodies])
    client = QwenOcrClient(
        OcrServiceSettings(api_key="sk-test"), http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    p = Pipeline(ocr=client, truncation_policy=TruncationPolicy.FLAG)
    metrics = Metrics(namespace="OcrPipeline", service="ocr-pipeline")
    metrics.clear_metrics()
    p.intake.bus = p.settlement.bus = MeteredEventBus(p.bus, metrics)
    p.store.put(INPUT, "scan.png", text_png(), content_type="image/png")
    job_id = p.upload.accept(UploadedObject(bucket=INPUT, key="scan.png")).job_id
    p.drain()
    return p, json.loads(p.store.get_text(RESULTS, f"results/scan.png/{job_id}.json")), metrics


def test_with_flag_a_cut_page_is_stored_marked_listed_billed_and_counted(capsys):
    # Given a stand-in that answers with finish_reason "length"
    p, document, metrics = run_pages(cut(NATIVE_OK))
    # Then the page result says it was cut
    (page,) = document["pages"]
    assert page["status"] == "done" and page["truncated"] is True and page["finish_reason"] == "length"
    assert document["pages_truncated"] == [1]
    # and document.completed lists it
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["pages_truncated"] == [1]
    # and it was billed, as the vendor billed it
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["output_tokens"] == NATIVE_OK["usage"]["output_tokens"]
    # and the PagesTruncated metric counts it
    metrics.flush_metrics()
    assert sum(r.get("PagesTruncated", 0) for r in emitted(capsys)) == 1
    metrics.clear_metrics()


def test_a_page_the_model_finished_is_not_listed(capsys):
    p, document, metrics = run_pages(NATIVE_OK)
    assert document["pages"][0]["truncated"] is False and document["pages_truncated"] == []
    assert p.bus.of_type("document.completed")[0].data["pages_truncated"] == []
    metrics.flush_metrics()
    assert all("PagesTruncated" not in r for r in emitted(capsys))
    metrics.clear_metrics()


def test_the_policy_is_a_setting_split_by_default():
    assert read_pipeline_settings(ENV).truncation_policy is TruncationPolicy.SPLIT
    assert read_pipeline_settings({**ENV, "TRUNCATION_POLICY": "Flag"}).truncation_policy is TruncationPolicy.FLAG
    assert read_pipeline_settings({**ENV, "TRUNCATION_POLICY": "split"}).truncation_policy is TruncationPolicy.SPLIT


def test_a_policy_that_is_not_known_fails_at_function_start():
    with pytest.raises(ConfigurationError) as caught:
        read_pipeline_settings({**ENV, "TRUNCATION_POLICY": "chop"})
    assert caught.value.code == "config.invalid" and "truncation_policy" in caught.value.message


def test_the_template_parameter_reaches_every_function():
    key = {"ApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:dashscope-AbCdEf"}
    resolved = resolve_template(ROOT / "template.yaml", stack_name="t", parameters=key)
    for function in resolved.of_type("AWS::Serverless::Function"):
        variables = resolved.properties(function.logical_id)["Environment"]["Variables"]
        assert variables["TRUNCATION_POLICY"] == "split"
        assert variables["OCR_MAX_OUTPUT_TOKENS"] == "0"
