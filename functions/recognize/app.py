"""Page work from the queue → prepare, recognize, record, and finish the document when it is the last page.

The records of a delivery run at the same time, and so do a record's pages: the instance keeps up to
OcrCallsPerInstance model calls in flight (the OCR client holds it to that).

The same queue carries PageDispatch messages, which send a large document's next page messages.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from ocr_pipeline.adapters.batch import process_records_concurrently
from ocr_pipeline.adapters.metrics import add_metric
from ocr_pipeline.adapters.redelivery import Redelivery
from ocr_pipeline.bootstrap import PAGE_GUARD, document_intake, guard, page_recognition_service
from ocr_pipeline.pipeline.intake import DocumentIntake
from ocr_pipeline.pipeline.model import PAGE_QUEUE_MESSAGE, PageDispatch
from ocr_pipeline.pipeline.page_recognition import PageRecognitionService

logger = Logger()
# The library's decisions (documents admitted, refused, finished) log through this logger's format and keys.
copy_config_to_registered_loggers(source_logger=logger, include={"ocr_pipeline"})
metrics = Metrics()
redelivery = Redelivery()
# Keep this much of the invocation for storing and publishing after the last OCR call.
SAFETY_MARGIN_MS = 10_000


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(
    event: dict[str, Any],
    context: LambdaContext,
    service: PageRecognitionService | None = None,
    intake: DocumentIntake | None = None,
) -> dict[str, Any]:
    service = service or page_recognition_service()
    deadline = service.deadline_from(context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS)
    once = guard(service.settings, PAGE_GUARD)

    def record_handler(record: SQSRecord) -> None:
        # Records run at once, each on its own thread and context: its log keys are its own.
        work = PAGE_QUEUE_MESSAGE.validate_json(record.body)
        logger.thread_safe_append_keys(job_id=work.job_id)
        with redelivery.when_ready(record):
            if isinstance(work, PageDispatch):
                (intake or document_intake()).continue_dispatch(work)
                return
            spec = work.job or service.job_spec(work.job_id)
            # Every line of this unit of work, the library's included, says whose and which pages it is.
            logger.thread_safe_append_keys(correlation_id=spec.correlation_id, tenant=spec.tenant, pages=work.pages)
            once.run(work, lambda: service.process(work, deadline=deadline), context)
        add_metric(metrics, name="PagesProcessed", unit=MetricUnit.Count, value=len(work.pages))

    return process_records_concurrently(event, record_handler, context=context, logger=logger)
