"""What counted requests and Lambda durations cost at AWS's list prices (benchmarks/aws_prices.json).

Each line item is priced from counts, never from a formula of the pipeline: Lambda's GB-seconds are the
billed milliseconds times the function's configured memory (1 GB = 1,024 MB), at the price of the
function's architecture; every other line is a count of billing units from the local endpoint's meter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

PRICES = Path(__file__).resolve().parent / "aws_prices.json"
MB_PER_GB = 1024

# The price of each metered unit (metering.py's units); None: counted, not priced here.
UNIT_PRICES: dict[tuple[str, str], str | None] = {
    ("sqs", "request"): "sqs_standard_request",
    ("sns", "publish"): "sns_standard_publish",
    ("s3", "s3_tier1"): "s3_standard_tier1_request",
    ("s3", "s3_tier2"): "s3_standard_tier2_request",
    ("dynamodb", "wru"): "dynamodb_on_demand_write_unit",
    ("dynamodb", "rru"): "dynamodb_on_demand_read_unit",
    ("secretsmanager", "api_call"): "secrets_manager_api_call",
}
_SERVICE_NAMES = {"sqs": "SQS", "sns": "SNS", "s3": "S3", "dynamodb": "DynamoDB", "secretsmanager": "Secrets Manager"}
_UNIT_NAMES = {
    "request": "requests",
    "publish": "publishes",
    "s3_tier1": "PUT/COPY/POST/LIST requests",
    "s3_tier2": "GET/other requests",
    "s3_free": "free requests",
    "wru": "WRU",
    "rru": "RRU",
    "api_call": "API calls",
    "call": "calls",
}


@dataclass(frozen=True)
class PriceList:
    date_read: str
    note: str
    sources: list[str]
    per_unit: dict[str, Decimal]  # USD per single unit

    def price(self, name: str) -> Decimal:
        return self.per_unit[name]


def load_prices(path: Path = PRICES) -> PriceList:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    per_unit = {name: Decimal(entry["usd"]) / Decimal(entry["per"]) for name, entry in data["prices"].items()}
    return PriceList(data["date_read"], data["note"], list(data["sources"]), per_unit)


@dataclass(frozen=True)
class FunctionUsage:
    """One function's invocations and billed milliseconds in a run, at its configured memory and architecture."""

    function: str
    memory_mb: int
    architecture: str
    invocations: int
    billed_ms: int

    @property
    def gb_seconds(self) -> Decimal:
        return Decimal(self.billed_ms) / 1000 * Decimal(self.memory_mb) / MB_PER_GB


@dataclass(frozen=True)
class Metered:
    """Requests of one kind (as `ocr_devkit.stack.metering.MeteredRequests`, without who sent them)."""

    service: str
    action: str
    unit: str
    calls: int
    quantity: float


@dataclass(frozen=True)
class LineItem:
    name: str
    quantity: Decimal
    unit: str
    usd: Decimal | None  # None: counted, not priced

    def to_dict(self, per: int = 1) -> dict[str, Any]:
        return {
            "name": self.name,
            "quantity": float(self.quantity / per),
            "unit": self.unit,
            "usd": None if self.usd is None else float(self.usd / per),
        }


def lambda_items(functions: Iterable[FunctionUsage], prices: PriceList) -> list[LineItem]:
    items: list[LineItem] = []
    invocations = 0
    for usage in functions:
        invocations += usage.invocations
        if not usage.invocations:
            continue
        rate = prices.price(f"lambda_gb_second_{usage.architecture}")
        items.append(
            LineItem(
                f"Lambda {usage.function} ({usage.memory_mb} MB, {usage.architecture})",
                usage.gb_seconds,
                "GB-s",
                usage.gb_seconds * rate,
            )
        )
    items.append(
        LineItem("Lambda requests", Decimal(invocations), "invocations", invocations * prices.price("lambda_request"))
    )
    return items


def request_items(requests: Iterable[Metered], prices: PriceList) -> list[LineItem]:
    """One line per service, action and unit, summed over callers and resources."""
    totals: dict[tuple[str, str, str], Decimal] = {}
    for entry in requests:
        key = (entry.service, entry.action, entry.unit)
        totals[key] = totals.get(key, Decimal(0)) + Decimal(str(entry.quantity))
    items: list[LineItem] = []
    for (service, action, unit), quantity in sorted(totals.items()):
        if unit == "s3_free" or (unit == "call" and service == "dynamodb"):
            continue
        price_name = UNIT_PRICES.get((service, unit))
        usd = quantity * prices.price(price_name) if price_name else None
        name = f"{_SERVICE_NAMES.get(service, service)} {action}"
        items.append(LineItem(name, quantity, _UNIT_NAMES.get(unit, unit), usd))
    return items


def total_usd(items: Iterable[LineItem]) -> Decimal:
    return sum((item.usd for item in items if item.usd is not None), Decimal(0))


def largest(items: Iterable[LineItem], count: int = 5) -> list[LineItem]:
    priced = [item for item in items if item.usd]
    return sorted(priced, key=lambda item: item.usd or 0, reverse=True)[:count]


