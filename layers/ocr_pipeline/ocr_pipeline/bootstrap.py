"""The composition root: builds each function's service on the AWS adapters, once per cold start.

The only module that knows both the core and its adapters. Nothing here runs at import time:
handlers ask for their ready service (and its idempotency guard) on first invocation, and tests
pass their own services instead.

Imported at module level: what every function builds (settings, the intake, the AWS adapters, the
idempotency guard). What only some functions use is imported by the builder that needs it, so that
a function's cold start does not import another's dependencies: the OCR client and httpx (page
work), the URL fetcher (requests), the request schema (requests and dead letters), the imaging stack
(page work; imported by the services that prepare pages). Each handler imports its own service's
module at module level, so what it always needs still loads during the function's initialization.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .adapters.aws import DynamoJobStore, S3ObjectStore, SnsEventBus, SqsWorkQueue
from .adapters.idempotency import Once
from .adapters.metrics import MeteredEventBus
from .catalog import Region
from .errors import ConfigurationError
from .pipeline.config import PipelineSettings
from .pipeline.intake import DocumentIntake

if TYPE_CHECKING:
    from .adapters.dashscope.settings import OcrServiceSettings
    from .pipeline.batch_collection import BatchCollectionService
    from .pipeline.batch_submission import BatchSubmissionService
    from .pipeline.dead_letters import DeadLetterService
    from .pipeline.page_recognition import PageRecognitionService, RecognizerFactory
    from .pipeline.request_intake import RequestService
    from .pipeline.settlement import Pricer, SettlementService
    from .pipeline.upload import UploadService
    from .pricing import Cost
    from .recognition import Recognizer
    from .usage import Pricing, Usage

# Each function's idempotency guard: its name (the records' key prefix) and the JMESPath of its key,
# a business identity: the object version for uploads, the job and its pages for page work, the
# message for requests. An S3 event cannot be given back to come later, so uploads cannot defer.
UPLOAD_GUARD = {"name": "upload", "key": "[bucket, key, version_id, etag]", "can_defer": False}
REQUEST_GUARD = {"name": "request", "key": "message_id"}
PAGE_GUARD = {"name": "pages", "key": "[job_id, pages]"}

_REQUIRED_VARIABLES = ("RESULT_BUCKET", "TOPIC_ARN", "PAGE_QUEUE_URL", "JOBS_TABLE")


def read_pipeline_settings(environ: Mapping[str, str] | None = None) -> PipelineSettings:
    """The pipeline's settings from an environment (the process's when None). Raises ConfigurationError.

    One model for the four functions: template.yaml gives them one environment (Globals), plus the
    request function's own source lists, which the others leave at their defaults. Each field is read
    from the variable its alias names; an empty variable counts as not given, and lists come as
    CloudFormation writes them (comma-separated), which the fields parse. Read by pydantic itself, not
    pydantic-settings, whose import (with asyncio and dotenv) would add to every cold start.
    """
    env = os.environ if environ is None else environ
    missing = [name for name in _REQUIRED_VARIABLES if not env.get(name)]
    if missing:
        raise ConfigurationError(f"missing environment variables: {', '.join(missing)}")
    # The OCR adapter's settings module only (the package loads its client on first use, not here).
    from .adapters.dashscope.settings import OcrServiceSettings

    # Checked at every function's start: a model the region does not offer is a configuration error.
    ocr = OcrServiceSettings.from_env(env).defaults()
    try:
        return PipelineSettings.model_validate({**{k: v for k, v in env.items() if v != ""}, "ocr": ocr})
    except ValidationError as exc:
        raise ConfigurationError.from_validation("pipeline settings", PipelineSettings, exc) from None


@cache
def pipeline_settings() -> PipelineSettings:
    return read_pipeline_settings()


@cache
def ocr_service_settings() -> OcrServiceSettings:
    from .adapters.dashscope.settings import OcrServiceSettings

    return OcrServiceSettings.from_env()


def recognizer_factory(ocr: OcrServiceSettings) -> RecognizerFactory:
    """One client per (model, region), reused across invocations so connections stay warm."""
    recognizers: dict[tuple[str, Region], Recognizer] = {}
    lock = threading.Lock()

    def recognizer(model: str, region: Region) -> Recognizer:
        # Imported by the first page to recognize or price: the OCR client, httpx and the imaging stack
        # the recognizer prepares pages with are the page worker's, which other functions do not load.
        from .adapters.dashscope.client import QwenOcrClient
        from .adapters.metrics import MetricsCallObserver
        from .recognition import Recognizer

        with lock:
            key = (model, region)
            if key not in recognizers:
                # model_copy validates nothing: target() checks the job's own model against its region.
                settings = ocr.model_copy(update={"model": model, "region": region})
                recognizers[key] = Recognizer(
                    QwenOcrClient(settings, observer=MetricsCallObserver()), settings.target()
                )
            return recognizers[key]

    return recognizer


def pricer(recognizers: RecognizerFactory) -> Pricer:
    """A page's cost by its job's model and region, as that job's recognizer prices it."""

    def price(usage: Usage, model: str, region: Region, pricing: Pricing) -> Cost | None:
        return recognizers(model, region).price(usage, batch=pricing == "batch")

    return price


