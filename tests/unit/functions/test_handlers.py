"""The handlers are thin: they parse the event, call a service, and report partial batch failures."""

from __future__ import annotations

import io
import json
import threading

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


def test_recognize_handler_works_on_a_deliverys_records_at_once_each_with_its_own_log_keys():
    # Given two single-page images in one delivery, two calls per instance, and a model that holds
    # each call until both are open, then fails the second job's page (retryable)
    from ocr_pipeline.adapters.redelivery import Redelivery
    from ocr_pipeline.errors import OcrServerError

    recognize = load_function("recognize")
    p = Pipeline(calls_per_instance=2)
    sample = load_event("recognize_sqs_page")["Records"][0]
    records, jobs = [], []
    for name in ("a", "b"):
        work = PageWork.model_validate_json(sample["body"])
        job = work.job.model_copy(
            update={"job_id": name * 32, "source": work.job.source.model_copy(update={"key": f"scans/{name}.png"})}
        )
        p.store.put(job.source.bucket, job.source.key, text_png(f"Invoice of job {name}"))
        p.jobs.create_job(job)
        body = work.model_copy(update={"job_id": job.job_id, "job": job}).model_dump_json()
        records.append(dict(sample, messageId=f"message-{name}", body=body))
        jobs.append(job)
    both_open = threading.Barrier(2)
    met: list[bool] = []
    answer = p.ocr.recognize

    def recognize_call(call, *, deadline=None):
        try:
            both_open.wait(timeout=10)
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        if call.image_url == failing[0]:
            raise OcrServerError("the service is busy")
        return answer(call, deadline=deadline)

    failing: list[str] = []
    prepare = p.pages._prepare

    def remember_b(spec, page, source):
        prepared = prepare(spec, page, source)
        if spec.job_id == jobs[1].job_id:
            failing.append(prepared.data_url)
        return prepared

    p.ocr.recognize = recognize_call  # type: ignore[method-assign]
    p.pages._prepare = remember_b  # type: ignore[method-assign]
    deferred: list[str] = []

    class Sqs:
        def get_queue_url(self, **_):
            return {"QueueUrl": "https://sqs.local/pages"}

        def change_message_visibility(self, ReceiptHandle, **_):
            deferred.append(ReceiptHandle)

    recognize.redelivery = Redelivery(client=Sqs(), backoff_base_s=10)

    # When the delivery is handled
    # (The library's loggers share the function logger's handler: every line goes to `written`.)
    written = io.StringIO()
    before = recognize.logger.registered_handler.setStream(written)
    try:
        result = recognize.handler({"Records": records}, FakeLambdaContext(), service=p.pages)
    finally:
        recognize.logger.registered_handler.setStream(before)

    # Then both pages were with the model at once; the first job completed, the second is reported
    assert met == [True, True]
    assert result == {"batchItemFailures": [{"itemIdentifier": "message-b"}]}
    assert [e.data["job_id"] for e in p.bus.of_type("document.completed")] == [jobs[0].job_id]
    # And the lines about the failed record carry its job, not the other's
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    about_failure = [line for line in lines if any(w in str(line.get("message")) for w in ("comes back", "exception"))]
    assert len(about_failure) == 2
    assert {line.get("job_id") for line in about_failure} == {jobs[1].job_id}
