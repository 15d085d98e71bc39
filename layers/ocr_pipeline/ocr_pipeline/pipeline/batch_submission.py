"""The batch lane's first half: drain the batch queue into batch files, and make a vendor batch of each.

Run on a schedule. Each page is prepared exactly as for a real-time call (page_recognition.py does it),
and its chat request becomes one line of a JSONL file, the image inline as a data URL. A page goes into
one batch per attempt, however often its message is delivered: it is assigned to its batch (a
conditional write) before its line is written. Each step of a batch is recorded before the next:

1. filling: the pages are assigned to a new batch key and written to a local file;
2. staged: the file and its manifest are in S3 and the batch is recorded; only now are the queue's
   messages deleted;
3. uploaded: the vendor holds the file (its file id is recorded);
4. open: the vendor's batch exists (its id is recorded). Before creating one, the vendor is asked for a
   batch already made from the file, so a run that died between creating and recording it never
   causes a second batch for the same pages.

A run that dies while filling leaves pages assigned to a batch that was never staged; their messages come
back after the queue's visibility timeout, and a later run takes them over (`ORPHANED_AFTER_S`).
A run that dies later leaves a staged or uploaded record, which the next run finishes first.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from pydantic import ValidationError

from ..batch_api import BatchApi, page_custom_id
from ..errors import OcrPipelineError
from ..imaging import PreparedImage
from ..recognition import SentImage
from .batch_files import BatchEntry, BatchFile, batch_key_time, new_batch_key
from .config import PipelineSettings
from .model import PAGE_QUEUE_MESSAGE, JobSpec, PageWork
from .page_recognition import LazySource, PageRecognitionService
from .port_errors import ClaimHeld
from .ports import BatchStore, ObjectStore, QueueInbox
from .records import BatchRecord, BatchState, InboxMessage

logger = logging.getLogger(__name__)

# A batch still filling is at most one run old, and a run ends within the submit function's timeout
# (900 s in template.yaml). An assignment to a batch older than this that was never staged is an
# orphan of a run that died.
ORPHANED_AFTER_S = 1000.0
# Time kept at the end of a run to stage, upload and open the files it filled (a quarter of a short run).
CLOSING_MARGIN_S = 60.0


@dataclass
class SubmissionReport:
    pages_submitted: int = 0
    pages_settled_without_model: int = 0
    pages_skipped: int = 0
    batches_staged: int = 0
    batches_opened: int = 0
    # Batches left staged or uploaded because the vendor could not be reached; the next run goes on.
    batches_waiting: int = 0
    messages_deleted: int = 0
    messages_left: int = 0


class BatchSubmissionService:
    def __init__(
        self,
        settings: PipelineSettings,
        store: ObjectStore,
        batches: BatchStore,
        api: BatchApi,
        inbox: QueueInbox,
        pages: PageRecognitionService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.batches = batches
        self.api = api
        self.inbox = inbox
        self.pages = pages
        self.clock = clock

    def run(self, deadline: float) -> SubmissionReport:
        """Finish what earlier runs left, then drain the queue until it is empty or `deadline` (time.monotonic) nears."""
        report = SubmissionReport()
        for record in self.batches.unfinished_batches():
            if record.state in (BatchState.STAGED, BatchState.UPLOADED):
                self._open(record, report)
        files: dict[str, BatchFile] = {}
        handled: list[InboxMessage] = []
        stop_taking_at = deadline - min(CLOSING_MARGIN_S, (deadline - time.monotonic()) / 4)
        try:
            while time.monotonic() < stop_taking_at:
                messages = self.inbox.receive(10)
                if not messages:
                    break
                for message in messages:
                    if self._take(message, files, report):
                        handled.append(message)
                    else:
                        report.messages_left += 1
            for model in list(files):
                self._stage(files.pop(model), report)
        finally:
            for unstaged in files.values():
                unstaged.close()
        # Every page of these messages is recorded, or in a staged batch: the messages are done with.
        self.inbox.delete(message.receipt for message in handled)
        report.messages_deleted = len(handled)
        return report

    def _take(self, message: InboxMessage, files: dict[str, BatchFile], report: SubmissionReport) -> bool:
        """Put a message's pages in batch files; False leaves the message to come back (an error worth retrying)."""
        try:
            work = PAGE_QUEUE_MESSAGE.validate_json(message.body)
        except ValidationError:
            # Left on the queue: after its receives run out it is dead-lettered and fails there, with its reason.
            logger.error("not a page message on the batch queue", extra={"message_id": message.message_id})
            return False
        if not isinstance(work, PageWork):
            logger.error("a dispatch message on the batch queue", extra={"message_id": message.message_id})
            return False
        try:
            spec = work.job or self.pages.job_spec(work.job_id)
            source = LazySource(lambda: self.pages.open_source(spec))
            settled_before = report.pages_settled_without_model
            try:
                for page in work.pages:
                    self._take_page(spec, work, page, source, files, report)
            finally:
                source.close()
            if report.pages_settled_without_model > settled_before:
                # A page settled here may be its document's last (a text layer, a page that failed for good).
                with contextlib.suppress(ClaimHeld):
                    self.pages.settlement.finalize_if_settled(spec.job_id)
        except OcrPipelineError as error:
            if not error.retryable:
                raise
            logger.warning(
                "a page message comes back later", extra={"job_id": work.job_id, "code": error.code}, exc_info=True
            )
            return False
        return True

    def _take_page(
        self,
        spec: JobSpec,
        work: PageWork,
        page: int,
        source: LazySource,
        files: dict[str, BatchFile],
        report: SubmissionReport,
    ) -> None:
        assigned = self.batches.page_assignment(spec.job_id, page)
        if assigned is not None and assigned.attempt >= work.attempt and not self._orphaned(assigned.batch_key):
            report.pages_skipped += 1  # in a batch for this attempt already: a repeated message
            return
        start = self.pages.start_page(spec, page, source)
        if not isinstance(start.ready, PreparedImage):
            # Recorded before, read from its text layer, or failed for good: settled here, no line needed.
            self.pages.settle_without_model(spec, start)
            report.pages_settled_without_model += 1
            return
        image = start.ready
        recognizer = self.pages.recognizers(spec.model, spec.region)
        facts = SentImage.of(image)
        custom_id = page_custom_id(spec.job_id, page, work.attempt)
        line = BatchFile.encode(
            custom_id, self.api.request_body(recognizer.call_for(image.data_url, facts, spec.options))
        )
        file = files.get(spec.model)
        if file is None or not file.fits(line):
            if file is not None:
                self._stage(files.pop(spec.model), report)
            file = files[spec.model] = self._new_file(spec)
        if not self._assign(spec.job_id, page, work.attempt, file.batch_key):
            report.pages_skipped += 1  # another run put it in a batch meanwhile
            return
        file.add(
            BatchEntry(custom_id=custom_id, job_id=spec.job_id, page=page, attempt=work.attempt, image=facts), line
        )
        report.pages_submitted += 1

    def _new_file(self, spec: JobSpec) -> BatchFile:
        return BatchFile(
            new_batch_key(self.clock()),
            spec.model,
            spec.region,
            max_lines=self.settings.batch_max_lines,
            max_bytes=self.settings.batch_max_file_bytes,
        )

    def _assign(self, job_id: str, page: int, attempt: int, batch_key: str) -> bool:
        if self.batches.assign_page(job_id, page, attempt, batch_key):
            return True
        current = self.batches.page_assignment(job_id, page)
        if current is None or current.attempt != attempt or not self._orphaned(current.batch_key):
            return False
        logger.warning("taking over a page of a batch never staged", extra={"job_id": job_id, "page": page})
        return self.batches.reassign_page(job_id, page, attempt, current.batch_key, batch_key)

    def _orphaned(self, batch_key: str) -> bool:
        """A batch begun by a run that must have ended, and never staged: its pages are free to take."""
        if self.clock() - batch_key_time(batch_key) < ORPHANED_AFTER_S:
            return False
        return self.batches.get_batch(batch_key) is None

    def _stage(self, file: BatchFile, report: SubmissionReport) -> None:
        """Store the file and its manifest, and record the batch: from here on it is never lost."""
        try:
            if not file.entries:
                return
            prefix = f"{self.settings.batch_prefix}{file.batch_key}/"
            record = BatchRecord(
                batch_key=file.batch_key,
                model=file.model,
                state=BatchState.STAGED,
                input_key=prefix + "input.jsonl",
                manifest_key=prefix + "manifest.json",
                line_count=len(file.entries),
                input_bytes=file.size,
                created_at=self.clock(),
            )
            file.file.seek(0)
            self.store.put_file(self.settings.result_bucket, record.input_key, file.file, "application/jsonl")
            self.store.put_json(self.settings.result_bucket, record.manifest_key, file.manifest().model_dump_json())
            self.batches.stage_batch(record)
            report.batches_staged += 1
            logger.info("batch staged", extra={"batch_key": file.batch_key, "lines": len(file.entries)})
            file.file.seek(0)
            self._open(record, report, file.file)
        finally:
            file.close()

    def _open(self, record: BatchRecord, report: SubmissionReport, data: BinaryIO | None = None) -> None:
        """Upload a staged batch's file (from `data`, else from S3) and create its vendor batch; a vendor error
        leaves it for the next run."""
        try:
            file_id = record.file_id
            if record.state is BatchState.STAGED:
                if data is None:
                    bucket = self.settings.result_bucket
                    with self.store.open_reader(bucket, record.input_key, None, record.input_bytes) as stored:
                        file_id = self.api.upload_file(f"{record.batch_key}.jsonl", stored)
                else:
                    file_id = self.api.upload_file(f"{record.batch_key}.jsonl", data)
                self.batches.batch_uploaded(record.batch_key, file_id)
            assert file_id is not None
            vendor = self.api.find_batch(file_id) or self.api.create_batch(
                file_id, {"ocr_pipeline_batch": record.batch_key}
            )
            self.batches.batch_opened(record.batch_key, vendor.id)
        except OcrPipelineError as error:
            if not error.retryable:
                raise
            report.batches_waiting += 1
            logger.warning(
                "batch not opened yet", extra={"batch_key": record.batch_key, "code": error.code}, exc_info=True
            )
            return
        report.batches_opened += 1
        logger.info("batch opened", extra={"batch_key": record.batch_key, "vendor_batch_id": vendor.id})
