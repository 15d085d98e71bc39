"""Test doubles shared by unit tests: a scripted OCR service and pipeline wiring on in-memory ports."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

from ocr_pipeline.adapters.dashscope import OcrServiceSettings
from ocr_pipeline.bootstrap import pricer
from ocr_pipeline.catalog import Region
from ocr_pipeline.ocr_service import CallOutcome, OcrCall, OcrReply
from ocr_pipeline.pipeline.config import PipelineSettings
from ocr_pipeline.pipeline.intake import DocumentIntake
from ocr_pipeline.pipeline.page_recognition import PageRecognitionService
from ocr_pipeline.pipeline.settlement import SettlementService
from ocr_pipeline.pipeline.upload import UploadService
from ocr_pipeline.pricing import Cost
from ocr_pipeline.recognition import Recognizer
from ocr_pipeline.results import parse_model_output
from ocr_pipeline.usage import Pricing, Usage
from PIL import Image, ImageDraw, ImageFont

from tests.support.memory import MemoryEventBus, MemoryJobStore, MemoryObjectStore, MemoryWorkQueue

INPUT = "input-bucket"
RESULTS = "result-bucket"


class FakeOcrService:
    """Answers every call with `reply(call)`, or raises what `fail` returns; counts calls."""

    def __init__(self, text: str = "recognized text", fail: Callable[[OcrCall], Exception | None] | None = None):
        self.text = text
        self.fail = fail
        self.calls: list[OcrCall] = []
        self._lock = threading.Lock()

    def recognize(self, call: OcrCall, *, deadline: float | None = None) -> CallOutcome:
        # Calls may come from several threads at once (several calls in flight per instance).
        with self._lock:
            self.calls.append(call)
            number = len(self.calls)
        if self.fail is not None and (error := self.fail(call)) is not None:
            raise error
        usage = Usage(input_tokens=100 + number, output_tokens=10, image_tokens=90)
        result = parse_model_output(call.options.effective_task, self.text)
        return CallOutcome(
            reply=OcrReply(result=result, usage=usage, request_id=f"req-{number}"), attempts=1, latency_ms=1.0
        )


def text_png(text: str = "Invoice Number: 12345", size: tuple[int, int] = (480, 120)) -> bytes:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 28)
    except OSError:
        font = ImageFont.load_default()
    draw.text((12, 40), text, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Pipeline:
    """Upload and page services wired on in-memory ports, as the handlers wire them on AWS."""

    def __init__(self, ocr: FakeOcrService | None = None, **settings_overrides) -> None:
        self.store = MemoryObjectStore()
        self.queue = MemoryWorkQueue()
        self.jobs = MemoryJobStore()
        self.bus = MemoryEventBus()
        self.ocr = ocr or FakeOcrService()
        self.ocr_settings = OcrServiceSettings(api_key="test")
        self.settings = PipelineSettings(
            result_bucket=RESULTS,
            topic_arn="arn:aws:sns:us-east-1:123456789012:topic",
            page_queue_url="https://sqs.local/queue",
            jobs_table="jobs",
            ocr=self.ocr_settings.defaults(),
            **settings_overrides,
        )
        self.recognizers: dict[tuple[str, Region], Recognizer] = {}
        self.intake = DocumentIntake(self.settings, self.store, self.queue, self.jobs, self.bus)
        self.upload = UploadService(self.settings, self.intake)
        self.settlement = SettlementService(self.settings, self.store, self.jobs, self.bus, self._price)
        self.pages = PageRecognitionService(self.settings, self.store, self.jobs, self._recognizer, self.settlement)

    def _recognizer(self, model: str, region: Region) -> Recognizer:
        if (model, region) not in self.recognizers:
            settings = self.ocr_settings.model_copy(update={"model": model, "region": region})
            self.recognizers[(model, region)] = Recognizer(self.ocr, settings.target())
        return self.recognizers[(model, region)]

    def _price(self, usage: Usage, model: str, region: Region, pricing: Pricing = "realtime") -> Cost | None:
        return pricer(self._recognizer)(usage, model, region, pricing)

    def spec_of(self, body: str):
        """The job spec a page message refers to, as a worker reads it from the job record."""
        from ocr_pipeline.pipeline.model import PageWork

        return self.jobs.jobs[PageWork.model_validate_json(body).job_id].spec

    def drain(self) -> int:
        """Deliver every queued page queue message once, in order, as the recognize handler routes them."""
        from ocr_pipeline.pipeline.model import PAGE_QUEUE_MESSAGE, PageDispatch

        delivered = 0
        while self.queue.bodies:
            message = PAGE_QUEUE_MESSAGE.validate_json(self.queue.bodies.pop(0))
            if isinstance(message, PageDispatch):
                self.intake.continue_dispatch(message)
            else:
                self.pages.process(message)
            delivered += 1
        return delivered
