"""Page work from the queue → prepare, recognize, record, and finish the document when it is the last page.

The same queue carries PageDispatch messages, which send a large document's next page messages.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from ocr_pipeline.adapters.redelivery import Redelivery
from ocr_pipeline.bootstrap import PAGE_GUARD, document_intake, guard, page_recognition_service
from ocr_pipeline.pipeline.intake import DocumentIntake
from ocr_pipeline.pipeline.model import PAGE_QUEUE_MESSAGE, PageDispatch
from ocr_pipeline.pipeline.page_recognition import PageRecognitionService

logger = Logger()
# The library's decisions (documents admitted, refused, finished) log through this logger's format and keys.
copy_config_to_registered_loggers(source_logger=logger, include={"ocr_pipeline"})
metrics = Metrics()
# A failed record is an expected retry (reported in batchItemFailures), not a Lambda error that would
# trip the errors alarm; each one is logged with its traceback.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False, logger=logger)
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
        work = PAGE_QUEUE_MESSAGE.validate_json(record.body)
        with logger.append_context_keys(job_id=work.job_id), redelivery.when_ready(record):
            if isinstance(work, PageDispatch):
                (intake or document_intake()).continue_dispatch(work)
                return
            spec = work.job or service.job_spec(work.job_id)
            # Every line of this unit of work, the library's included, says whose and which pages it is.
            with logger.append_context_keys(correlation_id=spec.correlation_id, tenant=spec.tenant, pages=work.pages):
                once.run(work, lambda: service.process(work, deadline=deadline), context)
        metrics.add_metric(name="PagesProcessed", unit=MetricUnit.Count, value=len(work.pages))

    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
