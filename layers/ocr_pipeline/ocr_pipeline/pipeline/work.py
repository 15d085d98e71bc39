"""Recognising pages and finishing documents.

Each page is idempotent end to end:
1. a recognised page is written to S3 before it is recorded, and a redelivered page
   reuses that stored result instead of calling (and paying for) the model again;
2. the page marker and the job's counter change in one DynamoDB transaction, so a page
   is counted once however often it is delivered;
3. its `usage.recorded` event is published under a claim and then marked published, so
   duplicates are not re-announced and a crash between the two is repaired on redelivery;
4. whoever settles the last page claims the finalisation (with a lease, in case it dies)
   and publishes exactly one `document.completed` or `document.failed`.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from ..catalog import Region
from ..errors import OcrPipelineError
from ..imaging import PreparationLimits, PreparedImage
from ..recognition import Recognizer, budget_for
from ..tasks import OcrTask
from ..usage import ZERO_USAGE
from .assembly import DocumentResult, PageResult, assemble
from .config import PipelineSettings
from .documents import prepare_page
from .events import (
    DocumentCompleted,
    DocumentFailed,
    ErrorInfo,
    PageMethod,
    UsageRecorded,
    UsageTotals,
    completed_event,
    failed_event,
    preview,
    usage_event,
)
from .model import DocumentKind, JobSpec, PageWork
from .ports import ClaimHeld, EventBus, JobNotFound, JobStatus, JobStore, ObjectStore, PageRecord, PageStatus

RecognizerFactory = Callable[[str, Region], Recognizer]


logger = logging.getLogger(__name__)

# A claim's holder publishes only with at least this much of its lease left (clocks, a slow SNS call).
LEASE_PUBLISH_MARGIN_S = 10.0
# Job specs a warm worker keeps (a schema may be large; a worker sees few jobs at a time).
SPEC_CACHE_SIZE = 32


class PageService:
    def __init__(
        self,
        settings: PipelineSettings,
        store: ObjectStore,
        jobs: JobStore,
        bus: EventBus,
        recognizers: RecognizerFactory,
        limits: PreparationLimits | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.bus = bus
        self.recognizers = recognizers
        self.limits = limits or PreparationLimits(max_input_bytes=settings.max_input_bytes)
        # Specs never change once a job is recorded; a warm worker reads each job's once.
        self._specs: dict[str, JobSpec] = {}

    def job_spec(self, job_id: str) -> JobSpec:
        """The job's spec, from its record (page messages name their job; they do not carry its options)."""
        spec = self._specs.get(job_id)
        if spec is None:
            job = self.jobs.get_job(job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} has no record; its pages cannot be worked", job_id=job_id)
            spec = job.spec
            if len(self._specs) >= SPEC_CACHE_SIZE:
                self._specs.pop(next(iter(self._specs)))
            self._specs[job_id] = spec
        return spec

    @staticmethod
    def deadline_from(remaining_ms: float) -> float:
        """A deadline on the OCR client's clock (time.monotonic) from a Lambda context's remaining time."""
        return time.monotonic() + max(0.0, remaining_ms) / 1000

    # --- keys -------------------------------------------------------------------------------

    def page_prefix(self, job_id: str, page: int) -> str:
        return f"{self.settings.work_prefix}{job_id}/pages/{page:06d}-"

    def result_key(self, spec: JobSpec) -> str:
        return f"{self.settings.result_prefix}{spec.source.key}/{spec.job_id}.json"

    # --- pages ------------------------------------------------------------------------------

    def process(self, work: PageWork, *, deadline: float | None = None) -> None:
        """Process a message's pages; a retryable failure raises so the message is delivered again.

        Pages go to the model one after another, one call at a time (what OcrMaxConcurrency
        counts), and each page's result is in S3 before the next page is sent, so a worker that
        dies loses no result it paid for but the call in flight. Around each call two more
        threads keep the wait busy: one looks up and prepares the next page (PDFium and the
        encoders release the GIL), the other records and bills the page before, in order. So a
        page costs the model's latency and one S3 write, not also its drawing and its DynamoDB
        and SNS round trips.
        """
        spec = work.job or self.job_spec(work.job_id)
        source = _LazySource(lambda: self._open_source(spec))
        settling: list[Future[None]] = []
        try:
            with (
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-page") as preparer,
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="settle-page") as settler,
            ):
                pages = list(work.pages)
                starts = [preparer.submit(self._start_page, spec, page, source) for page in pages[:1]]
                for index in range(len(pages)):
                    start = starts[index].result()
                    if index + 1 < len(pages):
                        # The next page is looked up and drawn while this one is with the model.
                        starts.append(preparer.submit(self._start_page, spec, pages[index + 1], source))
                    settling.append(settler.submit(self._settle, spec, start, self._finish_page(spec, start, deadline)))
        finally:
            source.close()
        # Every page handed over has been settled (or has failed) by now; a failure fails the delivery.
        for settled in settling:
            settled.result()
        self.finalize_if_settled(spec.job_id)

    def _start_page(self, spec: JobSpec, page: int, source: _LazySource) -> _PageStart:
        """What a page needs: billing only (recorded before), recording (stored by a worker that died), or the model."""
        if self.jobs.get_page(spec.job_id, page) is not None:
            return _PageStart(page, recorded=True)
        stored = self._stored_page_keys(spec, page)
        if stored:
            # A worker died after paying for this page but before recording it: reuse its result.
            result = PageResult.model_validate_json(self.store.get_text(self.settings.result_bucket, stored[0]))
            return _PageStart(page, stored_key=stored[0], ready=result)
        return _PageStart(page, ready=self._prepare(spec, page, source.get()))

    def _finish_page(self, spec: JobSpec, start: _PageStart, deadline: float | None) -> _StoredPage | None:
        """The page's result, in S3: recognised and stored now if it needed the model. None if recorded before."""
        if start.recorded:
            return None
        if start.stored_key is not None:
            assert isinstance(start.ready, PageResult)
            return _StoredPage(start.stored_key, start.ready)
        result = start.ready
        if isinstance(result, PreparedImage):
            result = self._call_model(spec, start.page, result, deadline)
        assert isinstance(result, PageResult)
        key = self.page_prefix(spec.job_id, start.page) + uuid.uuid4().hex + ".json"
        # Stored before it is recorded: a worker that dies in between leaves it for the next delivery.
        self.store.put_json(self.settings.result_bucket, key, result.model_dump_json())
        return _StoredPage(key, result)

    def _settle(self, spec: JobSpec, start: _PageStart, stored: _StoredPage | None) -> None:
        """Record a stored page and bill it; bill a page recorded before, unless that was done too."""
        if stored is None:
            self._publish_usage(spec, start.page)
            return
        record = PageRecord(
            page=start.page,
            status=stored.result.status,
            result_key=stored.key,
            usage=stored.result.usage,
            error=stored.result.error,
            request_id=stored.result.request_id,
        )
        # Recorded by us, the record is known; recorded by another delivery first, it is read back.
        ours = self.jobs.record_page(spec.job_id, record)
        self._publish_usage(spec, start.page, stored.result.method, record if ours else None)

    def _open_source(self, spec: JobSpec) -> BinaryIO:
        if spec.kind is DocumentKind.IMAGE:
            # A single image is read whole by the decoder anyway; one GET beats many ranges.
            return io.BytesIO(self.store.get_bytes(spec.source.bucket, spec.source.key, spec.source.version_id))
        return self.store.open_reader(spec.source.bucket, spec.source.key, spec.source.version_id, spec.size_bytes)

    def _stored_page_keys(self, spec: JobSpec, page: int) -> list[str]:
        return self.store.list_keys(self.settings.result_bucket, self.page_prefix(spec.job_id, page))

    def _prepare(self, spec: JobSpec, page: int, source: BinaryIO) -> PreparedImage | PageResult:
        """The page's image for the model, or already its result: read from its text layer, or failed for good."""
        try:
            # Inside the guard: a job naming a model its region does not offer fails its pages for good.
            recognizer = self.recognizers(spec.model, spec.region)
            if self._may_read_text_layer(spec):
                from ..pdf_text import judge_text_layer, read_text_layer

                facts = read_text_layer(source, page)
                if judge_text_layer(facts).complete:
                    priced = recognizer.price(ZERO_USAGE)
                    return PageResult.from_text_layer(page, facts.text, priced.currency if priced else None)
            return prepare_page(source, spec.kind, page, budget_for(recognizer.model, spec.options), self.limits)
        except OcrPipelineError as error:
            if error.retryable:
                raise
            return PageResult.failed(page, ErrorInfo.of(error.code, error.message))

    def _call_model(self, spec: JobSpec, page: int, image: PreparedImage, deadline: float | None) -> PageResult:
        recognizer = self.recognizers(spec.model, spec.region)
        try:
            recognition = recognizer.recognize_prepared(image, spec.options, deadline=deadline)
        except OcrPipelineError as error:
            if error.retryable:
                raise
            return PageResult.failed(page, ErrorInfo.of(error.code, error.message))
        return PageResult.recognised(page, recognition)

    def _may_read_text_layer(self, spec: JobSpec) -> bool:
        # Other tasks need the model's structure (boxes, tables, fields), which a text layer lacks.
        return (
            self.settings.pdf_text_layer == "prefer"
            and spec.kind is DocumentKind.PDF
            and spec.options.effective_task is OcrTask.TEXT_RECOGNITION
        )

    def _publish_usage(
        self, spec: JobSpec, page: int, method: PageMethod | None = None, record: PageRecord | None = None
    ) -> None:
        record = record or self.jobs.get_page(spec.job_id, page)
        if record is None or record.status is not PageStatus.DONE or record.usage_published or record.usage is None:
            return
        lease_s = self.settings.claim_lease_s
        claimed_at = time.time()
        claim = self.jobs.claim_usage_publication(spec.job_id, page, lease_s)
        if not claim.granted:
            raise ClaimHeld(
                f"page {page} of job {spec.job_id}: its usage event is being published elsewhere",
                retry_after_s=claim.held_for_s,
            )
        if method is None:
            # Recorded by an earlier delivery: how it was read is in its stored result.
            method = self._load_page(record).method
        recognizer = self.recognizers(spec.model, spec.region)
        cost = recognizer.price(record.usage)
        event = UsageRecorded(
            job_id=spec.job_id,
            page=page,
            tenant=spec.tenant,
            source=spec.source,
            task=spec.options.effective_task.value if spec.options.effective_task else None,
            model=spec.model,
            region=spec.region.value,
            input_tokens=record.usage.input_tokens,
            output_tokens=record.usage.output_tokens,
            image_tokens=record.usage.image_tokens,
            input_price_per_million=cost.unit_price.input_per_million if cost else None,
            output_price_per_million=cost.unit_price.output_per_million if cost else None,
            currency=cost.currency if cost else None,
            cost=cost.amount if cost else None,
            price_table=cost.unit_price.price_table if cost else None,
            request_id=record.request_id,
            method=method,
        )
        self._still_within_lease(claimed_at, lease_s, f"page {page} of job {spec.job_id}")
        self.bus.publish(usage_event(event, spec.correlation_id))
        self.jobs.mark_usage_published(spec.job_id, page)

    # --- documents --------------------------------------------------------------------------

    def finalize_if_settled(self, job_id: str) -> DocumentResult | None:
        job = self.jobs.get_job(job_id)
        if job is None or not job.settled or job.status not in (JobStatus.RUNNING, JobStatus.FINALIZING):
            return None
        spec = job.spec
        lease_s = self.settings.claim_lease_s + self.settings.claim_lease_per_page_s * spec.page_count
        claimed_at = time.time()
        claim = self.jobs.claim_finalization(job_id, lease_s)
        if not claim.granted:
            raise ClaimHeld(f"job {job_id} is being finalised elsewhere", retry_after_s=claim.held_for_s)
        records = self.jobs.list_pages(job_id)
        pages = [self._load_page(record) for record in records]
        document = assemble(spec, pages)
        task = document.task
        if len(document.pages_failed) < spec.page_count:
            uri = f"s3://{self.settings.result_bucket}/{self.result_key(spec)}"
            self.store.put_json(self.settings.result_bucket, self.result_key(spec), document.model_dump_json())
            completed = DocumentCompleted(
                job_id=job_id,
                source=spec.source,
                tenant=spec.tenant,
                task=task,
                model=spec.model,
                region=spec.region.value,
                page_count=spec.page_count,
                pages_failed=document.pages_failed,
                pages_truncated=document.pages_truncated,
                result_uri=uri,
                text_preview=preview(document.text),
                usage=UsageTotals(
                    input_tokens=document.usage.input_tokens,
                    output_tokens=document.usage.output_tokens,
                    image_tokens=document.usage.image_tokens,
                ),
                cost=document.cost,
                currency=document.currency,
                validation=document.validation,
            )
            self._still_within_lease(claimed_at, lease_s, f"job {job_id}")
            self.bus.publish(completed_event(completed, spec.correlation_id))
            self.jobs.finish_job(job_id, JobStatus.COMPLETED, result_uri=uri)
            logger.info(
                "document completed",
                extra={"job_id": job_id, "correlation_id": spec.correlation_id, "pages_failed": document.pages_failed},
            )
        else:
            # Every page failed for good: the document fails with the first page's reason.
            first = next(p.error for p in document.pages if p.error is not None)
            failed = DocumentFailed(
                job_id=job_id,
                source=spec.source,
                tenant=spec.tenant,
                task=task,
                page_count=spec.page_count,
                error=first,
            )
            self._still_within_lease(claimed_at, lease_s, f"job {job_id}")
            self.bus.publish(failed_event(failed, spec.correlation_id))
            self.jobs.finish_job(job_id, JobStatus.FAILED, error=first)
            logger.info(
                "document failed", extra={"job_id": job_id, "correlation_id": spec.correlation_id, "code": first.code}
            )
        return document

    @staticmethod
    def _still_within_lease(claimed_at: float, lease_s: float, what: str) -> None:
        """Publish only with time left on our lease: past it, another worker may have taken over."""
        left = claimed_at + lease_s - time.time()
        if left < LEASE_PUBLISH_MARGIN_S:
            raise ClaimHeld(
                f"{what}: our claim's lease ran out before publishing; another delivery takes over",
                retry_after_s=max(left, 0.0) + 1.0,
            )

    def _load_page(self, record: PageRecord) -> PageResult:
        if record.result_key:
            return PageResult.model_validate_json(self.store.get_text(self.settings.result_bucket, record.result_key))
        return PageResult.failed(record.page, record.error or ErrorInfo.of("internal.error", "page result missing"))


@dataclass(frozen=True)
class _PageStart:
    """A page of a message, looked up: recorded before, or stored by a worker that died, or ready.

    `ready` is the image for the model, or already the page's result (read from its text layer,
    failed for good, or the one stored under `stored_key`).
    """

    page: int
    recorded: bool = False
    stored_key: str | None = None
    ready: PreparedImage | PageResult | None = None


@dataclass(frozen=True)
class _StoredPage:
    """A page result that is in S3 under `key`."""

    key: str
    result: PageResult


class _LazySource:
    """The document, opened on first use by whichever thread prepares pages, and closed once."""

    def __init__(self, opener: Callable[[], BinaryIO]) -> None:
        self._opener = opener
        self._opened: BinaryIO | None = None

    def get(self) -> BinaryIO:
        if self._opened is None:
            self._opened = self._opener()
        return self._opened

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
