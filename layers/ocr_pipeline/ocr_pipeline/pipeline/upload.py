"""Accepting an uploaded object: choose the task, record the job, enqueue its pages.

The upload side never decodes or renders pages, so its time and memory do not grow
with the page count beyond the messages it sends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from enum import StrEnum
from urllib.parse import unquote_plus

from pydantic import BaseModel

from ..errors import DocumentTooManyPages, InputTooLarge, OcrPipelineError
from ..imaging import PreparationLimits
from ..tasks import TaskOptions
from .config import PipelineSettings
from .documents import SNIFF_BYTES, count_pages, detect_kind
from .events import DocumentFailed, ErrorInfo, failed_event
from .model import DocumentKind, JobSpec, PageWork, SourceRef, job_id_for
from .ports import EventBus, JobStore, ObjectInfo, ObjectStore, SourceNotFound, WorkQueue
from .routing import META_CORRELATION_ID, choose_task, schema_from_object, task_options


class UploadedObject(BaseModel):
    """The part of an S3 notification record we act on, with the key already decoded."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    event_name: str = "ObjectCreated:Put"

    @classmethod
    def from_notification(cls, record: dict) -> UploadedObject:
        s3 = record["s3"]
        obj = s3["object"]
        return cls(
            bucket=s3["bucket"]["name"],
            # S3 notifications URL-encode keys with '+' for spaces.
            key=unquote_plus(obj["key"]),
            size=obj.get("size"),
            etag=obj.get("eTag"),
            version_id=obj.get("versionId"),
            event_name=record.get("eventName", ""),
        )


class UploadDecision(StrEnum):
    ENQUEUED = "enqueued"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    IGNORED = "ignored"


class UploadOutcome(BaseModel):
    decision: UploadDecision
    job_id: str | None = None
    page_count: int | None = None
    reason: str | None = None


def is_create_event(event_name: str) -> bool:
    return event_name.startswith("ObjectCreated:") or event_name.startswith("s3:ObjectCreated:")


