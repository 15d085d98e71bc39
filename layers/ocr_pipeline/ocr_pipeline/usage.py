"""Token usage of one OCR call, as the API reported it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
