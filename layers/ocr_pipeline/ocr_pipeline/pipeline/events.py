"""The event contract: one envelope, three event types, all made by `make_event`.

Event ids are derived from the business identity (job, page), never random, so a
consumer can drop duplicates that at-least-once delivery produces.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from ..field_checks import ValidationSummary
from ..pricing import format_money
from ..usage import Pricing
from .model import Lane, SourceRef

EVENT_VERSION = "1"
# SNS takes 256 KiB per message including attributes; stay well below it.
MAX_EVENT_BYTES = 200 * 1024
TEXT_PREVIEW_CHARS = 500
ERROR_MESSAGE_CHARS = 1000
_NAMESPACE = uuid.UUID("6f1c9b0e-3a57-4c8e-9d2a-0c4f7e1b5a90")

EventType = Literal["document.completed", "document.failed", "usage.recorded"]


class EventEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    event_type: EventType
    version: str = EVENT_VERSION
    occurred_at: datetime
    correlation_id: str
    data: dict[str, Any]

    def to_json(self) -> str:
        return self.model_dump_json()


class UsageTotals(BaseModel):
    input_tokens: int
    output_tokens: int
    image_tokens: int


class ErrorInfo(BaseModel):
    code: str
    message: str

    @classmethod
    def of(cls, code: str, message: str) -> ErrorInfo:
        return cls(code=code, message=message[:ERROR_MESSAGE_CHARS])


class DocumentCompleted(BaseModel):
    job_id: str
    source: SourceRef
    tenant: str
    task: str | None
    model: str
    region: str
    page_count: int
    pages_failed: list[int] = Field(default_factory=list)
    # Pages the model's output limit cut short: their text ends early (see the result's `truncated`).
    pages_truncated: list[int] = Field(default_factory=list)
    # Pages read again in two overlapping halves because their first answer was cut (the result's `split`).
    pages_split: list[int] = Field(default_factory=list)
    result_uri: str
    text_preview: str
    usage: UsageTotals
    cost: Decimal | None
    currency: str | None
    # Counts and paths of checked fields, when the job named validators; the values are in the result.
    validation: ValidationSummary | None = None
    # The lane it was sent in: "realtime" (a call per page) or "batch" (the vendor's Batch File API).
    lane: Lane = Lane.REALTIME

    @field_serializer("cost")
    def _money(self, value: Decimal | None) -> str | None:
        return None if value is None else format_money(value)


class DocumentFailed(BaseModel):
    job_id: str
    # None only for a request whose source could not be read or was refused before it was looked at.
    source: SourceRef | None
    tenant: str | None = None
    task: str | None = None
    page_count: int | None = None
    error: ErrorInfo
    lane: Lane = Lane.REALTIME


# How a page's text was obtained: recognized by the model, or read from the PDF's text layer.
PageMethod = Literal["ocr", "text_layer"]


class UsageRecorded(BaseModel):
    job_id: str
    page: int
    tenant: str
    source: SourceRef
    task: str | None
    model: str
    region: str
    input_tokens: int
    output_tokens: int
    image_tokens: int
    input_price_per_million: Decimal | None
    output_price_per_million: Decimal | None
    currency: str | None
    cost: Decimal | None
    price_table: str | None
    request_id: str | None = None
    # "text_layer": read from the PDF's own text, at no cost; "ocr": recognized by the model.
    method: PageMethod = "ocr"
    # The price of `cost`: "realtime" (a call) or "batch" (a line of a batch file, half price where offered).
    pricing: Pricing = "realtime"

    @field_serializer("input_price_per_million", "output_price_per_million", "cost")
    def _money(self, value: Decimal | None) -> str | None:
        return None if value is None else format_money(value)


def deterministic_event_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def make_event(
    event_type: EventType,
    data: BaseModel,
    *,
    correlation_id: str,
    identity: tuple[object, ...],
    occurred_at: datetime | None = None,
) -> EventEnvelope:
    envelope = EventEnvelope(
        event_id=deterministic_event_id(event_type, *identity),
        event_type=event_type,
        occurred_at=occurred_at or datetime.now(UTC),
        correlation_id=correlation_id,
        data=data.model_dump(mode="json"),
    )
    size = len(envelope.to_json().encode("utf-8"))
    if size > MAX_EVENT_BYTES:
        # Only free text can grow an event; everything else is bounded by construction.
        raise ValueError(f"{event_type} event is {size} bytes, above the {MAX_EVENT_BYTES} byte limit")
    return envelope


def usage_event(data: UsageRecorded, correlation_id: str) -> EventEnvelope:
    return make_event("usage.recorded", data, correlation_id=correlation_id, identity=(data.job_id, data.page))


def completed_event(data: DocumentCompleted, correlation_id: str) -> EventEnvelope:
    return make_event("document.completed", data, correlation_id=correlation_id, identity=(data.job_id,))


def failed_event(data: DocumentFailed, correlation_id: str) -> EventEnvelope:
    return make_event("document.failed", data, correlation_id=correlation_id, identity=(data.job_id,))


def preview(text: str) -> str:
    return text if len(text) <= TEXT_PREVIEW_CHARS else text[: TEXT_PREVIEW_CHARS - 1] + "…"
