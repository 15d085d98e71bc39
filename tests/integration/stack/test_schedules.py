"""Scheduled functions in the local stack: fired on a timer, with their own role, retried as async invocations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ocr_devkit.stack.local import LocalStack

from .helpers import drain, stack_threads, wait_for

pytestmark = pytest.mark.integration

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  TickSchedule:
    Type: String
    Default: rate(5 minutes)
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    MemorySize: 128
Resources:
  Ticks:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "${AWS::StackName}-ticks"
  Failures:
    Type: AWS::SQS::Queue
  Recorder:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: recorder/
      Handler: app.handler
      Environment:
        Variables:
          BUCKET: !Ref Ticks
      Policies:
        - S3WritePolicy: {BucketName: !Ref Ticks}
      Events:
        Tick:
          Type: Schedule
          Properties:
            Schedule: !Ref TickSchedule
        Never:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
            Enabled: false
  Failing:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: failing/
      Handler: app.handler
      EventInvokeConfig:
        MaximumRetryAttempts: 1
        DestinationConfig:
          OnFailure:
            Type: SQS
            Destination: !GetAtt Failures.Arn
      Events:
        Tick:
          Type: Schedule
          Properties:
            Schedule: cron(0 3 * * ? *)
"""

RECORDER = """\
import json
import os

import boto3


def handler(event, context):
    # One object per tick, named after the event's id: a repeated delivery of one tick writes the same key.
    boto3.client("s3").put_object(Bucket=os.environ["BUCKET"], Key=f"ticks/{event['id']}.json", Body=json.dumps(event))
    return {"recorded": event["id"]}
"""

FAILING = """\
def handler(event, context):
    raise RuntimeError(f"cannot handle {event['detail-type']}")
"""


@pytest.fixture(scope="module")
def scheduled_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scheduled-project")
    for folder, code in (("recorder", RECORDER), ("failing", FAILING)):
        (root / folder).mkdir()
        (root / folder / "app.py").write_text(code)
    (root / "template.yaml").write_text(TEMPLATE)
    return root / "template.yaml"


def test_a_scheduled_function_runs_at_the_local_interval_and_stops_with_the_stack(
    scheduled_project: Path, tmp_path: Path
) -> None:
    # Given a stack whose schedules fire every second instead of their rate or cron
    with LocalStack(
        scheduled_project,
        stack_name="sched",
        log_dir=tmp_path,
        runner_options={"schedule_interval_s": 1.0},
    ) as stack:
        s3 = stack.boto3_client("s3")

        def ticks() -> list[str]:
            listing = s3.list_objects_v2(Bucket="sched-ticks", Prefix="ticks/")
            return [item["Key"] for item in listing.get("Contents", [])]

        # When a few ticks have passed
        wait_for(lambda: len(ticks()) >= 2, timeout_s=30)

        # Then each tick invoked the recorder with EventBridge's Scheduled Event, signed with its own role
        event = json.loads(s3.get_object(Bucket="sched-ticks", Key=ticks()[0])["Body"].read())
        assert event["detail-type"] == "Scheduled Event"
        assert event["source"] == "aws.events"
        assert event["detail"] == {}
        assert event["region"] == stack.region
        (rule_arn,) = event["resources"]
        assert rule_arn.startswith(f"arn:aws:events:{stack.region}:{stack.resources.account_id}:rule/sched-")
        recorder = stack.runner.invocations("Recorder")
        assert recorder and all(result.ok and result.source == "Recorder.Tick" for result in recorder)
        # And its disabled schedule never fired, and says so
        assert not any(result.event.get("resources") != [rule_arn] for result in recorder)
        assert any("Recorder.Never" in warning and "disabled" in warning for warning in stack.runner.warnings)
        # And its invocations are billed like any other
        assert stack.runner.billing()["Recorder"].invocations >= 2

        # And a failing scheduled function was retried once (its MaximumRetryAttempts), then its event
        # went to its OnFailure destination, as an async invocation's does
        failures_url = stack.resources["Failures"].url
        records: list[dict] = []
        wait_for(lambda: bool(records.extend(drain(stack.boto3_client("sqs"), failures_url)) or records), 30)
        record = json.loads(records[0]["Body"])
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 2
        assert record["requestPayload"]["detail-type"] == "Scheduled Event"
        assert stack.runner.stats()["Failing"].retries >= 1
        described = {source["label"]: source for source in stack.runner.describe()["event_sources"]}
        assert described["Failing.Tick"]["schedule"] == "cron(0 3 * * ? *)"
        assert described["Recorder.Tick"]["interval_s"] == 1.0

    # Then leaving the block stopped the timers too
    assert stack_threads() == []
