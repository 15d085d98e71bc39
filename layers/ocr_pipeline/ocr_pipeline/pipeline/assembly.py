"""Per-page results and the assembled document result stored in S3. Pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_serializer

from ..field_checks import FieldCheck, ValidationSummary, summarize, validate_fields
from ..image_summary import ImageSummary
from ..pricing import format_money
from ..results import Word
from ..usage import ZERO_USAGE, BilledAttempt, Pricing, Usage
from .events import ErrorInfo, PageMethod
from .model import JobSpec, SourceRef
from .records import PageStatus

if TYPE_CHECKING:
    # The page worker's; the other functions read and settle results without the imaging stack.
    from ..recognition import Recognition

RESULT_SCHEMA_VERSION = "1"


class PageResult(BaseModel):
    page: int
    status: PageStatus
    text: str = ""
    words: list[Word] | None = None
    kv: dict[str, Any] | None = None
    html: str | None = None
    latex: str | None = None
    parse_warnings: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    cost: Decimal | None = None
    currency: str | None = None
    request_id: str | None = None
    attempts: int | None = None
    # Attempts the vendor billed whose reply could not be used; `usage` (what the tenant is billed) excludes them.
    billed_attempts: list[BilledAttempt] = Field(default_factory=list)
    image: ImageSummary | None = None
    error: ErrorInfo | None = None
    # Checks of the fields the job's validators name; None when it names none.
    validation: list[FieldCheck] | None = None
    # How the text was obtained: by the model, or read from the PDF's own text layer.
    method: PageMethod = "ocr"
    # The model stopped at max_tokens: the text ends early. Such a page is kept (and billed), never
    # passed off as complete (see TruncationPolicy).
    truncated: bool = False
    finish_reason: str | None = None
    # The model's answer was cut at max_tokens, so the page was read again as two overlapping halves
    # and their answers stitched (TruncationPolicy split); `usage` and `cost` are those of all `calls`.
    split: bool = False
    # Calls to the model the page took: 1, or 3 when it was read again in halves; None without the model.
    calls: int | None = None
    # What to know about the page besides its content: a model sent unlisted (cost null), a damaged image.
    warnings: list[str] = Field(default_factory=list)
    # The price `cost` is at: a real-time call's, or a batch file line's.
    pricing: Pricing = "realtime"

    @field_serializer("cost")
    def _money(self, value: Decimal | None) -> str | None:
        return None if value is None else format_money(value)

    @classmethod
    def from_text_layer(cls, page: int, text: str, currency: str | None) -> PageResult:
        """A page read from its text layer: no model call, so no tokens and nothing to pay."""
        return cls(
            page=page,
            status=PageStatus.DONE,
            text=text,
            usage=ZERO_USAGE,
            cost=Decimal(0),
            currency=currency,
            method="text_layer",
        )

    @classmethod
    def recognized(cls, page: int, recognition: Recognition) -> PageResult:
        result = recognition.result
        return cls(
            page=page,
            status=PageStatus.DONE,
            text=result.text,
            words=result.words,
            kv=result.kv,
            html=result.html,
            latex=result.latex,
            parse_warnings=result.parse_warnings,
            usage=recognition.usage,
            cost=recognition.cost.amount if recognition.cost else None,
            currency=recognition.cost.currency if recognition.cost else None,
            request_id=recognition.request_id,
            attempts=recognition.attempts,
            billed_attempts=recognition.billed_attempts,
            image=recognition.image,
            truncated=recognition.truncated,
            finish_reason=recognition.finish_reason,
            split=recognition.split,
            calls=recognition.calls,
            warnings=recognition.warnings,
            pricing=recognition.pricing,
        )

    @classmethod
    def failed(cls, page: int, error: ErrorInfo) -> PageResult:
        return cls(page=page, status=PageStatus.FAILED, error=error)


class DocumentResult(BaseModel):
    schema_version: str = RESULT_SCHEMA_VERSION
    job_id: str
    source: SourceRef
    tenant: str
    correlation_id: str
    task: str | None
    model: str
    region: str
    page_count: int
    pages_failed: list[int]
    text: str
    pages: list[PageResult]
    # Pages whose text the model's output limit cut short (PageResult.truncated), after any split.
    pages_truncated: list[int] = Field(default_factory=list)
    # Pages read again in two halves because their first answer was cut (PageResult.split).
    pages_split: list[int] = Field(default_factory=list)
    usage: Usage
    cost: Decimal | None
    currency: str | None
    completed_at: datetime
    validation: ValidationSummary | None = None
    # Pages read from the PDF's text layer instead of the model (see PageResult.method).
    text_layer_pages: int = 0

    @field_serializer("cost")
    def _money(self, value: Decimal | None) -> str | None:
        return None if value is None else format_money(value)


PAGE_SEPARATOR = "\n\n"


def assemble(spec: JobSpec, pages: list[PageResult]) -> DocumentResult:
    """Pages in page order, with totals. Costs add up only when every priced page has a price."""
    ordered = sorted(pages, key=lambda p: p.page)
    validation = None
    if spec.options.validators:
        # Checked here rather than per page, so every page of a job is checked by the same rules.
        ordered = [
            p.model_copy(update={"validation": validate_fields(p.kv, spec.options.validators)})
            if p.status is PageStatus.DONE
            else p
            for p in ordered
        ]
        validation = summarize({p.page: p.validation for p in ordered if p.validation is not None})
    numbers = [p.page for p in ordered]
    if numbers != list(range(1, spec.page_count + 1)):
        raise ValueError(f"job {spec.job_id}: expected pages 1..{spec.page_count}, have {numbers[:10]}…")
    done = [p for p in ordered if p.status is PageStatus.DONE]
    usage = sum((p.usage for p in done if p.usage is not None), ZERO_USAGE)
    costs = [p.cost for p in done]
    currencies = {p.currency for p in done if p.currency}
    priced = bool(done) and all(c is not None for c in costs) and len(currencies) == 1
    return DocumentResult(
        job_id=spec.job_id,
        source=spec.source,
        tenant=spec.tenant,
        correlation_id=spec.correlation_id,
        task=spec.options.effective_task.value if spec.options.effective_task else None,
        model=spec.model,
        region=spec.region.value,
        page_count=spec.page_count,
        pages_failed=[p.page for p in ordered if p.status is PageStatus.FAILED],
        text=PAGE_SEPARATOR.join(p.text for p in done),
        pages=ordered,
        pages_truncated=[p.page for p in done if p.truncated],
        pages_split=[p.page for p in done if p.split],
        usage=usage,
        cost=sum((c for c in costs if c is not None), Decimal(0)) if priced else None,
        currency=currencies.pop() if priced else None,
        completed_at=datetime.now(UTC),
        validation=validation,
        text_layer_pages=sum(1 for p in done if p.method == "text_layer"),
    )
