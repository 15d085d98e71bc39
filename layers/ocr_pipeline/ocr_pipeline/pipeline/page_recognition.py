"""Recognizing pages: prepare each page, call the model, store the result, hand it to settlement.

Each page is idempotent end to end:
1. a recognized page is written to S3 before it is recorded, under the page's one key and only if
   nothing is there yet, and a redelivered page reuses that stored result instead of calling (and
   paying for) the model again;
2. the page marker and the job's counter change in one DynamoDB transaction, so a page
   is counted once however often it is delivered;
3. billing the page and ending its document are settlement's (settlement.py), under claims.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from ..catalog import Region
from ..errors import OcrPipelineError, OcrTimeout
from ..imaging import PreparationLimits, PreparedImage
from ..recognition import Recognizer, budget_for
from ..tasks import OcrTask
from ..truncation import read_in_halves
from ..usage import ZERO_USAGE
from .assembly import PageResult
from .concurrency import ByteBudget, in_context
from .config import PipelineSettings, TruncationPolicy
from .documents import prepare_page
from .events import ErrorInfo
from .model import DocumentKind, JobSpec, PageWork
from .ports import JobStore, ObjectStore
from .records import PageRecord
from .settlement import SettlementService

RecognizerFactory = Callable[[str, Region], Recognizer]
# Pages an instance prepares at the same moment. Preparing is CPU work (and PDFium draws one page at a
# time anyway), and a page being drawn is the largest thing an instance holds; two let one page's
# reads from S3 overlap the other's drawing. So the memory a size must hold grows with the calls in
# flight only by the prepared images (a PDF page's well under 1 MB) and, for heavy ones, by the budget below.
PAGES_PREPARED_AT_ONCE = 2
# Bytes of prepared images with the model at once, per instance. A call holds its image about 3.7 times
# over (the image, its base64 data URL, the JSON request that carries it) and briefly more while it builds
# them, so a few calls for phone photos (several MB each) weigh more than all the calls for PDF pages
# (well under 1 MB each), which this never holds back. Measured in benchmarks/memory_share.py.
IMAGE_BYTES_WITH_THE_MODEL = 48 * 1024 * 1024


class PageRecognitionService:
    def __init__(
        self,
        settings: PipelineSettings,
        store: ObjectStore,
        jobs: JobStore,
        recognizers: RecognizerFactory,
        settlement: SettlementService,
        limits: PreparationLimits | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.recognizers = recognizers
        self.settlement = settlement
        self.limits = limits or PreparationLimits(
            max_input_bytes=settings.max_input_bytes, pdf_render_dpi=settings.pdf_render_dpi
        )
        # Pages prepared and not yet answered, across every record of a delivery: one more than the calls
        # in flight, so that the next page is ready when a call ends. A page is prepared only once there
        # is room for it, so an instance holds this many page images however many records it works on.
        self._unanswered = threading.BoundedSemaphore(settings.calls_per_instance + 1)
        self._preparing = threading.BoundedSemaphore(PAGES_PREPARED_AT_ONCE)
        self._with_the_model = ByteBudget(IMAGE_BYTES_WITH_THE_MODEL)

    def job_spec(self, job_id: str) -> JobSpec:
        return self.settlement.job_spec(job_id)

    @staticmethod
    def deadline_from(remaining_ms: float) -> float:
        """A deadline on the OCR client's clock (time.monotonic) from a Lambda context's remaining time."""
        return time.monotonic() + max(0.0, remaining_ms) / 1000

    def page_key(self, job_id: str, page: int) -> str:
        """The one key of a page's result: whichever delivery stores it first, every other finds it there."""
        return f"{self.settings.work_prefix}{job_id}/pages/{page:06d}.json"

    def settle_without_model(self, spec: JobSpec, start: PageStart) -> None:
        """Store, record and bill a page that needs no call: recorded before, stored by a worker that died, read
        from its text layer, or failed for good. The batch lane's pages that need no line end here."""
        assert not isinstance(start.ready, PreparedImage)
        self._settle(spec, start, self._finish_page(spec, start, deadline=None))

    def keep_result(self, spec: JobSpec, result: PageResult) -> None:
        """Store, record and bill a page's result obtained elsewhere (a batch file's answer), exactly as a call's."""
        start = PageStart(result.page, ready=result)
        self._settle(spec, start, self._finish_page(spec, start, deadline=None))

    def process(self, work: PageWork, *, deadline: float | None = None) -> None:
        """Process a message's pages; a retryable failure raises so the message is delivered again.

        This thread looks up and prepares the pages one after another, each once the instance has room
        for it (`_unanswered`, shared with the delivery's other records), and hands each to the model as
        soon as it is ready, so up to `calls_per_instance` of them are with the model at once (the OCR
        client bounds the whole instance, other messages' calls included, to the same number). Each
        page's result is in S3 before it is recorded, so a worker that dies loses no result it paid for
        but its calls in flight. One more thread records and bills the pages as they come back.
        """
        spec = work.job or self.job_spec(work.job_id)
        source = LazySource(lambda: self.open_source(spec))
        pages = list(work.pages)
        calls = max(1, min(len(pages), self.settings.calls_per_instance))
        handed_over: list[Future[Future[None]]] = []
        try:
            # The callers are listed last so that they finish (and hand their pages over) before the
            # settler stops taking pages.
            with (
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="settle-page") as settler,
                ThreadPoolExecutor(max_workers=calls, thread_name_prefix="call-model") as callers,
            ):
                for page in pages:
                    self._unanswered.acquire()
                    try:
                        with self._preparing:
                            start = self.start_page(spec, page, source)
                    except BaseException:
                        self._unanswered.release()
                        raise
                    handed_over.append(
                        in_context(callers, self._recognize_and_hand_over, spec, start, deadline, settler)
                    )
        finally:
            source.close()
        # Every page handed over has been settled (or has failed) by now; a failure fails the delivery.
        for call in handed_over:
            call.result().result()
        self.settlement.finalize_if_settled(spec.job_id)

    def _recognize_and_hand_over(
        self,
        spec: JobSpec,
        start: PageStart,
        deadline: float | None,
        settler: ThreadPoolExecutor,
    ) -> Future[None]:
        try:
            stored = self._finish_page(spec, start, deadline)
        finally:
            self._unanswered.release()
        return in_context(settler, self._settle, spec, start, stored)

    def start_page(self, spec: JobSpec, page: int, source: LazySource) -> PageStart:
        """What a page needs: billing only (recorded before), recording (stored by a worker that died), or the model.

        Two reads, and no listing: the page's record, then its result's one key (missing, as a rule).
        """
        if self.jobs.get_page(spec.job_id, page) is not None:
            return PageStart(page, recorded=True)
        key = self.page_key(spec.job_id, page)
        stored = self.store.find_text(self.settings.result_bucket, key)
        if stored is not None:
            # A worker died after paying for this page but before recording it: reuse its result.
            return PageStart(page, stored_key=key, ready=PageResult.model_validate_json(stored))
        return PageStart(page, ready=self._prepare(spec, page, source.get()))

    def _finish_page(self, spec: JobSpec, start: PageStart, deadline: float | None) -> _StoredPage | None:
        """The page's result, in S3: recognized and stored now if it needed the model. None if recorded before."""
        if start.recorded:
            return None
        if start.stored_key is not None:
            assert isinstance(start.ready, PageResult)
            return _StoredPage(start.stored_key, start.ready)
        result = start.ready
        if isinstance(result, PreparedImage):
            result = self._call_model(spec, start.page, result, deadline)
        assert isinstance(result, PageResult)
        key = self.page_key(spec.job_id, start.page)
        # Stored before it is recorded: a worker that dies in between leaves it for the next delivery.
        # Stored once: a twin delivery that stored first keeps its result, the one its record may name.
        if not self.store.put_json_if_absent(self.settings.result_bucket, key, result.model_dump_json()):
            result = PageResult.model_validate_json(self.store.get_text(self.settings.result_bucket, key))
        return _StoredPage(key, result)

    def _settle(self, spec: JobSpec, start: PageStart, stored: _StoredPage | None) -> None:
        """Record a stored page and bill it; bill a page recorded before, unless that was done too."""
        if stored is None:
            self.settlement.publish_usage(spec, start.page)
            return
        record = PageRecord(
            page=start.page,
            status=stored.result.status,
            result_key=stored.key,
            usage=stored.result.usage,
            error=stored.result.error,
            request_id=stored.result.request_id,
            method=stored.result.method,
            pricing=stored.result.pricing,
        )
        self.settlement.record_page(spec, record, stored.result)

    def open_source(self, spec: JobSpec) -> BinaryIO:
        if spec.kind is DocumentKind.IMAGE:
            # A single image is read whole by the decoder anyway; one GET beats many ranges.
            return io.BytesIO(self.store.get_bytes(spec.source.bucket, spec.source.key, spec.source.version_id))
        return self.store.open_reader(spec.source.bucket, spec.source.key, spec.source.version_id, spec.size_bytes)

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
            with self._with_the_model.claim(len(image.data), deadline=deadline) as room:
                if not room:
                    # Retryable: the message goes back to the queue and is tried when there is room again.
                    raise OcrTimeout("no room for this page's call before the deadline")
                recognition = recognizer.recognize_prepared(image, spec.options, deadline=deadline)
                if recognition.truncated and self.settings.truncation_policy is TruncationPolicy.SPLIT:
                    # Failures of the halves' calls are settled inside: the cut answer, paid for, is kept.
                    recognition = read_in_halves(recognizer, image, spec.options, recognition, deadline=deadline)
        except OcrPipelineError as error:
            if error.retryable:
                raise
            return PageResult.failed(page, ErrorInfo.of(error.code, error.message))
        return PageResult.recognized(page, recognition)

    def _may_read_text_layer(self, spec: JobSpec) -> bool:
        # Other tasks need the model's structure (boxes, tables, fields), which a text layer lacks.
        return (
            self.settings.pdf_text_layer == "prefer"
            and spec.kind is DocumentKind.PDF
            and spec.options.effective_task is OcrTask.TEXT_RECOGNITION
        )


@dataclass(frozen=True)
class PageStart:
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


class LazySource:
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
