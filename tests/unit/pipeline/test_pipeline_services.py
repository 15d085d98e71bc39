"""The upload and page services on in-memory ports: routing, jobs, events, idempotency."""

from __future__ import annotations

import json
import threading

import pytest
from ocr_pipeline.errors import OcrInvalidParameter, OcrPipelineError, OcrServerError
from ocr_pipeline.pipeline.events import deterministic_event_id
from ocr_pipeline.pipeline.intake import IntakeDecision
from ocr_pipeline.pipeline.model import PageWork
from ocr_pipeline.pipeline.routing import RoutingRule
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.tasks import OcrTask

from tests.support.fakes import INPUT, RESULTS, FakeOcrService, Pipeline, text_png
from tests.support.images import multipage_tiff


def notification(key: str, event_name: str = "ObjectCreated:Put") -> dict:
    return {"eventName": event_name, "s3": {"bucket": {"name": INPUT}, "object": {"key": key, "size": 10}}}


def upload(p: Pipeline, key: str, body: bytes | None = None, **metadata: str):
    p.store.put(INPUT, key, text_png() if body is None else body, content_type="image/png", metadata=metadata)
    return p.upload.accept(UploadedObject(bucket=INPUT, key=key))


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("scans/my+invoice+2024.png", "scans/my invoice 2024.png"),
        ("scans/a%2Bb%20c.png", "scans/a+b c.png"),
        ("%E8%AB%8B%E6%B1%82%E6%9B%B8/r%C3%A9sum%C3%A9.png", "請求書/résumé.png"),
    ],
)
def test_notification_keys_are_decoded_as_s3_encodes_them(encoded, decoded):
    assert UploadedObject.from_notification(notification(encoded)).key == decoded


def test_an_image_upload_becomes_one_job_and_one_page_message():
    p = Pipeline()
    outcome = upload(p, "docs/receipt.png")
    assert outcome.decision is IntakeDecision.ENQUEUED and outcome.page_count == 1
    work = PageWork.model_validate_json(p.queue.bodies[0])
    assert work.pages == [1] and work.job_id == outcome.job_id
    # The message names the job; its options are read from the job record, stored once
    assert work.job is None and work.version == 2
    assert p.spec_of(p.queue.bodies[0]).options.effective_task is OcrTask.TEXT_RECOGNITION
    assert p.jobs.get_job(outcome.job_id).dispatched


def test_a_redelivered_event_creates_no_second_job():
    p = Pipeline()
    first = upload(p, "docs/receipt.png")
    again = p.upload.accept(UploadedObject(bucket=INPUT, key="docs/receipt.png"))
    assert again.decision is IntakeDecision.DUPLICATE and again.job_id == first.job_id
    assert len(p.queue.bodies) == 1


def test_new_content_under_the_same_key_is_a_new_job():
    p = Pipeline()
    first = upload(p, "docs/receipt.png", text_png("first"))
    second = upload(p, "docs/receipt.png", text_png("second version"))
    assert second.decision is IntakeDecision.ENQUEUED and second.job_id != first.job_id


def test_metadata_task_and_inline_schema_win_over_rules():
    p = Pipeline(routing_rules=[RoutingRule(prefix="invoices/", task=OcrTask.TABLE_PARSING)])
    schema = {"Invoice Number": "", "Total": ""}
    upload(p, "invoices/a.png", **{"ocr-task": "key_information_extraction", "ocr-schema": json.dumps(schema)})
    options = p.spec_of(p.queue.bodies[0]).options
    assert options.task is OcrTask.KEY_INFORMATION_EXTRACTION and options.result_schema == schema


def test_longest_prefix_rule_applies_and_its_schema_object_is_read():
    p = Pipeline(
        routing_rules=[
            RoutingRule(prefix="in/", task=OcrTask.TABLE_PARSING),
            RoutingRule.model_validate({"prefix": "in/invoices/", "schema_key": "schemas/invoice.json"}),
        ]
    )
    p.store.put(INPUT, "schemas/invoice.json", b'{"Seller": {"Name": "", "Tax ID": ""}}')
    upload(p, "in/invoices/a.png")
    upload(p, "in/tables/b.png")
    first, second = (p.spec_of(b).options for b in p.queue.bodies)
    assert first.task is OcrTask.KEY_INFORMATION_EXTRACTION and first.result_schema == {
        "Seller": {"Name": "", "Tax ID": ""}
    }
    assert second.task is OcrTask.TABLE_PARSING


