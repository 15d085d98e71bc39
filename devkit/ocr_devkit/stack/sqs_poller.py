"""An SQS event source mapping, with Lambda's semantics.

Batches of up to `BatchSize` records (gathered over `MaximumBatchingWindowInSeconds`), at most
`ScalingConfig.MaximumConcurrency` batches in flight. With `ReportBatchItemFailures` only the records the
handler lists are retried; an invalid response or an error fails the whole batch. Failed records are not
deleted: they come back, and the queue's RedrivePolicy moves them to the DLQ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Set
from typing import Any

from .events import sqs_event
from .functions import SqsEventSource
from .invocation import InvocationResult
from .polling import QueuePoller


class SqsPoller(QueuePoller):
    kind = "SQS"

    def __init__(self, *, admin_sqs: Any, **common: Any) -> None:
        super().__init__(**common)
        assert isinstance(self.event, SqsEventSource)
        self.mapping: SqsEventSource = self.event
        # The faster local retry clock is the runner's own shortcut, not Lambda's: it signs as the admin.
        self.admin_sqs = admin_sqs

    def next_delivery(self) -> list[dict[str, Any]]:
        batch_size = self.mapping.batch_size
        messages = self.receive(batch_size, self.options.poll_wait_s)
        window_ends = time.monotonic() + self.mapping.batching_window_s
        while messages and len(messages) < batch_size and not self.stopping.is_set():
            remaining = window_ends - time.monotonic()
            if remaining <= 0:
                break
            messages += self.receive(batch_size - len(messages), min(1, math.ceil(remaining)))
        return messages

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        report_item_failures = self.mapping.report_batch_item_failures
        event = sqs_event(messages, self.queue_arn, self.region)
        redelivered = sum(1 for r in event["Records"] if int(r["attributes"].get("ApproximateReceiveCount", "1")) > 1)
        if redelivered:
            self.ledger.count(self.function, retries=redelivered)
        result = self.pool.invoke(event, source=self.label)
        failed = failed_message_ids(result, event, report_item_failures)
        if result.ok and failed:
            self.ledger.count(self.function, records_failed=len(failed))
        if self.ledger.should_duplicate():
            # The records whose work finished come again, in one delivery: what the function must absorb.
            # A record that failed comes back anyway, and in a batch it would make every repeat write.
            finished = [record for record in event["Records"] if record["messageId"] not in failed]
            if finished:
                again = {**event, "Records": finished}
                repeat = self.pool.invoke(again, source=self.label, duplicate=True)
                repeat_failed = failed_message_ids(repeat, again, report_item_failures)
                if repeat.writes == 0 and not repeat_failed:
                    self.ledger.count(self.function, duplicates_dropped=1)
        if not self.stopping.is_set():
            self._settle(messages, failed, set(result.deferred))

    def _settle(self, messages: list[dict[str, Any]], failed: set[str], deferred: Set[str]) -> None:
        done = [m for m in messages if m["MessageId"] not in failed]
        # A record the function gave back with its own visibility comes back when the function said (a lease
        # running out): the faster clock would only bring it back to find the lease still held.
        retry = [m for m in messages if m["MessageId"] in failed and m["ReceiptHandle"] not in deferred]
        for chunk in _chunks(done, 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        delay = self.options.retry_delay_s
        if retry and delay is not None:
            for chunk in _chunks(retry, 10):
                self.admin_sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": math.ceil(delay)}
                        for i, m in enumerate(chunk)
                    ],
                )


def failed_message_ids(result: InvocationResult, event: dict[str, Any], report_item_failures: bool) -> set[str]:
    """Lambda's rules for which records of a batch failed."""
    every = {record["messageId"] for record in event["Records"]}
    if not result.ok:
        return every
    if not report_item_failures:
        return set()
    response = result.payload
    if response is None:
        return set()
    if not isinstance(response, dict):
        return every  # not a valid batch response: the whole batch failed
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return every
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in every:
            return every  # a null, empty or unknown itemIdentifier fails the batch
        failed.add(identifier)
    return failed


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
