"""Accepting an uploaded object: choose the task from its key and metadata, then hand it to the intake."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

from pydantic import BaseModel

from ..errors import OcrPipelineError, TenantNotAllowed
from .config import PipelineSettings
from .intake import Admission, DocumentIntake, IntakeDecision, IntakeOutcome, Rejection, rejection_job_id
from .model import SourceRef
from .port_errors import SourceAccessDenied, SourceNotFound
from .records import ObjectInfo
from .routing import META_CORRELATION_ID, choose_lane, choose_task, schema_from_object, task_options


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


def is_create_event(event_name: str) -> bool:
    return event_name.startswith("ObjectCreated:") or event_name.startswith("s3:ObjectCreated:")


class UploadService:
    def __init__(self, settings: PipelineSettings, intake: DocumentIntake) -> None:
        self.settings = settings
        self.intake = intake
        self.store = intake.store

    def accept(self, upload: UploadedObject) -> IntakeOutcome:
        if not is_create_event(upload.event_name):
            return IntakeOutcome(decision=IntakeDecision.IGNORED, reason=f"not a create event: {upload.event_name}")
        try:
            found = self._look_up(upload)
        except SourceAccessDenied as error:
            return self.intake.reject(self._unread_rejection(upload), error)
        if found is None:
            # Deleted before we got to it: nothing left to recognize, but the upload still ends, as failed.
            missing = SourceNotFound(f"s3://{upload.bucket}/{upload.key} was deleted before it was processed")
            return self.intake.reject(self._unread_rejection(upload), missing)
        info, source = found
        try:
            admission = self._admission(upload, info, source)
        except OcrPipelineError as error:
            return self.intake.reject(self._rejection(source, info), error)
        return self.intake.admit(admission)

    def fail(self, upload: UploadedObject, error: OcrPipelineError) -> IntakeOutcome:
        """End a document whose upload could not be handled, so it does not vanish.

        If the upload got as far as admitting its job, the ending belongs to that job, never to a second one.
        """
        found = self._look_up(upload)
        if found is None:
            return IntakeOutcome(decision=IntakeDecision.IGNORED, reason="object no longer exists")
        info, source = found
        try:
            admission = self._admission(upload, info, source)
        except OcrPipelineError:
            # Its options could not be read: it was never admitted, so it fails under its raw identity.
            return self.intake.reject(self._rejection(source, info), error)
        return self.intake.fail_admission(admission, error)

    def _admission(self, upload: UploadedObject, info: ObjectInfo, source: SourceRef) -> Admission:
        """The task, schema and payer the object's key and metadata choose; raises if they cannot be read."""
        tenant = self.settings.tenant_rule.tenant_for(upload.key, info.metadata, self.settings.routing_rules)
        choice = choose_task(upload.key, info.metadata, self.settings.routing_rules, self.settings.default_task)
        schema = None
        if choice.schema_key:
            schema = schema_from_object(self.store.get_bytes(upload.bucket, choice.schema_key), choice.schema_key)
        ocr = self.settings.ocr
        return Admission(
            source=source,
            size=info.size,
            content_type=info.content_type,
            options=task_options(choice, schema),
            model=ocr.model,
            region=ocr.region,
            tenant=tenant,
            correlation_id=info.metadata.get(META_CORRELATION_ID),
            lane=choose_lane(upload.key, info.metadata, self.settings.routing_rules),
        )

    def _look_up(self, upload: UploadedObject) -> tuple[ObjectInfo, SourceRef] | None:
        """The object as it is now and its identity; None once it is gone."""
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
        return info, source

    def _unread_rejection(self, upload: UploadedObject) -> Rejection:
        """For an object that could not be looked at: identified by what its notification said of it."""
        source = SourceRef(
            bucket=upload.bucket,
            key=upload.key,
            version_id=upload.version_id,
            etag=(upload.etag or "").strip('"') or None,
        )
        return self._rejection(source, ObjectInfo(size=upload.size or 0))

    def _rejection(self, source: SourceRef, info: ObjectInfo) -> Rejection:
        """Options could not be read, so the job is identified by the object and its raw metadata."""
        raw = json.dumps({"source": source.model_dump(), "metadata": info.metadata}, sort_keys=True)
        rule = self.settings.tenant_rule
        try:
            tenant = rule.tenant_for(source.key, info.metadata, self.settings.routing_rules)
        except TenantNotAllowed:
            # Announced to whoever the stack bills by its own rules, never to the tenant the object claimed.
            tenant = rule.fallback(source.key)
        return Rejection(
            job_id=rejection_job_id(raw),
            source=source,
            size=info.size,
            content_type=info.content_type,
            model=self.settings.ocr.model,
            region=self.settings.ocr.region,
            tenant=tenant,
            correlation_id=info.metadata.get(META_CORRELATION_ID),
        )