def test_an_unknown_task_fails_the_document_once_with_a_stable_code():
    p = Pipeline()
    outcome = upload(p, "docs/a.png", **{"ocr-task": "summarize"})
    assert outcome.decision is IntakeDecision.REJECTED
    p.upload.accept(UploadedObject(bucket=INPUT, key="docs/a.png"))  # redelivered
    failed = p.bus.of_type("document.failed")
    assert len(failed) == 1 and failed[0].data["error"]["code"] == "request.invalid"
    assert p.queue.bodies == []


def test_an_object_over_the_size_limit_is_refused_before_download():
    p = Pipeline(max_input_bytes=1000)
    outcome = upload(p, "docs/big.png", b"\x89PNG" + b"\x00" * 5000)
    assert outcome.decision is IntakeDecision.REJECTED
    assert p.bus.of_type("document.failed")[0].data["error"]["code"] == "input.too_large"


def test_a_zero_byte_upload_is_empty_at_once_not_a_storage_error_retried_into_upload_failed():
    # Given an empty object: S3 refuses any ranged read of it (InvalidRange), as the memory store does
    p = Pipeline()
    # When its upload is accepted (no exception: nothing for Lambda to retry)
    outcome = upload(p, "docs/empty.png", b"")
    # Then the document ends once as document.empty, and no page is sent
    assert outcome.decision is IntakeDecision.REJECTED
    failed = p.bus.of_type("document.failed")
    assert [f.data["error"]["code"] for f in failed] == ["document.empty"]
    assert p.queue.bodies == []


def test_an_object_whose_first_bytes_read_empty_is_empty_too():
    # Given an object whose size says it has bytes but whose ranged read comes back with none
    p = Pipeline()
    p.store.put(INPUT, "docs/vanishing.png", text_png())
    p.store.get_bytes = lambda *args, **kwargs: b""
    # When its upload is accepted
    outcome = p.upload.accept(UploadedObject(bucket=INPUT, key="docs/vanishing.png"))
    # Then it is document.empty, not a guess at its format
    assert outcome.decision is IntakeDecision.REJECTED
    assert [f.data["error"]["code"] for f in p.bus.of_type("document.failed")] == ["document.empty"]


def test_events_other_than_creates_are_ignored():
    p = Pipeline()
    p.store.put(INPUT, "docs/a.png", text_png())
    outcome = p.upload.accept(UploadedObject(bucket=INPUT, key="docs/a.png", event_name="ObjectRemoved:Delete"))
    assert outcome.decision is IntakeDecision.IGNORED and p.queue.bodies == []


def test_tenant_comes_from_the_rule():
    from ocr_pipeline.pipeline.routing import TenantRule

    p = Pipeline(tenant_rule=TenantRule.parse("metadata:ocr-tenant,prefix"))
    upload(p, "acme/a.png")
    upload(p, "acme/b.png", **{"ocr-tenant": "globex"})
    tenants = [p.spec_of(b).tenant for b in p.queue.bodies]
    assert tenants == ["acme", "globex"]


def test_an_uploader_cannot_choose_who_pays_unless_the_tenant_rule_lets_it():
    # Given the default rule (static:default), which does not list metadata:ocr-tenant
    p = Pipeline()
    outcome = upload(p, "acme/a.png", **{"ocr-tenant": "globex"})
    assert outcome.decision is IntakeDecision.REJECTED
    (failed,) = p.bus.of_type("document.failed")
    assert failed.data["error"]["code"] == "request.tenant_not_allowed"
    assert failed.data["tenant"] == "default"  # announced to whom the stack bills, not to the claimed tenant
    assert p.queue.bodies == []


def test_a_routing_rule_fixes_the_tenant_of_its_prefix():
    from ocr_pipeline.pipeline.routing import TenantRule

    rules = [RoutingRule(prefix="partners/globex/", tenant="globex")]
    p = Pipeline(routing_rules=rules, tenant_rule=TenantRule.parse("metadata:ocr-tenant,static:default"))
    upload(p, "partners/globex/a.png")
    upload(p, "other/b.png")
    assert [p.spec_of(b).tenant for b in p.queue.bodies] == ["globex", "default"]
    refused = upload(p, "partners/globex/c.png", **{"ocr-tenant": "initech"})
    assert refused.decision is IntakeDecision.REJECTED


# --- pages --------------------------------------------------------------------------------


