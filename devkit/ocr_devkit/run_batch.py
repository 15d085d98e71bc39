"""`ocr-pipeline run --mode batch`: what the local run sets for the batch lane, and how far the lane has got.

The lane's two scheduled functions (template.yaml's BatchSubmitFunction and BatchCollectFunction) fire
every `SCHEDULE_INTERVAL_S` locally instead of their template rate, and the emulator completes a batch
`--batch-delay` seconds after it was created. Progress is read the way an operator would read it, without
a Scan: the batch queue's message counts, and the jobs table's partition of unfinished batches.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# The local interval of the lane's schedules: short enough for a quick run, long enough that a submit
# tick gathers the pages of several documents into one batch file.
SCHEDULE_INTERVAL_S = 2.0
DEFAULT_BATCH_DELAY_S = 3.0
BATCH_QUEUE = "BatchPageQueue"  # the template's logical id of the batch lane's page queue
UNFINISHED_BATCHES = "batches#unfinished"  # the jobs table's partition of staged, uploaded and open batches


def batch_allowance_s(batch_delay_s: float) -> float:
    """What the batch lane adds to a document's time: a submit tick, the vendor's delay, a collect tick, and
    one tick more for a batch created just after a collect tick."""
    return 3 * SCHEDULE_INTERVAL_S + batch_delay_s


class BatchProgress(BaseModel):
    """Pages waiting for a batch file, batches not yet settled, and batches settled since the run started."""

    pages_queued: int = 0
    batches_open: int = 0
    batches_done: int = 0
    # Keys of every batch seen unfinished: one that has left the partition is done.
    seen: set[str] = Field(default_factory=set, exclude=True)


class BatchProgressReader:
    """Reads the batch lane's progress from the stack: `read()` at each poll of the run."""

    def __init__(self, sqs: Any, queue_url: str, dynamodb: Any, table: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.dynamodb = dynamodb
        self.table = table
        self.progress = BatchProgress()

    def read(self) -> BatchProgress:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        unfinished = self._unfinished_keys()
        seen = self.progress.seen | unfinished
        self.progress = BatchProgress(
            pages_queued=sum(int(value) for value in attributes.values()),
            batches_open=len(unfinished),
            batches_done=len(seen - unfinished),
            seen=seen,
        )
        return self.progress

    def _unfinished_keys(self) -> set[str]:
        keys: set[str] = set()
        paginator = self.dynamodb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :unfinished",
            ExpressionAttributeValues={":unfinished": {"S": UNFINISHED_BATCHES}},
            ProjectionExpression="sk",
        ):
            keys.update(item["sk"]["S"] for item in page.get("Items", []))
        return keys
