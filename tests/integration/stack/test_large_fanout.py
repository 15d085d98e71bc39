"""A 5,000-page upload is admitted within a 2-second upload function: it sends a bounded number of page
messages and hands the rest on in a PageDispatch message, instead of timing out mid-enqueue (which used to
leave one job working while Lambda's failure path announced a second, failed one).

The page queue's consumer is switched off in this copy of the template, so that what the upload function
sent can be counted on the queue; following the dispatch chain to every page is covered by
tests/unit/pipeline/test_one_job_per_upload.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ocr_devkit.run import RunOptions, local_pipeline

from tests.integration.stack.helpers import write_template_copy
from tests.unit.pipeline.test_fanout_memory import blank_pdf

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
PAGES = 5000


def template_with_a_short_upload_timeout_and_no_page_consumer(directory: Path) -> Path:
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    upload_start = text.index("\n  UploadFunction:\n")
    upload_end = text.index("\n  RecognizeFunction:\n")
    upload = text[upload_start:upload_end]
    assert upload.count("      Timeout: 60\n") == 1
    text = text[:upload_start] + upload.replace("      Timeout: 60\n", "      Timeout: 2\n") + text[upload_end:]
    pages_event = "            Queue: !GetAtt PageQueue.Arn\n"
    assert text.count(pages_event) == 1
    text = text.replace(pages_event, pages_event + "            Enabled: false\n")
    return write_template_copy(directory, text)


@pytest.mark.timeout(240)
def test_a_5000_page_upload_is_admitted_within_a_short_timeout_as_one_job(tmp_path):
    template = template_with_a_short_upload_timeout_and_no_page_consumer(tmp_path)
    options = RunOptions(paths=[], out_dir=tmp_path / "out", template=template)
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        # When a 5,000-page PDF is uploaded
        pipeline.upload("big/archive.pdf", blank_pdf(PAGES), content_type="application/pdf")

        def handled() -> list:
            # (S3's s3:TestEvent, sent when the notification is configured, is answered with no outcomes)
            return [r for r in pipeline.stack.runner.invocations("UploadFunction") if r.event.get("Records")]

        deadline = time.monotonic() + 120
        while not handled() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # a retry, if the first attempt had failed, would come 1 s later

        # Then the upload function succeeded at its first attempt, within its 2 s
        (upload,) = handled()
        assert upload.ok and not upload.timed_out, upload.error
        (outcome,) = upload.payload["outcomes"]
        assert (outcome["decision"], outcome["page_count"]) == ("enqueued", PAGES)

        # And it sent 100 page messages (400 pages) and one PageDispatch for the rest
        sqs = pipeline.stack.boto3_client("sqs")
        page_queue = pipeline.stack.resources["PageQueue"].physical_name
        depth = sqs.get_queue_attributes(QueueUrl=page_queue, AttributeNames=["ApproximateNumberOfMessages"])
        assert int(depth["Attributes"]["ApproximateNumberOfMessages"]) == 101

        # And there is one job, dispatched, and no failure announced
        dynamodb = pipeline.stack.boto3_client("dynamodb")
        items = dynamodb.scan(TableName=pipeline.jobs_table)["Items"]
        jobs = [item for item in items if item["sk"]["S"] == "JOB"]
        assert len(jobs) == 1 and jobs[0]["status"]["S"] == "running"
        pipeline.recorder.poll(wait_s=1)
        assert [e for e in pipeline.recorder.envelopes if e.event_type == "document.failed"] == []


def big_schema(target_bytes: int) -> dict:
    """A flat extraction schema of about `target_bytes` of JSON: many fields with long descriptions."""
    schema = {}
    number = 0
    while len(json.dumps(schema)) < target_bytes:
        number += 1
        schema[f"Field {number:05d}"] = "the value printed next to this label on the page, copied exactly " * 3
    return schema


@pytest.mark.timeout(240)
def test_a_200_kb_schema_on_a_50_page_pdf_is_stored_once_and_page_messages_stay_small(tmp_path):
    template = template_with_a_short_upload_timeout_and_no_page_consumer(tmp_path)
    options = RunOptions(paths=[], out_dir=tmp_path / "out", template=template)
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        pipeline.upload("big/fifty.pdf", blank_pdf(50), content_type="application/pdf")
        sqs = pipeline.stack.boto3_client("sqs")
        schema = big_schema(200 * 1024)

        # When a request asks for that schema on the 50-page PDF
        sqs.send_message(
            QueueUrl=pipeline.stack.resources["RequestQueue"].physical_name,
            MessageBody=json.dumps(
                {
                    "source": {"bucket": pipeline.input_bucket, "key": "big/fifty.pdf"},
                    "schema": schema,
                    "correlation_id": "big-schema",
                }
            ),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
            r.ok for r in pipeline.stack.runner.invocations("RequestFunction")
        ):
            time.sleep(0.5)

        # Then the job record holds the schema, once
        dynamodb = pipeline.stack.boto3_client("dynamodb")
        jobs = [i for i in dynamodb.scan(TableName=pipeline.jobs_table)["Items"] if i["sk"]["S"] == "JOB"]
        (job,) = [j for j in jobs if json.loads(j["spec"]["S"])["correlation_id"] == "big-schema"]
        assert json.loads(job["spec"]["S"])["options"]["result_schema"] == schema
        job_id = job["pk"]["S"]

        # And its 13 page messages name the job and carry none of it
        page_queue = pipeline.stack.resources["PageQueue"].physical_name
        bodies: list[str] = []
        for _ in range(20):
            received = sqs.receive_message(QueueUrl=page_queue, MaxNumberOfMessages=10, VisibilityTimeout=300)
            bodies += [m["Body"] for m in received.get("Messages", [])]
        ours = [json.loads(b) for b in bodies if json.loads(b)["job_id"] == job_id]
        assert sorted(page for message in ours for page in message["pages"]) == list(range(1, 51))
        assert all(len(json.dumps(message)) < 1024 and "job" not in message for message in ours)
