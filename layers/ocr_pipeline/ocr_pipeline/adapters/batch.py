"""The records of one SQS delivery, worked on at the same time, with a partial batch response.

Powertools' AsyncBatchProcessor runs a batch's record handlers together (one asyncio task each)
and reports the records that failed (ReportBatchItemFailures); the work itself is blocking I/O
(HTTP, boto3), so each record runs on a thread of its own, in a copy of its task's context. So the
log keys a record appends (thread-safe keys, held in context variables) never show up on another
record's lines, and the line that reports a failed record carries them too.

How many records run at once bounds nothing that costs: the OCR client bounds the model calls in
flight (ratelimit.py), so records beyond that wait for a call slot, not for a thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord


def process_records_concurrently(
    event: dict[str, Any],
    record_handler: Callable[[SQSRecord], None],
    *,
    context: Any,
    logger: logging.Logger | Any | None = None,
) -> dict[str, Any]:
    """Run `record_handler` on every record of an SQS event at once; the batch item failures to report."""
    records = event.get("Records") or []
    # A failed record is an expected retry (reported in batchItemFailures), not a Lambda error that would
    # trip the errors alarm; each one is logged with its traceback.
    processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False, logger=logger)
    with ThreadPoolExecutor(max_workers=max(1, len(records)), thread_name_prefix="record") as pool:

        async def on_its_thread(record: SQSRecord) -> None:
            # Each task has its own copy of the handler's context; the thread works in a copy of that.
            work = contextvars.copy_context()
            try:
                await asyncio.get_running_loop().run_in_executor(pool, work.run, record_handler, record)
            finally:
                # Back in the task: the keys the record appended also mark the line that reports its failure.
                for variable, value in work.items():
                    variable.set(value)

        response = async_process_partial_response(
            event=event, record_handler=on_its_thread, processor=processor, context=context
        )
    return cast(dict[str, Any], response)
