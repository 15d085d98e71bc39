"""Who pays for a request is the operator's choice, not the sender's: a request that names its own tenant is
refused unless RequestTenants lets its sender choose, and the local queue reports senders as SQS does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ocr_devkit.run import RunOptions, local_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def answers(pipeline, correlation_ids: set[str], timeout_s: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    found: dict[str, object] = {}
    while set(found) != correlation_ids and time.monotonic() < deadline:
        pipeline.recorder.poll(wait_s=1)
        for e in pipeline.recorder.envelopes:
            if e.event_type in ("document.completed", "document.failed") and e.correlation_id in correlation_ids:
                found.setdefault(e.correlation_id, e)
    return found


@pytest.mark.timeout(240)
def test_a_request_cannot_choose_its_tenant_by_default_and_senders_are_reported_as_sqs_does(tmp_path):
    options = RunOptions(paths=[], out_dir=tmp_path / "out")
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        pipeline.upload("incoming/receipt.png", (ROOT / "samples/receipt.png").read_bytes(), content_type="image/png")
        pipeline.wait_for_documents({"incoming/receipt.png"}, timeout_s=120)
        sqs = pipeline.stack.boto3_client("sqs")
        queue = pipeline.stack.resources["RequestQueue"].physical_name
        source = {"bucket": pipeline.input_bucket, "key": "incoming/receipt.png"}

        # The local queue stamps a message with its sender's IAM id, as SQS does (moto used one fixed id)
        probe = sqs.create_queue(QueueName="sender-probe")["QueueUrl"]
        sqs.send_message(QueueUrl=probe, MessageBody="{}")
        (message,) = sqs.receive_message(QueueUrl=probe, AttributeNames=["SenderId"])["Messages"]
        caller = pipeline.stack.boto3_client("sts").get_caller_identity()
        assert message["Attributes"]["SenderId"] == caller["UserId"]

        # When one request names who pays and another does not
        sqs.send_message(
            QueueUrl=queue, MessageBody=json.dumps({"source": source, "tenant": "acme", "correlation_id": "claims"})
        )
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"source": source, "correlation_id": "plain"}))
        found = answers(pipeline, {"claims", "plain"})

        # Then the claim is refused with its code, and the other is billed by the stack's own rule
        assert found["claims"].event_type == "document.failed"
        assert found["claims"].data["error"]["code"] == "request.tenant_not_allowed"
        assert found["plain"].event_type == "document.completed"
        assert found["plain"].data["tenant"] == "default"
