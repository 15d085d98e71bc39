"""Builds the services from configuration, once per cold start, with the AWS adapters.

Nothing here runs at import time: handlers call these functions on first invocation, and
tests pass their own services instead.
"""

from __future__ import annotations

import threading
from functools import cache

from ..adapters.aws import DynamoJobStore, S3ObjectStore, SnsEventBus, SqsWorkQueue
from ..adapters.metrics import MeteredEventBus, MetricsCallObserver
from ..adapters.web import HttpSourceFetcher
from ..catalog import Region
from ..client import QwenOcrClient
from ..recognition import Recognizer
from .config import PipelineSettings
from .failures import DeadLetterService
from .intake import DocumentIntake
from .requests import RequestService
from .upload import UploadService
from .work import PageService, RecognizerFactory


@cache
def pipeline_settings() -> PipelineSettings:
    return PipelineSettings.from_env()


def recognizer_factory(settings: PipelineSettings) -> RecognizerFactory:
    """One client per (model, region), reused across invocations so connections stay warm."""
    cache_: dict[tuple[str, Region], Recognizer] = {}
    lock = threading.Lock()

    def recognizer(model: str, region: Region) -> Recognizer:
        with lock:
            key = (model, region)
            if key not in cache_:
                ocr = settings.ocr.model_copy(update={"model": model, "region": region})
                cache_[key] = Recognizer(QwenOcrClient(ocr, observer=MetricsCallObserver()), ocr)
            return cache_[key]

    return recognizer


@cache
def document_intake() -> DocumentIntake:
    settings = pipeline_settings()
    return DocumentIntake(
        settings,
        store=S3ObjectStore(),
        queue=SqsWorkQueue(settings.page_queue_url),
        jobs=DynamoJobStore(settings.jobs_table),
        bus=MeteredEventBus(SnsEventBus(settings.topic_arn)),
    )


@cache
def upload_service() -> UploadService:
    return UploadService(pipeline_settings(), document_intake())


@cache
def request_service() -> RequestService:
    settings = pipeline_settings()
    return RequestService(settings, document_intake(), HttpSourceFetcher(), settings.source_policy)


@cache
def page_service() -> PageService:
    settings = pipeline_settings()
    return PageService(
        settings,
        store=S3ObjectStore(),
        jobs=DynamoJobStore(settings.jobs_table),
        bus=MeteredEventBus(SnsEventBus(settings.topic_arn)),
        recognizers=recognizer_factory(settings),
    )


@cache
def dead_letter_service() -> DeadLetterService:
    return DeadLetterService(upload_service(), page_service(), document_intake())
