"""The part every event source shares: a thread that receives from one queue and hands deliveries to a
bounded set of threads, as Lambda's pollers keep at most so many invocations of a source in flight."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .functions import EventSource
from .invocation import Ledger, RunnerOptions
from .pool import FunctionPool

logger = logging.getLogger(__name__)


class QueuePoller:
    """Polls one queue for one function; a subclass says how many messages make a delivery and runs it."""

    kind = ""  # "SQS" | "S3" | "SNS", as `describe` reports it

    def __init__(
        self,
        *,
        label: str,
        event: EventSource,
        pool: FunctionPool,
        queue_url: str,
        queue_arn: str,
        concurrency: int,
        sqs: Any,
        region: str,
        ledger: Ledger,
        options: RunnerOptions,
        stopping: threading.Event,
    ) -> None:
        self.label = label
        self.event = event
        self.pool = pool
        self.function = pool.spec.logical_id
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.concurrency = concurrency
        self.sqs = sqs  # receives and deletes with it
        self.region = region
        self.ledger = ledger
        self.options = options
        self.stopping = stopping
        self.slots = threading.Semaphore(concurrency)
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"ocr-stack-{label}")
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._poll, name=f"ocr-stack-poll-{self.label}", daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(self.options.poll_wait_s + 5)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def receive(self, max_messages: int, wait_s: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages") or [])

    def depth(self, sqs: Any) -> int:
        """Messages waiting, in flight or delayed: read with `sqs` (the admin's), not the poller's role."""
        attributes = sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "type": self.kind, "queue_url": self.queue_url, "concurrency": self.concurrency}

    # -- for subclasses -------------------------------------------------------------------------------------------

    def next_delivery(self) -> list[dict[str, Any]]:
        """The messages of the next invocation (may be empty)."""
        raise NotImplementedError

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        """Invoke the function with `messages` and settle them with the queue."""
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------------------------------------------

    def _poll(self) -> None:
        while not self.stopping.is_set():
            if not self.slots.acquire(timeout=0.2):
                continue
            dispatched = False
            try:
                messages = self.next_delivery()
                if messages and not self.stopping.is_set():
                    self.ledger.enter()
                    self.executor.submit(self._run, messages)
                    dispatched = True
            except Exception:
                if not self.stopping.is_set():
                    logger.exception("polling %s failed", self.label)
                    self.stopping.wait(1.0)
            finally:
                if not dispatched:
                    self.slots.release()

    def _run(self, messages: list[dict[str, Any]]) -> None:
        try:
            self.deliver(messages)
        except Exception:
            logger.exception("delivering to %s failed", self.label)
        finally:
            self.slots.release()
            self.ledger.leave()
