"""The batch lane's second half: poll open batches, and settle each line's answer as a real-time call's.

Run on a schedule. A finished batch's output and error files are read line by line; each line is
mapped by its `custom_id` to its page through the batch's manifest, and settled on the same path as a
real-time page: stored result, page marker, `usage.recorded` (at the batch price), assembly. Every
step is idempotent, so two runs collecting the same batch, or a run that dies halfway and the next one,
settle and bill each page once:
- an answer is stored under the page's one key only if nothing is there, and recorded only once;
- a line that failed for good fails its page; one that failed retryably, and every page of a batch that
  expired, failed or was cancelled without an answer, goes again in a new batch (the next attempt, which
  the submitter puts in one batch however often it is sent), up to `batch_max_attempts`; then
  BatchFallback decides: the page fails (batch.retries_exhausted), or is sent to the page queue and
  recognized in real time;
- a line whose page is assigned to another batch or attempt by now is not settled.
The batch is closed last: a run that dies before collects it again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..batch_api import BatchAnswer, BatchApi, BatchStatus, VendorBatch
from ..errors import BatchRetriesExhausted, OcrPipelineError
from ..ocr_service import OcrCall
from .assembly import PageResult
from .batch_files import BatchEntry, BatchManifest
from .config import BatchFallback, PipelineSettings
from .events import ErrorInfo
from .model import PageWork
from .page_recognition import PageRecognitionService
from .port_errors import ClaimHeld
from .ports import BatchStore, ObjectStore, WorkQueue
from .records import BatchRecord, BatchState

logger = logging.getLogger(__name__)

# Time kept at the end of a run (a quarter of a short run): a batch is collected whole or left for the next run.
CLOSING_MARGIN_S = 60.0


@dataclass
class CollectionReport:
    batches_open: int = 0
    # Age of the oldest batch not collected yet (staged, uploaded or open), for the alarm.
    oldest_unfinished_s: float = 0.0
    batches_closed: dict[str, int] = field(default_factory=dict)
    pages_settled: int = 0
    pages_failed: int = 0
    pages_sent_again: int = 0
    pages_sent_realtime: int = 0
    lines_stale: int = 0


class BatchCollectionService:
    def __init__(
        self,
        settings: PipelineSettings,
        store: ObjectStore,
        batches: BatchStore,
        api: BatchApi,
        pages: PageRecognitionService,
        batch_queue: WorkQueue,
        page_queue: WorkQueue,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.batches = batches
        self.api = api
        self.pages = pages
        self.batch_queue = batch_queue
        self.page_queue = page_queue
        self.clock = clock

    def run(self, deadline: float) -> CollectionReport:
        """Collect every finished batch, until `deadline` (time.monotonic) nears."""
        report = CollectionReport()
        stop_at = deadline - min(CLOSING_MARGIN_S, (deadline - time.monotonic()) / 4)
        for record in self.batches.unfinished_batches():
            report.oldest_unfinished_s = max(report.oldest_unfinished_s, self.clock() - record.created_at)
            if record.state is not BatchState.OPEN or time.monotonic() > stop_at:
                continue  # not opened yet: the submitter finishes it first
            assert record.vendor_batch_id is not None
            try:
                vendor = self.api.get_batch(record.vendor_batch_id)
            except OcrPipelineError as error:
                if not error.retryable:
                    # The vendor no longer knows it (deleted by hand, another account's key): its pages go again,
                    # and the other batches are still collected.
                    logger.error(
                        "batch unknown to the vendor", extra={"batch_key": record.batch_key, "code": error.code}
                    )
                    vendor = VendorBatch(
                        id=record.vendor_batch_id,
                        status=BatchStatus.FAILED,
                        input_file_id=record.file_id or "",
                        errors=[f"{error.code}: {error.message}"],
                    )
                    self.collect(record, vendor, report)
                    continue
                logger.warning("batch not polled", extra={"batch_key": record.batch_key, "code": error.code})
                report.batches_open += 1
                continue
            if not vendor.status.finished:
                report.batches_open += 1
                continue
            self.collect(record, vendor, report)
        return report

    def collect(self, record: BatchRecord, vendor: VendorBatch, report: CollectionReport) -> None:
        manifest = BatchManifest.model_validate_json(
            self.store.get_text(self.settings.result_bucket, record.manifest_key)
        )
        entries = {entry.custom_id: entry for entry in manifest.entries}
        answered: set[str] = set()
        jobs: set[str] = set()
        # An expired or cancelled batch may still have answered some lines: those are kept, the others go again.
        for file_id in (vendor.output_file_id, vendor.error_file_id):
            if file_id is None:
                continue
            for answer in self.api.answers(file_id, lambda custom_id: self._call_of(entries.get(custom_id))):
                entry = entries.get(answer.custom_id)
                if entry is None or answer.custom_id in answered:
                    continue
                answered.add(answer.custom_id)
                jobs.add(entry.job_id)
                self._settle(record, entry, answer, report)
        unanswered = [entry for custom_id, entry in entries.items() if custom_id not in answered]
        if unanswered:
            why = f"the batch ended {vendor.status.value} without answering it"
            if vendor.errors:
                why += f" ({'; '.join(vendor.errors)[:300]})"
            self._send_again(unanswered, why, report)
            jobs.update(entry.job_id for entry in unanswered)
        for job_id in sorted(jobs):
            self._finalize(job_id)
        if self.batches.close_batch(record.batch_key, vendor.status.value):
            report.batches_closed[vendor.status.value] = report.batches_closed.get(vendor.status.value, 0) + 1
            self._delete_files(record, vendor)
        logger.info(
            "batch collected",
            extra={"batch_key": record.batch_key, "status": vendor.status.value, "answered": len(answered)},
        )

    def _delete_files(self, record: BatchRecord, vendor: VendorBatch) -> None:
        """The vendor's copies are no longer needed (ours of the input stays in S3): best effort, as a file left
        behind costs only storage quota."""
        for file_id in {record.file_id, vendor.input_file_id, vendor.output_file_id, vendor.error_file_id} - {None, ""}:
            try:
                self.api.delete_file(str(file_id))
            except OcrPipelineError as error:
                logger.warning("vendor file not deleted", extra={"file_id": file_id, "code": error.code})

    def _call_of(self, entry: BatchEntry | None) -> OcrCall | None:
        """The call a line stood for: its model and image size read the reply."""
        if entry is None:
            return None
        spec = self.pages.job_spec(entry.job_id)
        recognizer = self.pages.recognizers(spec.model, spec.region)
        return recognizer.call_for(f"batch-line:{entry.custom_id}", entry.image, spec.options)

    def _settle(self, record: BatchRecord, entry: BatchEntry, answer: BatchAnswer, report: CollectionReport) -> None:
        if not self._still_ours(record, entry):
            report.lines_stale += 1
            return
        spec = self.pages.job_spec(entry.job_id)
        if self.pages.jobs.get_page(entry.job_id, entry.page) is not None:
            # Settled by a run that died before closing the batch: only its bill may be missing. Checked
            # first, so that collecting a large batch again skips its settled pages at one read each.
            self.pages.settlement.publish_usage(spec, entry.page)
            return
        if answer.outcome is not None:
            recognizer = self.pages.recognizers(spec.model, spec.region)
            recognition = recognizer.recognition_from(answer.outcome, entry.image, spec.options, batch=True)
            self.pages.keep_result(spec, PageResult.recognized(entry.page, recognition))
            report.pages_settled += 1
            return
        error = answer.error or OcrPipelineError("the batch answered the line with neither a reply nor an error")
        if error.retryable:
            self._send_again([entry], f"its line failed ({error.code}: {error.message})", report)
            return
        self.pages.keep_result(spec, PageResult.failed(entry.page, ErrorInfo.of(error.code, error.message)))
        report.pages_failed += 1

    def _still_ours(self, record: BatchRecord, entry: BatchEntry) -> bool:
        """A line counts only for the batch and attempt its page is assigned to now."""
        assigned = self.batches.page_assignment(entry.job_id, entry.page)
        return assigned is not None and assigned.batch_key == record.batch_key and assigned.attempt == entry.attempt

    def _send_again(self, entries: Iterable[BatchEntry], why: str, report: CollectionReport) -> None:
        """The next attempt in a new batch; after the last, BatchFallback: real time, or the page fails."""
        again: list[str] = []
        realtime: list[str] = []
        for entry in entries:
            if self.pages.jobs.get_page(entry.job_id, entry.page) is not None:
                continue  # settled meanwhile (a twin run)
            if entry.attempt < self.settings.batch_max_attempts:
                work = PageWork(job_id=entry.job_id, pages=[entry.page], attempt=entry.attempt + 1)
                again.append(work.model_dump_json(exclude_none=True))
            elif self.settings.batch_fallback is BatchFallback.REALTIME:
                realtime.append(PageWork(job_id=entry.job_id, pages=[entry.page]).model_dump_json(exclude_none=True))
            else:
                spec = self.pages.job_spec(entry.job_id)
                exhausted = BatchRetriesExhausted(f"page {entry.page}: {why}, on each of {entry.attempt} attempts")
                self.pages.keep_result(
                    spec, PageResult.failed(entry.page, ErrorInfo.of(exhausted.code, exhausted.message))
                )
                report.pages_failed += 1
        if again:
            self.batch_queue.send_all(again)
            report.pages_sent_again += len(again)
        if realtime:
            self.page_queue.send_all(realtime)
            report.pages_sent_realtime += len(realtime)

    def _finalize(self, job_id: str) -> None:
        # ClaimHeld: another run or worker is ending the document.
        with contextlib.suppress(ClaimHeld):
            self.pages.settlement.finalize_if_settled(job_id)
