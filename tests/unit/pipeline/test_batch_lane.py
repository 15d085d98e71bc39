"""The batch lane end to end on in-memory ports: intake, submission, the vendor's batch, collection.

Each test drives the services the way the two scheduled functions do, and checks what a tenant and an
operator see: every document ends once, every page is billed once (at the batch price), and the
vendor is asked to answer each page once per attempt, also when messages and runs repeat.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from ocr_pipeline import errors
from ocr_pipeline.adapters.dashscope import OcrServiceSettings
from ocr_pipeline.batch_api import BatchStatus
from ocr_pipeline.pipeline.batch_files import new_batch_key
from ocr_pipeline.pipeline.batch_submission import ORPHANED_AFTER_S
from ocr_pipeline.pipeline.config import BatchFallback
from ocr_pipeline.pipeline.model import Lane, PageWork
from ocr_pipeline.pipeline.port_errors import StorageError
from ocr_pipeline.pipeline.records import BatchState
from ocr_pipeline.pipeline.request_intake import RequestService
from ocr_pipeline.pipeline.routing import RoutingRule
from ocr_pipeline.pipeline.sources import SourcePolicy
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.pricing import default_price_table
from ocr_pipeline.usage import Usage

from tests.support.batch_lane import BatchLaneStack
from tests.support.fakes import INPUT, text_png
from tests.support.images import multipage_tiff


def test_a_batch_document_is_answered_through_the_batch_api_and_billed_once_at_half_the_price():
    lane = BatchLaneStack()
    lane.upload("archive/fax.tiff", multipage_tiff(3))
    # Given the pages waiting in the batch queue, none on the page queue
    assert len(lane.inbox.bodies) == 1 and lane.p.queue.bodies == []
    # When the submitter runs, then one batch is open with a line per page, and the queue is empty
    report = lane.submit()
    assert (report.pages_submitted, report.batches_opened, lane.inbox.bodies, lane.inbox.in_flight) == (3, 1, [], {})
    (batch_id,) = lane.open_batches()
    assert len(lane.api.custom_ids(batch_id)) == 3
    # While the vendor works, the collector finds it open and does nothing
    assert lane.collect().batches_open == 1 and lane.events("document.completed") == []
    # When it completes, the collector settles every page and the document completes in the batch lane
    lane.finish_all()
    assert lane.collect().pages_settled == 3
    (completed,) = lane.events("document.completed")
    assert completed.data["lane"] == "batch" and completed.data["pages_failed"] == []
    usage = lane.events("usage.recorded")
    assert sorted(e.data["page"] for e in usage) == [1, 2, 3]
    prices = default_price_table()
    for event in usage:
        assert event.data["pricing"] == "batch"
        tokens = Usage(
            input_tokens=event.data["input_tokens"], output_tokens=event.data["output_tokens"], image_tokens=0
        )
        realtime = prices.cost(tokens, "qwen-vl-ocr", "cn").amount
        assert Decimal(event.data["cost"]) == realtime / 2
    assert Decimal(completed.data["cost"]) == sum(Decimal(e.data["cost"]) for e in usage)
    # And the real-time model was never called; the vendor answered each page once
    assert lane.p.ocr.calls == [] and len(lane.api.ocr.calls) == 3
    assert lane.batches.unfinished_batches() == []


def test_a_model_the_batch_api_does_not_take_is_refused_at_intake_not_sent_in_real_time():
    lane = BatchLaneStack()
    lane.p.settings = lane.p.settings.model_copy(
        update={"ocr": OcrServiceSettings(api_key="t", model="qwen-vl-ocr-2025-11-20", region="intl").defaults()}
    )
    lane.p.upload.settings = lane.p.intake.settings = lane.p.settings
    lane.upload("archive/receipt.png", text_png())
    (failed,) = lane.events("document.failed")
    assert failed.data["error"]["code"] == "request.batch_unsupported"
    assert failed.data["lane"] == "batch"
    assert "qwen-vl-ocr-2025-11-20" in failed.data["error"]["message"]
    assert lane.inbox.bodies == [] and lane.p.queue.bodies == []


def test_an_unknown_mode_is_refused_with_its_code():
    lane = BatchLaneStack()
    lane.upload("archive/receipt.png", text_png(), metadata={"ocr-mode": "overnight"})
    (failed,) = lane.events("document.failed")
    assert failed.data["error"]["code"] == "request.invalid" and "ocr-mode" in failed.data["error"]["message"]


def test_pages_of_an_expired_batch_go_again_and_are_answered_and_billed_once():
    lane = BatchLaneStack()
    lane.upload("archive/fax.tiff", multipage_tiff(2))
    lane.submit()
    # Given the vendor expires the batch having answered page 1 only
    (batch_id,) = lane.open_batches()
    first, second = lane.api.custom_ids(batch_id)
    lane.api.finish(batch_id, BatchStatus.EXPIRED, answered=[first])
    report = lane.collect()
    # Then page 1 is kept, page 2 goes again for attempt 2, and the document waits for it
    assert (report.pages_settled, report.pages_sent_again) == (1, 1)
    assert PageWork.model_validate_json(lane.inbox.bodies[0]).attempt == 2
    assert lane.events("document.completed") == []
    lane.submit()
    (retry_batch,) = lane.open_batches()
    assert lane.api.custom_ids(retry_batch) == [second.replace("-a1", "-a2")]
    lane.finish_all()
    lane.collect()
    (completed,) = lane.events("document.completed")
    assert completed.data["pages_failed"] == []
    assert sorted(e.data["page"] for e in lane.events("usage.recorded")) == [1, 2]
    assert len(lane.api.ocr.calls) == 2


def test_error_lines_follow_the_real_time_rules_retryable_again_permanent_failed():
    lane = BatchLaneStack()
    lane.upload("archive/fax.tiff", multipage_tiff(3))
    lane.submit()
    (batch_id,) = lane.open_batches()
    ids = lane.api.custom_ids(batch_id)
    lane.api.finish(
        batch_id,
        error_lines={
            ids[0]: errors.OcrThrottled("rate limited", status_code=429),
            ids[1]: errors.OcrInvalidParameter("the image is invalid", status_code=400),
        },
    )
    report = lane.collect()
    assert (report.pages_settled, report.pages_failed, report.pages_sent_again) == (1, 1, 1)
    lane.submit()
    lane.finish_all()
    lane.collect()
    (completed,) = lane.events("document.completed")
    assert completed.data["pages_failed"] == [2]
    assert sorted(e.data["page"] for e in lane.events("usage.recorded")) == [1, 3]


@pytest.mark.parametrize("fallback", [BatchFallback.FAIL, BatchFallback.REALTIME])
def test_a_page_out_of_batch_attempts_fails_or_falls_back_to_real_time(fallback):
    lane = BatchLaneStack(batch_max_attempts=2, batch_fallback=fallback)
    lane.upload("archive/receipt.png", text_png())
    for _ in range(2):
        lane.submit()
        lane.finish_all(BatchStatus.EXPIRED)
        lane.collect()
    assert lane.inbox.bodies == []
    if fallback is BatchFallback.FAIL:
        (failed,) = lane.events("document.failed")
        assert failed.data["error"]["code"] == "batch.retries_exhausted"
        assert "expired" in failed.data["error"]["message"]
        return
    # Real time: the page worker recognizes it, billed at the real-time price
    assert lane.p.drain() == 1
    (completed,) = lane.events("document.completed")
    (usage,) = lane.events("usage.recorded")
    assert usage.data["pricing"] == "realtime" and completed.data["lane"] == "batch"
    assert len(lane.p.ocr.calls) == 1 and lane.api.ocr.calls == []


def test_repeated_messages_and_runs_put_each_page_in_one_batch_and_bill_it_once():
    lane = BatchLaneStack()
    lane.upload("archive/fax.tiff", multipage_tiff(2))
    # Given the page message delivered twice (SQS delivers at least once)
    lane.inbox.bodies.append(lane.inbox.bodies[0])
    lane.submit()
    (batch_id,) = lane.open_batches()
    assert len(lane.api.custom_ids(batch_id)) == 2
    # and delivered again after the run (a run that died before deleting it)
    lane.inbox.bodies.append(PageWork(job_id=next(iter(lane.p.jobs.jobs)), pages=[1, 2]).model_dump_json())
    assert lane.submit().pages_skipped == 2 and lane.api.calls["create_batch"] == 1
    lane.finish_all()
    # When a collector run dies before closing the finished batch, and the next one collects it again
    close = lane.batches.close_batch

    def die_once(batch_key, vendor_status):
        lane.batches.close_batch = close
        raise StorageError("the run died here")

    lane.batches.close_batch = die_once
    with pytest.raises(StorageError):
        lane.collect()
    assert lane.collect().batches_closed == {"completed": 1}
    # Then each page is billed once and the document ends once
    assert sorted(e.data["page"] for e in lane.events("usage.recorded")) == [1, 2]
    assert len(lane.events("document.completed")) == 1


def test_a_run_that_dies_between_upload_and_create_never_makes_a_second_batch():
    lane = BatchLaneStack()
    lane.upload("archive/receipt.png", text_png())
    create = lane.api.create_batch
    # Given the vendor's create call failing once (a timeout: did it make the batch or not?)
    calls = []

    def create_once_then_time_out(file_id, metadata):
        batch = create(file_id, metadata)
        calls.append(batch.id)
        if len(calls) == 1:
            raise errors.OcrTimeout("the reply never came")
        return batch

    lane.api.create_batch = create_once_then_time_out
    report = lane.submit()
    assert report.batches_waiting == 1 and lane.batches.unfinished_batches()[0].state is BatchState.UPLOADED
    # When the next run finishes it, it finds the batch the timed-out call made instead of making another
    assert lane.submit().batches_opened == 1
    assert len(calls) == 1 and lane.open_batches() == calls


def test_pages_of_a_batch_never_staged_are_taken_over_once_its_run_must_have_ended():
    lane = BatchLaneStack()
    lane.upload("archive/receipt.png", text_png())
    job_id = next(iter(lane.p.jobs.jobs))
    # Given page 1 assigned to a batch a dead run was filling, and its message back on the queue
    orphan = new_batch_key(lane.now)
    assert lane.batches.assign_page(job_id, 1, 1, orphan)
    # While that run may still be alive, the page is left alone
    lane.submit()
    assert lane.open_batches() == [] and lane.inbox.bodies == []
    lane.inbox.bodies.append(PageWork(job_id=job_id, pages=[1]).model_dump_json())
    # Once it must have ended, the page is taken over and sent
    lane.now += ORPHANED_AFTER_S + 1
    assert lane.submit().pages_submitted == 1
    assert lane.batches.page_assignment(job_id, 1).batch_key != orphan


def request_service(lane: BatchLaneStack) -> RequestService:
    policy = SourcePolicy(buckets=frozenset({INPUT}), url_hosts=())
    return RequestService(lane.p.settings, lane.p.intake, fetcher=None, policy=policy)  # type: ignore[arg-type]


def test_a_request_chooses_the_lane_and_is_refused_with_a_model_the_lane_does_not_take():
    lane = BatchLaneStack()
    lane.p.store.put(INPUT, "in/receipt.png", text_png())
    service = request_service(lane)
    body = {"source": {"bucket": INPUT, "key": "in/receipt.png"}, "mode": "batch"}
    assert service.handle(json.dumps({**body, "correlation_id": "ok"}), "m-1").decision.value == "enqueued"
    assert len(lane.inbox.bodies) == 1 and lane.p.queue.bodies == []
    # The same document with a model only real time serves: refused with its code, nothing queued
    refused = {**body, "correlation_id": "refused", "model": "qwen-vl-ocr-2025-11-20", "region": "intl"}
    assert service.handle(json.dumps(refused), "m-2").decision.value == "rejected"
    (failed,) = lane.events("document.failed")
    assert (failed.correlation_id, failed.data["error"]["code"]) == ("refused", "request.batch_unsupported")
    assert len(lane.inbox.bodies) == 1


def test_a_routing_rule_sends_its_prefix_to_the_lane_unless_the_object_says_otherwise():
    lane = BatchLaneStack(routing_rules=[RoutingRule(prefix="archive/", mode=Lane.BATCH)])
    lane.p.store.put(INPUT, "archive/a.png", text_png())
    lane.p.upload.accept(UploadedObject(bucket=INPUT, key="archive/a.png"))
    lane.p.store.put(INPUT, "archive/b.png", text_png(), metadata={"ocr-mode": "realtime"})
    lane.p.upload.accept(UploadedObject(bucket=INPUT, key="archive/b.png"))
    lane.p.store.put(INPUT, "inbox/c.png", text_png())
    lane.p.upload.accept(UploadedObject(bucket=INPUT, key="inbox/c.png"))
    assert len(lane.inbox.bodies) == 1 and len(lane.p.queue.bodies) == 2
    assert lane.p.spec_of(lane.inbox.bodies[0]).source.key == "archive/a.png"
