"""One recognition end to end: prepare the image, call the task, map boxes back, price the usage.

This is the function every entry point (CLI, Lambda handlers) ends in. It does no I/O
of its own: the OCR service is a port passed in.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .catalog import ModelSpec, Region
from .image_summary import ImageSummary
from .imaging import CoordinateMapping, PreparationLimits, PreparedImage, prepare_image
from .ocr_service import FINISH_LENGTH, CallOutcome, OcrCall, OcrService, OcrTarget
from .pricing import Cost, PriceNotFound, PriceTable, default_price_table
from .results import RecognitionResult, Word
from .tasks import OcrTask, TaskOptions
from .tokens import PixelBudget
from .usage import BilledAttempt, Pricing, Usage


class Recognition(BaseModel):
    task: OcrTask | None
    model: str
    region: Region
    protocol: str
    result: RecognitionResult
    usage: Usage
    cost: Cost | None
    request_id: str | None
    attempts: int
    latency_ms: float
    image: ImageSummary
    # Attempts billed by the vendor but retried: not in `usage` (the tenant pays for the call that
    # succeeded), counted apart so the operator sees what unusable replies cost.
    billed_attempts: list[BilledAttempt] = Field(default_factory=list)
    # The model's own word on why it stopped; "length" means max_tokens cut the answer short.
    finish_reason: str | None = None
    # What the caller should know besides the result (a model admitted unlisted, a damaged image).
    warnings: list[str] = Field(default_factory=list)
    # Calls to the model `usage` adds up: more than one for a page read again in halves (truncation.py).
    calls: int = 1
    # The answer was cut at max_tokens, so the page was read again as two halves, stitched into `result`.
    split: bool = False
    # The price `cost` is at: a call's, or a batch file line's (half, where the vendor offers batch).
    pricing: Pricing = "realtime"

    @property
    def truncated(self) -> bool:
        return self.finish_reason == FINISH_LENGTH


class SentImage(BaseModel):
    """What a recognition needs to know of the image that was sent, without its bytes: kept with a batch
    file's line, whose answer comes back long after the image is gone."""

    model_config = ConfigDict(frozen=True)

    width: int
    height: int
    mapping: CoordinateMapping
    summary: ImageSummary
    decoder_warnings: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, image: PreparedImage) -> SentImage:
        return cls(
            width=image.width,
            height=image.height,
            mapping=image.mapping,
            decoder_warnings=image.decoder_warnings,
            summary=ImageSummary(
                source_format=image.source_format,
                original_width=image.mapping.original_width,
                original_height=image.mapping.original_height,
                prepared_width=image.width,
                prepared_height=image.height,
                prepared_bytes=len(image.data),
                mime_type=image.mime_type,
                scale_x=image.mapping.scale_x,
                scale_y=image.mapping.scale_y,
                steps=image.steps,
            ),
        )


def budget_for(spec: ModelSpec, options: TaskOptions) -> PixelBudget:
    """The pixel bounds of a call: the options' own, else the model's defaults (by its patch size)."""
    return PixelBudget.for_model(spec, options.min_pixels, options.max_pixels)


def map_words_to_original(words: list[Word], mapping: CoordinateMapping) -> list[Word]:
    return [
        Word(
            text=word.text,
            location=mapping.to_original_polygon(word.location),
            rotate_rect=mapping.to_original_rotate_rect(word.rotate_rect),
        )
        for word in words
    ]


class Recognizer:
    def __init__(
        self,
        service: OcrService,
        target: OcrTarget,
        *,
        prices: PriceTable | None = None,
        limits: PreparationLimits | None = None,
    ) -> None:
        self.service = service
        self.target = target
        self.prices = prices or default_price_table()
        self.limits = limits or PreparationLimits()
        self.model = target.choice.spec
        self.unlisted = target.choice.unlisted
        # Said on every result of this recognizer, so a page priced null says why.
        self.warnings = [target.choice.warning] if target.choice.warning else []

    def prepare(self, data: bytes, options: TaskOptions) -> PreparedImage:
        return prepare_image(data, budget_for(self.model, options), self.limits)

    def recognize_bytes(self, data: bytes, options: TaskOptions, *, deadline: float | None = None) -> Recognition:
        return self.recognize_prepared(self.prepare(data, options), options, deadline=deadline)

    def recognize_prepared(
        self, image: PreparedImage, options: TaskOptions, *, deadline: float | None = None
    ) -> Recognition:
        facts = SentImage.of(image)
        outcome = self.service.recognize(self.call_for(image.data_url, facts, options), deadline=deadline)
        return self.recognition_from(outcome, facts, options)

    def call_for(self, image_url: str, facts: SentImage, options: TaskOptions) -> OcrCall:
        """The call that sends a prepared image: in one request now, or as a line of a batch file."""
        return OcrCall(
            image_url=image_url,
            options=options,
            model=self.model,
            image_width=facts.width,
            image_height=facts.height,
        )

    def recognition_from(
        self, outcome: CallOutcome, facts: SentImage, options: TaskOptions, *, batch: bool = False
    ) -> Recognition:
        """The recognition of an answered call: boxes mapped back to the original, usage priced (at the batch
        price for a batch file's line)."""
        result = outcome.reply.result
        if result.words is not None:
            result = result.model_copy(update={"words": map_words_to_original(result.words, facts.mapping)})
        return Recognition(
            task=options.effective_task,
            model=self.model.name,
            region=self.target.region,
            protocol=self.target.protocol,
            result=result,
            usage=outcome.reply.usage,
            cost=self.price(outcome.reply.usage, batch=batch),
            pricing="batch" if batch else "realtime",
            request_id=outcome.reply.request_id,
            attempts=outcome.attempts,
            latency_ms=outcome.latency_ms,
            billed_attempts=outcome.billed_attempts,
            finish_reason=outcome.reply.finish_reason,
            warnings=[*self.warnings, *(f"image: {message}" for message in facts.decoder_warnings)],
            image=facts.summary,
        )

    def price(self, usage: Usage, *, batch: bool = False) -> Cost | None:
        """None only for a model the table cannot know (a self-hosted server, a model admitted unlisted):
        never a made-up price."""
        if self.unlisted:
            return None
        try:
            return self.prices.cost(usage, self.model.name, self.target.region, batch=batch)
        except PriceNotFound:
            return None
