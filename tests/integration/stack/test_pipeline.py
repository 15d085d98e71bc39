"""The toy pipeline on the local stack, driven the way a user drives it: upload to S3, send to SQS, read queues."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ocr_devkit.stack.local import LocalStack

from .helpers import drain, published, record_bodies

pytestmark = pytest.mark.integration

LEAKY = "LEAKY_PARENT_VARIABLE"


@pytest.fixture(scope="module")
def stack(toy_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # A variable of the runner's own environment, which no worker may see.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LEAKY, "must-not-reach-workers")
        log_dir = tmp_path_factory.mktemp("toy-logs")
        with LocalStack(toy_template, stack_name="toy", log_dir=log_dir, seed=1) as local:
            yield local


@pytest.fixture
def sqs(stack: LocalStack) -> Any:
    return stack.boto3_client("sqs")


def dead_letters(stack: LocalStack, sqs: Any) -> list[str]:
    """The bodies now in the work queue's DLQ (read and deleted)."""
    return [message["Body"] for message in drain(sqs, str(stack.resources["WorkDLQ"].url))]


def invocations_with(stack: LocalStack, function: str, body: str) -> list[Any]:
    return [r for r in stack.runner.invocations(function) if body in record_bodies(r.event)]


def test_provisioning_follows_the_template(stack: LocalStack) -> None:
    # Given the toy template, provisioned at start
    resources = stack.resources
    s3, sqs = stack.boto3_client("s3"), stack.boto3_client("sqs")

    # Then the bucket has its explicit name and its settings
    bucket = resources["Inbox"].physical_name
    assert bucket == "toy-inbox"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["BlockPublicAcls"] is True
    # And the work queue redrives to the DLQ, which was created first
    attributes = sqs.get_queue_attributes(QueueUrl=resources["WorkQueue"].url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "30"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": resources["WorkDLQ"].arn,
        "maxReceiveCount": 2,
    }
    # And the table has its time-to-live attribute
    ttl = stack.boto3_client("dynamodb").describe_time_to_live(TableName=resources["Jobs"].physical_name)
    assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    # And a function's !Ref to the secret is the ARN moto generated, not a guess
    secret_arn = resources["ApiKey"].arn
    assert stack.runner.functions["Worker"].environment["SECRET_ARN"] == secret_arn
    secret = stack.boto3_client("secretsmanager").get_secret_value(SecretId=secret_arn)
    assert json.loads(secret["SecretString"]) == {"key": "sk-local"}
    # And what has no local meaning is listed, and what the condition excludes does not exist
    assert resources.skipped["DashboardRole"]["type"] == "AWS::IAM::Role"
    assert "ProdOnlyAlarm" not in resources and "ProdOnlyAlarm" not in resources.skipped
    # And the description is JSON, with URLs on the local endpoint
    description = json.loads(json.dumps(stack.describe()))
    assert description["queues"]["WorkQueue"]["url"].startswith(stack.endpoint_url)
    assert description["queues"]["IngestUploadLocalQueue"]["local_only"] is True
    assert description["outputs"] == {"WorkQueueUrl": resources["WorkQueue"].url}
    assert json.loads(resources.to_json())["resources"]["Events"]["arn"] == resources["Events"].arn


