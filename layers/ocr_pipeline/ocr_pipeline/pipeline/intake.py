"""Taking a document in, whichever way it arrived (an upload or a request): record the job and fan its pages out.

The intake never decodes or renders pages, so its time and memory do not grow with the page
count beyond the messages it sends. An empty object ends as `document.empty` before anything is read:
S3 refuses a ranged read of zero bytes (InvalidRange), which would otherwise be retried as a storage error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from ..catalog import Region, batch_lanes, batch_offered
from ..errors import (
    BatchLaneUnsupported,
    ConfigurationError,
    DocumentEmpty,
    DocumentTooManyPages,
    InputTooLarge,
    OcrPipelineError,
)
from ..tasks import TaskOptions
from .config import PipelineSettings
from .documents import SNIFF_BYTES, count_pages, detect_kind
from .events import DocumentFailed, ErrorInfo, deterministic_event_id, failed_event
from .model import DocumentKind, JobSpec, Lane, PageDispatch, PageWork, SourceRef, job_id_for
from .port_errors import JobNotFound
from .ports import EventBus, JobStore, ObjectStore, WorkQueue
from .records import JobStatus

if TYPE_CHECKING:
    from ..imaging import PreparationLimits

# The handlers give this logger their Powertools format and keys, so each decision is one JSON line.
logger = logging.getLogger(__name__)


class IntakeDecision(StrEnum):
    ENQUEUED = "enqueued"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    IGNORED = "ignored"


class IntakeOutcome(BaseModel):
    decision: IntakeDecision
    job_id: str | None = None
    page_count: int | None = None
    reason: str | None = None


class Admission(BaseModel):
    """A document whose source, task and payer are known; its pages are not counted yet."""

    model_config = ConfigDict(frozen=True)

    source: SourceRef
    size: int
    content_type: str | None = None
    options: TaskOptions
    model: str
    region: Region
    tenant: str
    correlation_id: str | None = None  # the job id when the sender gave none
    requester: str | None = None  # see job_id_for
    lane: Lane = Lane.REALTIME

    @property
    def job_id(self) -> str:
        return job_id_for(self.source, self.options, self.model, self.region, requester=self.requester, lane=self.lane)

    def rejection(self) -> Rejection:
        """How the document is announced when it fails before its pages are counted."""
        return Rejection(
            job_id=self.job_id,
            source=self.source,
            size=self.size,
            content_type=self.content_type,
            options=self.options,
            model=self.model,
            region=self.region,
            tenant=self.tenant,
            correlation_id=self.correlation_id,
            lane=self.lane,
        )


class Rejection(BaseModel):
    """What a failed document is announced with, when it failed before its pages were counted."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    source: SourceRef | None
    size: int = 0
    content_type: str | None = None
    options: TaskOptions | None = None
    model: str
    region: Region
    tenant: str | None
    correlation_id: str | None = None
    lane: Lane = Lane.REALTIME


def rejection_job_id(*identity: object) -> str:
    """For a document refused before its options were known: identified by whatever raw request there was."""
    return deterministic_event_id("rejected", *identity).replace("-", "")


def check_batch_lane(admission: Admission, *, has_batch_queue: bool) -> None:
    """Refused at intake, never silently sent in real time: the lane is what the sender pays for."""
    if not batch_offered(admission.model, admission.region):
        raise BatchLaneUnsupported(
            f"the batch lane is offered for {batch_lanes()}, not for {admission.model} in "
            f"{admission.region.value}; send it in real time, or name a model and region the lane takes",
            model=admission.model,
            region=admission.region.value,
        )
    if not has_batch_queue:
        raise BatchLaneUnsupported("this stack has no batch lane (no BATCH_QUEUE_URL)")


