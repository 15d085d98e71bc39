"""A toy SAM project (template, two functions, one layer) that the local-stack tests write to a temp folder.

Ingest (S3-triggered) forwards each uploaded key to WorkQueue. Worker (SQS-triggered, partial batch
responses) publishes each record to the Events topic, fails records whose body starts with "fail",
raises for "crash" and overruns its 2 s Timeout for "sleep". Both report who they are through the layer.
Notify (SNS-triggered, filtered on kind=done) receives what Worker publishes. Ingest's failures go to an
OnFailure queue. Broken (no events) cannot import its module.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: toy pipeline for the local stack tests

Parameters:
  Stage:
    Type: String
    Default: test
    AllowedValues: [test, prod]

Conditions:
  IsProd: !Equals [!Ref Stage, prod]

Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    MemorySize: 256
    Layers:
      - !Ref ToyLayer
    Environment:
      Variables:
        STAGE: !Ref Stage
        WHO: global

Resources:
  ToyLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
      CompatibleRuntimes: [python3.12]

  Inbox:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "${AWS::StackName}-inbox"
      VersioningConfiguration:
        Status: Enabled
      BucketEncryption:
        ServerSideEncryptionConfiguration:
          - ServerSideEncryptionByDefault:
              SSEAlgorithm: AES256
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        BlockPublicPolicy: true
        IgnorePublicAcls: true
        RestrictPublicBuckets: true
      LifecycleConfiguration:
        Rules:
          - Id: expire-incoming
            Status: Enabled
            Prefix: incoming/
            ExpirationInDays: 7

  Events:
    Type: AWS::SNS::Topic

  WorkDLQ:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600

  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 30
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt WorkDLQ.Arn
        maxReceiveCount: 2

  Jobs:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
      TimeToLiveSpecification:
        AttributeName: expires_at
        Enabled: true

  ApiKey:
    Type: AWS::SecretsManager::Secret
    Properties:
      Name: !Sub "${AWS::StackName}/api-key"
      SecretString: '{"key": "sk-local"}'

  ProdOnlyAlarm:
    Type: AWS::CloudWatch::Alarm
    Condition: IsProd
    Properties:
      MetricName: Errors
      Namespace: AWS/Lambda

  DashboardRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: 2012-10-17
        Statement: []

  IngestFailures:
    Type: AWS::SQS::Queue

  Ingest:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/ingest/
      Handler: app.handler
      EventInvokeConfig:
        MaximumRetryAttempts: 2
        DestinationConfig:
          OnFailure:
            Type: SQS
            Destination: !GetAtt IngestFailures.Arn
      Environment:
        Variables:
          WORK_QUEUE_URL: !Ref WorkQueue
          WHO: ingest
      Policies:
        # A SAM policy template: the local stack expands it as SAM does, and enforces it.
        - SQSSendMessagePolicy: {QueueName: !GetAtt WorkQueue.QueueName}
      Events:
        Upload:
          Type: S3
          Properties:
            Bucket: !Ref Inbox
            Events: s3:ObjectCreated:*
            Filter:
              S3Key:
                Rules:
                  - {Name: prefix, Value: incoming/}

  Worker:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/worker/
      Handler: app.handler
      Timeout: 2
      Environment:
        Variables:
          TOPIC_ARN: !Ref Events
          TABLE_NAME: !Ref Jobs
          SECRET_ARN: !Ref ApiKey
          WHO: worker
      Policies:
        - SNSPublishMessagePolicy: {TopicName: !GetAtt Events.TopicName}
        - DynamoDBWritePolicy: {TableName: !Ref Jobs}
        - Version: "2012-10-17"
          Statement:
            - Effect: Allow
              Action: [secretsmanager:GetSecretValue]
              Resource: !Ref ApiKey
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 10
            MaximumBatchingWindowInSeconds: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig:
              MaximumConcurrency: 2

  Notify:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/notify/
      Handler: app.handler
      Events:
        Done:
          Type: SNS
          Properties:
            Topic: !Ref Events
            FilterPolicy:
              kind: [done]

  Broken:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/broken/
      Handler: app.handler

Outputs:
  WorkQueueUrl:
    Value: !Ref WorkQueue
  ProdAlarmName:
    Condition: IsProd
    Value: !Ref ProdOnlyAlarm
"""

LAYER = '''\
"""Shared by both toy functions: proves the layer folder is on the worker's sys.path."""

import os

GREETING = "hello from the toy layer"


def fingerprint(context):
    return {
        "greeting": GREETING,
        "who": os.environ.get("WHO"),
        "stage": os.environ.get("STAGE"),
        "function_name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        "context_function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "request_id": context.aws_request_id,
        "pid": os.getpid(),
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "leaked": os.environ.get("LEAKY_PARENT_VARIABLE"),
    }
'''

INGEST = """\
import json
import os
from functools import cache
from urllib.parse import unquote_plus

import boto3
import toylayer


@cache
def sqs():
    return boto3.client("sqs")


def handler(event, context):
    if event.get("Event") == "s3:TestEvent":
        return {"ignored": "s3:TestEvent"}
    for record in event["Records"]:
        key = record["s3"]["object"]["key"]
        if "explode" in key:
            raise RuntimeError(f"cannot ingest {key}")
        body = {
            "key": key,
            "decoded_key": unquote_plus(key),
            "bucket": record["s3"]["bucket"]["name"],
            "ingest": toylayer.fingerprint(context),
        }
        sqs().send_message(QueueUrl=os.environ["WORK_QUEUE_URL"], MessageBody=json.dumps(body))
    return {"forwarded": len(event["Records"])}
"""

WORKER = """\
import json
import os
import time
from functools import cache

import boto3
import toylayer


@cache
def sns():
    return boto3.client("sns")


@cache
def table():
    return boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])


def handler(event, context):
    failures = []
    for record in event["Records"]:
        body = record["body"]
        if body.startswith("crash"):
            raise ValueError(f"crash requested by {body}")
        if body.startswith("sleep"):
            time.sleep(30)
        if body.startswith("fail"):
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        table().put_item(Item={"pk": record["messageId"], "body": body})
        message = {
            "body": body,
            "receive_count": record["attributes"]["ApproximateReceiveCount"],
            "worker": toylayer.fingerprint(context),
        }
        sns().publish(
            TopicArn=os.environ["TOPIC_ARN"],
            Message=json.dumps(message),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "done"}},
        )
    return {"batchItemFailures": failures}
"""

NOTIFY = """\
def handler(event, context):
    return {"messages": [record["Sns"]["Message"] for record in event["Records"]]}
"""

BROKEN = """\
import module_that_is_not_installed  # noqa: F401


def handler(event, context):
    return "unreachable"
"""


def write_toy_project(root: Path) -> Path:
    """Write the toy project under `root`; returns the template path."""
    files = {
        "template.yaml": TEMPLATE,
        "layer/toylayer/__init__.py": LAYER,
        "functions/ingest/app.py": INGEST,
        "functions/worker/app.py": WORKER,
        "functions/notify/app.py": NOTIFY,
        "functions/broken/app.py": BROKEN,
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "template.yaml"
