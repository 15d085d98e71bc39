"""What happens to work that ran out of retries: the document still ends, failed, with a reason.

Three kinds of dead letters arrive here:
- page messages the page queue moved to its dead-letter queue after maxReceiveCount deliveries;
- S3 events the upload function failed on every attempt (Lambda's OnFailure destination record);
- requests the request queue gave up on (anything else is taken for one, so nothing is dropped).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from ..errors import PageRetriesExhausted, RequestRetriesExhausted, UploadFailed
from .events import ErrorInfo
from .intake import DocumentIntake, IntakeOutcome, Rejection, rejection_job_id
from .model import PageWork
from .ports import PageRecord, PageStatus
from .requests import readable_correlation_id
from .upload import UploadedObject, UploadService
from .work import PageService


class DeadLetterService:
    def __init__(self, uploads: UploadService, pages: PageService, intake: DocumentIntake) -> None:
        self.uploads = uploads
        self.pages = pages
        self.intake = intake

    def handle(self, body: str, message_id: str) -> list[IntakeOutcome] | None:
        try:
            document = json.loads(body)
        except json.JSONDecodeError:
            document = None
        if isinstance(document, dict) and document.get("message_type") == "page_work":
            self.page_work_exhausted(PageWork.model_validate(document))
            return None
        if isinstance(document, dict) and "requestPayload" in document:
            return self.upload_exhausted(document)
        return [self.request_exhausted(body, message_id)]

    def request_exhausted(self, body: str, message_id: str) -> IntakeOutcome:
        """Answer a request that ran out of deliveries (its source kept failing, or its handler crashed)."""
        settings = self.intake.settings
        tenant = None
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            value = json.loads(body).get("tenant")
            tenant = value if isinstance(value, str) else None
        rejection = Rejection(
            job_id=rejection_job_id("request", message_id, body),
            source=None,
            model=settings.ocr.model,
            region=settings.ocr.region,
            tenant=tenant,
            correlation_id=readable_correlation_id(body) or message_id,
        )
        error = RequestRetriesExhausted(
            "the request could not be handled before its message ran out of deliveries; see the request function's logs"
        )
        return self.intake.reject(rejection, error)

    def page_work_exhausted(self, work: PageWork) -> None:
        jobs = self.pages.jobs
        error = PageRetriesExhausted(
            "the page could not be recognised before its message ran out of deliveries; see the worker logs"
        )
        for page in work.pages:
            if jobs.get_page(work.job.job_id, page) is None:
                jobs.record_page(
                    work.job.job_id,
                    PageRecord(page=page, status=PageStatus.FAILED, error=ErrorInfo.of(error.code, error.message)),
                )
        # Pages recorded before the failure still get their billing event, and the document its ending.
        self.pages.process(work)

    def upload_exhausted(self, record: dict[str, Any]) -> list[IntakeOutcome]:
        response = record.get("responsePayload") or {}
        reason = f"{response.get('errorType', 'Error')}: {response.get('errorMessage', 'no message')}"
        error = UploadFailed(f"the upload could not be handled after Lambda's retries ({reason})")
        payload = record.get("requestPayload") or {}
        return [
            self.uploads.fail(UploadedObject.from_notification(s3_record), error)
            for s3_record in payload.get("Records", [])
            if "s3" in s3_record
        ]
