"""The local endpoint's meter: each request counted in the units AWS bills it by."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import pytest
from ocr_devkit.stack import dynamodb_units as units
from ocr_devkit.stack.metering import RequestMeter, chunks, metered, s3_action

KEY = "ASIAFUNCTIONKEY"
AUTH = f"AWS4-HMAC-SHA256 Credential={KEY}/20261203/us-east-1/{{service}}/aws4_request, SignedHeaders=host"


class TableStore:
    """A DynamoDB stand-in: items by (table, pk), changed by the app below, read by the meter."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def item(self, region: str, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.items.get((table, key["pk"]["S"]))

    def key_names(self, region: str, table: str) -> tuple[str, ...]:
        return ("pk",)

    def app(self, response: dict[str, Any] | None = None) -> Callable[..., Iterable[bytes]]:
        def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            request = json.loads(environ["wsgi.input"].read())
            action = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
            if action == "PutItem":
                self.items[(request["TableName"], request["Item"]["pk"]["S"])] = request["Item"]
            if action == "TransactWriteItems":
                for entry in request["TransactItems"]:
                    put = entry["Put"]
                    self.items[(put["TableName"], put["Item"]["pk"]["S"])] = put["Item"]
            start_response("200 OK", [])
            return [json.dumps(response or {}).encode()]

        return serve


def padded_item(pk: str, total_bytes: int) -> dict[str, Any]:
    """An item of exactly `total_bytes` by DynamoDB's size rules."""
    item = {"pk": {"S": pk}, "body": {"S": ""}}
    item["body"]["S"] = "x" * (total_bytes - units.item_size(item))
    assert units.item_size(item) == total_bytes
    return item


