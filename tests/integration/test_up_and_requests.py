"""`ocr-pipeline up`, driven the way an integrating system would: plain boto3 against the printed endpoint.

Requests go on the request queue; every answer is read from a queue subscribed to the topic with a
filter policy on `event_type`, exactly as a consumer in the cloud would set it up.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.up import admin_client, start_up, stop_up
from tests.support.up import cli as run_cli

ROOT = Path(__file__).resolve().parents[2]
PARTNER = "partner-documents"
FINAL = ["document.completed", "document.failed"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    """A running `ocr-pipeline up` and the JSON it printed; stopped with SIGTERM afterwards."""
    workdir = tmp_path_factory.mktemp("up")
    # Any sender may name who pays here (RequestTenants *=*); by default a request's own tenant is refused.
    process, description = start_up(
        workdir, "--param", f"RequestSourceBuckets={PARTNER}", "--param", "RequestTenants=*=*"
    )
    try:
        yield description, process, workdir
    finally:
        stop_up(process)


def client(description, service):
    # IAM is enforced: an integrating system signs with credentials the stack knows, here its admin user's.
    return admin_client(description, service)


def subscribe_replies(description) -> str:
    sqs, sns = client(description, "sqs"), client(description, "sns")
    queue_url = sqs.create_queue(QueueName="integration-replies")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(
        TopicArn=description["outputs"]["NotificationTopicArn"],
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"FilterPolicy": json.dumps({"event_type": FINAL}), "RawMessageDelivery": "true"},
    )
    return queue_url


def read_replies(description, queue_url: str, wanted: int, timeout_s: float) -> list[dict]:
    sqs = client(description, "sqs")
    replies: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(replies) < wanted and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get(
            "Messages", []
        ):
            replies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return replies


def queue_depth(description, url: str) -> int:
    attributes = client(description, "sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_requests_by_message_are_answered_on_the_topic(up):
    description, _, _ = up
    outputs = description["outputs"]
    # Given: a partner bucket the stack may read, holding an image and a 3-page PDF, and a reply queue
    s3 = client(description, "s3")
    s3.create_bucket(Bucket=PARTNER)
    s3.upload_file(str(ROOT / "samples" / "receipt.png"), PARTNER, "incoming/receipt.png")
    s3.upload_file(str(ROOT / "samples" / "report.pdf"), PARTNER, "incoming/report.pdf")
    replies_url = subscribe_replies(description)
    sqs = client(description, "sqs")
    requests = outputs["RequestQueueUrl"]

    # When: four requests arrive, two good and two bad
    sqs.send_message(
        QueueUrl=requests,
        MessageBody=json.dumps(
            {"source": {"bucket": PARTNER, "key": "incoming/receipt.png"}, "tenant": "acme", "correlation_id": "s3-1"}
        ),
    )
    sqs.send_message(
        QueueUrl=requests,
        MessageBody=json.dumps(
            {
                "source": {"bucket": PARTNER, "key": "incoming/report.pdf"},
                "task": "text_recognition",
                "correlation_id": "pdf-1",
            }
        ),
    )
    malformed = sqs.send_message(QueueUrl=requests, MessageBody="{this is not json")["MessageId"]
    sqs.send_message(
        QueueUrl=requests,
        MessageBody=json.dumps(
            {"source": {"url": "https://169.254.169.254/latest/meta-data/"}, "correlation_id": "url-1"}
        ),
    )

    # Then: exactly one final event per request, each carrying its correlation id
    replies = read_replies(description, replies_url, wanted=4, timeout_s=240)
    by_correlation = {reply["correlation_id"]: reply for reply in replies}
    assert sorted(by_correlation) == sorted(["s3-1", "pdf-1", malformed, "url-1"]), replies
    assert all(reply["event_type"] in FINAL for reply in replies)

    image = by_correlation["s3-1"]
    assert image["event_type"] == "document.completed"
    assert image["data"]["tenant"] == "acme" and "TOTAL" in image["data"]["text_preview"]

    pdf = by_correlation["pdf-1"]
    assert pdf["event_type"] == "document.completed" and pdf["data"]["page_count"] == 3
    result_bucket, result_key = pdf["data"]["result_uri"].removeprefix("s3://").split("/", 1)
    document = json.loads(s3.get_object(Bucket=result_bucket, Key=result_key)["Body"].read())
    assert [page["page"] for page in document["pages"]] == [1, 2, 3]

    assert by_correlation[malformed]["data"]["error"]["code"] == "request.malformed"
    forbidden = by_correlation["url-1"]["data"]
    assert forbidden["error"]["code"] == "request.source_forbidden" and forbidden["source"] is None

    # ...and the bad requests were removed, not retried into the dead-letter queue
    time.sleep(3)
    assert read_replies(description, replies_url, wanted=1, timeout_s=3) == []
    assert queue_depth(description, requests) == 0
    assert queue_depth(description, outputs["RequestDeadLetterQueueUrl"]) == 0


def test_submit_and_replay_work_against_the_running_stack(up):
    description, _, workdir = up
    outputs = description["outputs"]
    sqs = client(description, "sqs")
    # Given: a request parked in the last-resort queue (as if its dead-letter handling had failed)
    request = {"source": {"bucket": PARTNER, "key": "incoming/receipt.png"}, "correlation_id": "parked-1"}
    sqs.send_message(QueueUrl=outputs["LastResortQueueUrl"], MessageBody=json.dumps(request))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_cli(workdir, *args, timeout=180)

    # When: it is replayed to the request queue, and a new request is submitted and waited for
    replayed = cli("replay", "LastResortQueue", "--to", "RequestQueue", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["messages"] == 1
    submitted = cli("submit", f"s3://{PARTNER}/incoming/receipt.png", "--correlation-id", "cli-1", "--wait", "--json")

    # Then: the submitted request is answered, and the replayed one left its queue
    assert submitted.returncode == 0, submitted.stderr
    reply = json.loads(submitted.stdout)["reply"]
    assert reply["event_type"] == "document.completed" and reply["correlation_id"] == "cli-1"
    assert queue_depth(description, outputs["LastResortQueueUrl"]) == 0
    ambiguous = cli("replay", "LastResortQueue")
    assert ambiguous.returncode == 2 and "--to" in ambiguous.stderr


def test_sigterm_stops_up_cleanly(up):
    _, process, workdir = up
    assert (workdir / ".ocr-pipeline" / "up.json").is_file()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert "stopped (SIGTERM)" in process.stderr.read()
    assert not (workdir / ".ocr-pipeline" / "up.json").exists()
