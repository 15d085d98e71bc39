"""Powertools Idempotency in front of the services, on moto's in-process DynamoDB (no network)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from moto import settings as moto_settings
from ocr_pipeline.adapters import idempotency
from ocr_pipeline.adapters.idempotency import Once
from ocr_pipeline.pipeline.port_errors import WorkInProgress
from pydantic import BaseModel

TABLE = "idempotency"


class Upload(BaseModel):
    bucket: str
    key: str
    etag: str


class Context:
    """The part of Lambda's context the guard reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms
        self.function_name = "fn"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def table(monkeypatch):
    # moto's settings are process-wide: a local stack still open in this session enforces IAM.
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    with mock_aws():
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        idempotency.aws_client.cache_clear()
        idempotency._persistence.cache_clear()
        yield client
        idempotency.aws_client.cache_clear()
        idempotency._persistence.cache_clear()


def test_a_repeat_returns_the_first_outcome_without_running_again(table):
    calls = []
    once = Once(TABLE, name="upload", key="[bucket, key, etag]")
    upload = Upload(bucket="b", key="k", etag="e1")
    first = once.run(upload, lambda: calls.append(1) or {"decision": "enqueued"}, Context(60_000))
    again = once.run(upload, lambda: calls.append(2) or {"decision": "duplicate"}, Context(60_000))
    assert first == again == {"decision": "enqueued"} and calls == [1]


def test_new_content_under_the_same_key_is_new_work(table):
    calls = []
    once = Once(TABLE, name="upload", key="[bucket, key, etag]")
    once.run(Upload(bucket="b", key="k", etag="e1"), lambda: calls.append("e1") or {}, Context(60_000))
    once.run(Upload(bucket="b", key="k", etag="e2"), lambda: calls.append("e2") or {}, Context(60_000))
    assert calls == ["e1", "e2"]


def test_failed_work_is_not_remembered_so_the_retry_runs(table):
    once = Once(TABLE, name="pages", key="[bucket, key, etag]")
    upload = Upload(bucket="b", key="k", etag="e1")

    def boom() -> dict:
        raise RuntimeError("throttled")

    with pytest.raises(RuntimeError):
        once.run(upload, boom, Context(60_000))
    assert once.run(upload, lambda: {"ok": True}, Context(60_000)) == {"ok": True}


def test_a_repeat_of_work_in_progress_waits_and_gives_up_before_its_own_deadline(table):
    waited: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    upload = Upload(bucket="b", key="k", etag="e1")
    outer = Once(TABLE, name="upload", key="[bucket, key, etag]")
    inner = Once(TABLE, name="upload", key="[bucket, key, etag]", sleep=sleep, clock=lambda: now[0])
    calls = []

    def twin_arrives_meanwhile() -> dict:
        # While the first delivery runs, its duplicate finds the key in progress.
        with pytest.raises(WorkInProgress) as raised:
            inner.run(upload, lambda: calls.append("twin") or {}, Context(30_000))
        # It says when the twin's key is free at the latest: when the twin's own time is up.
        assert idempotency.WAIT_MARGIN_S <= raised.value.retry_after_s <= 30 - sum(waited)
        assert raised.value.retryable and raised.value.code == "pipeline.in_progress"
        return {"decision": "enqueued"}

    assert outer.run(upload, twin_arrives_meanwhile, Context(60_000)) == {"decision": "enqueued"}
    # It waited a few seconds, not its whole invocation (a dead twin holds the key until its deadline)
    assert calls == [] and waited and sum(waited) <= idempotency.SHORT_WAIT_S


def test_without_a_table_the_work_simply_runs():
    calls = []
    once = Once(None, name="upload", key="key")
    once.run(Upload(bucket="b", key="k", etag="e"), lambda: calls.append(1) or {}, None)
    once.run(Upload(bucket="b", key="k", etag="e"), lambda: calls.append(2) or {}, None)
    assert calls == [1, 2]


def test_two_guards_on_one_table_in_one_process_each_use_their_own_key(table):
    # As the upload and the request handlers would in one process: each guard hashes its own key.
    class Request(BaseModel):
        message_id: str
        body: str

    uploads = Once(TABLE, name="upload", key="[bucket, key, etag]")
    requests = Once(TABLE, name="request", key="message_id")
    assert uploads.run(Upload(bucket="b", key="k", etag="e"), lambda: {"n": 1}, Context(60_000)) == {"n": 1}
    assert requests.run(Request(message_id="m-1", body="{}"), lambda: {"n": 2}, Context(60_000)) == {"n": 2}
    assert requests.run(Request(message_id="m-2", body="{}"), lambda: {"n": 3}, Context(60_000)) == {"n": 3}


def test_a_repeat_that_cannot_give_its_event_back_waits_for_its_twin_up_to_its_own_deadline(table):
    waited: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    upload = Upload(bucket="b", key="k", etag="e1")
    outer = Once(TABLE, name="upload", key="[bucket, key, etag]")
    inner = Once(TABLE, name="upload", key="[bucket, key, etag]", can_defer=False, sleep=sleep, clock=lambda: now[0])

    def twin_arrives_meanwhile() -> dict:
        with pytest.raises(WorkInProgress):
            inner.run(upload, lambda: {}, Context(60_000))
        return {"decision": "enqueued"}

    outer.run(upload, twin_arrives_meanwhile, Context(60_000))
    assert idempotency.SHORT_WAIT_S < sum(waited) <= 60 - idempotency.WAIT_MARGIN_S
