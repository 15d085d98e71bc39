"""Every signed request the local AWS endpoint serves, counted in the units AWS bills it by.

`metered` wraps the moto server's WSGI app and writes into a `RequestMeter`, which the benchmark
reads and resets around a run (`LocalStack.meter`). Each count is keyed by who signed the request
(a function's role, which Lambda's SQS pollers sign with too, or the local admin), the service, the
API action, the resource (bucket, table, queue or topic name) and the billing unit:

* SQS: billed requests, each 64 KB chunk of a request's payload one more (`request`); a receive that
  returned nothing is its own action, `ReceiveMessage (empty)`, since its count follows the clock.
* SNS: publishes, each 64 KB chunk of the message and its attributes one more (`publish`); other
  SNS actions are counted as calls (`call`).
* S3: requests by price class, PUT/COPY/POST/LIST (`s3_tier1`), GET and every other (`s3_tier2`),
  DELETE (`s3_free`).
* DynamoDB: request units (`rru`, `wru`) as `dynamodb_units` rounds them, from the items' sizes
  before and after the request, read from moto's own state. The DynamoDB lock of `moto_server.py`
  sits outside this wrapper, so nothing else changes an item between the two readings.
* Secrets Manager: API calls (`api_call`); every other service: `call`.

A request is counted whatever its answer (a refused conditional write consumes, a throttled retry is
billed again); an unsigned request is not counted, as it is no account's.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from . import dynamodb_units as units

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

CHUNK_BYTES = 64 * 1024
ADMIN_CALLER = "admin"
UNKNOWN_CALLER = "unknown"
_CREDENTIAL_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass(frozen=True)
class MeterKey:
    caller: str
    service: str
    action: str
    resource: str
    unit: str


@dataclass(frozen=True)
class MeteredRequests:
    """Requests of one kind: how many calls, and how many billing units they came to."""

    caller: str
    service: str
    action: str
    resource: str
    unit: str
    calls: int
    quantity: float


class RequestMeter:
    """Thread-safe counts of the requests the local endpoint served, by `MeterKey`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[MeterKey, list[float]] = {}
        self._callers: dict[str, str] = {}

    def name_caller(self, access_key_id: str, label: str) -> None:
        with self._lock:
            self._callers[access_key_id] = label

    def caller(self, access_key_id: str) -> str:
        with self._lock:
            return self._callers.get(access_key_id, UNKNOWN_CALLER)

    def add(self, key: MeterKey, quantity: float, calls: int = 1) -> None:
        with self._lock:
            entry = self._counts.setdefault(key, [0, 0.0])
            entry[0] += calls
            entry[1] += quantity

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def snapshot(self) -> list[MeteredRequests]:
        with self._lock:
            return [
                MeteredRequests(**vars(key), calls=int(calls), quantity=quantity)
                for key, (calls, quantity) in sorted(self._counts.items(), key=lambda kv: tuple(vars(kv[0]).values()))
            ]


def chunks(payload_bytes: int) -> int:
    """Billed requests of one SQS or SNS request: one per started 64 KB of payload, at least one."""
    return max(1, math.ceil(payload_bytes / CHUNK_BYTES))


# --- the WSGI wrapper --------------------------------------------------------------------------------------------


def metered(app: WsgiApp, meter: RequestMeter, items: ItemSource) -> WsgiApp:
    """`app`, counting into `meter`; DynamoDB's units from the items' sizes in `items`."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if match is None:
            return app(environ, start_response)
        caller, region, service = meter.caller(match[1]), match[2], match[3]
        if service == "s3":
            _count_s3(meter, caller, environ)
            return app(environ, start_response)
        body = _read_body(environ)
        action, request = _action_and_request(environ, body)
        if service == "dynamodb":
            return _serve_dynamodb(app, environ, start_response, meter, caller, region, action, request, items)
        if service == "sqs" and action == "ReceiveMessage":
            response = list(app(environ, start_response))
            _count_sqs_receive(meter, caller, request, b"".join(response))
            return response
        _count_other(meter, caller, service, action, request)
        return app(environ, start_response)

    return serve


def _read_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body: bytes = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _action_and_request(environ: dict[str, Any], body: bytes) -> tuple[str, dict[str, Any]]:
    """The API action and the request's parameters, for JSON (X-Amz-Target) and query protocols."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        return target.rpartition(".")[2], request if isinstance(request, dict) else {}
    form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace") or environ.get("QUERY_STRING", "")).items()}
    return form.get("Action", "Unknown"), form


def _name(arn_or_url: str) -> str:
    return re.split(r"[:/]", arn_or_url)[-1] if arn_or_url else ""