def test_a_page_is_recognized_stored_billed_and_announced():
    p = Pipeline(ocr=FakeOcrService("Invoice Number: 12345"))
    job_id = upload(p, "docs/receipt.png", **{"ocr-correlation-id": "corr-1"}).job_id
    p.drain()
    (usage,) = p.bus.of_type("usage.recorded")
    (completed,) = p.bus.of_type("document.completed")
    assert usage.event_id == deterministic_event_id("usage.recorded", job_id, 1)
    assert usage.data["input_tokens"] == 101 and usage.data["output_tokens"] == 10
    # 101 x 0.07 + 10 x 0.16 = 8.67 per million
    assert usage.data["cost"] == "0.00000867" and usage.data["currency"] == "USD"
    assert usage.correlation_id == completed.correlation_id == "corr-1"
    assert completed.data["text_preview"] == "Invoice Number: 12345"
    assert completed.data["result_uri"] == f"s3://{RESULTS}/results/docs/receipt.png/{job_id}.json"
    document = json.loads(p.store.get_text(RESULTS, f"results/docs/receipt.png/{job_id}.json"))
    assert document["pages"][0]["text"] == "Invoice Number: 12345" and document["cost"] == "0.00000867"
    assert p.jobs.get_job(job_id).status == "completed"


def test_a_redelivered_page_is_neither_recognized_nor_billed_twice():
    p = Pipeline()
    upload(p, "docs/receipt.png")
    body = p.queue.bodies[0]
    p.drain()
    p.pages.process(PageWork.model_validate_json(body))
    assert len(p.ocr.calls) == 1
    assert len(p.bus.of_type("usage.recorded")) == 1
    assert len(p.bus.of_type("document.completed")) == 1


def test_a_worker_that_died_after_paying_for_a_page_is_not_paid_for_again():
    # Given a page recognized and stored, but the worker died before recording it
    p = Pipeline()
    upload(p, "docs/receipt.png")
    work = PageWork.model_validate_json(p.queue.bodies[0])
    original_record = p.jobs.record_page
    p.jobs.record_page = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        p.pages.process(work)
    p.jobs.record_page = original_record  # type: ignore[method-assign]
    # When the message is delivered again
    p.pages.process(work)
    # Then the stored result is reused: one OCR call, one billing event, one completion
    assert len(p.ocr.calls) == 1
    assert len(p.bus.of_type("usage.recorded")) == 1
    assert len(p.bus.of_type("document.completed")) == 1


def test_a_corrupt_file_fails_the_document_with_the_image_code():
    p = Pipeline()
    upload(p, "docs/broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    p.drain()
    (failed,) = p.bus.of_type("document.failed")
    assert failed.data["error"]["code"].startswith("image.")
    assert p.bus.of_type("usage.recorded") == [] and p.ocr.calls == []


def test_permanent_ocr_errors_fail_the_page_and_transient_ones_raise_for_a_retry():
    permanent = Pipeline(ocr=FakeOcrService(fail=lambda call: OcrInvalidParameter("bad", status_code=400)))
    upload(permanent, "docs/a.png")
    permanent.drain()
    assert permanent.bus.of_type("document.failed")[0].data["error"]["code"] == "ocr.invalid_parameter"

    transient = Pipeline(ocr=FakeOcrService(fail=lambda call: OcrServerError("down", status_code=500)))
    upload(transient, "docs/a.png")
    with pytest.raises(OcrServerError):
        transient.drain()
    assert transient.bus.events == []


# --- dead letters -------------------------------------------------------------------------


def test_a_page_message_that_ran_out_of_deliveries_still_ends_its_document():
    from ocr_pipeline.pipeline.dead_letters import DeadLetterService

    p = Pipeline(ocr=FakeOcrService(fail=lambda call: OcrServerError("down", status_code=500)))
    upload(p, "docs/a.png")
    body = p.queue.bodies.pop(0)
    DeadLetterService(p.upload, p.settlement, p.intake).handle(body, "m-1")
    (failed,) = p.bus.of_type("document.failed")
    assert failed.data["error"]["code"] == "page.retries_exhausted"
    assert p.ocr.calls == []  # the dead letter is not one more attempt


def test_an_upload_that_failed_every_attempt_fails_its_document():
    from ocr_pipeline.pipeline.dead_letters import DeadLetterService

    p = Pipeline()
    p.store.put(INPUT, "docs/b.png", text_png())
    record = {
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"Records": [notification("docs/b.png")]},
        "responsePayload": {"errorType": "Runtime.ExitError", "errorMessage": "out of memory"},
    }
    DeadLetterService(p.upload, p.settlement, p.intake).handle(json.dumps(record), "m-2")
    (failed,) = p.bus.of_type("document.failed")
    assert failed.data["error"]["code"] == "upload.failed" and "out of memory" in failed.data["error"]["message"]


