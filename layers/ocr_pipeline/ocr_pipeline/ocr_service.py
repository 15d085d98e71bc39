"""The port to the OCR model: what a call sends, what comes back, and who it goes to.

Neutral on purpose: no HTTP, no wire format. The DashScope adapter (adapters/dashscope) implements
`OcrService` for both of the vendor's protocols and for a self-hosted OpenAI-compatible server; unit
tests implement it with a fake.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from .catalog import ModelSpec, Region
from .results import RecognitionResult
from .task_prompts import DEFAULT_PROMPT, TASK_PROMPTS, key_information_prompt
from .tasks import OcrTask, TaskOptions
from .tokens import PixelBudget
from .usage import BilledAttempt, Usage

# finish_reason of an answer the model stopped writing because it reached max_tokens.
FINISH_LENGTH = "length"


class OcrCall(BaseModel):
    """One request to the model: an image (data URL or https URL) and what to do with it."""

    model_config = ConfigDict(frozen=True)

    image_url: str
    options: TaskOptions
    model: ModelSpec
    # Size of the image as sent; lets us estimate image tokens when a server does not report them.
    image_width: int | None = None
    image_height: int | None = None

    @property
    def budget(self) -> PixelBudget:
        """Sent as min_pixels/max_pixels: the options' bounds, else the model's defaults by patch size."""
        return PixelBudget.for_model(self.model, self.options.min_pixels, self.options.max_pixels)


class OcrReply(BaseModel):
    """A usable answer: the parsed result, what the vendor billed for it, and why the model stopped."""

    result: RecognitionResult
    usage: Usage
    request_id: str | None = None
    # "stop" when the model ended its answer, "length" when max_tokens cut it; None when a server sends none.
    finish_reason: str | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == FINISH_LENGTH


class CallOutcome(BaseModel):
    reply: OcrReply
    attempts: int
    latency_ms: float
    # Earlier attempts of this call that the vendor billed although their reply could not be used.
    billed_attempts: list[BilledAttempt] = Field(default_factory=list)


class ModelChoice(BaseModel):
    """The model a service sends, as its settings admit it."""

    model_config = ConfigDict(frozen=True)

    spec: ModelSpec
    # Admitted by allow_unlisted_model: not in the region's table, so never priced.
    unlisted: bool = False
    warning: str | None = None


class OcrTarget(BaseModel):
    """Where a service's calls go, as results and prices need to know it."""

    model_config = ConfigDict(frozen=True)

    choice: ModelChoice
    region: Region
    # The wire format's name, reported in results ("dashscope" or "openai").
    protocol: str


class OcrService(Protocol):
    """The port to the model: the DashScope adapter in production, a fake in unit tests."""

    def recognize(self, call: OcrCall, *, deadline: float | None = None) -> CallOutcome: ...


class CallObserver(Protocol):
    """Told about each call's outcome, for metrics; a service works the same without one."""

    def call_succeeded(self, latency_ms: float, attempts: int) -> None: ...

    def retrying(self, code: str) -> None: ...

    def call_failed(self, code: str) -> None: ...

    def attempt_billed_in_vain(self, attempt: BilledAttempt) -> None: ...


def prompt_for(options: TaskOptions) -> str:
    """The text prompt that stands for the options when built-in tasks are unavailable."""
    task = options.effective_task
    if task is None:
        assert options.prompt is not None
        return options.prompt
    if task is OcrTask.KEY_INFORMATION_EXTRACTION:
        return key_information_prompt(options.result_schema)
    return TASK_PROMPTS.get(task, DEFAULT_PROMPT)
