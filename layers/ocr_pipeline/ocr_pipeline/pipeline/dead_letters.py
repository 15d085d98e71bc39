"""What happens to work that ran out of retries: the document still ends, failed, with a reason.

Three kinds of dead letters arrive here:
- page messages the page queue moved to its dead-letter queue after maxReceiveCount deliveries, and
  PageDispatch messages (a large document's next page messages) that could not be sent;
- S3 events the upload function failed on every attempt (Lambda's OnFailure destination record);
- requests the request queue gave up on (anything else is taken for one, so nothing is dropped).

Reading a dead letter never raises: one that cannot be read (not JSON, nested too deep, a page message or
failure record of the wrong shape) is answered like an unreadable request, `request.malformed` under its
message id. Only what another delivery may fix (a store or topic that failed) is raised.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pydantic import ValidationError

from ..errors import (
    MalformedRequest,
    OcrPipelineError,
    PageRetriesExhausted,
    RequestRetriesExhausted,
    TenantNotAllowed,
    UploadFailed,
)
from .intake import DocumentIntake, IntakeOutcome, Rejection, rejection_job_id
from .model import PAGE_QUEUE_MESSAGE, PageDispatch, PageWork
from .request_intake import read_message, readable_correlation_id
from .settlement import SettlementService
from .upload import UploadedObject, UploadService

logger = logging.getLogger(__name__)


class DeadLetterService:
    def __init__(self, uploads: UploadService, settlement: SettlementService, intake: DocumentIntake) -> None:
        self.uploads = uploads
        self.settlement = settlement
        self.intake = intake

    def handle(self, body: str, message_id: str, sender_id: str | None = None) -> list[IntakeOutcome] | None:
        try:
            letter = self._read(body)
        except MalformedRequest as error:
            return [self.request_exhausted(body, message_id, error, sender_id=sender_id)]
        if isinstance(letter, PageWork):
            logger.warning("page message out of deliveries", extra={"job_id": letter.job_id, "pages": letter.pages})
            self.page_work_exhausted(letter)
            return None
        if isinstance(letter, PageDispatch):
            logger.warning(
                "page dispatch out of deliveries", extra={"job_id": letter.job_id, "next_page": letter.next_page}
            )
            self.page_dispatch_exhausted(letter)
            return None
        if letter is not None:
            uploads, failure = letter
            return [self.uploads.fail(upload, failure) for upload in uploads]
        return [self.request_exhausted(body, message_id, sender_id=sender_id)]

    @staticmethod
    def _read(body: str) -> PageWork | PageDispatch | tuple[list[UploadedObject], UploadFailed] | None:
        """A page queue message, a failed upload's objects and reason, or None for a request.

        Raises MalformedRequest.
        """
        document = read_message(body)
        if isinstance(document, dict) and document.get("message_type") in ("page_work", "page_dispatch"):
            try:
                return PAGE_QUEUE_MESSAGE.validate_python(document)
            except ValidationError as exc:
                raise MalformedRequest(f"a page message of the wrong shape: {exc.error_count()} problems") from None
        if isinstance(document, dict) and "requestPayload" in document:
            try:
                return _upload_failure(document)
            except (KeyError, TypeError, AttributeError, ValidationError) as exc:
                raise MalformedRequest(f"a failed-upload record of the wrong shape ({type(exc).__name__})") from None
        return None

    def request_exhausted(
        self, body: str, message_id: str, error: OcrPipelineError | None = None, *, sender_id: str | None = None
    ) -> IntakeOutcome:
        """Answer a request that ran out of deliveries (its source kept failing, or its handler crashed)."""
        settings = self.intake.settings
        tenant = None
        # The tenant the request function would have billed; a claim the sender may not make names no one.
        with contextlib.suppress(MalformedRequest, TenantNotAllowed):
            document = read_message(body)
            value = document.get("tenant") if isinstance(document, dict) else None
            claimed = value if isinstance(value, str) else None
            tenant = settings.request_tenants.tenant_for(sender_id, claimed, settings.tenant_rule.fallback(""))
        rejection = Rejection(
            job_id=rejection_job_id("request", message_id, body),
            source=None,
            model=settings.ocr.model,
            region=settings.ocr.region,
            tenant=tenant,
            correlation_id=readable_correlation_id(body) or message_id,
        )
        error = error or RequestRetriesExhausted(
            "the request could not be handled before its message ran out of deliveries; see the request function's logs"
        )
        return self.intake.reject(rejection, error)

    def page_work_exhausted(self, work: PageWork) -> None:
        error = PageRetriesExhausted(
            "the page could not be recognized before its message ran out of deliveries; see the worker logs"
        )
        self.settlement.fail_unrecorded_pages(work.job_id, work.pages, error)
        # Pages recorded before the failure still get their billing event, and the document its ending.
        spec = work.job or self.settlement.job_spec(work.job_id)
        self.settlement.settle_recorded_pages(spec, work.pages)

    def page_dispatch_exhausted(self, dispatch: PageDispatch) -> None:
        """The pages from `next_page` on were never sent: they fail, and the document ends with the others."""
        spec = self.settlement.job_spec(dispatch.job_id)
        error = PageRetriesExhausted(
            "the page's message could not be sent to the page queue before its dispatch ran out of deliveries"
        )
        self.settlement.fail_unrecorded_pages(dispatch.job_id, range(dispatch.next_page, spec.page_count + 1), error)
        self.settlement.finalize_if_settled(dispatch.job_id)


def _upload_failure(record: dict[str, Any]) -> tuple[list[UploadedObject], UploadFailed]:
    """The objects of Lambda's OnFailure record and why their upload failed."""
    response = record.get("responsePayload") or {}
    if not isinstance(response, dict):
        response = {"errorMessage": str(response)[:500]}
    reason = f"{response.get('errorType', 'Error')}: {response.get('errorMessage', 'no message')}"
    error = UploadFailed(f"the upload could not be handled after Lambda's retries ({reason})")
    payload = record.get("requestPayload") or {}
    uploads = [
        UploadedObject.from_notification(s3_record) for s3_record in payload.get("Records", []) if "s3" in s3_record
    ]
    return uploads, error