def test_upload_flows_from_s3_through_both_functions_to_the_topic(stack: LocalStack, sqs: Any) -> None:
    # Given recorders on the topic: one that takes what the Worker publishes, one whose filter excludes it
    recorder = stack.subscribe_queue_to_topic("Events", raw=True)
    filtered_out = stack.subscribe_queue_to_topic("Events", filter_policy={"kind": ["something-else"]}, raw=True)
    bucket = stack.resources["Inbox"].physical_name
    key = "incoming/My Scan ü+1.pdf"
    body = b"%PDF-1.4 toy"

    # When a user uploads one file under the prefix and one outside it
    s3 = stack.boto3_client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=bucket, Key="elsewhere/ignored.pdf", Body=b"not for us")
    stack.wait_until_idle(30)

    # Then exactly one message reaches the topic, carrying the key as S3 encodes it in events
    messages = published(sqs, recorder)
    assert len(messages) == 1
    forwarded = json.loads(messages[0]["body"])
    assert forwarded["key"] == "incoming/My+Scan+%C3%BC%2B1.pdf"
    assert forwarded["decoded_key"] == key
    assert published(sqs, filtered_out) == []

    # And the S3 handler got the event Lambda would give it
    events = [r.event for r in stack.runner.invocations("Ingest") if "Records" in r.event]
    records = [rec for event in events for rec in event["Records"] if rec["s3"]["object"]["key"] == forwarded["key"]]
    assert len(records) == 1
    record = records[0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["awsRegion"] == stack.region
    assert record["s3"]["bucket"] == {
        "name": bucket,
        "arn": f"arn:aws:s3:::{bucket}",
        "ownerIdentity": record["s3"]["bucket"]["ownerIdentity"],
    }
    assert record["s3"]["object"]["size"] == len(body)
    assert record["s3"]["object"]["eTag"] == hashlib.md5(body).hexdigest()
    assert {"userIdentity", "requestParameters", "responseElements"} <= set(record)
    # And S3's test event, sent when the notification was configured, reached the handler too
    assert any(r.event.get("Event") == "s3:TestEvent" for r in stack.runner.invocations("Ingest"))

    # And the SNS-triggered Notify function got the published message in Lambda's SNS event shape
    sns_records = [
        rec
        for r in stack.runner.invocations("Notify")
        for rec in r.event["Records"]
        if json.loads(json.loads(rec["Sns"]["Message"])["body"])["key"] == forwarded["key"]
    ]
    assert len(sns_records) == 1
    topic_arn = stack.resources["Events"].arn
    assert sns_records[0]["EventSource"] == "aws:sns"
    assert sns_records[0]["EventSubscriptionArn"].startswith(f"{topic_arn}:")
    assert sns_records[0]["Sns"]["TopicArn"] == topic_arn
    assert sns_records[0]["Sns"]["MessageAttributes"] == {"kind": {"Type": "String", "Value": "done"}}


def test_each_worker_has_its_own_environment_and_the_layer(stack: LocalStack, sqs: Any) -> None:
    # Given a recorder on the topic
    recorder = stack.subscribe_queue_to_topic("Events", raw=True)

    # When a file flows through both functions
    stack.boto3_client("s3").put_object(
        Bucket=stack.resources["Inbox"].physical_name, Key="incoming/env.txt", Body=b"x"
    )
    stack.wait_until_idle(30)

    # Then each function saw its own value of WHO, the Globals value of STAGE, and its own name
    (message,) = published(sqs, recorder)
    worker = message["worker"]
    ingest = json.loads(message["body"])["ingest"]
    functions = stack.runner.functions
    assert (ingest["who"], worker["who"]) == ("ingest", "worker")
    assert ingest["stage"] == worker["stage"] == "test"
    assert ingest["function_name"] == ingest["context_function_name"] == functions["Ingest"].function_name
    assert worker["function_name"] == functions["Worker"].function_name
    assert (ingest["memory_limit_in_mb"], worker["memory_limit_in_mb"]) == (256, 256)
    assert 0 < worker["remaining_ms"] <= 2000 < ingest["remaining_ms"] <= 10_000
    # And they ran in different processes, against the local endpoint, without the runner's own variables
    assert ingest["pid"] != worker["pid"] != os.getpid()
    assert ingest["endpoint"] == worker["endpoint"] == stack.endpoint_url
    assert ingest["leaked"] is None and worker["leaked"] is None
    # And the layer module was importable in both
    assert ingest["greeting"] == worker["greeting"] == "hello from the toy layer"


def test_partial_batch_failure_deletes_only_the_good_records(stack: LocalStack, sqs: Any) -> None:
    # Given a recorder on the topic
    recorder = stack.subscribe_queue_to_topic("Events", raw=True)
    work_queue = stack.resources["WorkQueue"].url

    # When one batch holds two good records and one the handler reports as failed
    sqs.send_message_batch(
        QueueUrl=work_queue,
        Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(["ok-a", "fail-b", "ok-c"])],
    )
    stack.wait_until_idle(30)

    # Then each good record was processed once and never redelivered
    assert sorted(m["body"] for m in published(sqs, recorder)) == ["ok-a", "ok-c"]
    assert len(invocations_with(stack, "Worker", "ok-a")) == 1
    # And the failed record was retried until maxReceiveCount (2), then moved to the DLQ
    assert len(invocations_with(stack, "Worker", "fail-b")) == 2
    assert dead_letters(stack, sqs) == ["fail-b"]