def guard(settings: PipelineSettings, spec: Mapping[str, Any]) -> Once:
    """The idempotency guard in front of a function's unit of work (off without a table)."""
    return Once(settings.idempotency_table, **spec)


@cache
def document_intake() -> DocumentIntake:
    settings = pipeline_settings()
    return DocumentIntake(
        settings,
        store=S3ObjectStore(),
        queue=SqsWorkQueue(settings.page_queue_url),
        jobs=DynamoJobStore(settings.jobs_table),
        bus=MeteredEventBus(SnsEventBus(settings.topic_arn)),
        batch_queue=SqsWorkQueue(settings.batch_queue_url) if settings.batch_queue_url else None,
    )


@cache
def upload_service() -> UploadService:
    from .pipeline.upload import UploadService

    return UploadService(pipeline_settings(), document_intake())


@cache
def request_service() -> RequestService:
    # The request function's alone: the request schema, and httpx to fetch a URL source.
    from .adapters.web import HttpSourceFetcher
    from .pipeline.request_intake import RequestService

    settings = pipeline_settings()
    return RequestService(settings, document_intake(), HttpSourceFetcher(), settings.source_policy)


@cache
def _recognizers() -> RecognizerFactory:
    return recognizer_factory(ocr_service_settings())


@cache
def settlement_service() -> SettlementService:
    from .pipeline.settlement import SettlementService

    settings = pipeline_settings()
    return SettlementService(
        settings,
        store=S3ObjectStore(),
        jobs=DynamoJobStore(settings.jobs_table),
        bus=MeteredEventBus(SnsEventBus(settings.topic_arn)),
        price=pricer(_recognizers()),
    )


@cache
def page_recognition_service() -> PageRecognitionService:
    from .pipeline.page_recognition import PageRecognitionService

    settings = pipeline_settings()
    return PageRecognitionService(
        settings,
        store=S3ObjectStore(),
        jobs=DynamoJobStore(settings.jobs_table),
        recognizers=_recognizers(),
        settlement=settlement_service(),
    )


@cache
def dead_letter_service() -> DeadLetterService:
    from .pipeline.dead_letters import DeadLetterService

    return DeadLetterService(upload_service(), settlement_service(), document_intake())


def _batch_api() -> Any:
    # The batch functions' alone: the Batch File API client (httpx).
    from .adapters.dashscope.batch_client import DashScopeBatchClient

    return DashScopeBatchClient(ocr_service_settings())


def _batch_queue_url(settings: PipelineSettings) -> str:
    if not settings.batch_queue_url:
        raise ConfigurationError("missing environment variable: BATCH_QUEUE_URL (the batch functions need it)")
    return settings.batch_queue_url


@cache
def batch_submission_service() -> BatchSubmissionService:
    from .adapters.batch_store import DynamoBatchStore
    from .adapters.sqs_inbox import SqsInbox
    from .pipeline.batch_submission import BatchSubmissionService

    settings = pipeline_settings()
    return BatchSubmissionService(
        settings,
        store=S3ObjectStore(),
        batches=DynamoBatchStore(settings.jobs_table),
        api=_batch_api(),
        inbox=SqsInbox(_batch_queue_url(settings)),
        pages=page_recognition_service(),
    )


@cache
def batch_collection_service() -> BatchCollectionService:
    from .adapters.batch_store import DynamoBatchStore
    from .pipeline.batch_collection import BatchCollectionService

    settings = pipeline_settings()
    return BatchCollectionService(
        settings,
        store=S3ObjectStore(),
        batches=DynamoBatchStore(settings.jobs_table),
        api=_batch_api(),
        pages=page_recognition_service(),
        batch_queue=SqsWorkQueue(_batch_queue_url(settings)),
        page_queue=SqsWorkQueue(settings.page_queue_url),
    )
