"""The deployed topology, run locally, driven the way a user drives it: by uploading to S3.

Every assertion reads what a subscriber of the topic and a reader of the result bucket see.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from ocr_devkit.run import LocalPipeline
from ocr_pipeline.pricing import default_price_table
from ocr_pipeline.usage import Usage

from tests.support.fakes import text_png

pytestmark = pytest.mark.integration
TIMEOUT_S = 120


def upload_and_wait(pipeline: LocalPipeline, key: str, body: bytes, **metadata: str):
    pipeline.upload(key, body, content_type="image/png", metadata=metadata)
    final = pipeline.wait_for_documents({key}, TIMEOUT_S)
    assert key in final, f"no final event for {key}"
    return final[key]


def events_for(pipeline: LocalPipeline, job_id: str, event_type: str):
    return [e for e in pipeline.recorder.envelopes if e.event_type == event_type and e.data["job_id"] == job_id]


@pytest.mark.parametrize("key", ["inbox/scan with spaces.png", "inbox/請求書 résumé+plus.png"])
def test_keys_with_spaces_and_unicode_round_trip(pipeline, key):
    event = upload_and_wait(pipeline, key, text_png("Receipt No. 4471"))
    assert event.event_type == "document.completed"
    assert event.data["source"]["key"] == key
    assert "4471" in event.data["text_preview"]
    document = json.loads(pipeline.read_result(event.data["result_uri"]))
    assert document["source"]["key"] == key and "4471" in document["pages"][0]["text"]


def test_metadata_routes_the_task_and_carries_an_inline_schema(pipeline):
    schema = {"Invoice Number": "the invoice number", "Total": ""}
    event = upload_and_wait(
        pipeline,
        "inbox/meta-invoice.png",
        text_png("Invoice Number: 12345"),
        **{"ocr-task": "key_information_extraction", "ocr-schema": json.dumps(schema), "ocr-correlation-id": "c-42"},
    )
    assert event.event_type == "document.completed" and event.data["task"] == "key_information_extraction"
    assert event.correlation_id == "c-42"
    page = json.loads(pipeline.read_result(event.data["result_uri"]))["pages"][0]
    assert page["kv"]["Invoice Number"] == "12345"
    assert set(page["kv"]) == {"Invoice Number", "Total"}


def test_prefix_rule_routes_the_task_with_a_schema_object(pipeline):
    pipeline.upload(
        "schemas/invoice.json", json.dumps({"Invoice Number": ""}).encode(), content_type="application/json"
    )
    # the schema object itself is an upload too: it fails as an unsupported image, and says so
    event = upload_and_wait(pipeline, "invoices/acme/inv-1.png", text_png("Invoice Number: 777"))
    assert event.data["task"] == "key_information_extraction"
    assert event.data["tenant"] == "invoices"
    page = json.loads(pipeline.read_result(event.data["result_uri"]))["pages"][0]
    assert page["kv"] == {"Invoice Number": "777"}


def test_prefix_rule_for_tables(pipeline):
    event = upload_and_wait(pipeline, "tables/t1.png", text_png("Name  Qty"))
    assert event.data["task"] == "table_parsing"
    assert json.loads(pipeline.read_result(event.data["result_uri"]))["pages"][0]["html"].startswith("<table")


def test_a_corrupt_file_produces_document_failed_with_a_stable_code(pipeline):
    event = upload_and_wait(pipeline, "inbox/corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    assert event.event_type == "document.failed"
    assert event.data["error"]["code"] in ("image.unreadable", "image.unsupported_format")
    assert events_for(pipeline, event.data["job_id"], "usage.recorded") == []


def test_recorded_usage_is_what_the_api_returned_and_cost_is_the_table_arithmetic(pipeline):
    event = upload_and_wait(pipeline, "inbox/billing.png", text_png("Total 12.80"))
    job_id = event.data["job_id"]
    (usage_event,) = events_for(pipeline, job_id, "usage.recorded")
    # what the emulator (the API) answered, from its request log
    data = usage_event.data
    (reply,) = [r for r in pipeline.emulator.requests if r["request_id"] == data["request_id"]]
    assert (data["input_tokens"], data["output_tokens"], data["image_tokens"]) == (
        reply["response_usage"]["input_tokens"],
        reply["response_usage"]["output_tokens"],
        reply["response_usage"]["image_tokens"],
    )
    usage = Usage(
        input_tokens=data["input_tokens"], output_tokens=data["output_tokens"], image_tokens=data["image_tokens"]
    )
    expected = default_price_table().cost(usage, data["model"], data["region"]).amount
    assert Decimal(data["cost"]) == expected
    assert Decimal(data["cost"]) == (
        Decimal(data["input_tokens"]) * Decimal(data["input_price_per_million"])
        + Decimal(data["output_tokens"]) * Decimal(data["output_price_per_million"])
    ) / Decimal(1_000_000)
    assert Decimal(event.data["cost"]) == Decimal(data["cost"])


def test_every_message_on_the_topic_carries_its_event_type_attribute(pipeline):
    sqs = pipeline.stack.boto3_client("sqs")
    url = pipeline.stack.subscribe_queue_to_topic("NotificationTopic", filter_policy={"event_type": ["usage.recorded"]})
    upload_and_wait(pipeline, "inbox/filtered.png", text_png("Filter me"))
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    assert messages, "the filtered subscription received nothing"
    types = {json.loads(json.loads(m["Body"])["Message"])["event_type"] for m in messages}
    assert types == {"usage.recorded"}