def _count_other(meter: RequestMeter, caller: str, service: str, action: str, request: dict[str, Any]) -> None:
    if service == "sqs":
        queue = _name(str(request.get("QueueUrl", "")))
        payload = 0
        if action == "SendMessage":
            payload = _sqs_message_bytes(request)
        elif action == "SendMessageBatch":
            payload = sum(_sqs_message_bytes(entry) for entry in request.get("Entries") or [])
        meter.add(MeterKey(caller, service, action, queue, "request"), chunks(payload))
    elif service == "sns" and action in ("Publish", "PublishBatch"):
        topic = _name(str(request.get("TopicArn") or request.get("TargetArn") or ""))
        meter.add(MeterKey(caller, service, action, topic, "publish"), chunks(_sns_payload_bytes(request)))
    elif service == "secretsmanager":
        meter.add(MeterKey(caller, service, action, _name(str(request.get("SecretId", ""))), "api_call"), 1)
    else:
        meter.add(MeterKey(caller, service, action, "", "call"), 1)


def _attribute_bytes(attributes: Mapping[str, Any]) -> int:
    size = 0
    for name, value in attributes.items():
        size += len(name.encode("utf-8"))
        for part in ("DataType", "StringValue", "BinaryValue"):
            size += len(str(value.get(part, "")).encode("utf-8")) if isinstance(value, Mapping) else 0
    return size


def _sqs_message_bytes(message: Mapping[str, Any]) -> int:
    body = len(str(message.get("MessageBody", message.get("Body", ""))).encode("utf-8"))
    return body + _attribute_bytes(message.get("MessageAttributes") or {})


def _sns_payload_bytes(request: Mapping[str, Any]) -> int:
    """Message, subject and attributes of a query-protocol Publish (or every entry of a PublishBatch)."""
    return sum(
        len(str(value).encode("utf-8"))
        for name, value in request.items()
        if name in ("Message", "Subject")
        or (name.startswith("PublishBatchRequestEntries.") and name.rsplit(".", 1)[-1] in ("Message", "Subject"))
        or (
            "MessageAttributes.entry." in name
            and name.rsplit(".", 1)[-1] in ("Name", "DataType", "StringValue", "BinaryValue")
        )
    )


def _count_sqs_receive(meter: RequestMeter, caller: str, request: dict[str, Any], response: bytes) -> None:
    queue = _name(str(request.get("QueueUrl", "")))
    try:
        messages = json.loads(response or b"{}").get("Messages") or []
    except (ValueError, AttributeError):
        messages = []
    action = "ReceiveMessage" if messages else "ReceiveMessage (empty)"
    payload = sum(_sqs_message_bytes(m) for m in messages)
    meter.add(MeterKey(caller, "sqs", action, queue, "request"), chunks(payload))


# --- S3 ----------------------------------------------------------------------------------------------------------


def s3_action(method: str, key: str, query: Mapping[str, Any], copy_source: bool) -> tuple[str, str]:
    """(action, price class) of a path-style S3 request."""
    if method == "DELETE":
        return ("DeleteObject" if key else "DeleteBucket"), "s3_free"
    if method == "PUT":
        if copy_source:
            return ("UploadPartCopy" if "partNumber" in query else "CopyObject"), "s3_tier1"
        if key:
            return ("UploadPart" if "partNumber" in query else "PutObject"), "s3_tier1"
        return "PutBucket", "s3_tier1"
    if method == "POST":
        if "delete" in query:
            return "DeleteObjects", "s3_free"
        if "uploads" in query:
            return "CreateMultipartUpload", "s3_tier1"
        if "uploadId" in query:
            return "CompleteMultipartUpload", "s3_tier1"
        return "PostObject", "s3_tier1"
    if method == "GET":
        if not key:
            listing = not query or bool(
                {"list-type", "prefix", "delimiter", "marker", "uploads", "versions"} & set(query)
            )
            return ("ListObjects", "s3_tier1") if listing else ("GetBucketConfiguration", "s3_tier2")
        return ("ListParts", "s3_tier1") if "uploadId" in query else ("GetObject", "s3_tier2")
    if method == "HEAD":
        return ("HeadObject" if key else "HeadBucket"), "s3_tier2"
    return method, "s3_tier2"


def _count_s3(meter: RequestMeter, caller: str, environ: dict[str, Any]) -> None:
    bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    action, unit = s3_action(
        environ.get("REQUEST_METHOD", "GET"), unquote(key), query, bool(environ.get("HTTP_X_AMZ_COPY_SOURCE"))
    )
    meter.add(MeterKey(caller, "s3", action, bucket, unit), 1)


# --- DynamoDB ----------------------------------------------------------------------------------------------------