def requests_by_service(requests: Iterable[Metered], functions: Iterable[FunctionUsage]) -> dict[str, float]:
    """Billing units by service: Lambda invocations, SQS requests, SNS publishes, S3 requests, DynamoDB units."""
    counts: dict[str, float] = {"lambda invocations": float(sum(f.invocations for f in functions))}
    for entry in requests:
        if entry.unit in ("s3_free", "call"):
            continue
        label = f"{_SERVICE_NAMES.get(entry.service, entry.service)} {_UNIT_NAMES.get(entry.unit, entry.unit)}"
        if entry.service == "s3":
            label = "S3 requests"
        counts[label] = counts.get(label, 0.0) + entry.quantity
    return counts


def qwen_usd(envelopes: list[Any], keys: set[str]) -> tuple[Decimal, int, str | None]:
    """The Qwen cost the usage events of `keys` report, how many pages they bill, and their currency."""
    total, billed, currency = Decimal(0), 0, None
    for envelope in envelopes:
        if envelope.event_type != "usage.recorded" or (envelope.data.get("source") or {}).get("key") not in keys:
            continue
        billed += 1
        currency = envelope.data.get("currency") or currency
        if envelope.data.get("cost") is not None:
            total += Decimal(str(envelope.data["cost"]))
    return total, billed, currency


def cost_row(
    items: list[LineItem],
    functions: list[FunctionUsage],
    counted: list[Metered],
    *,
    pages: int,
    qwen_usd: tuple[Decimal, int, str | None],
    elapsed_s: float,
    empty_receives: int,
) -> dict[str, Any]:
    aws = total_usd(items)
    qwen, usage_events, currency = qwen_usd
    return {
        "pages": pages,
        "elapsed_s": round(elapsed_s, 1),
        "aws_usd_per_page": float(aws / pages),
        "qwen_usd_per_page": float(qwen / pages),
        "qwen_currency": currency,
        "usage_events": usage_events,
        "ratio": float(aws / qwen) if qwen else None,
        "largest": [
            {**item.to_dict(pages), "share": round(float(item.usd / aws), 3) if aws and item.usd else 0.0}
            for item in largest(items)
        ],
        "line_items": [item.to_dict(pages) for item in items],
        "units_per_page": {
            name: round(count / pages, 3) for name, count in requests_by_service(counted, functions).items()
        },
        "lambda_ms_per_page": {f.function: round(f.billed_ms / pages, 1) for f in functions if f.invocations},
        "empty_receives": empty_receives,
    }


def scaled(items: Iterable[LineItem], factor: Decimal) -> list[LineItem]:
    """Each line item `factor` times over: what `factor` repetitions of the counted work cost."""
    return [
        LineItem(item.name, item.quantity * factor, item.unit, None if item.usd is None else item.usd * factor)
        for item in items
    ]


@dataclass(frozen=True)
class RunProfile:
    """What `runs` runs of one kind of one function were counted at: billed milliseconds and requests, in total."""

    function: str
    runs: int
    billed_ms: int
    requests: tuple[Metered, ...]


def without_runs(requests: Iterable[Metered], profile: RunProfile, runs: int) -> tuple[list[Metered], list[str]]:
    """`requests` (summed by service, action and unit) less what `runs` runs of `profile`'s kind make, at the
    profile's mean per run.

    A line that would go below zero stays at zero and is named in the second list: the runs did not all
    make the same requests, which the caller reports rather than hides.
    """
    counted = _summed(requests)
    expected = (
        {
            key: (calls * runs / profile.runs, quantity * runs / profile.runs)
            for key, (calls, quantity) in _summed(profile.requests).items()
        }
        if profile.runs and runs
        else {}
    )
    remaining: list[Metered] = []
    shortfalls: list[str] = []
    for key in sorted(set(counted) | set(expected)):
        calls, quantity = counted.get(key, (0.0, 0.0))
        less_calls, less_quantity = expected.get(key, (0.0, 0.0))
        if quantity - less_quantity < -1e-6 or calls - less_calls < -1e-6:
            shortfalls.append(f"{key[0]} {key[1]}: {quantity:g} counted, {less_quantity:g} expected of those runs")
        left_calls, left_quantity = max(0, round(calls - less_calls)), max(0.0, round(quantity - less_quantity, 6))
        if left_calls or left_quantity:
            remaining.append(Metered(key[0], key[1], key[2], left_calls, left_quantity))
    return remaining, shortfalls


def _summed(requests: Iterable[Metered]) -> dict[tuple[str, str, str], tuple[float, float]]:
    totals: dict[tuple[str, str, str], tuple[float, float]] = {}
    for entry in requests:
        calls, quantity = totals.get((entry.service, entry.action, entry.unit), (0.0, 0.0))
        totals[(entry.service, entry.action, entry.unit)] = (calls + entry.calls, quantity + entry.quantity)
    return totals


def deployed_functions(stack: Any) -> dict[str, tuple[int, str]]:
    """Each function's MemorySize and architecture, as the template deploys them (what Lambda bills by)."""
    return {
        logical_id: (
            spec.memory_mb,
            str((stack.template.properties(logical_id).get("Architectures") or ["x86_64"])[0]),
        )
        for logical_id, spec in stack.runner.functions.items()
    }