# --- multi-page documents -----------------------------------------------------------------


def test_a_multipage_tiff_fans_out_in_chunks_and_assembles_in_order():
    p = Pipeline(page_chunk_size=3)
    outcome = upload(p, "docs/fax.tiff", multipage_tiff(7))
    assert outcome.page_count == 7
    assert [PageWork.model_validate_json(b).pages for b in p.queue.bodies] == [[1, 2, 3], [4, 5, 6], [7]]
    p.drain()
    (completed,) = p.bus.of_type("document.completed")
    document = json.loads(p.store.get_text(RESULTS, completed.data["result_uri"].split(f"{RESULTS}/", 1)[1]))
    assert [page["page"] for page in document["pages"]] == list(range(1, 8))
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == list(range(1, 8))


def test_every_page_message_delivered_twice_in_shuffled_order_is_counted_and_billed_once():
    import random

    p = Pipeline(page_chunk_size=1)
    upload(p, "docs/fax.tiff", multipage_tiff(6))
    deliveries = p.queue.bodies * 2
    random.Random(7).shuffle(deliveries)
    p.queue.bodies.clear()
    for body in deliveries:
        p.pages.process(PageWork.model_validate_json(body))
    assert len(p.bus.of_type("document.completed")) == 1
    billed = sorted(e.data["page"] for e in p.bus.of_type("usage.recorded"))
    assert billed == [1, 2, 3, 4, 5, 6]
    assert len({e.event_id for e in p.bus.events}) == len(p.bus.events)


def test_a_page_is_stored_before_the_next_is_sent_and_billed_while_it_is_recognized():
    # Given a 3-page TIFF in one message, and a job store that holds page 1's record until the
    # model has been asked for page 2 (or 10 s have passed)
    p = Pipeline(page_chunk_size=3)
    upload(p, "docs/fax.tiff", multipage_tiff(3))
    second_call = threading.Event()
    stored_before_sent: list[bool] = []
    answer = p.ocr.recognize

    def recognize(call, *, deadline=None):
        if len(p.ocr.calls) == 1:
            job_id = next(iter(p.jobs.jobs))
            stored_before_sent.append((RESULTS, f"jobs/{job_id}/pages/000001.json") in p.store.objects)
            second_call.set()
        return answer(call, deadline=deadline)

    held: list[bool] = []
    record_page = p.jobs.record_page

    def holding_record_page(job_id, record, **claim):
        if record.page == 1:
            held.append(second_call.wait(timeout=10))
        return record_page(job_id, record, **claim)

    p.ocr.recognize = recognize  # type: ignore[method-assign]
    p.jobs.record_page = holding_record_page  # type: ignore[method-assign]

    # When the message is processed
    p.drain()

    # Then page 1 was in S3 before page 2 went to the model, and was recorded while page 2 was with it
    assert stored_before_sent == [True]
    assert held == [True]
    # And every page was billed once, in order
    assert [e.data["page"] for e in p.bus.of_type("usage.recorded")] == [1, 2, 3]
    assert len(p.bus.of_type("document.completed")) == 1


def test_the_next_page_is_looked_up_and_prepared_while_the_model_reads_this_one():
    # Given a 3-page TIFF in one message, and a model that holds its answer for page 1 until
    # page 2 has been looked up and prepared (or 10 s have passed)
    p = Pipeline(page_chunk_size=3)
    upload(p, "docs/fax.tiff", multipage_tiff(3))
    second_prepared = threading.Event()
    prepare = p.pages._prepare

    def watched_prepare(spec, page, source):
        prepared = prepare(spec, page, source)
        if page == 2:
            second_prepared.set()
        return prepared

    waited: list[bool] = []
    answer = p.ocr.recognize

    def recognize(call, *, deadline=None):
        if not p.ocr.calls:
            waited.append(second_prepared.wait(timeout=10))
        return answer(call, deadline=deadline)

    p.pages._prepare = watched_prepare  # type: ignore[method-assign]
    p.ocr.recognize = recognize  # type: ignore[method-assign]

    # When the message is processed
    p.drain()

    # Then page 2 was ready before page 1's answer came, and every page was billed once, in order
    assert waited == [True]
    assert [e.data["page"] for e in p.bus.of_type("usage.recorded")] == [1, 2, 3]
    assert len(p.ocr.calls) == 3


