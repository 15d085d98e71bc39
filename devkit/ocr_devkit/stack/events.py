"""The exact event shapes Lambda hands to a handler, built from what moto returns."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

# The system attributes an SQS event record carries, in Lambda's order.
_SQS_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)


def sqs_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """ReceiveMessage's MessageAttributes → Lambda's shape (camelCase, binary as base64)."""
    shaped: dict[str, Any] = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        shaped[name] = item
    return shaped


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    system = message.get("Attributes") or {}
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {key: system[key] for key in _SQS_RECORD_ATTRIBUTES if key in system},
        "messageAttributes": sqs_message_attributes(message.get("MessageAttributes") or {}),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update({"eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": region})
    return record


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {"Records": [sqs_record(message, queue_arn, region) for message in messages]}


def s3_event_key(key: str) -> str:
    """S3 form-encodes the key in events (space → '+', UTF-8 percent-encoded) but leaves '/' alone.

    moto also encodes '/', so its key is decoded and encoded again the way S3 does it.
    """
    return quote_plus(unquote_plus(key), safe="/")


def is_s3_test_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("Event") == "s3:TestEvent"


def normalize_s3_event(event: dict[str, Any], account_id: str) -> dict[str, Any]:
    """Fill in the fields real S3 notifications carry and moto leaves out; fix the key encoding."""
    for record in event.get("Records") or []:
        request_id = uuid.uuid4().hex[:16].upper()
        record.setdefault("userIdentity", {"principalId": f"AWS:{account_id}"})
        record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
        record.setdefault("responseElements", {"x-amz-request-id": request_id, "x-amz-id-2": request_id})
        s3 = record.get("s3") or {}
        s3.get("bucket", {}).setdefault("ownerIdentity", {"principalId": account_id})
        obj = s3.get("object") or {}
        if "key" in obj:
            obj["key"] = s3_event_key(obj["key"])
        obj.setdefault("sequencer", f"{time.time_ns():X}")
    return event


def sns_event(envelope: dict[str, Any], subscription_arn: str) -> dict[str, Any]:
    """An SNS→SQS envelope (non-raw delivery) → the event Lambda gets from an SNS subscription."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": envelope.get("Type", "Notification"),
                    "MessageId": envelope.get("MessageId"),
                    "TopicArn": envelope.get("TopicArn"),
                    "Subject": envelope.get("Subject"),
                    "Message": envelope.get("Message"),
                    "Timestamp": envelope.get("Timestamp"),
                    "SignatureVersion": envelope.get("SignatureVersion", "1"),
                    "Signature": envelope.get("Signature", ""),
                    "SigningCertUrl": envelope.get("SigningCertURL", ""),
                    "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
                    "MessageAttributes": envelope.get("MessageAttributes") or {},
                },
            }
        ]
    }


def destination_record(
    *,
    event: Any,
    request_id: str,
    function_arn: str,
    condition: str,
    attempts: int,
    response: Any,
    error: dict[str, Any] | None,
) -> dict[str, Any]:
    """The invocation record an async invocation sends to its OnSuccess/OnFailure destination."""
    response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if error is not None:
        response_context["functionError"] = "Unhandled"
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function_arn}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": response_context,
        "responsePayload": error if error is not None else response,
    }


def dead_letter_attributes(request_id: str, error: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """The message attributes Lambda puts on an event it sends to a function's dead-letter queue."""
    message = json.dumps(error)[:1000] if error else "unknown error"
    return {
        "RequestID": {"DataType": "String", "StringValue": request_id},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": message},
    }
