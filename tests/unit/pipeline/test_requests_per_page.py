"""What a page costs in requests to the ports: each port call is one AWS request of its adapter.

A page that goes to the model is looked up twice (its record, then its result's one key), stored
once, recorded once (the record takes the billing claim with it), billed once and marked billed.
Nothing written is read back by the worker that wrote it.
"""

from __future__ import annotations

import json

import pytest
from ocr_pipeline.pipeline.model import PageWork
from ocr_pipeline.pipeline.page_recognition import PageRecognitionService
from ocr_pipeline.pipeline.settlement import SettlementService
from ocr_pipeline.pipeline.upload import UploadedObject

from tests.support.fakes import INPUT, RESULTS, Pipeline, text_png
from tests.support.images import multipage_tiff

PAGES = 8
CHUNK = 4


def upload(p: Pipeline, key: str, body: bytes) -> None:
    p.store.put(INPUT, key, body)
    p.upload.accept(UploadedObject(bucket=INPUT, key=key))


def uploaded_fax(pages: int = PAGES) -> tuple[Pipeline, list[PageWork]]:
    p = Pipeline(page_chunk_size=CHUNK)
    upload(p, "docs/fax.tiff", multipage_tiff(pages))
    work = [PageWork.model_validate_json(body) for body in p.queue.bodies]
    p.queue.bodies.clear()
    for port in (p.store, p.jobs, p.bus):
        port.calls.clear()
    return p, work


def fresh_worker(p: Pipeline) -> PageRecognitionService:
    """Another instance of the recognize function: it remembers nothing of the first one's pages."""
    settlement = SettlementService(p.settings, p.store, p.jobs, p.bus, p._price)
    return PageRecognitionService(p.settings, p.store, p.jobs, p._recognizer, settlement)


def test_a_page_costs_two_lookups_one_store_one_record_and_one_bill():
    # Given an 8-page fax in two messages of four pages
    p, work = uploaded_fax()

    # When one worker processes both messages
    for message in work:
        p.pages.process(message)

    # Then each page was looked up by its record and its one key, never by a listing
    assert p.store.calls["find_text"] == PAGES
    assert p.jobs.calls["get_page"] == PAGES
    # And stored once, recorded once with its billing claim, billed once and marked billed
    assert p.store.calls["put_json_if_absent"] == PAGES
    assert p.jobs.calls["record_page"] == PAGES
    assert p.jobs.calls["claim_usage_publication"] == 0
    assert p.jobs.calls["mark_usage_published"] == PAGES
    assert p.bus.calls["publish"] == PAGES + 1
    # And the document was assembled from what this worker stored, without reading any of it back
    assert p.store.calls["get_text"] == 0
    assert p.jobs.calls["list_pages"] == 0
    assert p.store.calls["put_json"] == 1
    # And the job was read for its spec once, and for its counters once per message
    assert p.jobs.calls["get_job"] == 1 + len(work)
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["page_count"] == PAGES and completed.data["pages_failed"] == []


def test_the_worker_that_ends_a_document_reads_only_the_pages_others_stored():
    # Given an 8-page fax whose first message was processed by another worker
    p, (first, second) = uploaded_fax()
    fresh_worker(p).process(first)
    p.store.calls.clear()
    p.jobs.calls.clear()

    # When this worker processes the second message, which ends the document
    p.pages.process(second)

    # Then it read the other worker's four pages from S3 (by their records), and none of its own
    assert p.jobs.calls["list_pages"] == 1
    assert p.store.calls["get_text"] == len(first.pages)
    (completed,) = p.bus.of_type("document.completed")
    key = completed.data["result_uri"].split(f"{RESULTS}/", 1)[1]
    document = json.loads(p.store.get_text(RESULTS, key))
    assert [page["page"] for page in document["pages"]] == list(range(1, PAGES + 1))
    assert all(page["text"] for page in document["pages"])


def test_a_single_image_is_read_once_and_its_result_is_never_read_back():
    # Given an uploaded image
    p = Pipeline()
    upload(p, "docs/receipt.png", text_png())
    for port in (p.store, p.jobs, p.bus):
        port.calls.clear()

    # When its one page message is processed
    p.drain()

    # Then the image was read with one GET, its result stored once and not read again
    assert p.store.calls == {"get_bytes": 1, "find_text": 1, "put_json_if_absent": 1, "put_json": 1}
    # And the job store saw one lookup, one record (with its claim), one billing mark and the ending
    assert p.jobs.calls == {
        "get_job": 2,
        "get_page": 1,
        "record_page": 1,
        "mark_usage_published": 1,
        "claim_finalization": 1,
        "finish_job": 1,
    }
    assert p.bus.calls["publish"] == 2


def test_a_twin_that_stored_the_page_first_keeps_its_result_and_the_bill_matches_it():
    # Given a page message, and a twin delivery that stores its own result for the page while this
    # delivery's call to the model is in flight
    p = Pipeline()
    upload(p, "docs/receipt.png", text_png())
    work = PageWork.model_validate_json(p.queue.bodies[0])
    twin = fresh_worker(p)
    answer = p.ocr.recognize
    twin_ran: list[bool] = []

    def recognize(call, *, deadline=None):
        if not twin_ran:
            twin_ran.append(True)
            spec = twin.job_spec(work.job_id)
            twin._finish_page(spec, twin.start_page(spec, 1, _Source(p)), None)
        return answer(call, deadline=deadline)

    p.ocr.recognize = recognize  # type: ignore[method-assign]

    # When this delivery finishes the page
    p.pages.process(work)

    # Then the stored result is the twin's (asked first), and the page is recorded and billed by it
    key = f"jobs/{work.job_id}/pages/000001.json"
    stored = json.loads(p.store.get_text(RESULTS, key))
    assert stored["request_id"] == "req-1"
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["request_id"] == "req-1"
    assert usage.data["input_tokens"] == stored["usage"]["input_tokens"]
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["usage"]["input_tokens"] == stored["usage"]["input_tokens"]


class _Source:
    """The uploaded image, opened as a page worker opens it."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p

    def get(self):
        import io

        return io.BytesIO(self.p.store.get_bytes(INPUT, "docs/receipt.png"))


def test_billing_a_page_recorded_by_a_worker_that_died_reads_no_result_object():
    # Given a page recorded (with its billing claim) by a worker that died before publishing its bill
    now = [1000.0]
    p = Pipeline(claim_lease_s=60)
    p.jobs._clock = lambda: now[0]
    upload(p, "docs/receipt.png", text_png())
    work = PageWork.model_validate_json(p.queue.bodies[0])
    publish = p.bus.publish
    p.bus.publish = lambda envelope: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        p.pages.process(work)
    p.bus.publish = publish  # type: ignore[method-assign]

    # When the message comes back after the claim's lease, to a new worker
    now[0] += 61
    p.store.calls.clear()
    fresh_worker(p).process(work)

    # Then the page is billed once, how it was read taken from its record, not from its stored result
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["method"] == "ocr"
    assert p.store.calls["find_text"] == 0 and p.store.calls["get_text"] == 1  # the one read: assembly
    assert len(p.ocr.calls) == 1
    assert len(p.bus.of_type("document.completed")) == 1
