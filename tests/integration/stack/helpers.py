"""Helpers for the local-stack tests: read queues, pick records out of events, find the stack's threads."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import boto3


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message now in the queue (received and deleted)."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        messages += batch


def published(sqs: Any, recorder_url: str) -> list[dict[str, Any]]:
    """What the toy Worker published, read from a raw-delivery recorder queue."""
    return [json.loads(message["Body"]) for message in drain(sqs, recorder_url)]


def record_bodies(event: Any) -> list[str]:
    """The bodies of an SQS event's records (empty for any other event)."""
    if not isinstance(event, dict):
        return []
    return [record["body"] for record in event.get("Records", []) if "body" in record]


def stack_threads() -> list[threading.Thread]:
    """Threads the local stack started (runner pollers and executors, the moto server) that are still alive."""

    def ours(thread: threading.Thread) -> bool:
        target = getattr(thread, "_target", None)
        return thread.name.startswith("ocr-stack") or getattr(target, "__name__", "") == "_server_entry"

    return [thread for thread in threading.enumerate() if ours(thread)]


def wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


ROOT = Path(__file__).resolve().parents[3]


def write_template_copy(directory: Path, text: str) -> Path:
    """A changed copy of the project's template, written to `directory`, with its code folders still the project's."""
    # The copy lives elsewhere, so its code folders are named from the project's root.
    text = re.sub(r"(CodeUri|ContentUri): (\S+)", lambda m: f"{m[1]}: {ROOT / m[2]}/", text)
    path = directory / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def signed_as(pipeline: Any, function: str, service: str) -> Any:
    """A client holding exactly the credentials the runner gives `function`'s workers."""
    runner = pipeline.stack.runner
    environment = runner.environment_for(runner.functions[function])
    return boto3.client(
        service,
        endpoint_url=pipeline.stack.endpoint_url,
        region_name=pipeline.stack.region,
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=environment["AWS_SESSION_TOKEN"],
    )
