"""A queue its consumer reads itself: the batch lane's submitter receives from the batch queue on a schedule."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from ..pipeline.port_errors import StorageError
from ..pipeline.records import InboxMessage
from .aws import SQS_BATCH_LIMIT, SqsWorkQueue, _error_code


class SqsInbox(SqsWorkQueue):
    """ReceiveMessage and DeleteMessageBatch on one queue (and SendMessageBatch, as its work queue)."""

    def receive(self, max_messages: int) -> list[InboxMessage]:
        try:
            # No wait: a wait is billed as Lambda time, at every tick of an idle schedule (a 1 s wait was most of
            # an idle run's cost, BENCHMARKS.md). A short poll may answer "empty" while a few messages sit on
            # servers it did not sample; they go at the next tick, in a lane nobody waits on.
            response = self.client.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=max(1, min(max_messages, 10)), WaitTimeSeconds=0
            )
        except Exception as exc:
            raise StorageError(f"the queue could not be read ({_error_code(exc) or exc})") from None
        return [
            InboxMessage(message_id=m["MessageId"], body=m["Body"], receipt=m["ReceiptHandle"])
            for m in response.get("Messages", [])
        ]

    def delete(self, receipts: Iterable[str]) -> None:
        """Delete in batches of ten; a receipt SQS does not take is left (its message comes back, and its pages
        are found assigned already)."""
        iterator = iter(receipts)
        while chunk := list(islice(iterator, SQS_BATCH_LIMIT)):
            entries = [{"Id": str(i), "ReceiptHandle": receipt} for i, receipt in enumerate(chunk)]
            try:
                self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as exc:
                raise StorageError(f"messages could not be deleted ({_error_code(exc) or exc})") from None
