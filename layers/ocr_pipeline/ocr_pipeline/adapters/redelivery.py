"""Gives a failed SQS record back to its queue when another try can succeed.

Lambda leaves a failed record invisible for the queue's whole visibility timeout (30 min for pages),
and each delivery counts toward the queue's maxReceiveCount. A record that failed only because a
lease is held elsewhere would either wait far longer than needed or, retried at once, spend its
receives finding the lease still held and end in the dead-letter queue with nothing wrong with it.
So when the error says when to come back (`retry_after_s`), the record's visibility is set to that.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from ..errors import OcrPipelineError
from .aws import aws_client

logger = logging.getLogger(__name__)

# ChangeMessageVisibility accepts 0 to 43,200 s (12 h).
MAX_VISIBILITY_S = 43_200
# Never immediately: the holder may be about to finish.
MIN_VISIBILITY_S = 1


class Redelivery:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client
        self._queue_urls: dict[str, str] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("sqs")
        return self._client

    @contextmanager
    def when_ready(self, record: SQSRecord) -> Iterator[None]:
        """Run a record's work; if it fails with a known time to try again, the record comes back then."""
        try:
            yield
        except OcrPipelineError as error:
            if error.retry_after_s is not None:
                self.defer(record, error.retry_after_s)
            raise

    def defer(self, record: SQSRecord, delay_s: float) -> None:
        visibility = min(max(math.ceil(delay_s), MIN_VISIBILITY_S), MAX_VISIBILITY_S)
        try:
            self.client.change_message_visibility(
                QueueUrl=self._queue_url(record.event_source_arn),
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=visibility,
            )
        except Exception:
            # The record still comes back after the queue's own visibility timeout: later, not lost.
            logger.warning("could not defer record %s by %s s", record.message_id, visibility, exc_info=True)
        else:
            logger.info("record %s comes back in %s s", record.message_id, visibility)

    def _queue_url(self, queue_arn: str) -> str:
        if queue_arn not in self._queue_urls:
            *_, account, name = queue_arn.split(":")
            response = self.client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
            self._queue_urls[queue_arn] = response["QueueUrl"]
        return self._queue_urls[queue_arn]