def test_a_document_over_the_page_limit_fails_with_a_clear_code():
    p = Pipeline(max_pages=5)
    outcome = upload(p, "docs/fax.tiff", multipage_tiff(6))
    assert outcome.decision is IntakeDecision.REJECTED
    assert p.bus.of_type("document.failed")[0].data["error"]["code"] == "document.too_many_pages"
    assert p.queue.bodies == []


def test_a_document_with_some_failed_pages_completes_and_marks_them():
    # page 2's call is refused for good; the others succeed
    def refuse_second(call):
        refuse_second.calls += 1
        return OcrInvalidParameter("refused", status_code=400) if refuse_second.calls == 2 else None

    refuse_second.calls = 0
    p = Pipeline(ocr=FakeOcrService(fail=refuse_second), page_chunk_size=1)
    upload(p, "docs/fax.tiff", multipage_tiff(3))
    p.drain()
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["pages_failed"] == [2]
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == [1, 3]


def test_a_worker_that_died_holding_the_billing_claim_is_taken_over_after_its_lease():
    # Given a page recorded by a worker that took the usage claim and died before publishing
    now = [1000.0]
    p = Pipeline(claim_lease_s=60)
    p.jobs._clock = lambda: now[0]
    upload(p, "docs/receipt.png")
    work = PageWork.model_validate_json(p.queue.bodies[0])
    p.jobs.mark_usage_published = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    publish = p.bus.publish
    p.bus.publish = lambda envelope: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        p.pages.process(work)
    p.bus.publish = publish  # type: ignore[method-assign]
    del p.jobs.mark_usage_published
    # When the message comes back while the lease still runs, it is handed back, not deleted
    with pytest.raises(OcrPipelineError) as held:
        p.pages.process(work)
    assert held.value.retryable and held.value.code == "pipeline.claim_held"
    assert p.bus.of_type("usage.recorded") == []
    # Then after the lease the next delivery publishes the bill and the ending, once
    now[0] += 61
    p.pages.process(work)
    p.pages.process(work)
    assert len(p.bus.of_type("usage.recorded")) == 1 and len(p.bus.of_type("document.completed")) == 1
    assert len(p.ocr.calls) == 1


def test_an_upload_deleted_before_it_is_processed_ends_once_as_not_found():
    # Given a notification for an object that is gone by the time the function looks
    p = Pipeline()
    gone = UploadedObject(bucket=INPUT, key="docs/gone.png", size=123, etag='"abc"')
    # When it is delivered, and delivered again
    outcome = p.upload.accept(gone)
    p.upload.accept(gone)
    # Then the document ends once, failed with the stable code, and no page is sent
    assert outcome.decision is IntakeDecision.REJECTED
    failed = p.bus.of_type("document.failed")
    assert [f.data["error"]["code"] for f in failed] == ["source.not_found"]
    assert p.queue.bodies == []


def test_the_library_logs_its_decisions_with_the_job_and_correlation_ids(caplog):
    import logging

    p = Pipeline()
    with caplog.at_level(logging.INFO, logger="ocr_pipeline"):
        outcome = upload(p, "docs/a.png", **{"ocr-correlation-id": "order-9"})
        upload(p, "docs/b.png", **{"ocr-task": "no_such_task"})
        p.drain()
    decisions = {(r.getMessage(), getattr(r, "job_id", None)) for r in caplog.records}
    assert ("document admitted", outcome.job_id) in decisions
    assert ("document completed", outcome.job_id) in decisions
    refused = [r for r in caplog.records if r.getMessage() == "document refused"]
    assert [r.code for r in refused] == ["request.invalid"]
    assert {
        getattr(r, "correlation_id", None) for r in caplog.records if getattr(r, "job_id", None) == outcome.job_id
    } == {"order-9"}


def test_a_holder_whose_lease_ran_out_does_not_publish_but_hands_the_work_back(monkeypatch):
    # Given a worker whose claim's lease is (as if) nearly over by the time it would publish
    from ocr_pipeline.pipeline import settlement as settlement_module

    p = Pipeline()
    upload(p, "docs/receipt.png")
    monkeypatch.setattr(settlement_module, "LEASE_PUBLISH_MARGIN_S", p.settings.claim_lease_s + 1)
    # When it settles the page / Then it publishes nothing and gives the message back to retry
    with pytest.raises(OcrPipelineError) as held:
        p.drain()
    assert held.value.code == "pipeline.claim_held" and held.value.retryable
    assert p.bus.events == []
