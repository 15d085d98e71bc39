"""S3 ObjectCreated → choose the task, record the job, enqueue its pages."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.typing import LambdaContext
from ocr_pipeline.pipeline.upload import UploadedObject, UploadService
from ocr_pipeline.pipeline.wiring import upload_service

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext, service: UploadService | None = None) -> dict[str, Any]:
    if event.get("Event") == "s3:TestEvent":
        logger.info("skipping s3:TestEvent")
        return {"outcomes": []}
    service = service or upload_service()
    outcomes = [service.accept(UploadedObject.from_notification(record.raw_event)) for record in S3Event(event).records]
    for outcome in outcomes:
        logger.info("upload handled", extra=outcome.model_dump(exclude_none=True))
        metrics.add_metric(name=f"Uploads{outcome.decision.value.title()}", unit=MetricUnit.Count, value=1)
    return {"outcomes": [o.model_dump(mode="json") for o in outcomes]}
