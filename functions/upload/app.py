"""S3 ObjectCreated → choose the task, record the job, enqueue its pages."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from ocr_pipeline.bootstrap import UPLOAD_GUARD, guard, upload_service
from ocr_pipeline.pipeline.intake import IntakeOutcome
from ocr_pipeline.pipeline.upload import UploadedObject, UploadService

logger = Logger()
# The library's decisions (documents admitted, refused, finished) log through this logger's format and keys.
copy_config_to_registered_loggers(source_logger=logger, include={"ocr_pipeline"})
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext, service: UploadService | None = None) -> dict[str, Any]:
    if event.get("Event") == "s3:TestEvent":
        logger.info("skipping s3:TestEvent")
        return {"outcomes": []}
    service = service or upload_service()
    # One object version is one document, however often S3 or Lambda's retries deliver its event.
    once = guard(service.settings, UPLOAD_GUARD)
    outcomes = []
    # The records as S3 sends them: Powertools' S3Event would import its data_classes package (every
    # event source's classes) into the cold start, to wrap a list this loop reads once.
    for record in event["Records"]:
        upload = UploadedObject.from_notification(record)
        with logger.append_context_keys(bucket=upload.bucket, key=upload.key):
            stored = once.run(upload, lambda upload=upload: service.accept(upload).model_dump(mode="json"), context)
        outcomes.append(IntakeOutcome.model_validate(stored))
    for outcome in outcomes:
        logger.info("upload handled", extra=outcome.model_dump(exclude_none=True, exclude={"reason"}))
        metrics.add_metric(name=f"Uploads{outcome.decision.value.title()}", unit=MetricUnit.Count, value=1)
    return {"outcomes": [o.model_dump(mode="json") for o in outcomes]}
