"""The handlers are thin: they parse the event, call a service, and report partial batch failures."""

from __future__ import annotations

import json

from ocr_pipeline.pipeline.model import PageWork

from tests.support.fakes import FakeOcrService, Pipeline, text_png
from tests.support.lambda_helpers import FakeLambdaContext, load_event, load_function


def test_upload_handler_skips_the_s3_test_event():
    upload = load_function("upload")
    p = Pipeline()
    result = upload.handler(load_event("upload_s3_test_event"), FakeLambdaContext(), service=p.upload)
    assert result == {"outcomes": []} and p.queue.bodies == []


def test_upload_handler_decodes_the_sample_event_key_and_enqueues():
    upload = load_function("upload")
    p = Pipeline()
    event = load_event("upload_s3_put")
    bucket = event["Records"][0]["s3"]["bucket"]["name"]
    p.store.put(bucket, "scans/invoice 2024-001.jpg", text_png(), content_type="image/jpeg")
    result = upload.handler(event, FakeLambdaContext(), service=p.upload)
    assert result["outcomes"][0]["decision"] == "enqueued"
    assert p.spec_of(p.queue.bodies[0]).source.key == "scans/invoice 2024-001.jpg"


def test_recognize_handler_reports_only_the_failed_record():
    recognize = load_function("recognize")
    p = Pipeline(ocr=FakeOcrService("Total: 9.50"))
    sample = load_event("recognize_sqs_page")
    good = PageWork.model_validate_json(sample["Records"][0]["body"])
    p.store.put(good.job.source.bucket, good.job.source.key, text_png())
    p.jobs.create_job(good.job)
    bad_record = dict(sample["Records"][0], messageId="bad-1", body=json.dumps({"message_type": "page_work"}))
    event = {"Records": [sample["Records"][0], bad_record]}
    result = recognize.handler(event, FakeLambdaContext(), service=p.pages)
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    assert [e.event_type for e in p.bus.events] == ["usage.recorded", "document.completed"]


def test_request_handler_admits_good_requests_and_answers_bad_ones_without_retrying():
    from ocr_pipeline.pipeline.request_intake import RequestService
    from ocr_pipeline.pipeline.sources import SourcePolicy

    requests = load_function("requests")
    p = Pipeline()
    event = load_event("requests_sqs_batch")
    p.store.put("ocr-input-example", "incoming/receipt.png", text_png(), content_type="image/png")
    service = RequestService(p.settings, p.intake, fetcher=None, policy=SourcePolicy(buckets={"ocr-input-example"}))
    result = requests.handler(event, FakeLambdaContext(), service=service)
    assert result == {"batchItemFailures": []}
    assert p.spec_of(p.queue.bodies[0]).correlation_id == "order-4711"
    (failed,) = p.bus.of_type("document.failed")
    assert failed.data["error"]["code"] == "request.malformed"
    assert failed.correlation_id == event["Records"][1]["messageId"]
