"""The batch store's conditional semantics, the same assertions on DynamoBatchStore (moto) and its fake.

The services' exactly-once rules rest on these: a page goes in one batch per attempt, a batch's state
only moves forward, and a batch is closed once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from ocr_pipeline.adapters.batch_store import CLOSED_RETENTION_S, DynamoBatchStore
from ocr_pipeline.pipeline.port_errors import BatchStateConflict, StorageError
from ocr_pipeline.pipeline.records import BatchRecord, BatchState, PageAssignment

from tests.support.aws_requests import JOBS, moto_aws
from tests.support.batch_fakes import InMemoryBatchStore

NOW = 1_764_748_800.0


def a_batch(key: str = "20251203T080000Z-a", **fields: Any) -> BatchRecord:
    values: dict[str, Any] = {
        "batch_key": key,
        "model": "qwen-vl-ocr",
        "state": BatchState.STAGED,
        "input_key": f"batches/{key}/input.jsonl",
        "manifest_key": f"batches/{key}/manifest.json",
        "line_count": 12,
        "input_bytes": 48_000,
        "created_at": 1764748800.25,
        **fields,
    }
    return BatchRecord(**values)


def jobs_table(client: Any) -> None:
    client.create_table(
        TableName=JOBS,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("pk", "sk")],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def dynamodb(monkeypatch) -> Iterator[Any]:
    with moto_aws(monkeypatch):
        client = boto3.client("dynamodb")
        jobs_table(client)
        yield client


@pytest.fixture(params=["dynamo", "memory"])
def store(request, monkeypatch):
    if request.param == "memory":
        return InMemoryBatchStore()
    return DynamoBatchStore(JOBS, request.getfixturevalue("dynamodb"), clock=lambda: NOW)


# --- page assignments ------------------------------------------------------------------------------


def test_a_page_goes_in_one_batch_per_attempt(store):
    # Given page 3 of a job assigned to a batch for its first attempt
    assert store.assign_page("job-1", 3, 1, "batch-a") is True
    # When a redelivered message assigns it again for the same attempt, or an older one
    # Then both are refused and the first assignment stands
    assert store.assign_page("job-1", 3, 1, "batch-b") is False
    assert store.assign_page("job-1", 3, 0, "batch-b") is False
    assert store.page_assignment("job-1", 3) == PageAssignment(attempt=1, batch_key="batch-a")


def test_a_later_attempt_moves_the_page_to_a_new_batch(store):
    # Given a page in a batch for attempt 1
    store.assign_page("job-1", 3, 1, "batch-a")
    # When it is sent again for attempt 2
    # Then it is accepted, and the assignment names the new batch
    assert store.assign_page("job-1", 3, 2, "batch-b") is True
    assert store.page_assignment("job-1", 3) == PageAssignment(attempt=2, batch_key="batch-b")
    assert store.assign_page("job-1", 3, 1, "batch-c") is False


def test_pages_and_jobs_are_assigned_apart(store):
    # Given page 3 of job-1 assigned
    store.assign_page("job-1", 3, 1, "batch-a")
    # Then another page, and the same page of another job, are not in any batch yet
    assert store.page_assignment("job-1", 4) is None
    assert store.page_assignment("job-2", 3) is None
    assert store.assign_page("job-2", 3, 1, "batch-a") is True


def test_a_page_moves_within_its_attempt_only_from_the_batch_it_names(store):
    # Given a page assigned to a batch for attempt 1 (a batch whose submitter died before staging it)
    store.assign_page("job-1", 3, 1, "batch-a")
    # When another run takes it over from that batch
    # Then it moves, once: a second run taking it over from the same batch is refused
    assert store.reassign_page("job-1", 3, 1, "batch-a", "batch-b") is True
    assert store.reassign_page("job-1", 3, 1, "batch-a", "batch-c") is False
    assert store.page_assignment("job-1", 3) == PageAssignment(attempt=1, batch_key="batch-b")
    # And it never moves for another attempt, nor when it was never assigned
    assert store.reassign_page("job-1", 3, 2, "batch-b", "batch-c") is False
    assert store.reassign_page("job-1", 4, 1, "batch-a", "batch-c") is False
    assert store.page_assignment("job-1", 4) is None


# --- a batch's steps -------------------------------------------------------------------------------


def test_a_batch_moves_staged_uploaded_open(store):
    # Given a staged batch
    store.stage_batch(a_batch())
    # When it is uploaded and opened
    store.batch_uploaded("20251203T080000Z-a", "file-batch-1")
    store.batch_opened("20251203T080000Z-a", "batch_9")
    # Then the unfinished batch holds its state and both ids, and every other field as staged
    assert store.unfinished_batches() == [
        a_batch(state=BatchState.OPEN, file_id="file-batch-1", vendor_batch_id="batch_9")
    ]


def test_a_staged_batch_may_be_opened_without_an_upload_step(store):
    # Given a staged batch (a submitter that found the vendor's batch by its file id before recording the upload)
    store.stage_batch(a_batch())
    # When it is opened
    store.batch_opened("20251203T080000Z-a", "batch_9")
    # Then it is open
    assert store.unfinished_batches()[0].state is BatchState.OPEN


def test_repeating_a_step_with_the_same_id_is_a_no_op(store):
    # Given a batch uploaded and opened
    store.stage_batch(a_batch())
    store.batch_uploaded("20251203T080000Z-a", "file-batch-1")
    store.batch_uploaded("20251203T080000Z-a", "file-batch-1")
    store.batch_opened("20251203T080000Z-a", "batch_9")
    # When the open step is repeated with the same id, and the batch is staged again as it was
    store.batch_opened("20251203T080000Z-a", "batch_9")
    # Then nothing changed
    assert store.unfinished_batches() == [
        a_batch(state=BatchState.OPEN, file_id="file-batch-1", vendor_batch_id="batch_9")
    ]


def test_staging_the_same_record_twice_is_a_no_op_and_a_different_one_a_conflict(store):
    # Given a staged batch
    store.stage_batch(a_batch())
    # When the same record is staged again (a retried call), nothing happens
    store.stage_batch(a_batch())
    # But another record under the same key is refused
    with pytest.raises(BatchStateConflict):
        store.stage_batch(a_batch(line_count=13))
    assert store.unfinished_batches() == [a_batch()]


def test_a_second_upload_of_the_same_batch_is_refused(store):
    # Given a batch uploaded as file-batch-1 by one run
    store.stage_batch(a_batch())
    store.batch_uploaded("20251203T080000Z-a", "file-batch-1")
    # When a second run, racing on the same staged batch, records its own upload
    # Then it is refused: it must not go on to make a second vendor batch
    with pytest.raises(BatchStateConflict) as refused:
        store.batch_uploaded("20251203T080000Z-a", "file-batch-2")
    # (retryable as a run: the next one reads the record as it stands)
    assert refused.value.code == "batch.state_conflict" and refused.value.retryable
    assert store.unfinished_batches()[0].file_id == "file-batch-1"


def test_steps_never_go_back(store):
    # Given an open batch
    store.stage_batch(a_batch())
    store.batch_opened("20251203T080000Z-a", "batch_9")
    # When an upload is recorded for it, or it is opened with another vendor batch
    # Then both are refused and it stays as it was
    with pytest.raises(BatchStateConflict):
        store.batch_uploaded("20251203T080000Z-a", "file-batch-1")
    with pytest.raises(BatchStateConflict):
        store.batch_opened("20251203T080000Z-a", "batch_10")
    assert store.unfinished_batches() == [a_batch(state=BatchState.OPEN, vendor_batch_id="batch_9")]


def test_steps_of_a_batch_never_staged_are_refused(store):
    with pytest.raises(BatchStateConflict):
        store.batch_uploaded("nope", "file-batch-1")
    with pytest.raises(BatchStateConflict):
        store.batch_opened("nope", "batch_1")


def test_only_a_staged_record_can_be_staged(store):
    with pytest.raises(ValueError):
        store.stage_batch(a_batch(state=BatchState.OPEN))


# --- listing and closing ---------------------------------------------------------------------------


def test_unfinished_batches_come_oldest_first(store):
    # Given batches staged out of order (their keys begin with a UTC time)
    for key in ("20251203T090000Z-c", "20251203T070000Z-a", "20251203T080000Z-b"):
        store.stage_batch(a_batch(key))
    # Then they are listed by key
    assert [b.batch_key for b in store.unfinished_batches()] == [
        "20251203T070000Z-a",
        "20251203T080000Z-b",
        "20251203T090000Z-c",
    ]


def test_a_batch_is_closed_once(store):
    # Given an open batch
    store.stage_batch(a_batch())
    store.batch_opened("20251203T080000Z-a", "batch_9")
    # When it is closed, and closed again by another run
    first = store.close_batch("20251203T080000Z-a", "completed")
    second = store.close_batch("20251203T080000Z-a", "completed")
    # Then only the first close did it, and it is no longer unfinished
    assert (first, second) == (True, False)
    assert store.unfinished_batches() == []
    # And no step can touch it any more
    with pytest.raises(BatchStateConflict):
        store.batch_opened("20251203T080000Z-a", "batch_9")


def test_a_batch_is_found_by_its_key_unfinished_or_closed(store):
    # Given a batch never staged, one staged and one closed
    store.stage_batch(a_batch("20251203T080000Z-a"))
    store.stage_batch(a_batch("20251203T090000Z-b"))
    store.batch_opened("20251203T090000Z-b", "batch_9")
    store.close_batch("20251203T090000Z-b", "completed")
    # Then each is found as it stands, and the one never staged is not
    assert store.get_batch("20251203T070000Z-never") is None
    assert store.get_batch("20251203T080000Z-a") == a_batch("20251203T080000Z-a")
    assert store.get_batch("20251203T090000Z-b") == a_batch(
        "20251203T090000Z-b", state=BatchState.CLOSED, vendor_batch_id="batch_9", vendor_status="completed"
    )


def test_closing_a_batch_never_staged_is_false(store):
    assert store.close_batch("nope", "expired") is False


# --- the DynamoDB items ----------------------------------------------------------------------------


def item(client: Any, pk: str, sk: str) -> dict[str, Any]:
    return client.get_item(TableName=JOBS, Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item", {})


def test_the_items_on_the_jobs_table(dynamodb):
    # Given a page assigned and a batch staged, opened and closed on DynamoDB
    store = DynamoBatchStore(JOBS, dynamodb, clock=lambda: NOW)
    store.assign_page("job-1", 7, 2, "20251203T080000Z-a")
    store.stage_batch(a_batch())
    staged = item(dynamodb, "batches#unfinished", "20251203T080000Z-a")
    store.batch_opened("20251203T080000Z-a", "batch_9")
    store.close_batch("20251203T080000Z-a", "expired")
    # Then the assignment sits under the job with the page zero-padded, and expires with the job records
    assignment = item(dynamodb, "job-1", "BATCH#000007")
    assert assignment["attempt"] == {"N": "2"} and assignment["batch_key"] == {"S": "20251203T080000Z-a"}
    assert int(assignment["expires_at"]["N"]) > NOW
    # And the unfinished batch held every field of its record as attributes, with no expiry
    assert staged["state"] == {"S": "staged"} and staged["line_count"] == {"N": "12"}
    assert staged["input_key"] == {"S": "batches/20251203T080000Z-a/input.jsonl"} and "expires_at" not in staged
    numbers = [name for name, field in BatchRecord.model_fields.items() if field.annotation in (int, float)]
    assert {"line_count", "created_at"} <= set(numbers) and all("N" in staged[name] for name in numbers)
    # And the closed batch is kept 90 days with the vendor's last word
    assert item(dynamodb, "batches#unfinished", "20251203T080000Z-a") == {}
    closed = item(dynamodb, "batch#20251203T080000Z-a", "BATCH")
    assert closed["state"] == {"S": "closed"} and closed["vendor_status"] == {"S": "expired"}
    assert closed["vendor_batch_id"] == {"S": "batch_9"} and closed["batch_key"] == {"S": "20251203T080000Z-a"}
    assert int(closed["expires_at"]["N"]) == int(NOW) + CLOSED_RETENTION_S


def test_unfinished_batches_are_read_across_query_pages(dynamodb):
    # Given more unfinished batches than one Query page returns (moto pages at 1 MB too; a Limit forces it)
    store = DynamoBatchStore(JOBS, dynamodb, clock=lambda: NOW)
    keys = [f"20251203T08{minute:02d}00Z-x" for minute in range(7)]
    for key in reversed(keys):
        store.stage_batch(a_batch(key))
    paginator = dynamodb.get_paginator("query")
    original = paginator.paginate

    def paged(**kwargs: Any):
        return original(**kwargs, PaginationConfig={"PageSize": 2})

    paginator.paginate = paged  # type: ignore[method-assign]
    dynamodb.get_paginator = lambda name: paginator  # type: ignore[method-assign]
    # Then every one is listed, in order
    assert [b.batch_key for b in store.unfinished_batches()] == keys


def test_a_close_that_finds_the_record_moved_on_reads_it_again(dynamodb):
    # Given an uploaded batch that another run opens between this close's read and its write
    store = DynamoBatchStore(JOBS, dynamodb, clock=lambda: NOW)
    store.stage_batch(a_batch())
    store.batch_uploaded("20251203T080000Z-a", "file-batch-1")
    original_get = dynamodb.get_item
    reads = []

    def get_then_race(**kwargs: Any):
        answer = original_get(**kwargs)
        reads.append(answer)
        if len(reads) == 1:
            store.batch_opened("20251203T080000Z-a", "batch_9")
        return answer

    dynamodb.get_item = get_then_race  # type: ignore[method-assign]
    # When it closes the batch
    assert store.close_batch("20251203T080000Z-a", "completed") is True
    # Then the closed record holds the vendor batch the other run recorded
    dynamodb.get_item = original_get  # type: ignore[method-assign]
    assert len(reads) == 2
    assert item(dynamodb, "batch#20251203T080000Z-a", "BATCH")["vendor_batch_id"] == {"S": "batch_9"}


def test_dynamodb_failures_are_storage_errors(monkeypatch):
    # Given a store on a table that does not exist
    with moto_aws(monkeypatch):
        store = DynamoBatchStore("missing", boto3.client("dynamodb"))
        # Then each call fails with the retryable storage error, not an SDK exception
        for call in (
            lambda: store.assign_page("job-1", 1, 1, "k"),
            lambda: store.page_assignment("job-1", 1),
            lambda: store.stage_batch(a_batch()),
            lambda: store.batch_uploaded("k", "f"),
            store.unfinished_batches,
            lambda: store.close_batch("k", "completed"),
        ):
            with pytest.raises(StorageError) as failed:
                call()
            assert failed.value.retryable
