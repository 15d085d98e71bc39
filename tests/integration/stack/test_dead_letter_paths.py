"""Work that runs out of deliveries still ends its document, through DeadLetterFunction, with its code; and a
delivery that finds a lease held comes back when the lease runs out instead of spending its receives.

SQS counts a message's receives "across all queues" (ReceiveMessage API reference), so a dead letter
arrives in its dead-letter queue with its source queue's count. The template's dead-letter queues allow
more receives than their source queues; with equal counts every dead letter went straight on to
LastResortQueue and DeadLetterFunction never ran.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from ocr_devkit.run import RunOptions, local_pipeline
from ocr_devkit.stack.worker import CRASH_AFTER_PUT, CRASH_MARKER

from tests.integration.stack.helpers import write_template_copy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
RECEIPT = (ROOT / "samples/receipt.png").read_bytes()


def invocations(log: Path) -> int:
    return log.read_text(encoding="utf-8").count("START RequestId:") if log.exists() else 0


def last_resort_depth(pipeline) -> int:
    sqs = pipeline.stack.boto3_client("sqs")
    url = pipeline.stack.resources["LastResortQueue"].physical_name
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def final_events(pipeline, key: str) -> list:
    pipeline.recorder.poll(wait_s=1)
    return [
        e
        for e in pipeline.recorder.envelopes
        if e.event_type in ("document.completed", "document.failed") and (e.data.get("source") or {}).get("key") == key
    ]


@pytest.mark.timeout(240)
def test_a_page_the_model_always_fails_ends_as_page_retries_exhausted_through_the_dead_letter_function(tmp_path):
    # Given a model that answers every call with a server error (two tries per delivery, to keep it short)
    options = RunOptions(paths=[], out_dir=tmp_path / "out", function_env={"OCR_MAX_ATTEMPTS": "2"})
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        pipeline.emulator.faults.configure(fault_rate=1.0, kinds=["server_error"])

        # When an image is uploaded
        pipeline.upload("poison/receipt.png", RECEIPT, content_type="image/png")
        final = pipeline.wait_for_documents({"poison/receipt.png"}, timeout_s=200)

        # Then its page message ran out of deliveries and DeadLetterFunction ended the document
        event = final["poison/receipt.png"]
        assert event.event_type == "document.failed"
        assert event.data["error"]["code"] == "page.retries_exhausted"
        assert invocations(tmp_path / "logs" / "RecognizeFunction.log") == 5  # PageQueue's maxReceiveCount
        assert invocations(tmp_path / "logs" / "DeadLetterFunction.log") >= 1
        # And nothing reached the last-resort queue, and the document ended once
        assert last_resort_depth(pipeline) == 0
        assert len(final_events(pipeline, "poison/receipt.png")) == 1


def template_denying_job_writes_to_requests(directory: Path) -> Path:
    """template.yaml with an explicit Deny on the jobs table in RequestFunction's policy: every request fails."""
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    start = text.index("\n  RequestFunction:\n")
    end = text.index("\n  DeadLetterFunction:\n")
    function = text[start:end]
    anchor = "          Statement:\n"
    assert function.count(anchor) == 1
    deny = (
        "            - Effect: Deny\n"
        "              Action: [dynamodb:PutItem]\n"
        "              Resource: !GetAtt JobsTable.Arn\n"
    )
    text = text[:start] + function.replace(anchor, anchor + deny) + text[end:]
    return write_template_copy(directory, text)


@pytest.mark.timeout(240)
def test_a_request_that_fails_on_every_delivery_is_answered_as_request_retries_exhausted(tmp_path):
    # Given a request function that may not create jobs (a broken deploy), and an image to read
    options = RunOptions(paths=[], out_dir=tmp_path / "out", template=template_denying_job_writes_to_requests(tmp_path))
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        pipeline.upload("partner/receipt.png", RECEIPT, content_type="image/png")
        # (the upload itself is handled by UploadFunction, which keeps its rights; only the request fails)
        pipeline.wait_for_documents({"partner/receipt.png"}, timeout_s=120)
        sqs = pipeline.stack.boto3_client("sqs")
        request = {
            "source": {"bucket": pipeline.input_bucket, "key": "partner/receipt.png"},
            "task": "text_recognition",
            "correlation_id": "poison-request-1",
        }

        # When it is sent on the request queue
        sqs.send_message(
            QueueUrl=pipeline.stack.resources["RequestQueue"].physical_name, MessageBody=json.dumps(request)
        )

        # Then, once its deliveries ran out, DeadLetterFunction answered it
        deadline = time.monotonic() + 200
        answers: list = []
        while not answers and time.monotonic() < deadline:
            pipeline.recorder.poll(wait_s=1)
            answers = [e for e in pipeline.recorder.envelopes if e.correlation_id == "poison-request-1"]
        assert [a.event_type for a in answers] == ["document.failed"], answers
        assert answers[0].data["error"]["code"] == "request.retries_exhausted"
        assert answers[0].data["tenant"] == "default"
        log = (tmp_path / "logs" / "RequestFunction.log").read_text(encoding="utf-8")
        # (moto reports an explicit Deny with the code "403" where AWS says AccessDeniedException)
        assert "storage.error: DynamoDB failed" in log
        assert invocations(tmp_path / "logs" / "RequestFunction.log") == 5  # RequestQueue's maxReceiveCount
        assert invocations(tmp_path / "logs" / "DeadLetterFunction.log") >= 1
        assert last_resort_depth(pipeline) == 0


@pytest.mark.timeout(240)
def test_a_worker_killed_while_finalizing_leaves_the_document_to_end_once_when_its_lease_runs_out(tmp_path):
    # Given a recognize worker that dies right after storing the document's result, holding the
    # finalization claim, whose lease is 20 s; the service alone must cope (no Powertools guard)
    lease_s = 20
    options = RunOptions(
        paths=[],
        out_dir=tmp_path / "out",
        function_env={
            CRASH_AFTER_PUT: r"^results/.*\.json$",
            CRASH_MARKER: str(tmp_path / "crashed"),
            "CLAIM_LEASE_S": str(lease_s),
            "IDEMPOTENCY_TABLE": "",
        },
    )
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        # When an image is uploaded and recognized
        started = time.monotonic()
        pipeline.upload("crash/receipt.png", RECEIPT, content_type="image/png")
        final = pipeline.wait_for_documents({"crash/receipt.png"}, timeout_s=180)

        # Then the worker really died while finalizing
        assert (tmp_path / "crashed").exists()
        log = (tmp_path / "logs" / "RecognizeFunction.log").read_text(encoding="utf-8")
        assert log.count(f"[devkit] {CRASH_AFTER_PUT}") == 1
        # And the redelivery that found the claim held came back after the lease, not at once: the
        # message was delivered three times (crash, claim held, taken over), far below maxReceiveCount
        assert final["crash/receipt.png"].event_type == "document.completed"
        assert time.monotonic() - started >= lease_s - 2
        assert "pipeline.claim_held" in log
        assert invocations(tmp_path / "logs" / "RecognizeFunction.log") == 3
        # And the document ended exactly once, and its page was billed once
        time.sleep(2)
        assert len(final_events(pipeline, "crash/receipt.png")) == 1
        usage = Counter(e.data["page"] for e in pipeline.recorder.envelopes if e.event_type == "usage.recorded")
        assert usage == {1: 1}
        assert invocations(tmp_path / "logs" / "DeadLetterFunction.log") == 0
