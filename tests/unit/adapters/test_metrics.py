"""Metrics are derived from the events the pipeline publishes and from its OCR calls (Powertools EMF)."""

from __future__ import annotations

import json

import httpx
import pytest
from aws_lambda_powertools import Metrics
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient
from ocr_pipeline.adapters.metrics import MeteredEventBus, MetricsCallObserver
from ocr_pipeline.errors import OcrInvalidParameter
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.tasks import TaskOptions

from tests.support.fakes import INPUT, Pipeline, text_png
from tests.support.memory import MemoryEventBus
from tests.unit.adapters.test_client import NATIVE_OK, FakeClock, make_call


def emitted(capsys) -> list[dict]:
    """Every EMF record printed so far: {metric name: summed value}, plus its ErrorCode/Currency dimension."""
    records = []
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        record = {}
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                record[metric["Name"]] = sum(value) if isinstance(value, list) else value
        record.update({k: document[k] for k in ("ErrorCode", "Currency") if k in document})
        records.append(record)
    return records


@pytest.fixture
def metrics():
    metrics = Metrics(namespace="OcrPipeline", service="ocr-pipeline")
    metrics.clear_metrics()
    yield metrics
    metrics.clear_metrics()


def test_a_document_run_counts_documents_pages_tokens_and_cost(metrics, capsys):
    p = Pipeline()
    p.intake.bus = p.settlement.bus = MeteredEventBus(p.bus, metrics)
    p.store.put(INPUT, "a.png", text_png(), content_type="image/png")
    p.upload.accept(UploadedObject(bucket=INPUT, key="a.png"))
    p.drain()
    usage = p.bus.of_type("usage.recorded")[0].data
    metrics.flush_metrics()
    records = emitted(capsys)
    totals = next(r for r in records if "DocumentsCompleted" in r)
    assert totals["DocumentsCompleted"] == 1 and totals["PagesRecognized"] == 1
    assert totals["InputTokens"] == usage["input_tokens"] and totals["OutputTokens"] == usage["output_tokens"]
    (cost,) = [r for r in records if "Cost" in r]
    assert cost["Currency"] == usage["currency"] and cost["Cost"] == pytest.approx(float(usage["cost"]))


def test_a_failed_document_is_counted_by_its_error_code(metrics, capsys):
    p = Pipeline()
    p.intake.bus = p.settlement.bus = MeteredEventBus(p.bus, metrics)
    p.store.put(INPUT, "broken.png", b"\x89PNG\r\n\x1a\n-broken", content_type="image/png")
    p.upload.accept(
        UploadedObject(
            bucket=INPUT,
            key="broken.png",
        )
    )
    p.drain()
    (failed,) = p.bus.of_type("document.failed")
    (record,) = [r for r in emitted(capsys) if "DocumentsFailed" in r]
    assert record["ErrorCode"] == failed.data["error"]["code"]


def test_ocr_calls_report_latency_retries_throttles_and_failures(metrics, capsys):
    clock = FakeClock()
    replies = [
        httpx.Response(429, json={"code": "Throttling.RateQuota", "message": "slow down"}),
        httpx.Response(200, json=NATIVE_OK),
        httpx.Response(400, json={"code": "InvalidParameter", "message": "bad image"}),
    ]
    client = QwenOcrClient(
        OcrServiceSettings(api_key="sk-test"),
        http=httpx.Client(transport=httpx.MockTransport(lambda r: replies.pop(0))),
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: 0.0,
        observer=MetricsCallObserver(metrics),
    )
    client.recognize(make_call(TaskOptions()))
    with pytest.raises(OcrInvalidParameter):
        client.recognize(make_call(TaskOptions()))
    metrics.flush_metrics()
    records = emitted(capsys)
    totals = next(r for r in records if "OcrCalls" in r)
    assert totals["OcrCalls"] == 1 and totals["OcrThrottled"] == 1 and "OcrLatency" in totals
    assert [r["ErrorCode"] for r in records if "OcrRetries" in r] == ["ocr.throttled"]
    assert [r["ErrorCode"] for r in records if "OcrCallFailures" in r] == ["ocr.invalid_parameter"]


def test_publishing_still_reaches_the_topic(metrics):
    inner = MemoryEventBus()
    p = Pipeline()
    p.intake.bus = p.settlement.bus = MeteredEventBus(inner, metrics)
    p.store.put(INPUT, "broken.png", b"\x89PNG\r\n\x1a\n-broken", content_type="image/png")
    p.upload.accept(UploadedObject(bucket=INPUT, key="broken.png"))
    p.drain()
    assert [e.event_type for e in inner.of_type("document.failed")] == ["document.failed"]
