"""The pieces of work the benchmarks time, each with the baseline it is compared against.

Each entry of `WORKLOADS` builds its inputs and returns `work(index)`, which does one
repetition (index counts the repetitions, so that PDF pages can take turns). They run in a
fresh process (see probe.py), so that each one's peak memory is its own.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ocr_pipeline.adapters.dashscope import OcrServiceSettings
from ocr_pipeline.imaging import prepare_image
from ocr_pipeline.pdf import prepare_pdf_page
from ocr_pipeline.pipeline.config import PipelineSettings
from ocr_pipeline.pipeline.intake import DocumentIntake, IntakeOutcome
from ocr_pipeline.pipeline.model import PAGE_QUEUE_MESSAGE, PageWork
from ocr_pipeline.pipeline.upload import UploadedObject, UploadService
from ocr_pipeline.tokens import PixelBudget
from PIL import Image

from tests.support.memory import MemoryEventBus, MemoryJobStore, MemoryObjectStore

from .documents import blank_pdf, phone_photo_jpeg, text_pdf

Work = Callable[[int], object]

# Pages that take turns in the PDF measurements: a page's cost is measured, not a cache.
PDF_PAGES = 8
DEFAULT_BUDGET = PixelBudget()
INPUT_BUCKET = "bench-input"


# --- page preparation -----------------------------------------------------------------------


def pdf_pages() -> Work:
    document = text_pdf(PDF_PAGES)
    return lambda index: prepare_pdf_page(document, index % PDF_PAGES + 1, DEFAULT_BUDGET)


def pdf2image_pages() -> Work:
    document = text_pdf(PDF_PAGES)
    size = pdf_page_size(document)
    folder = Path(tempfile.mkdtemp(prefix="ocr-bench-"))
    path = folder / "document.pdf"
    path.write_bytes(document)
    return lambda index: pdf2image_png(path, index % PDF_PAGES + 1, size)


def pdf_page_size(document: bytes) -> tuple[int, int]:
    """The (width, height) our preparation gives page 1: the baseline is drawn at the same pixel count."""
    prepared = prepare_pdf_page(document, 1, DEFAULT_BUDGET)
    return prepared.width, prepared.height


def pdf2image_png(path: Path, page: int, size: tuple[int, int]) -> bytes:
    """The common recipe: pdf2image (pdftoppm) draws the page at the size, Pillow writes a PNG."""
    from pdf2image import convert_from_path

    (image,) = convert_from_path(path, first_page=page, last_page=page, size=size)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def phone_jpeg() -> Work:
    photo = phone_photo_jpeg()
    return lambda _: prepare_image(photo, DEFAULT_BUDGET)


def phone_jpeg_naive() -> Work:
    photo = phone_photo_jpeg()
    prepared = prepare_image(photo, DEFAULT_BUDGET)
    size = (prepared.width, prepared.height)
    return lambda _: naive_png(photo, size)


def naive_png(data: bytes, size: tuple[int, int]) -> bytes:
    """Open, convert, resize, save: what preparing an image looks like without thinking about it."""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# --- fan-out ------------------------------------------------------------------------------------


class CountingQueue:
    """Takes page messages as SQS does: they leave the process, only their count stays."""

    def __init__(self) -> None:
        self.messages = 0
        self.pages = 0

    def send_all(self, bodies: Iterable[str]) -> None:
        for body in bodies:
            self.messages += 1
            # A large document's later pages follow a PageDispatch message, sent on by the page function.
            work = PAGE_QUEUE_MESSAGE.validate_json(body)
            if isinstance(work, PageWork):
                self.pages += len(work.pages)


class Planner:
    """The upload side on in-memory ports: a new object for each repetition, so each is a new job."""

    def __init__(self, document: bytes) -> None:
        self.document = document
        self.store = MemoryObjectStore()
        self.queue = CountingQueue()
        settings = PipelineSettings(
            result_bucket="bench-results",
            topic_arn="arn:aws:sns:us-east-1:123456789012:bench",
            page_queue_url="https://sqs.local/bench",
            jobs_table="bench-jobs",
            ocr=OcrServiceSettings(api_key="bench").defaults(),
        )
        intake = DocumentIntake(settings, self.store, self.queue, MemoryJobStore(), MemoryEventBus())
        self.upload = UploadService(settings, intake)

    def plan(self, index: int) -> IntakeOutcome:
        key = f"docs/{index}.pdf"
        self.store.put(INPUT_BUCKET, key, self.document, content_type="application/pdf")
        return self.upload.accept(UploadedObject(bucket=INPUT_BUCKET, key=key))


def planning(pages: int) -> Callable[[], Work]:
    def make() -> Work:
        return Planner(blank_pdf(pages)).plan

    return make


WORKLOADS: dict[str, Callable[[], Work]] = {
    "pdf": pdf_pages,
    "pdf2image": pdf2image_pages,
    "jpeg": phone_jpeg,
    "jpeg-naive": phone_jpeg_naive,
    "plan-10": planning(10),
    "plan-2000": planning(2000),
}
