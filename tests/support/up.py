"""Drive `ocr-pipeline up` and its sibling commands as a user does: subprocesses in one working directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3


def start_up(workdir: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`ocr-pipeline up ARGS` started in `workdir`: the process and the JSON it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ocr_devkit.cli", "up", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = process.stdout.readline() if process.stdout else ""
    if not line:
        stop_up(process)
        raise AssertionError(f"`up` printed nothing; stderr: {process.stderr.read() if process.stderr else ''}")
    return process, json.loads(line)


def stop_up(process: subprocess.Popen[str]) -> None:
    """SIGTERM, as Ctrl-C would; killed if it does not stop within a minute."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_up(workdir: Path, *args: str) -> Iterator[dict[str, Any]]:
    """`ocr-pipeline up ARGS` started in `workdir`; yields the JSON it printed, stops it with SIGTERM."""
    process, description = start_up(workdir, *args)
    try:
        yield description
    finally:
        stop_up(process)


def cli(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`ocr-pipeline ARGS` run in `workdir` (where `up` keeps its state file)."""
    return subprocess.run(
        [sys.executable, "-m", "ocr_devkit.cli", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def admin_client(description: dict[str, Any], service: str) -> Any:
    """A client signed with the credentials `up` printed (the user's side of the local stack)."""
    credentials = description.get("credentials") or {}
    return boto3.client(
        service,
        endpoint_url=description["endpoint_url"],
        region_name=description["region"],
        aws_access_key_id=credentials.get("aws_access_key_id", "testing"),
        aws_secret_access_key=credentials.get("aws_secret_access_key", "testing"),
    )


class TopicRecorder:
    """Every event the stack publishes on its topic, read from a queue subscribed with raw delivery."""

    def __init__(self, description: dict[str, Any], name: str = "events-recorder") -> None:
        self.sqs = admin_client(description, "sqs")
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        admin_client(description, "sns").subscribe(
            TopicArn=description["outputs"]["NotificationTopicArn"],
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        self.events: list[dict[str, Any]] = []

    def poll(self) -> None:
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not messages:
                return
            for message in messages:
                self.events.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 120) -> dict[str, Any]:
        """The first event `predicate` accepts; fails the test if none arrives in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [event for event in self.events if predicate(event)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                seen = [(e.get("event_type"), e.get("correlation_id")) for e in self.events]
                raise AssertionError(f"no matching event within {timeout_s:.0f} s; seen: {seen}")
            self.poll()