def test_a_raised_exception_fails_the_whole_batch_into_the_dlq(stack: LocalStack, sqs: Any) -> None:
    # Given a recorder on the topic
    recorder = stack.subscribe_queue_to_topic("Events", raw=True)

    # When a batch holds a good record followed by one that makes the handler raise
    sqs.send_message_batch(
        QueueUrl=stack.resources["WorkQueue"].url,
        Entries=[{"Id": "0", "MessageBody": "ok-before-crash"}, {"Id": "1", "MessageBody": "crash-1"}],
    )
    stack.wait_until_idle(30)

    # Then the crash was retried once and every attempt failed with the handler's error
    attempts = invocations_with(stack, "Worker", "crash-1")
    assert len(attempts) == 2
    assert {(r.ok, r.error["errorType"]) for r in attempts} == {(False, "ValueError")}
    # And both records of the failed batch ended in the DLQ, the good one after being processed (at least once)
    assert sorted(dead_letters(stack, sqs)) == ["crash-1", "ok-before-crash"]
    assert {m["body"] for m in published(sqs, recorder)} == {"ok-before-crash"}


def test_an_invocation_over_the_timeout_kills_and_replaces_the_worker(stack: LocalStack, sqs: Any) -> None:
    # Given the Worker function (Timeout 2 s)
    work_queue = stack.resources["WorkQueue"].url
    killed_before = stack.runner.stats()["Worker"].workers_killed

    # When a record makes the handler sleep past its timeout
    sqs.send_message(QueueUrl=work_queue, MessageBody="sleep-1")
    stack.wait_until_idle(60)

    # Then both attempts timed out, each killing the worker that ran it
    attempts = invocations_with(stack, "Worker", "sleep-1")
    assert [(r.ok, r.timed_out, r.error["errorType"]) for r in attempts] == [(False, True, "Sandbox.Timedout")] * 2
    assert stack.runner.stats()["Worker"].workers_killed - killed_before == 2
    killed = {r.worker_pid for r in attempts}
    assert killed.isdisjoint(stack.runner.worker_pids()["Worker"])
    for pid in killed:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert dead_letters(stack, sqs) == ["sleep-1"]
    assert "Task timed out after 2.00 seconds" in (stack.log_dir / "Worker.log").read_text()  # type: ignore[operator]

    # And the next record is served by a live worker
    sqs.send_message(QueueUrl=work_queue, MessageBody="ok-after-timeout")
    stack.wait_until_idle(30)
    (after,) = invocations_with(stack, "Worker", "ok-after-timeout")
    assert after.ok and after.worker_pid not in killed


def test_a_failing_s3_invocation_is_retried_twice_then_recorded(stack: LocalStack) -> None:
    # Given the S3-triggered Ingest function
    key = "incoming/explode.txt"

    # When an upload makes its handler raise every time
    stack.boto3_client("s3").put_object(Bucket=stack.resources["Inbox"].physical_name, Key=key, Body=b"boom")
    stack.wait_until_idle(30)

    # Then it was invoked three times (Lambda's two async retries), then recorded as a failed event
    attempts = [
        r
        for r in stack.runner.invocations("Ingest")
        if "Records" in r.event and "explode" in r.event["Records"][0]["s3"]["object"]["key"]
    ]
    assert [(r.attempt, r.ok) for r in attempts] == [(1, False), (2, False), (3, False)]
    assert attempts[0].error is not None and attempts[0].error["errorType"] == "RuntimeError"
    failed = [f for f in stack.runner.failed_events() if f["function"] == "Ingest"]
    assert len(failed) == 1 and failed[0]["event"]["Records"][0]["s3"]["object"]["key"] == key
    assert stack.runner.stats()["Ingest"].dropped_events == 1
    # And its OnFailure destination got Lambda's invocation record
    (record,) = [
        json.loads(m["Body"]) for m in drain(stack.boto3_client("sqs"), str(stack.resources["IngestFailures"].url))
    ]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == attempts[0].event
    assert record["responsePayload"]["errorType"] == "RuntimeError"


def test_a_handler_that_cannot_be_imported_fails_every_invocation_with_a_cold_start(stack: LocalStack) -> None:
    # Given a function whose module imports a package that is not installed
    name = stack.runner.functions["Broken"].function_name

    # When it is invoked twice, by function name
    results = [stack.runner.invoke(name, {"attempt": attempt}) for attempt in (1, 2)]

    # Then each invocation tried a fresh environment and failed as Lambda reports an import error
    for result in results:
        assert not result.ok and result.cold_start
        assert result.error is not None and result.error["errorType"] == "Runtime.ImportModuleError"
        assert "module_that_is_not_installed" in result.error["errorMessage"]
    assert stack.runner.worker_pids()["Broken"] == []
