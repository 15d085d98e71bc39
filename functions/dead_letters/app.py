"""Dead letters → the document ends, failed, with a reason: nothing is dropped silently."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from ocr_pipeline.adapters.redelivery import Redelivery
from ocr_pipeline.bootstrap import dead_letter_service
from ocr_pipeline.pipeline.dead_letters import DeadLetterService

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
def handler(event: dict[str, Any], context: LambdaContext, service: DeadLetterService | None = None) -> dict[str, Any]:
    service = service or dead_letter_service()

    def record_handler(record: SQSRecord) -> None:
        with logger.append_context_keys(message_id=record.message_id, source_queue=record.event_source_arn):
            logger.warning("dead letter")
            with redelivery.when_ready(record):
                service.handle(record.body, record.message_id, record.attributes.sender_id)
        metrics.add_metric(name="DeadLetters", unit=MetricUnit.Count, value=1)

    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
