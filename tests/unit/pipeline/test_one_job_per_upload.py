"""One upload, one job, one ending: a bounded fan-out per invocation, and failures that refer to the admitted job."""

from __future__ import annotations

import contextlib
import json

from ocr_pipeline.pipeline.dead_letters import DeadLetterService
from ocr_pipeline.pipeline.intake import IntakeDecision
from ocr_pipeline.pipeline.model import PAGE_QUEUE_MESSAGE, PageDispatch, PageWork
from ocr_pipeline.pipeline.port_errors import QueueSendError
from ocr_pipeline.pipeline.upload import UploadedObject

from tests.support.fakes import INPUT, Pipeline
from tests.support.images import multipage_tiff
from tests.unit.pipeline.test_fanout_memory import blank_pdf


def messages(p: Pipeline) -> list[PageWork | PageDispatch]:
    return [PAGE_QUEUE_MESSAGE.validate_json(body) for body in p.queue.bodies]


def failure_record(key: str) -> str:
    return json.dumps(
        {
            "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": {
                "Records": [
                    {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": INPUT}, "object": {"key": key}}}
                ]
            },
            "responsePayload": {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 60.00 seconds"},
        }
    )


def test_one_invocation_sends_a_bounded_number_of_page_messages_and_hands_the_rest_on():
    # Given a 30-page document, 2 pages per message and at most 4 messages per invocation
    p = Pipeline(page_chunk_size=2, dispatch_messages_per_call=4)
    p.store.put(INPUT, "docs/long.tiff", multipage_tiff(30), content_type="image/tiff")

    # When it is uploaded
    outcome = p.upload.accept(UploadedObject(bucket=INPUT, key="docs/long.tiff"))

    # Then the upload sent 4 page messages (8 pages) and one dispatch for page 9 on
    assert outcome.decision is IntakeDecision.ENQUEUED and outcome.page_count == 30
    sent = messages(p)
    assert [m.pages for m in sent if isinstance(m, PageWork)] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert [m.next_page for m in sent if isinstance(m, PageDispatch)] == [9]

    # And following the dispatches sends every page exactly once, each step bounded the same way
    pages: list[int] = []
    while p.queue.bodies:
        message = PAGE_QUEUE_MESSAGE.validate_json(p.queue.bodies.pop(0))
        if isinstance(message, PageDispatch):
            before = len(p.queue.bodies)
            p.intake.continue_dispatch(message)
            assert len(p.queue.bodies) - before <= 4 + 1
        else:
            pages.extend(message.pages)
    assert pages == list(range(1, 31))


def test_5000_pages_are_dispatched_in_bounded_steps_each_page_once():
    p = Pipeline(page_chunk_size=4)
    p.store.put(INPUT, "docs/huge.pdf", blank_pdf(5000), content_type="application/pdf")
    outcome = p.upload.accept(UploadedObject(bucket=INPUT, key="docs/huge.pdf"))
    assert outcome.page_count == 5000
    assert len(p.queue.bodies) == p.settings.dispatch_messages_per_call + 1
    pages: list[int] = []
    steps = 0
    while p.queue.bodies:
        message = PAGE_QUEUE_MESSAGE.validate_json(p.queue.bodies.pop(0))
        if isinstance(message, PageDispatch):
            steps += 1
            p.intake.continue_dispatch(message)
        else:
            pages.extend(message.pages)
    assert pages == list(range(1, 5001))
    assert steps == 12  # 5000 pages / (4 pages x 100 messages) = 12.5: the upload, then 12 dispatches


def test_an_upload_that_died_while_sending_its_pages_ends_as_its_own_job_not_a_second_one():
    # Given an upload whose handler created its job and then died while sending its page messages
    p = Pipeline(page_chunk_size=1)
    p.store.put(INPUT, "docs/fax.tiff", multipage_tiff(6), content_type="image/tiff")

    class DiesAfterTwo:
        def __init__(self) -> None:
            self.bodies: list[str] = []

        def send_all(self, bodies) -> None:
            for body in bodies:
                if len(self.bodies) == 2:
                    raise QueueSendError("the function timed out", [])
                self.bodies.append(body)

    dying = DiesAfterTwo()
    p.intake.queue = dying
    with contextlib.suppress(QueueSendError):
        p.upload.accept(UploadedObject(bucket=INPUT, key="docs/fax.tiff"))
    (job_id,) = p.jobs.jobs
    p.intake.queue = p.queue
    p.queue.bodies.extend(dying.bodies)  # the two page messages that did go out

    # When Lambda gave up on it and its failure record reaches the dead-letter function
    DeadLetterService(p.upload, p.settlement, p.intake).handle(failure_record("docs/fax.tiff"), "m-1")

    # Then no second job and no failure: the admitted job's pages were all sent, and it completes once
    assert list(p.jobs.jobs) == [job_id]
    assert p.bus.of_type("document.failed") == []
    p.drain()
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["job_id"] == job_id and completed.data["pages_failed"] == []
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == [1, 2, 3, 4, 5, 6]


def test_an_upload_that_failed_after_its_pages_went_out_is_not_failed_beside_them():
    p = Pipeline()
    p.store.put(INPUT, "docs/fax.tiff", multipage_tiff(3), content_type="image/tiff")
    p.upload.accept(UploadedObject(bucket=INPUT, key="docs/fax.tiff"))
    (outcome,) = (
        DeadLetterService(p.upload, p.settlement, p.intake).handle(failure_record("docs/fax.tiff"), "m-1") or []
    )
    assert outcome.decision is IntakeDecision.DUPLICATE
    assert p.bus.of_type("document.failed") == []
    p.drain()
    assert len(p.bus.of_type("document.completed")) == 1


def test_a_dispatch_that_ran_out_of_deliveries_fails_the_unsent_pages_and_the_document_ends_once():
    # Given a 10-page document whose second dispatch step could never be sent
    p = Pipeline(page_chunk_size=2, dispatch_messages_per_call=2)
    p.store.put(INPUT, "docs/fax.tiff", multipage_tiff(10), content_type="image/tiff")
    p.upload.accept(UploadedObject(bucket=INPUT, key="docs/fax.tiff"))
    sent = messages(p)
    (dispatch,) = [m for m in sent if isinstance(m, PageDispatch)]
    p.queue.bodies = [b for b in p.queue.bodies if "page_dispatch" not in b]

    # When the sent pages are worked and the dispatch reaches the dead-letter function
    p.drain()
    DeadLetterService(p.upload, p.settlement, p.intake).handle(dispatch.model_dump_json(), "m-1")

    # Then the document ends once, with the unsent pages failed with page.retries_exhausted
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["pages_failed"] == [5, 6, 7, 8, 9, 10]
    assert p.bus.of_type("document.failed") == []
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == [1, 2, 3, 4]
