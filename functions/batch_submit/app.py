"""On a schedule: drain the batch queue into batch files and open a vendor batch for each (pipeline/batch_submission.py)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext
from ocr_pipeline.adapters.metrics import emit_batch_submission
from ocr_pipeline.bootstrap import batch_submission_service
from ocr_pipeline.pipeline.batch_submission import BatchSubmissionService

logger = Logger()
copy_config_to_registered_loggers(source_logger=logger, include={"ocr_pipeline"})
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(
    event: dict[str, Any], context: LambdaContext, service: BatchSubmissionService | None = None
) -> dict[str, Any]:
    service = service or batch_submission_service()
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000
    report = service.run(deadline)
    emit_batch_submission(metrics, report.pages_submitted, report.batches_opened, report.batches_waiting)
    summary = vars(report)
    logger.info("batch submission run", extra=summary)
    return summary