def call(app: Callable[..., Iterable[bytes]], *, service: str, body: bytes, **environ: Any) -> bytes:
    base = {
        "HTTP_AUTHORIZATION": AUTH.format(service=service),
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    return b"".join(app({**base, **environ}, lambda *_: None))


def dynamodb(app: Callable[..., Iterable[bytes]], action: str, request: dict[str, Any]) -> None:
    call(app, service="dynamodb", body=json.dumps(request).encode(), HTTP_X_AMZ_TARGET=f"DynamoDB_20120810.{action}")


def quantities(meter: RequestMeter) -> dict[tuple[str, str, str], float]:
    totals: dict[tuple[str, str, str], float] = {}
    for entry in meter.snapshot():
        key = (entry.service, entry.action, entry.unit)
        totals[key] = totals.get(key, 0.0) + entry.quantity
    return totals


def calls(meter: RequestMeter) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for entry in meter.snapshot():
        totals[(entry.service, entry.action)] = totals.get((entry.service, entry.action), 0) + entry.calls
    return totals


def test_a_transaction_of_three_items_of_one_and_a_half_kb_counts_twelve_write_units():
    # Given three new items of 1.5 KB each
    store, meter = TableStore(), RequestMeter()
    meter.name_caller(KEY, "RecognizeFunction")
    items = [padded_item(f"job#{n}", 1536) for n in range(3)]
    # When one transaction writes them
    dynamodb(
        metered(store.app(), meter, store),
        "TransactWriteItems",
        {"TransactItems": [{"Put": {"TableName": "jobs", "Item": item}} for item in items]},
    )
    # Then each costs 2 KB rounded, twice for the transaction: 3 x 2 x 2 = 12 WRU, in one call
    assert quantities(meter) == {("dynamodb", "TransactWriteItems", "wru"): 12}
    assert calls(meter) == {("dynamodb", "TransactWriteItems"): 1}
    assert {entry.caller for entry in meter.snapshot()} == {"RecognizeFunction"}


def test_a_refused_conditional_write_still_consumes_at_the_size_of_the_item_it_found():
    # Given a 2.5 KB item that a conditional put will not replace (the app changes nothing)
    store, meter = TableStore(), RequestMeter()
    store.items[("jobs", "job#1")] = padded_item("job#1", 2560)

    def refuse(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("400 Bad Request", [])
        return [b'{"__type":"ConditionalCheckFailedException"}']

    # When the put is refused
    dynamodb(metered(refuse, meter, store), "PutItem", {"TableName": "jobs", "Item": {"pk": {"S": "job#1"}}})
    # Then it consumed 3 WRU, the item's size as it stands
    assert quantities(meter) == {("dynamodb", "PutItem", "wru"): 3}


def test_an_update_is_billed_on_the_larger_of_the_item_before_and_after():
    assert units.write_units(900, 1100) == 2
    assert units.write_units(3000, 100) == 3
    assert units.write_units(0, 0) == 1


def test_reads_round_to_four_kb_and_halve_when_eventually_consistent():
    # Given a 5 KB item
    store, meter = TableStore(), RequestMeter()
    store.items[("jobs", "job#1")] = padded_item("job#1", 5 * 1024)
    app = metered(store.app(), meter, store)
    # When it is read strongly, then eventually consistent, and a missing item is read
    dynamodb(app, "GetItem", {"TableName": "jobs", "Key": {"pk": {"S": "job#1"}}, "ConsistentRead": True})
    dynamodb(app, "GetItem", {"TableName": "jobs", "Key": {"pk": {"S": "job#1"}}})
    dynamodb(app, "GetItem", {"TableName": "jobs", "Key": {"pk": {"S": "none"}}, "ConsistentRead": True})
    # Then 2 + 1 + 1 (the minimum) RRU in three calls
    assert quantities(meter) == {("dynamodb", "GetItem", "rru"): 4}
    assert calls(meter) == {("dynamodb", "GetItem"): 3}


def test_a_query_adds_up_the_items_it_read_before_rounding():
    # Given four items of 1.5 KB (6 KB together) that a query returns
    store, meter = TableStore(), RequestMeter()
    found = [padded_item(f"p{n}", 1536) for n in range(4)]
    for item in found:
        store.items[("jobs", item["pk"]["S"])] = item
    app = metered(store.app({"Items": [{"pk": item["pk"]} for item in found]}), meter, store)
    # When the query reads them strongly consistent (returning only their keys)
    dynamodb(app, "Query", {"TableName": "jobs", "ConsistentRead": True})
    # Then 6 KB round up to 2 RRU, not 4 x 1
    assert quantities(meter) == {("dynamodb", "Query", "rru"): 2}


@pytest.mark.parametrize(
    ("value", "size"),
    [({"S": "héllo"}, 6), ({"N": "12345"}, 4), ({"N": "100"}, 2), ({"BOOL": True}, 1), ({"L": [{"S": "ab"}]}, 6)],
)
def test_attribute_values_are_sized_as_dynamodb_documents(value, size):
    assert units.value_size(value) == size


def test_an_sns_message_of_70_kb_counts_two_publishes():
    # Given a publish of 70 KB
    meter = RequestMeter()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [b"<PublishResponse/>"]

    body = urlencode({"Action": "Publish", "TopicArn": "arn:aws:sns:us-east-1:1:events", "Message": "x" * 70 * 1024})
    # When it is sent
    call(metered(app, meter, TableStore()), service="sns", body=body.encode())
    # Then it is billed as two 64 KB chunks, on its topic
    assert quantities(meter) == {("sns", "Publish", "publish"): 2}
    assert [entry.resource for entry in meter.snapshot()] == ["events"]


def test_sqs_batches_are_billed_by_payload_and_empty_receives_are_kept_apart():
    meter = RequestMeter()
    replies = iter([{"Messages": [{"Body": "y" * 100 * 1024}]}, {}, {}])

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [json.dumps(next(replies, {})).encode()]

    meter_app = metered(app, meter, TableStore())
    queue = {"QueueUrl": "http://127.0.0.1/123/pages"}
    # Given a batch of ten 10 KB messages (100 KB), a receive of one 100 KB message and an empty receive
    entries = [{"Id": str(n), "MessageBody": "z" * 10 * 1024} for n in range(10)]
    for action, request in [
        ("ReceiveMessage", queue),
        ("ReceiveMessage", queue),
        ("SendMessageBatch", {**queue, "Entries": entries}),
    ]:
        call(meter_app, service="sqs", body=json.dumps(request).encode(), HTTP_X_AMZ_TARGET=f"AmazonSQS.{action}")
    # Then each with payload counts two requests, the empty receive one, under its own action
    assert quantities(meter) == {
        ("sqs", "ReceiveMessage", "request"): 2,
        ("sqs", "ReceiveMessage (empty)", "request"): 1,
        ("sqs", "SendMessageBatch", "request"): 2,
    }
    assert chunks(0) == 1 and chunks(64 * 1024) == 1 and chunks(64 * 1024 + 1) == 2


@pytest.mark.parametrize(
    ("method", "key", "query", "copy", "expected"),
    [
        ("PUT", "a.png", {}, False, ("PutObject", "s3_tier1")),
        ("PUT", "b.png", {}, True, ("CopyObject", "s3_tier1")),
        ("GET", "", {"list-type": ["2"]}, False, ("ListObjects", "s3_tier1")),
        ("GET", "a.png", {}, False, ("GetObject", "s3_tier2")),
        ("HEAD", "a.png", {}, False, ("HeadObject", "s3_tier2")),
        ("DELETE", "a.png", {}, False, ("DeleteObject", "s3_free")),
        ("POST", "", {"delete": [""]}, False, ("DeleteObjects", "s3_free")),
    ],
)
def test_s3_requests_fall_in_their_price_class(method, key, query, copy, expected):
    assert s3_action(method, key, query, copy) == expected


def test_unsigned_requests_are_no_ones_and_not_counted():
    meter = RequestMeter()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("403 Forbidden", [])
        return [b""]

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/bucket/key", "wsgi.input": io.BytesIO(b"")}
    b"".join(metered(app, meter, TableStore())(environ, lambda *_: None))
    assert meter.snapshot() == []
