"""Template loading and resolution: what CloudFormation would compute, without a server."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from ocr_devkit.stack.cfn import (
    ResolvedTemplate,
    TemplateError,
    UnsupportedIntrinsicError,
    generated_name,
    parse_template,
)

pytestmark = pytest.mark.integration

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: dev
    AllowedValues: [dev, prod]
  Sizes:
    Type: CommaDelimitedList
    Default: "small, large"
Mappings:
  StageConfig:
    dev: {Retention: "3"}
    prod: {Retention: "30"}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  IsDev: !Not [!Condition IsProd]
  DevInUsEast: !And [!Condition IsDev, !Equals [!Ref "AWS::Region", us-east-1]]
  Either: !Or [!Condition IsProd, !Condition DevInUsEast]
Globals:
  Function:
    Runtime: python3.11
    Timeout: 30
    Layers: [!Ref Shared]
    Environment:
      Variables:
        STAGE: !Ref Stage
        SHARED: from-globals
Resources:
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layer/}
  Dlq:
    Type: AWS::SQS::Queue
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt Dlq.Arn
        maxReceiveCount: 3
  Uploads:
    Type: AWS::S3::Bucket
  ProdAlarm:
    Type: AWS::CloudWatch::Alarm
    Condition: IsProd
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-jobs-${Stage}"
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Layers: [arn:aws:lambda:us-east-1:017000801446:layer:Powertools:1]
      Environment:
        Variables:
          SHARED: from-function
          QUEUE_URL: !Ref Jobs
          QUEUE_ARN: !GetAtt [Jobs, Arn]
          DLQ_NAME: !GetAtt Dlq.QueueName
          BUCKET_ARN: !Sub "arn:${AWS::Partition}:s3:::${Uploads}/*"
          TABLE_ARN: !Sub ["${Arn}/index/*", {Arn: !GetAtt Table.Arn}]
          STREAM: !GetAtt Table.StreamArn
          LITERAL: !Sub "${!NotAVariable}"
          JOINED: !Join [",", [!Select [1, !Split [",", "a,b,c"]], !Select [0, !Ref Sizes]]]
          RETENTION: !FindInMap [StageConfig, !Ref Stage, Retention]
          ZONE: !Select [0, !GetAZs ""]
          MODE: !If [IsProd, production, development]
          GONE: !If [IsProd, here, !Ref "AWS::NoValue"]
          EITHER: !If [Either, "yes", "no"]
          ACCOUNT: !Sub "${AWS::AccountId}:${AWS::Region}:${AWS::URLSuffix}"
          POLICY_VERSION: 2012-10-17
"""


def resolved(text: str = TEMPLATE, **kwargs: Any) -> ResolvedTemplate:
    options: dict[str, Any] = {"stack_name": "demo", "region": "us-east-1", **kwargs}
    return ResolvedTemplate(parse_template(textwrap.dedent(text)), **options)


def test_intrinsics_resolve_to_what_cloudformation_would_compute() -> None:
    # Given the template bound to stack "demo" with its default parameters
    template = resolved(endpoint_url="http://127.0.0.1:5555")

    # When the function's environment is resolved
    env = template.properties("Fn")["Environment"]["Variables"]

    # Then every intrinsic has its CloudFormation value
    jobs = template.physical_name("Jobs")
    assert env["QUEUE_URL"] == f"http://127.0.0.1:5555/123456789012/{jobs}"
    assert env["QUEUE_ARN"] == f"arn:aws:sqs:us-east-1:123456789012:{jobs}"
    assert env["DLQ_NAME"] == template.physical_name("Dlq")
    assert env["BUCKET_ARN"] == f"arn:aws:s3:::{template.physical_name('Uploads')}/*"
    assert env["TABLE_ARN"] == "arn:aws:dynamodb:us-east-1:123456789012:table/demo-jobs-dev/index/*"
    assert env["STREAM"].startswith("arn:aws:dynamodb:us-east-1:123456789012:table/demo-jobs-dev/stream/")
    assert env["LITERAL"] == "${NotAVariable}"
    assert env["JOINED"] == "b,small"
    assert env["RETENTION"] == "3"
    assert env["ZONE"] == "us-east-1a"
    assert env["MODE"] == "development"
    assert "GONE" not in env
    assert env["EITHER"] == "yes"
    assert env["ACCOUNT"] == "123456789012:us-east-1:amazonaws.com"
    assert env["POLICY_VERSION"] == "2012-10-17"
    # And SAM Globals were merged: the function's value wins, lists add up
    assert env["STAGE"] == "dev" and env["SHARED"] == "from-function"
    properties = template.properties("Fn")
    assert properties["Runtime"] == "python3.11" and properties["Timeout"] == 30
    assert properties["Layers"] == [
        template.attribute("Shared"),
        "arn:aws:lambda:us-east-1:017000801446:layer:Powertools:1",
    ]


def test_parameters_conditions_and_names() -> None:
    # Given the template for prod
    template = resolved(parameters={"Stage": "prod"})

    # Then conditional resources exist only when their condition holds
    assert "ProdAlarm" in template.resources
    assert "ProdAlarm" not in resolved().resources
    assert template.properties("Fn")["Environment"]["Variables"]["GONE"] == "here"
    # And generated names are stable, stack-prefixed, lower case for S3 and within the service limits
    bucket = template.physical_name("Uploads")
    assert bucket == resolved().physical_name("Uploads")
    assert bucket.startswith("demo-uploads-") and bucket == bucket.lower()
    assert len(generated_name("s" * 100, "VeryLongLogicalId" * 5, "AWS::S3::Bucket")) <= 63
    assert generated_name("demo", "Events", "AWS::SQS::Queue", suffix=".fifo").endswith(".fifo")
    # And a resource is created after what it refers to
    order = template.creation_order()
    assert order.index("Dlq") < order.index("Jobs") < order.index("Fn")
    assert order.index("Shared") < order.index("Fn")


def test_recorded_attributes_replace_predictions() -> None:
    # Given a resolved template and the ARN moto actually gave the DLQ
    template = resolved()
    template.record("Dlq", {"Arn": "arn:aws:sqs:us-east-1:123456789012:real-dlq"})

    # Then a later resolution uses it
    redrive = template.properties("Jobs")["RedrivePolicy"]
    assert redrive == {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:real-dlq", "maxReceiveCount": 3}


@pytest.mark.parametrize(
    ("snippet", "error", "message"),
    [
        ("!ImportValue shared-vpc", UnsupportedIntrinsicError, "cross-stack imports"),
        ("!Ref Missing", TemplateError, "neither a parameter nor a resource"),
        ("!GetAtt Dlq.Nope", TemplateError, "has no attribute 'Nope'"),
        ("!Sub ${Nothing}", TemplateError, "names no parameter"),
        ("!GetAtt ProdAlarm.Arn", TemplateError, "its Condition is false"),
    ],
)
def test_unresolvable_values_say_where_and_why(snippet: str, error: type[Exception], message: str) -> None:
    # Given a template with one bad value
    text = TEMPLATE + f"          BAD: {snippet}\n"

    # When it is resolved, then the error names the property and the reason
    with pytest.raises(error, match=message) as caught:
        resolved(text).properties("Fn")
    assert "Resources.Fn.Properties.Environment.Variables.BAD" in str(caught.value)


def test_parameter_constraints_are_checked() -> None:
    with pytest.raises(TemplateError, match="AllowedValues"):
        resolved(parameters={"Stage": "staging"})
    with pytest.raises(TemplateError, match="unknown parameters: Nope"):
        resolved(parameters={"Nope": "x"})
