"""Cost of a call from the usage the API returned and a versioned price table kept as data.

Prices live in `data/prices.json` with an "as of" date, because the vendor changes
them; code never holds a price. All money is Decimal and leaves this module as a string.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from .catalog import Region, canonical_model_name
from .errors import ConfigurationError
from .usage import Usage

MILLION = Decimal(1_000_000)


class PriceNotFound(ConfigurationError):
    code = "config.price_not_found"


class UnitPrice(BaseModel):
    """Price per million tokens for one model in one region."""

    model_config = ConfigDict(frozen=True)

    model: str
    region: Region
    input_per_million: Decimal
    output_per_million: Decimal
    currency: str
    price_table: str = Field(description="the 'as of' date of the table this price came from")
    batch: bool = False

    @field_serializer("input_per_million", "output_per_million")
    def _money(self, value: Decimal) -> str:
        return format_money(value)


class Cost(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Decimal
    currency: str
    unit_price: UnitPrice

    @field_serializer("amount")
    def _money(self, value: Decimal) -> str:
        return format_money(value)


def format_money(value: Decimal) -> str:
    """Plain positional notation, never scientific, with no trailing zeros beyond the unit."""
    text = format(value.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".") or "0"


class PriceTable(BaseModel):
    model_config = ConfigDict(frozen=True)

    as_of: str
    source: str
    currency: str
    unit_tokens: int
    batch_discount: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    prices: list[dict[str, Any]]

    def price_for(self, model: str, region: Region | str, *, batch: bool = False) -> UnitPrice:
        canonical = canonical_model_name(model)
        region = Region(region)
        for entry in self.prices:
            if entry["model"] == canonical and entry["region"] == region.value:
                inp, out = Decimal(str(entry["input"])), Decimal(str(entry["output"]))
                if batch:
                    factor = self.batch_discount.get(region.value, {}).get(canonical)
                    if factor is None:
                        raise PriceNotFound(f"no batch price for {canonical} in {region.value}")
                    inp, out = inp * factor, out * factor
                return UnitPrice(
                    model=canonical,
                    region=region,
                    input_per_million=inp,
                    output_per_million=out,
                    currency=entry.get("currency", self.currency),
                    price_table=self.as_of,
                    batch=batch,
                )
        raise PriceNotFound(
            f"the price table of {self.as_of} has no price for {canonical} in {region.value}",
            model=canonical,
            region=region.value,
        )

    def cost(self, usage: Usage, model: str, region: Region | str, *, batch: bool = False) -> Cost:
        price = self.price_for(model, region, batch=batch)
        return cost_of(usage, price, unit_tokens=self.unit_tokens)


def cost_of(usage: Usage, price: UnitPrice, *, unit_tokens: int = 1_000_000) -> Cost:
    """input_tokens x input price + output_tokens x output price, exactly."""
    unit = Decimal(unit_tokens)
    amount = (
        Decimal(usage.input_tokens) * price.input_per_million + Decimal(usage.output_tokens) * price.output_per_million
    ) / unit
    return Cost(amount=amount, currency=price.currency, unit_price=price)


@cache
def default_price_table() -> PriceTable:
    raw = resources.files("ocr_pipeline").joinpath("data/prices.json").read_text(encoding="utf-8")
    try:
        return PriceTable.model_validate(json.loads(raw))
    except ValueError as exc:
        raise ConfigurationError(f"the bundled price table is invalid: {exc}") from exc
