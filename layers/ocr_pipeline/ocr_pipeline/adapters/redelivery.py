"""Gives a failed SQS record back to its queue when another try can succeed.

Lambda leaves a failed record invisible for the queue's whole visibility timeout (30 min for pages,
six times the function's timeout), and each delivery counts toward the queue's maxReceiveCount. So:

- when the error says when to come back (`retry_after_s`: a lease held elsewhere), the record comes back
  then; retried at once it would only spend its receives finding the lease still held;
- any other failure comes back after an exponential backoff on its receive count (10, 20, 40, 80 s by
  default, each ±20 % so that a burst of failures does not come back as one burst), so five tries of a
  transient failure take about 2.5 minutes, not 2.5 hours, and the last still comes before the DLQ.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterator
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
# The first retry's delay; it doubles with each receive. The local stack shortens it with its faster clock.
BACKOFF_BASE_ENV = "RETRY_BACKOFF_BASE_S"
DEFAULT_BACKOFF_BASE_S = 10.0
BACKOFF_CAP_S = 900.0
JITTER = 0.2


def backoff_s(receive_count: int, base_s: float, draw: float = 0.5) -> float:
    """Delay before the next delivery of a record received `receive_count` times; `draw` in [0, 1) spreads it."""
    delay = min(base_s * 2 ** max(receive_count - 1, 0), BACKOFF_CAP_S)
    return delay * (1 + JITTER * (2 * draw - 1))


class Redelivery:
    def __init__(
        self,
        client: Any | None = None,
        backoff_base_s: float | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._draw = draw
        self._queue_urls: dict[str, str] = {}
        if backoff_base_s is None:
            backoff_base_s = float(os.environ.get(BACKOFF_BASE_ENV) or DEFAULT_BACKOFF_BASE_S)
        self.backoff_base_s = backoff_base_s

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
        except Exception as error:
            retry_after = error.retry_after_s if isinstance(error, OcrPipelineError) else None
            if retry_after is None:
                receives = int(record.attributes.approximate_receive_count or 1)
                retry_after = backoff_s(receives, self.backoff_base_s, self._draw())
            self.defer(record, retry_after)
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
