"""Token usage of one OCR call, as the API reported it, and of the calls billed but not used."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The price a page's usage is billed at: a real-time call's, or a batch file line's (the vendor's Batch
# File API, at half the real-time price where it is offered).
Pricing = Literal["realtime", "batch"]


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    image_tokens: int = Field(ge=0)
    # "api": the service reported image tokens; "estimate": it did not (some compatible
    # servers), so the documented formula filled them in. Billing uses input/output only.
    image_tokens_source: Literal["api", "estimate"] = "api"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            image_tokens=self.image_tokens + other.image_tokens,
            image_tokens_source="api" if self.image_tokens_source == other.image_tokens_source == "api" else "estimate",
        )


ZERO_USAGE = Usage(input_tokens=0, output_tokens=0, image_tokens=0)


class BilledAttempt(BaseModel):
    """An attempt the vendor billed (its reply carried usage) whose reply we could not use, so the call
    was made again. The tenant pays for the call that succeeded; these are the operator's loss."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    image_tokens: int = Field(ge=0)
    request_id: str | None = None
    # The error code that made the reply unusable (ocr.malformed_response).
    reason: str

    @classmethod
    def of(cls, usage: Usage, *, reason: str, request_id: str | None) -> BilledAttempt:
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            image_tokens=usage.image_tokens,
            request_id=request_id,
            reason=reason,
        )