_WRITES = ("Put", "Update", "Delete", "ConditionCheck")
KeyOf = Callable[[str, Mapping[str, Any]], dict[str, Any]]


class ItemSource(Protocol):
    """The endpoint's DynamoDB state: an item as it stands (wire form) and a table's key attributes."""

    def item(self, region: str, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def key_names(self, region: str, table: str) -> tuple[str, ...]: ...


def write_targets(action: str, request: Mapping[str, Any], key_of: KeyOf) -> list[tuple[str, Any, bool]]:
    """(table, key, transactional) of every item a write request writes (or checks, in a transaction)."""
    if action == "PutItem":
        return [(request["TableName"], key_of(request["TableName"], request.get("Item") or {}), False)]
    if action in ("UpdateItem", "DeleteItem"):
        return [(request["TableName"], request.get("Key") or {}, False)]
    targets: list[tuple[str, Any, bool]] = []
    if action == "TransactWriteItems":
        for entry in request.get("TransactItems") or []:
            for kind in _WRITES:
                if kind in entry:
                    part = entry[kind]
                    key = part.get("Key") or key_of(part["TableName"], part.get("Item") or {})
                    targets.append((part["TableName"], key, True))
    elif action == "BatchWriteItem":
        for table, requests in (request.get("RequestItems") or {}).items():
            for entry in requests:
                if "PutRequest" in entry:
                    targets.append((table, key_of(table, entry["PutRequest"].get("Item") or {}), False))
                elif "DeleteRequest" in entry:
                    targets.append((table, entry["DeleteRequest"].get("Key") or {}, False))
    return targets


def read_targets(action: str, request: Mapping[str, Any]) -> list[tuple[str, Any, bool, bool]]:
    """(table, key, consistent, transactional) of every item a key-addressed read reads."""
    if action == "GetItem":
        return [(request["TableName"], request.get("Key") or {}, bool(request.get("ConsistentRead")), False)]
    if action == "TransactGetItems":
        return [
            (entry["Get"]["TableName"], entry["Get"].get("Key") or {}, True, True)
            for entry in request.get("TransactItems") or []
            if "Get" in entry
        ]
    if action == "BatchGetItem":
        return [
            (table, key, bool(spec.get("ConsistentRead")), False)
            for table, spec in (request.get("RequestItems") or {}).items()
            for key in spec.get("Keys") or []
        ]
    return []


def _serve_dynamodb(
    app: WsgiApp,
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    meter: RequestMeter,
    caller: str,
    region: str,
    action: str,
    request: dict[str, Any],
    items: ItemSource,
) -> Iterable[bytes]:
    def key_of(table: str, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in items.key_names(region, table) if name in item}

    def size(table: str, key: Mapping[str, Any]) -> int:
        return units.item_size(items.item(region, table, key)) if key else 0

    writes = write_targets(action, request, key_of)
    reads = read_targets(action, request)
    before = [size(table, key) for table, key, _ in writes]
    read_sizes = [size(table, key) for table, key, _, _ in reads]
    response = list(app(environ, start_response))
    table_name = str(request.get("TableName") or "")
    # One call per request, under its (first) table; the units under each table they were spent on.
    if writes:
        after = [size(table, key) for table, key, _ in writes]
        for (table, _, transactional), old, new in zip(writes, before, after, strict=True):
            wru = units.write_units(old, new, transactional=transactional)
            meter.add(MeterKey(caller, "dynamodb", action, table, "wru"), wru, calls=0)
        meter.add(MeterKey(caller, "dynamodb", action, table_name or writes[0][0], "wru"), 0)
    elif reads:
        for (table, _, consistent, transactional), item_bytes in zip(reads, read_sizes, strict=True):
            rru = units.read_units(item_bytes, consistent=consistent, transactional=transactional)
            meter.add(MeterKey(caller, "dynamodb", action, table, "rru"), rru, calls=0)
        meter.add(MeterKey(caller, "dynamodb", action, table_name or reads[0][0], "rru"), 0)
    elif action in ("Query", "Scan"):
        # The items the page read: looked up whole, as a projection does not lower what a read costs.
        # A FilterExpression's discarded items are not seen here (the pipeline's queries have none).
        try:
            found = json.loads(b"".join(response) or b"{}").get("Items") or []
        except (ValueError, AttributeError):
            found = []
        sizes = [size(table_name, key_of(table_name, item)) for item in found]
        rru = units.query_read_units(sizes, consistent=bool(request.get("ConsistentRead")))
        meter.add(MeterKey(caller, "dynamodb", action, table_name, "rru"), rru)
    else:
        meter.add(MeterKey(caller, "dynamodb", action, table_name, "call"), 0)
    return response
