"""The stack's trust boundaries hold locally as they do on AWS: the topic takes events from the stack's
functions alone, whatever other principals' policies allow, and each function may write only the
result-bucket prefixes it owns.

Runs the project's own template.yaml, with the emulator, the way a user drives it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from ocr_devkit.run import LocalPipeline, RunOptions, local_pipeline

from tests.integration.stack.helpers import signed_as

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def user_allowed_to_publish(pipeline: LocalPipeline, name: str, topics: list[str]) -> dict[str, str]:
    """A new IAM user outside the stack whose own policy lets it publish to `topics`; its access key."""
    iam = pipeline.stack.boto3_client("iam")
    iam.create_user(UserName=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": topics}],
    }
    iam.put_user_policy(UserName=name, PolicyName="publish", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def error_of(call: Any) -> tuple[int, str]:
    try:
        call()
    except ClientError as error:
        return int(error.response["ResponseMetadata"]["HTTPStatusCode"]), str(error.response["Error"]["Message"])
    return 200, ""


@pytest.mark.timeout(240)
def test_only_the_stack_functions_may_publish_to_the_topic(tmp_path: Path) -> None:
    options = RunOptions(paths=[], out_dir=tmp_path / "out", max_concurrency=2)
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        topic = str(pipeline.stack.resources["NotificationTopic"].arn)
        alarm_topic = str(pipeline.stack.resources["AlarmTopic"].arn)
        # Given a principal outside the stack whose own policy allows it to publish to the stack's topics
        keys = user_allowed_to_publish(pipeline, "not-a-stack-function", [topic, alarm_topic])
        sns = boto3.client("sns", endpoint_url=pipeline.stack.endpoint_url, region_name=pipeline.stack.region, **keys)
        forged = {"event_type": "usage.recorded", "event_id": "forged-1", "data": {"tenant": "someone-else"}}
        # When it publishes a billing event on the event topic
        status, message = error_of(lambda: sns.publish(TopicArn=topic, Message=json.dumps(forged)))
        # Then the topic's own policy refuses it, as AWS would
        assert status == 403
        assert "explicit deny in a resource-based policy" in message
        # And the stack's admin, allowed everything by its own policy, is refused too
        admin_sns = pipeline.stack.boto3_client("sns")
        assert error_of(lambda: admin_sns.publish(TopicArn=topic, Message=json.dumps(forged)))[0] == 403
        # While its policy does let it publish where no topic policy stands in the way
        assert error_of(lambda: sns.publish(TopicArn=alarm_topic, Message="a test alarm"))[0] == 200

        # When a document goes through the pipeline
        pipeline.upload("receipt.png", (ROOT / "samples/receipt.png").read_bytes(), content_type="image/png")
        final = pipeline.wait_for_documents({"receipt.png"}, timeout_s=120)
        # Then the functions publish as before: the document completes and its page is billed
        assert final["receipt.png"].event_type == "document.completed"
        types = [envelope.event_type for envelope in pipeline.recorder.envelopes]
        assert "usage.recorded" in types
        # And nothing forged reached the topic's subscribers
        assert all(envelope.event_id != "forged-1" for envelope in pipeline.recorder.envelopes)


@pytest.mark.timeout(180)
def test_each_function_may_write_only_the_result_prefixes_it_owns(tmp_path: Path) -> None:
    options = RunOptions(paths=[], out_dir=tmp_path / "out", max_concurrency=2)
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        bucket = pipeline.result_bucket
        # Given what each function writes: page and document results, document results, URL-source copies
        owned = {
            "RecognizeFunction": {"jobs/", "results/"},
            "DeadLetterFunction": {"results/"},
            "RequestFunction": {"sources/"},
            "UploadFunction": set(),
        }
        for function, prefixes in owned.items():
            s3 = signed_as(pipeline, function, "s3")
            for prefix in ("jobs/", "results/", "sources/"):
                key = f"{prefix}trust-boundary-probe/{function}.json"
                # When the function puts an object under the prefix
                status, _ = error_of(lambda s3=s3, key=key: s3.put_object(Bucket=bucket, Key=key, Body=b"{}"))
                # Then only its own prefixes take it
                assert status == (200 if prefix in prefixes else 403), (function, prefix)
