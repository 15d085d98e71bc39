"""The cost benchmark's arithmetic: counted units times the list prices of benchmarks/aws_prices.json."""

from __future__ import annotations

from decimal import Decimal

from benchmarks.cost_pricing import (
    FunctionUsage,
    Metered,
    lambda_items,
    largest,
    load_prices,
    request_items,
    requests_by_service,
    total_usd,
)

PRICES = load_prices()


def test_the_price_file_says_when_it_was_read_and_prices_every_metered_unit():
    assert PRICES.date_read and PRICES.note and PRICES.sources
    assert PRICES.price("sqs_standard_request") == Decimal("0.0000004")
    assert PRICES.price("s3_standard_tier1_request") == Decimal("0.000005")


def test_eight_seconds_at_1536_mb_on_x86_is_twelve_gb_seconds():
    # Given one invocation of a 1,536 MB x86_64 function billed 8,000 ms
    usage = FunctionUsage("RecognizeFunction", 1536, "x86_64", invocations=1, billed_ms=8000)
    # When it is priced
    items = lambda_items([usage], PRICES)
    # Then 12 GB-s at the x86 rate, plus one request
    assert usage.gb_seconds == Decimal(12)
    assert items[0].usd == Decimal(12) * Decimal("0.0000166667")
    assert items[1].quantity == 1 and items[1].usd == Decimal("0.0000002")


def test_arm64_is_priced_at_its_own_rate():
    usage = FunctionUsage("RecognizeFunction", 1024, "arm64", invocations=2, billed_ms=1000)
    (gb_seconds, _) = lambda_items([usage], PRICES)
    assert gb_seconds.usd == Decimal(1) * Decimal("0.0000133334")


def test_requests_are_priced_per_unit_and_unpriced_calls_stay_visible():
    # Given counts from the meter: 12 WRU, 3 S3 PUTs and 2 GETs, 4 SQS requests, 1 KMS call
    counted = [
        Metered("dynamodb", "TransactWriteItems", "wru", 1, 12.0),
        Metered("s3", "PutObject", "s3_tier1", 3, 3.0),
        Metered("s3", "GetObject", "s3_tier2", 2, 2.0),
        Metered("sqs", "SendMessageBatch", "request", 2, 4.0),
        Metered("kms", "GenerateDataKey", "call", 1, 1.0),
    ]
    # When they are priced
    items = {item.name: item for item in request_items(counted, PRICES)}
    # Then each line is its count times its unit price, and KMS is listed without a price
    assert items["DynamoDB TransactWriteItems"].usd == 12 * Decimal("0.000000625")
    assert items["S3 PutObject"].usd == 3 * Decimal("0.000005")
    assert items["S3 GetObject"].usd == 2 * Decimal("0.0000004")
    assert items["SQS SendMessageBatch"].usd == 4 * Decimal("0.0000004")
    assert items["kms GenerateDataKey"].usd is None
    assert total_usd(items.values()) == Decimal("0.0000075") + Decimal("0.000015") + Decimal("0.0000008") + Decimal(
        "0.0000016"
    )
    assert [item.name for item in largest(items.values(), 2)] == ["S3 PutObject", "DynamoDB TransactWriteItems"]
    assert requests_by_service(counted, [])["S3 requests"] == 5
