"""Settling pages and documents: billing each page once, and ending each document once.

1. a page's `usage.recorded` event is published under a claim and then marked published, so
   duplicates are not re-announced and a crash between the two is repaired on redelivery; the
   delivery that records a page takes the claim in the same write;
2. whoever settles the last page claims the finalization (with a lease, in case it dies)
   and publishes exactly one `document.completed` or `document.failed`.

Page recognition (page_recognition.py) hands each stored page here; the dead-letter service settles
the pages that ran out of deliveries the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from ..catalog import Region
from ..errors import OcrPipelineError
from ..pricing import Cost
from ..usage import Pricing, Usage
from .assembly import DocumentResult, PageResult, assemble
from .config import PipelineSettings
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
from .model import JobSpec
from .port_errors import ClaimHeld, JobNotFound
from .ports import EventBus, JobStore, ObjectStore
from .records import JobStatus, PageRecord, PageStatus

# What a page's usage costs, by the job's model and region and the page's pricing (a call's, or a batch
# line's): None where no price can be known.
Pricer = Callable[[Usage, str, Region, Pricing], Cost | None]

logger = logging.getLogger(__name__)

# A claim's holder publishes only with at least this much of its lease left (clocks, a slow SNS call).
LEASE_PUBLISH_MARGIN_S = 10.0
# Job specs a warm worker keeps (a schema may be large; a worker sees few jobs at a time).
SPEC_CACHE_SIZE = 32
# Page results a worker keeps until their document ends (many page messages' worth; each is some KB).
RECENT_RESULTS = 64


class SettlementService:
    def __init__(
        self, settings: PipelineSettings, store: ObjectStore, jobs: JobStore, bus: EventBus, price: Pricer
    ) -> None:
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.bus = bus
        self.price = price
        # Specs never change once a job is recorded; a warm worker reads each job's once.
        self._specs: dict[str, JobSpec] = {}
        # Ending a document does not read back from S3 the pages this worker just wrote there.
        self._recent = RecentResults()

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

    def result_key(self, spec: JobSpec) -> str:
        return f"{self.settings.result_prefix}{spec.source.key}/{spec.job_id}.json"

    def record_page(self, spec: JobSpec, record: PageRecord, result: PageResult) -> None:
        """Record a stored page and bill it; recorded by another delivery first, the record is read back.

        The new record holds the page's usage claim from the start, so billing it takes no claim of
        its own; and `result` (what the record names) is kept for assembling the document here.
        """
        lease_s = self.settings.claim_lease_s if _billable(record) else None
        claimed_at = time.time()
        if not self.jobs.record_page(spec.job_id, record, usage_claim_s=lease_s):
            self.publish_usage(spec, record.page, result.method)
            return
        self._recent.remember(spec.job_id, result)
        if lease_s is not None:
            self._publish_claimed(spec, record, result.method, claimed_at, lease_s)

    def fail_unrecorded_pages(self, job_id: str, pages: Iterable[int], error: OcrPipelineError) -> None:
        """Record as failed for good the pages no delivery recorded; the others keep what they have."""
        for page in pages:
            if self.jobs.get_page(job_id, page) is None:
                self.jobs.record_page(
                    job_id,
                    PageRecord(page=page, status=PageStatus.FAILED, error=ErrorInfo.of(error.code, error.message)),
                )

    def settle_recorded_pages(self, spec: JobSpec, pages: Iterable[int]) -> None:
        """Bill the recorded pages that are not billed yet, and end the document if it is settled."""
        for page in pages:
            self.publish_usage(spec, page)
        self.finalize_if_settled(spec.job_id)

    def publish_usage(self, spec: JobSpec, page: int, method: PageMethod | None = None) -> None:
        """Bill a recorded page, unless that was done: under its claim, then marked published."""
        record = self.jobs.get_page(spec.job_id, page)
        if record is None or not _billable(record):
            return
        lease_s = self.settings.claim_lease_s
        claimed_at = time.time()
        claim = self.jobs.claim_usage_publication(spec.job_id, page, lease_s)
        if not claim.granted:
            raise ClaimHeld(
                f"page {page} of job {spec.job_id}: its usage event is being published elsewhere",
                retry_after_s=claim.held_for_s,
            )
        self._publish_claimed(spec, record, method, claimed_at, lease_s)

    def _publish_claimed(
        self, spec: JobSpec, record: PageRecord, method: PageMethod | None, claimed_at: float, lease_s: float
    ) -> None:
        page = record.page
        assert record.usage is not None
        if method is None:
            # Recorded by an earlier delivery: how it was read is on its record, or else in its stored result.
            method = record.method or self._load_page(record).method
        cost = self.price(record.usage, spec.model, spec.region, record.pricing)
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
            pricing=record.pricing,
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
            raise ClaimHeld(f"job {job_id} is being finalized elsewhere", retry_after_s=claim.held_for_s)
        pages = self._pages_of(spec)
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
                pages_split=document.pages_split,
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
                lane=spec.lane,
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
                lane=spec.lane,
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

    def _pages_of(self, spec: JobSpec) -> list[PageResult]:
        """Every page's result: those recorded here from memory, the others read from S3 by their records."""
        known = self._recent.recall(spec.job_id)
        if len(known) < spec.page_count:
            records = self.jobs.list_pages(spec.job_id)
            known = {record.page: known.get(record.page) or self._load_page(record) for record in records}
        return list(known.values())

    def _load_page(self, record: PageRecord) -> PageResult:
        if record.result_key:
            return PageResult.model_validate_json(self.store.get_text(self.settings.result_bucket, record.result_key))
        return PageResult.failed(record.page, record.error or ErrorInfo.of("internal.error", "page result missing"))


def _billable(record: PageRecord) -> bool:
    """A page to bill: recognized, with usage, and not billed yet."""
    return record.status is PageStatus.DONE and record.usage is not None and not record.usage_published


class RecentResults:
    """The results of the last RECENT_RESULTS pages a worker recorded (each the one its record names)."""

    def __init__(self) -> None:
        self._results: OrderedDict[tuple[str, int], PageResult] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, job_id: str, result: PageResult) -> None:
        with self._lock:
            self._results[(job_id, result.page)] = result
            self._results.move_to_end((job_id, result.page))
            while len(self._results) > RECENT_RESULTS:
                self._results.popitem(last=False)

    def recall(self, job_id: str) -> dict[int, PageResult]:
        """The job's pages still held, by page number; they are forgotten (the document is ending)."""
        with self._lock:
            keys = [key for key in self._results if key[0] == job_id]
            return {page: self._results.pop((job, page)) for job, page in keys}
