"""Asynchronous invocations: how Lambda runs what S3 and SNS push to a function.

An event is retried `MaximumRetryAttempts` times (default 2) within `MaximumEventAgeInSeconds`, then
sent to the function's OnFailure destination or DeadLetterQueue if it has one, and counted as dropped;
a success goes to the OnSuccess destination. moto cannot push to Lambda without Docker, so S3 and SNS
deliver to a hidden queue (see `provision.py`) that `AsyncEventPoller` reads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .events import dead_letter_attributes, destination_record, is_s3_test_event, normalize_s3_event, sns_event
from .functions import Destination, S3EventSource, SnsEventSource
from .invocation import InvocationResult, Ledger, RunnerOptions
from .polling import QueuePoller
from .pool import FunctionPool

logger = logging.getLogger(__name__)


class AsyncInvoker:
    """Runs one event the way Lambda's async queue does: retries, then destinations."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        options: RunnerOptions,
        stopping: threading.Event,
        role_clients: dict[str, dict[str, Any]],
        queue_url: Callable[[str], str],
    ) -> None:
        self.ledger = ledger
        self.options = options
        self.stopping = stopping
        # Lambda sends a function's destination records with the function's own role (hence SAM's
        # destination policy on it), and so does the runner: function → {"sqs": client, "sns": client}.
        self.role_clients = role_clients
        self.queue_url = queue_url  # queue ARN → URL

    def run(self, pool: FunctionPool, event: Any, label: str, enqueued: float) -> None:
        config = pool.spec.async_config
        function = pool.spec.logical_id
        attempts = 0
        while True:
            attempts += 1
            result = pool.invoke(event, source=label, attempt=attempts)
            if result.ok or attempts > config.maximum_retry_attempts or self.stopping.is_set():
                break
            if time.monotonic() - enqueued > config.maximum_event_age_s:
                break
            self.ledger.count(function, retries=1)
            # Lambda waits about a minute, then two, between async attempts.
            delay = self.options.retry_delay_s if self.options.retry_delay_s is not None else 60.0 * attempts
            if self.stopping.wait(delay):
                return
        if self.ledger.should_duplicate():
            repeat = pool.invoke(event, source=label, duplicate=True)
            if repeat.ok and repeat.writes == 0:
                self.ledger.count(function, duplicates_dropped=1)
        if self.stopping.is_set():
            return
        if result.ok:
            if config.on_success is not None:
                self._send_record(config.on_success, pool, event, result, "Success", attempts)
            return
        self.ledger.count(function, dropped_events=1)
        self.ledger.record_failed_event(function, event, result.error)
        if config.on_failure is not None:
            self._send_record(config.on_failure, pool, event, result, "RetriesExhausted", attempts)
        if config.dead_letter is not None:
            attributes = dead_letter_attributes(result.request_id, result.error)
            self._send(config.dead_letter, json.dumps(event), attributes, function)

    def _send_record(
        self,
        destination: Destination,
        pool: FunctionPool,
        event: Any,
        result: InvocationResult,
        condition: str,
        attempts: int,
    ) -> None:
        record = destination_record(
            event=event,
            request_id=result.request_id,
            function_arn=pool.spec.arn,
            condition=condition,
            attempts=attempts,
            response=result.payload,
            error=result.error,
        )
        self._send(destination, json.dumps(record), {}, pool.spec.logical_id)

    def _send(self, destination: Destination, body: str, attributes: dict[str, Any], function: str) -> None:
        if destination.type == "SQS":
            self.role_clients[function]["sqs"].send_message(
                QueueUrl=self.queue_url(destination.arn), MessageBody=body, MessageAttributes=attributes
            )
        elif destination.type == "SNS":
            self.role_clients[function]["sns"].publish(
                TopicArn=destination.arn, Message=body, MessageAttributes=attributes
            )
        else:
            logger.warning("%s: %s destinations are not supported locally", function, destination.type)


class AsyncEventPoller(QueuePoller):
    """Reads the hidden queue of one S3 or SNS event source: each message is one async invocation."""

    def __init__(self, *, invoker: AsyncInvoker, account_id: str, subscription_arn: str, **common: Any) -> None:
        super().__init__(**common)
        self.kind = self.event.kind
        self.invoker = invoker
        self.account_id = account_id
        self.subscription_arn = subscription_arn  # of the hidden queue, for SNS events

    def next_delivery(self) -> list[dict[str, Any]]:
        return self.receive(1, self.options.poll_wait_s)

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        (message,) = messages
        event = self._event(message["Body"])
        if event is not None:
            sent = int(message.get("Attributes", {}).get("SentTimestamp", time.time() * 1000)) / 1000
            enqueued = time.monotonic() - max(0.0, time.time() - sent)
            self.invoker.run(self.pool, event, self.label, enqueued)
        if not self.stopping.is_set():
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _event(self, body: str) -> Any:
        """The event Lambda would get for one hidden-queue message, or None to drop it."""
        document = json.loads(body)
        if isinstance(self.event, S3EventSource):
            if is_s3_test_event(document):
                return document if self.options.deliver_s3_test_events else None
            return normalize_s3_event(document, self.account_id)
        assert isinstance(self.event, SnsEventSource)
        return sns_event(document, self.subscription_arn)
