"""What happens to work that ran out of retries: the document still ends, failed, with a reason.

Two kinds of dead letters arrive here:
- page messages the page queue moved to its dead-letter queue after maxReceiveCount deliveries;
- S3 events the upload function failed on every attempt (Lambda's OnFailure destination record).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import PageRetriesExhausted, UploadFailed
from .events import ErrorInfo
from .model import PageWork
from .ports import PageRecord, PageStatus
from .upload import UploadedObject, UploadOutcome, UploadService
from .work import PageService


class DeadLetterService:
    def __init__(self, uploads: UploadService, pages: PageService) -> None:
        self.uploads = uploads
        self.pages = pages

    def handle(self, body: str) -> list[UploadOutcome] | None:
        document = json.loads(body)
        if isinstance(document, dict) and document.get("message_type") == "page_work":
            self.page_work_exhausted(PageWork.model_validate(document))
            return None
        if isinstance(document, dict) and "requestPayload" in document:
            return self.upload_exhausted(document)
        raise ValueError("a dead letter that is neither page work nor a Lambda failure record")

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

    def upload_exhausted(self, record: dict[str, Any]) -> list[UploadOutcome]:
        response = record.get("responsePayload") or {}
        reason = f"{response.get('errorType', 'Error')}: {response.get('errorMessage', 'no message')}"
        error = UploadFailed(f"the upload could not be handled after Lambda's retries ({reason})")
        payload = record.get("requestPayload") or {}
        return [
            self.uploads.fail(UploadedObject.from_notification(s3_record), error)
            for s3_record in payload.get("Records", [])
            if "s3" in s3_record
        ]
