"""The AWS requests a page costs, counted on moto's in-process AWS with the real adapters and guard.

docs/aws-requests.md tabulates them; these tests keep that table true (a read-back or a listing
added per page fails here).
"""

from __future__ import annotations

import time

import pytest
from ocr_pipeline.adapters.aws import DynamoJobStore, S3ObjectStore
from ocr_pipeline.pipeline.records import PageRecord, PageStatus
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.usage import Usage

from tests.support.aws_requests import INPUT, JOBS, RESULTS, AwsPipeline, moto_aws, text_pdf
from tests.support.fakes import text_png

PAGES = 8  # two page messages of four


@pytest.fixture
def aws(monkeypatch):
    with moto_aws(monkeypatch):
        yield AwsPipeline()


def test_a_pdf_page_costs_a_record_lookup_a_missing_get_a_put_a_transaction_an_update_and_a_publish(aws):
    # Given an 8-page PDF in the input bucket
    aws.put_source("docs/statement.pdf", text_pdf(PAGES))

    # When the upload and recognize functions handle it, one worker taking both page messages
    aws.run("docs/statement.pdf")

    # Then per page: one GetItem of its record, one GET of its result's key (missing), one PUT
    calls = aws.count.calls
    assert calls["s3.GetObject[page, missing]"] == PAGES
    assert calls["s3.PutObject[page]"] == PAGES
    assert calls["s3.ListObjectsV2[page]"] == 0
    # And one two-item transaction, one UpdateItem (billed), one usage event
    assert calls["dynamodb.TransactWriteItems[jobs]"] == PAGES and aws.count.transaction_items == 2 * PAGES
    # Jobs' UpdateItems besides: dispatched, finalization claim, finished
    assert calls["dynamodb.UpdateItem[jobs]"] == PAGES + 3
    assert calls["sns.Publish"] == PAGES + 1
    # And the pages this worker stored were not read back to assemble the document
    assert calls["s3.GetObject[page]"] == 0
    assert calls["dynamodb.Query[jobs]"] == 0
    assert calls["s3.PutObject[document]"] == 1
    # Per message: the idempotency guard's put and update, and a read of the job's counters
    messages = PAGES // 4
    assert calls["dynamodb.PutItem[idempotency]"] == calls["dynamodb.UpdateItem[idempotency]"] == 1 + messages
    assert calls["dynamodb.GetItem[jobs]"] == PAGES + 1 + messages


def test_pages_stored_by_other_workers_are_read_once_to_assemble_the_document(aws):
    # Given an 8-page PDF whose two page messages go to two new workers
    aws.put_source("docs/statement.pdf", text_pdf(PAGES))

    # When the pipeline handles it
    aws.run("docs/statement.pdf", worker_per_message=True)

    # Then the worker ending the document read the other's four pages, once each, by one Query
    assert aws.count.calls["s3.GetObject[page]"] == PAGES // 2
    assert aws.count.calls["dynamodb.Query[jobs]"] == 1


def test_a_single_image_costs_these_requests_in_all(aws):
    # Given an image in the input bucket
    aws.put_source("docs/receipt.png", text_png())

    # When the pipeline handles it
    aws.run("docs/receipt.png")

    # Then these are all of its AWS requests
    assert +aws.count.calls == {
        # upload: the object's head, a sniff of its first bytes, the job, its page message
        "s3.HeadObject[source]": 1,
        "s3.GetObject[source]": 2,
        "dynamodb.PutItem[jobs]": 1,
        "sqs.SendMessageBatch": 1,
        # the idempotency guard of both functions
        "dynamodb.PutItem[idempotency]": 2,
        "dynamodb.UpdateItem[idempotency]": 2,
        # the job read for its spec and for its counters; the page's record looked up
        "dynamodb.GetItem[jobs]": 3,
        "s3.GetObject[page, missing]": 1,
        "s3.PutObject[page]": 1,
        "dynamodb.TransactWriteItems[jobs]": 1,
        # dispatched, billed, finalization claimed, finished
        "dynamodb.UpdateItem[jobs]": 4,
        "sns.Publish": 2,
        "s3.PutObject[document]": 1,
    }


def test_a_page_result_is_stored_once_under_its_key(aws):
    store = S3ObjectStore(aws.s3)
    assert store.find_text(RESULTS, "jobs/j/pages/000001.json") is None
    assert store.put_json_if_absent(RESULTS, "jobs/j/pages/000001.json", '{"first": true}')
    assert not store.put_json_if_absent(RESULTS, "jobs/j/pages/000001.json", '{"second": true}')
    assert store.find_text(RESULTS, "jobs/j/pages/000001.json") == '{"first": true}'


def test_the_recording_write_holds_the_billing_claim_for_its_lease(aws):
    # Given a job, and a page recorded with a 60 s billing claim
    now = [time.time()]
    jobs = DynamoJobStore(JOBS, aws.dynamodb, clock=lambda: now[0])
    aws.put_source("docs/receipt.png", text_png())
    aws.intake.jobs = jobs
    job_id = aws.upload.accept(UploadedObject(bucket=INPUT, key="docs/receipt.png")).job_id
    assert job_id is not None
    record = PageRecord(
        page=1, status=PageStatus.DONE, usage=Usage(input_tokens=1, output_tokens=1, image_tokens=0), method="ocr"
    )
    assert jobs.record_page(job_id, record, usage_claim_s=60)

    # Then no other delivery may claim the page's billing until the lease has run out
    refused = jobs.claim_usage_publication(job_id, 1, 60)
    assert not refused.granted and 59 <= refused.held_for_s <= 60
    now[0] += 61
    assert jobs.claim_usage_publication(job_id, 1, 60).granted
    # And the record keeps how the page was read
    stored = jobs.get_page(job_id, 1)
    assert stored is not None and stored.method == "ocr"
