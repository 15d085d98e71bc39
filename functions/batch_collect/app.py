"""On a schedule: poll open batches and settle the answers of finished ones (pipeline/batch_collection.py)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext
from ocr_pipeline.adapters.metrics import emit_batch_collection
from ocr_pipeline.bootstrap import batch_collection_service
from ocr_pipeline.pipeline.batch_collection import BatchCollectionService

logger = Logger()
copy_config_to_registered_loggers(source_logger=logger, include={"ocr_pipeline"})
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(
    event: dict[str, Any], context: LambdaContext, service: BatchCollectionService | None = None
) -> dict[str, Any]:
    service = service or batch_collection_service()
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000
    report = service.run(deadline)
    emit_batch_collection(
        metrics,
        open_batches=report.batches_open,
        oldest_s=report.oldest_unfinished_s,
        closed=report.batches_closed,
        settled=report.pages_settled,
        sent_again=report.pages_sent_again,
        sent_realtime=report.pages_sent_realtime,
    )
    summary = vars(report)
    logger.info("batch collection run", extra=summary)
    return summary
