"""A failed SQS record comes back when another try can succeed: a held lease's remaining time, else a backoff."""

from __future__ import annotations

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from ocr_pipeline.adapters.redelivery import BACKOFF_CAP_S, Redelivery, backoff_s
from ocr_pipeline.pipeline.port_errors import ClaimHeld, StorageError

ARN = "arn:aws:sqs:us-east-1:123456789012:pages"


class FakeSqs:
    def __init__(self) -> None:
        self.visibility: list[tuple[str, str, int]] = []

    def get_queue_url(self, QueueName: str, QueueOwnerAWSAccountId: str) -> dict:
        return {"QueueUrl": f"https://sqs.local/{QueueOwnerAWSAccountId}/{QueueName}"}

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        self.visibility.append((QueueUrl, ReceiptHandle, VisibilityTimeout))


def record(receives: int) -> SQSRecord:
    return SQSRecord(
        {
            "messageId": "m-1",
            "receiptHandle": "rh-1",
            "body": "{}",
            "attributes": {"ApproximateReceiveCount": str(receives)},
            "eventSourceARN": ARN,
        }
    )


def test_a_held_lease_brings_the_record_back_when_it_runs_out():
    sqs = FakeSqs()
    with pytest.raises(ClaimHeld), Redelivery(sqs, backoff_base_s=30).when_ready(record(1)):
        raise ClaimHeld("finalizing elsewhere", retry_after_s=412.3)
    assert sqs.visibility == [("https://sqs.local/123456789012/pages", "rh-1", 413)]


@pytest.mark.parametrize(("receives", "delay"), [(1, 10), (2, 20), (3, 40), (4, 80), (9, BACKOFF_CAP_S)])
def test_any_other_failure_backs_off_on_its_receive_count(receives, delay):
    sqs = FakeSqs()
    with pytest.raises(StorageError), Redelivery(sqs, backoff_base_s=10, draw=lambda: 0.5).when_ready(record(receives)):
        raise StorageError("DynamoDB throttled")
    assert sqs.visibility[0][2] == delay == backoff_s(receives, 10)


def test_the_backoff_is_spread_so_a_burst_of_failures_does_not_come_back_as_one():
    assert backoff_s(2, 10, draw=0.0) == pytest.approx(16) and backoff_s(2, 10, draw=0.999) == pytest.approx(24, 0.01)
    # five deliveries fit well inside the page queue's retention and before the DLQ takes the message
    assert sum(backoff_s(n, 10, draw=0.999) for n in range(1, 5)) < 200


def test_a_record_that_succeeds_is_left_alone_and_a_failed_defer_still_lets_the_error_through():
    sqs = FakeSqs()
    with Redelivery(sqs, backoff_base_s=30).when_ready(record(1)):
        pass
    assert sqs.visibility == []

    class Broken(FakeSqs):
        def change_message_visibility(self, **_: object) -> None:
            raise RuntimeError("throttled")

    with pytest.raises(ValueError), Redelivery(Broken(), backoff_base_s=30).when_ready(record(1)):
        raise ValueError("a bug")
