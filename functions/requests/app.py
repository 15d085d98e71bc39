"""OCR requests from the request queue → validate, fetch the source, and admit the document like an upload."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from ocr_pipeline.adapters.redelivery import Redelivery
from ocr_pipeline.bootstrap import REQUEST_GUARD, guard, request_service
from ocr_pipeline.pipeline.intake import IntakeOutcome
from ocr_pipeline.pipeline.request_intake import RequestMessage, RequestService, readable_correlation_id

logger = Logger()
# The library's decisions (documents admitted, refused, finished) log through this logger's format and keys.
copy_config_to_registered_loggers(source_logger=logger, include={"ocr_pipeline"})
metrics = Metrics()
# A failed record is an expected retry (reported in batchItemFailures), not a Lambda error that would
# trip the errors alarm; each one is logged with its traceback.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False, logger=logger)
redelivery = Redelivery()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext, service: RequestService | None = None) -> dict[str, Any]:
    service = service or request_service()
    once = guard(service.settings, REQUEST_GUARD)

    def record_handler(record: SQSRecord) -> None:
        # Bad requests come back as REJECTED (answered with document.failed); only what another
        # delivery may fix raises, so that the record is reported as failed and retried.
        message = RequestMessage(message_id=record.message_id, body=record.body, sender_id=record.attributes.sender_id)
        correlation_id = readable_correlation_id(record.body) or record.message_id
        with (
            logger.append_context_keys(message_id=record.message_id, correlation_id=correlation_id),
            redelivery.when_ready(record),
        ):
            stored = once.run(
                message,
                lambda: service.handle(message.body, message.message_id, message.sender_id).model_dump(mode="json"),
                context,
            )
        outcome = IntakeOutcome.model_validate(stored)
        # The decision only: a refusal's code was logged once, where it was decided (the intake).
        logger.info("request handled", extra=outcome.model_dump(exclude_none=True, exclude={"reason"}))
        metrics.add_metric(name=f"Requests{outcome.decision.value.title()}", unit=MetricUnit.Count, value=1)

    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