class DocumentIntake:
    def __init__(
        self,
        settings: PipelineSettings,
        store: ObjectStore,
        queue: WorkQueue,
        jobs: JobStore,
        bus: EventBus,
        batch_queue: WorkQueue | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.jobs = jobs
        self.bus = bus
        # The batch lane's page queue, drained into batch files on a schedule; None in a stack without one.
        self.batch_queue = batch_queue

    @cached_property
    def limits(self) -> PreparationLimits:
        """What counting a TIFF's pages refuses. Imports the imaging stack (Pillow), which only that needs."""
        from ..imaging import PreparationLimits

        return PreparationLimits(max_input_bytes=self.settings.max_input_bytes)

    def admit(self, admission: Admission) -> IntakeOutcome:
        """Count the pages, create the job once, and send its page messages."""
        source = admission.source
        job_id = admission.job_id
        try:
            if admission.lane is Lane.BATCH:
                check_batch_lane(admission, has_batch_queue=self.batch_queue is not None)
            if admission.size > self.settings.max_input_bytes:
                raise InputTooLarge(
                    f"the object is {admission.size} bytes; the limit is {self.settings.max_input_bytes}",
                    size=admission.size,
                )
            if admission.size == 0:
                raise DocumentEmpty("the object is empty (0 bytes)", size=0)
            head = self.store.get_bytes(source.bucket, source.key, source.version_id, byte_range=(0, SNIFF_BYTES - 1))
            if not head:
                raise DocumentEmpty("the object has no bytes to read", size=admission.size)
            kind = detect_kind(head)
            page_count = 1
            if kind is not DocumentKind.IMAGE:
                with self.store.open_reader(source.bucket, source.key, source.version_id, admission.size) as reader:
                    page_count = count_pages(reader, kind, self.limits)
            if page_count > self.settings.max_pages:
                raise DocumentTooManyPages(
                    f"the document has {page_count} pages; the limit is {self.settings.max_pages}"
                )
        except OcrPipelineError as error:
            if error.retryable:
                raise
            return self.reject(admission.rejection(), error)
        spec = JobSpec(
            job_id=job_id,
            source=source,
            kind=kind,
            size_bytes=admission.size,
            content_type=admission.content_type,
            options=admission.options,
            model=admission.model,
            region=admission.region,
            tenant=admission.tenant,
            correlation_id=admission.correlation_id or job_id,
            page_count=page_count,
            lane=admission.lane,
        )
        if not self.jobs.create_job(spec):
            existing = self.jobs.get_job(job_id)
            if existing is not None and existing.dispatched:
                return IntakeOutcome(decision=IntakeDecision.DUPLICATE, job_id=job_id, page_count=page_count)
            # Created by a delivery that died before its pages were all accepted: send them again;
            # workers are idempotent per page, so a page sent twice is recognized and billed once.
        self.dispatch(spec)
        self.jobs.mark_dispatched(job_id)
        logger.info(
            "document admitted",
            extra={"job_id": job_id, "correlation_id": spec.correlation_id, "page_count": page_count, "kind": kind},
        )
        return IntakeOutcome(decision=IntakeDecision.ENQUEUED, job_id=job_id, page_count=page_count)

    def dispatch(self, spec: JobSpec, first_page: int = 1) -> None:
        """Send the page messages from `first_page` on: a bounded number, then one PageDispatch for the rest.

        However many pages a document has, one call sends at most `dispatch_messages_per_call` messages,
        so it ends within any function's timeout; the page queue's consumer carries on from the
        PageDispatch message. Sending a page twice (a repeated delivery) is harmless: pages are settled
        once. Once the first call returned, the rest is in SQS's hands, retried and dead-lettered there.
        """
        size = self.settings.page_chunk_size
        last_page = min(spec.page_count, first_page + size * self.settings.dispatch_messages_per_call - 1)
        self._page_queue_of(spec).send_all(self.page_messages(spec, first_page, last_page))
        if last_page < spec.page_count:
            # Only once this call's pages are all accepted: a retry of this call then starts no second chain.
            self.queue.send_all([PageDispatch(job_id=spec.job_id, next_page=last_page + 1).model_dump_json()])

    def _page_queue_of(self, spec: JobSpec) -> WorkQueue:
        """Where a job's page messages go: the batch lane's queue for a batch job, the page queue otherwise.

        A PageDispatch message always goes to the page queue, whose function carries the dispatch on.
        """
        if spec.lane is not Lane.BATCH:
            return self.queue
        if self.batch_queue is None:
            raise ConfigurationError("this stack has no batch queue (BATCH_QUEUE_URL); a batch job cannot be sent")
        return self.batch_queue

    def continue_dispatch(self, dispatch: PageDispatch) -> None:
        """Carry on sending a job's page messages from where the previous step stopped."""
        job = self.jobs.get_job(dispatch.job_id)
        if job is None:
            raise JobNotFound(f"job {dispatch.job_id} has no record; its pages cannot be sent", job_id=dispatch.job_id)
        self.dispatch(job.spec, dispatch.next_page)

    def page_messages(self, spec: JobSpec, first_page: int = 1, last_page: int | None = None) -> Iterator[str]:
        """Lazily, so the sender holds one SQS batch at a time whatever the page count."""
        size = self.settings.page_chunk_size
        end = (spec.page_count if last_page is None else last_page) + 1
        for first in range(first_page, end, size):
            pages = list(range(first, min(first + size, end)))
            yield PageWork(job_id=spec.job_id, pages=pages).model_dump_json(exclude_none=True)

    def fail_admission(self, admission: Admission, error: OcrPipelineError) -> IntakeOutcome:
        """The handler of an admission failed for good. The document ends once, as the job it was admitted as.

        Never a failure announced while its pages are being worked: a job whose pages went out ends with
        them; a job created by a handler that died while sending its pages gets them all sent now (a page
        sent twice is settled once); only a job never created fails here, under its own id.
        """
        job = self.jobs.get_job(admission.job_id)
        if job is None:
            return self.reject(admission.rejection(), error)
        if job.status is JobStatus.FAILED and not job.dispatched:
            # Refused at admission by a handler that died before announcing it: announce it now.
            return self.reject(admission.rejection(), error)
        if job.dispatched:
            return IntakeOutcome(
                decision=IntakeDecision.DUPLICATE,
                job_id=job.spec.job_id,
                page_count=job.spec.page_count,
                reason="its pages went out; the document ends with them",
            )
        self.dispatch(job.spec)
        self.jobs.mark_dispatched(job.spec.job_id)
        return IntakeOutcome(
            decision=IntakeDecision.ENQUEUED,
            job_id=job.spec.job_id,
            page_count=job.spec.page_count,
            reason=f"its handler failed while sending its pages ({error.code}); they were sent again",
        )

    def reject(self, rejection: Rejection, error: OcrPipelineError) -> IntakeOutcome:
        """Record the document as failed and say so on the topic, once per document."""
        job_id = rejection.job_id
        correlation_id = rejection.correlation_id or job_id
        info = ErrorInfo.of(error.code, error.message)
        announce = True
        if rejection.source is not None:
            spec = JobSpec(
                job_id=job_id,
                source=rejection.source,
                kind=DocumentKind.IMAGE,
                size_bytes=rejection.size,
                content_type=rejection.content_type,
                options=rejection.options or TaskOptions(),
                model=rejection.model,
                region=rejection.region,
                tenant=rejection.tenant or "",
                correlation_id=correlation_id,
                page_count=1,
                lane=rejection.lane,
            )
            created = self.jobs.create_job(spec, failed_with=info)
            existing = None if created else self.jobs.get_job(job_id)
            announce = created or (existing is not None and not existing.dispatched)
        # A source-less rejection has no job record; its event id alone lets consumers drop a repeat.
        if announce:
            task = rejection.options.effective_task if rejection.options else None
            event = DocumentFailed(
                job_id=job_id,
                source=rejection.source,
                tenant=rejection.tenant,
                task=task.value if task else None,
                error=info,
                lane=rejection.lane,
            )
            self.bus.publish(failed_event(event, correlation_id))
            if rejection.source is not None:
                self.jobs.mark_dispatched(job_id)
        logger.info(
            "document refused",
            extra={"job_id": job_id, "correlation_id": correlation_id, "code": error.code, "announced": announce},
        )
        return IntakeOutcome(decision=IntakeDecision.REJECTED, job_id=job_id, reason=f"{error.code}: {error.message}")