class UploadService:
    def __init__(
        self, settings: PipelineSettings, store: ObjectStore, queue: WorkQueue, jobs: JobStore, bus: EventBus
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.jobs = jobs
        self.bus = bus
        self.limits = PreparationLimits(max_input_bytes=settings.max_input_bytes)

    def accept(self, upload: UploadedObject) -> UploadOutcome:
        if not is_create_event(upload.event_name):
            return UploadOutcome(decision=UploadDecision.IGNORED, reason=f"not a create event: {upload.event_name}")
        found = self._look_up(upload)
        if found is None:
            # Deleted (or overwritten and deleted) before we got to it: nothing left to recognise.
            return UploadOutcome(decision=UploadDecision.IGNORED, reason="object no longer exists")
        info, source, tenant = found
        ocr = self.settings.ocr
        try:
            choice = choose_task(upload.key, info.metadata, self.settings.routing_rules, self.settings.default_task)
            schema = None
            if choice.schema_key:
                schema = schema_from_object(self.store.get_bytes(upload.bucket, choice.schema_key), choice.schema_key)
            options = task_options(choice, schema)
        except OcrPipelineError as error:
            return self._reject(source, info.size, info.content_type, tenant, info.metadata, error)
        job_id = job_id_for(source, options, ocr.model, ocr.region)
        correlation_id = info.metadata.get(META_CORRELATION_ID) or job_id
        try:
            if info.size > self.settings.max_input_bytes:
                raise InputTooLarge(
                    f"the object is {info.size} bytes; the limit is {self.settings.max_input_bytes}", size=info.size
                )
            head = self.store.get_bytes(upload.bucket, upload.key, source.version_id, byte_range=(0, SNIFF_BYTES - 1))
            kind = detect_kind(head)
            page_count = 1
            if kind is not DocumentKind.IMAGE:
                with self.store.open_reader(upload.bucket, upload.key, source.version_id, info.size) as reader:
                    page_count = count_pages(reader, kind, self.limits)
            if page_count > self.settings.max_pages:
                raise DocumentTooManyPages(
                    f"the document has {page_count} pages; the limit is {self.settings.max_pages}"
                )
        except OcrPipelineError as error:
            if error.retryable:
                raise
            return self._reject(source, info.size, info.content_type, tenant, info.metadata, error, job_id, options)
        spec = JobSpec(
            job_id=job_id,
            source=source,
            kind=kind,
            size_bytes=info.size,
            content_type=info.content_type,
            options=options,
            model=ocr.model,
            region=ocr.region,
            tenant=tenant,
            correlation_id=correlation_id,
            page_count=page_count,
        )
        if not self.jobs.create_job(spec):
            existing = self.jobs.get_job(job_id)
            if existing is not None and existing.dispatched:
                return UploadOutcome(decision=UploadDecision.DUPLICATE, job_id=job_id, page_count=page_count)
            # Created by a delivery that died before its pages were all accepted: send them again;
            # workers are idempotent per page, so a page sent twice is recognised and billed once.
        self.queue.send_all(self.page_messages(spec))
        self.jobs.mark_dispatched(job_id)
        return UploadOutcome(decision=UploadDecision.ENQUEUED, job_id=job_id, page_count=page_count)

    def fail(self, upload: UploadedObject, error: OcrPipelineError) -> UploadOutcome:
        """Fail a document whose upload could not be handled, so it does not vanish."""
        found = self._look_up(upload)
        if found is None:
            # Deleted (or overwritten and deleted) before we got to it: nothing left to recognise.
            return UploadOutcome(decision=UploadDecision.IGNORED, reason="object no longer exists")
        info, source, tenant = found
        return self._reject(source, info.size, info.content_type, tenant, info.metadata, error)

    def _look_up(self, upload: UploadedObject) -> tuple[ObjectInfo, SourceRef, str] | None:
        """The object as it is now, its identity, and who pays for it; None once it is gone."""
        try:
            info = self.store.head(upload.bucket, upload.key, upload.version_id)
        except SourceNotFound:
            return None
        source = SourceRef(
            bucket=upload.bucket,
            key=upload.key,
            version_id=info.version_id or upload.version_id,
            etag=(info.etag or upload.etag or "").strip('"') or None,
        )
        return info, source, self.settings.tenant_rule.tenant_for(upload.key, info.metadata)

    def page_messages(self, spec: JobSpec) -> Iterator[str]:
        """Lazily, so the sender holds one SQS batch at a time whatever the page count."""
        size = self.settings.page_chunk_size
        for first in range(1, spec.page_count + 1, size):
            pages = list(range(first, min(first + size, spec.page_count + 1)))
            yield PageWork(job=spec, pages=pages).model_dump_json()

    def _reject(
        self,
        source: SourceRef,
        size: int,
        content_type: str | None,
        tenant: str,
        metadata: dict[str, str],
        error: OcrPipelineError,
        job_id: str | None = None,
        options: TaskOptions | None = None,
    ) -> UploadOutcome:
        """Record the document as failed and say so on the topic, once per document version."""
        if job_id is None:
            # Options could not be read, so identify the job by the raw request instead.
            raw = json.dumps({"source": source.model_dump(), "metadata": metadata}, sort_keys=True)
            job_id = hashlib.sha256(raw.encode()).hexdigest()[:32]
        ocr = self.settings.ocr
        spec = JobSpec(
            job_id=job_id,
            source=source,
            kind=DocumentKind.IMAGE,
            size_bytes=size,
            content_type=content_type,
            options=options or TaskOptions(),
            model=ocr.model,
            region=ocr.region,
            tenant=tenant,
            correlation_id=metadata.get(META_CORRELATION_ID) or job_id,
            page_count=1,
        )
        info = ErrorInfo.of(error.code, error.message)
        created = self.jobs.create_job(spec, failed_with=info)
        existing = None if created else self.jobs.get_job(job_id)
        if created or (existing is not None and not existing.dispatched):
            task = options.effective_task if options else None
            event = DocumentFailed(
                job_id=job_id, source=source, tenant=tenant, task=task.value if task else None, error=info
            )
            self.bus.publish(failed_event(event, spec.correlation_id))
            self.jobs.mark_dispatched(job_id)
        return UploadOutcome(decision=UploadDecision.REJECTED, job_id=job_id, reason=f"{error.code}: {error.message}")
