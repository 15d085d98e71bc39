"""The template keeps its promises: least privilege, encryption, TLS-only buckets, DLQs, timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ocr_devkit.stack.cfn import load_template, resolve_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES = TEMPLATE.resources
# The template's Rules refuse a DashScope stack without its key's secret.
WITH_KEY = {"ApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:dashscope-AbCdEf"}


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == kind}


def attached_policies(function: dict[str, Any]) -> list[dict[str, Any]]:
    """Inline policy documents, and the documents of this template's managed policies the function refers to."""
    documents = []
    for policy in function["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Fn::If" in policy:
            _, chosen, otherwise = policy["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
            policy = chosen
        if isinstance(policy, dict) and set(policy) == {"Ref"}:
            managed = RESOURCES[policy["Ref"]]
            assert managed["Type"] == "AWS::IAM::ManagedPolicy", "only managed policies of this template"
            policy = managed["Properties"]["PolicyDocument"]
        assert isinstance(policy, dict) and "Statement" in policy, "no AWS managed policies: they are too broad"
        documents.append(policy)
    return documents


def statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in attached_policies(function):
        for statement in policy["Statement"]:
            if "Fn::If" in statement:  # conditional statement: check both branches
                found.extend(s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s)
            else:
                found.append(statement)
    return found


FUNCTIONS = of_type("AWS::Serverless::Function")


def test_there_are_separate_functions_for_uploads_and_page_work():
    assert {"UploadFunction", "RecognizeFunction"} <= set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_policies_name_actions_and_resources_without_wildcards(name):
    found = statements(FUNCTIONS[name])
    assert found, f"{name} has no policy statements"
    for statement in found:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), f"{name}: wildcard action in {actions}"
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert all(r != "*" for r in resources), f"{name}: unscoped resource for {actions}"


@pytest.mark.parametrize("name", sorted(of_type("AWS::S3::Bucket")))
def test_buckets_are_encrypted_private_and_tls_only(name):
    properties = RESOURCES[name]["Properties"]
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(properties["PublicAccessBlockConfiguration"].values())
    policies = [p for p in of_type("AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": name}]
    assert len(policies) == 1, f"{name} needs exactly one bucket policy"
    (deny,) = [s for s in policies[0]["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_every_function_queue_has_a_dlq_and_six_times_the_function_timeout():
    queues = of_type("AWS::SQS::Queue")
    consumed = 0
    for function in FUNCTIONS.values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            consumed += 1
            queue_name = event["Properties"]["Queue"]["Fn::GetAtt"][0]
            queue = queues[queue_name]["Properties"]
            assert queue["VisibilityTimeout"] >= 6 * function["Properties"]["Timeout"]
            assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1
            assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            limit = event["Properties"]["ScalingConfig"]["MaximumConcurrency"]
            if isinstance(limit, dict) and "Ref" in limit:
                parameter = TEMPLATE.parameters[limit["Ref"]]
                assert parameter["MinValue"] >= 2 and parameter["MaxValue"] <= 1000
            elif not isinstance(limit, dict):
                assert 2 <= limit <= 1000
            # A looked-up limit (the recognize instances) is checked over every parameter value below.
    assert consumed >= 1


def test_a_chained_dead_letter_queue_leaves_its_consumer_deliveries_of_its_own():
    # SQS counts receives "across all queues" (ReceiveMessage API reference): a dead letter arrives with its
    # source queue's count, so a DLQ that is itself redriven needs a higher maxReceiveCount, or its
    # consumer never sees the message.
    queues = of_type("AWS::SQS::Queue")
    checked = 0
    for name, queue in queues.items():
        redrive = queue["Properties"].get("RedrivePolicy")
        if not redrive:
            continue
        target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        target_redrive = queues[target]["Properties"].get("RedrivePolicy")
        if target_redrive:
            assert target_redrive["maxReceiveCount"] >= redrive["maxReceiveCount"] + 3, (name, target)
            checked += 1
    assert checked >= 2  # PageQueue and RequestQueue


def watched_by(alarm: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric name, dimension value) of each metric an alarm reads, metric math included."""
    props = alarm["Properties"]
    if "Metrics" not in props:
        return [(props["MetricName"], str(props["Dimensions"][0]["Value"]))]
    return [
        (m["MetricStat"]["Metric"]["MetricName"], str(m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]))
        for m in props["Metrics"]
        if "MetricStat" in m
    ]


def test_dead_letters_waiting_work_and_function_error_rates_raise_alarms():
    alarms = of_type("AWS::CloudWatch::Alarm")
    watched = {pair for alarm in alarms.values() for pair in watched_by(alarm)}
    for name in FUNCTIONS:
        assert ("Errors", str({"Ref": name})) in watched, name
        events = FUNCTIONS[name]["Properties"].get("Events", {}).values()
        if not any(event["Type"] == "Schedule" for event in events):
            # an error rate (errors over invocations), not "any error": expected retries are not errors
            # (a scheduled function has none: its errors are failed runs, alarmed when they repeat)
            assert ("Invocations", str({"Ref": name})) in watched, name
    for queue in ("PageDeadLetterQueue", "RequestDeadLetterQueue", "UploadFailureQueue", "LastResortQueue"):
        assert any(value == str({"Fn::GetAtt": [queue, "QueueName"]}) for _, value in watched), queue
    for queue in ("PageQueue", "RequestQueue", "BatchPageQueue"):
        assert ("ApproximateAgeOfOldestMessage", str({"Fn::GetAtt": [queue, "QueueName"]})) in watched


@pytest.mark.parametrize("name", sorted(of_type("AWS::DynamoDB::Table")))
def test_tables_are_encrypted_and_expire_old_records(name):
    table = RESOURCES[name]
    assert table["Properties"]["SSESpecification"]["SSEEnabled"] is True
    assert table["Properties"]["TimeToLiveSpecification"]["Enabled"] is True


def test_every_function_that_takes_deliveries_guards_them_with_the_idempotency_table():
    for name in ("UploadFunction", "RecognizeFunction", "RequestFunction"):
        granted = {
            action
            for statement in statements(FUNCTIONS[name])
            if statement["Resource"] == {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}
            for action in statement["Action"]
        }
        assert granted == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    assert TEMPLATE.globals["Function"]["Environment"]["Variables"]["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}


@pytest.mark.parametrize("partition_region", ["us-east-1", "cn-north-1"])
def test_extra_request_buckets_are_readable_object_by_object_and_nothing_more(partition_region):
    """Given two extra buckets, the shared read policy names exactly their objects, in the stack's partition."""
    resolved = resolve_template(
        ROOT / "template.yaml",
        stack_name="t",
        region=partition_region,
        parameters={"RequestSourceBuckets": "partner-a,partner-b", **WITH_KEY},
    )
    document = resolved.resolve(resolved.properties("RequestSourceReadPolicy")["PolicyDocument"])
    objects, buckets = document["Statement"]
    partition = "aws-cn" if partition_region.startswith("cn-") else "aws"
    assert objects["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert objects["Resource"] == [f"arn:{partition}:s3:::partner-a/*", f"arn:{partition}:s3:::partner-b/*"]
    # Listing, so that a missing key is a 404 (source.not_found) rather than a 403
    assert buckets["Action"] == ["s3:ListBucket"]
    assert buckets["Resource"] == [f"arn:{partition}:s3:::partner-a", f"arn:{partition}:s3:::partner-b"]


def test_without_extra_request_buckets_there_is_no_extra_read_policy():
    resolved = resolve_template(ROOT / "template.yaml", stack_name="t", parameters=WITH_KEY)
    assert "RequestSourceReadPolicy" not in {r.logical_id for r in resolved.of_type("AWS::IAM::ManagedPolicy")}


def test_the_dashboard_plots_every_metric_the_code_emits():
    from ocr_pipeline.adapters.metrics import METRIC_NAMES

    (dashboard,) = of_type("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    missing = [name for name in METRIC_NAMES if f'MetricName=\\"{name}\\"' not in body]
    assert missing == []
    for name in FUNCTIONS:
        assert "${" + name + "}" in body


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def denies_plain_http(statement: dict[str, Any]) -> bool:
    return (
        statement["Effect"] == "Deny"
        and statement["Principal"] == "*"
        and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    )


def test_only_the_functions_that_publish_may_publish_to_the_topic():
    # Given the functions whose own policies let them publish to the topic
    publishers = {
        f"{name}Role"
        for name, function in FUNCTIONS.items()
        for statement in statements(function)
        if "sns:Publish" in listed(statement["Action"]) and statement["Resource"] == {"Ref": "NotificationTopic"}
    }
    assert publishers
    # Then the topic's one policy denies publishing to everyone else, by the caller's role ARN
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for p in of_type("AWS::SNS::TopicPolicy").values()
        if {"Ref": "NotificationTopic"} in p["Properties"]["Topics"]
    ]
    (deny,) = [
        s
        for s in policy["Statement"]
        if s["Effect"] == "Deny" and "sns:Publish" in listed(s["Action"]) and not denies_plain_http(s)
    ]
    assert deny["Principal"] == "*"
    assert deny["Resource"] == {"Ref": "NotificationTopic"}
    ((operator, keys),) = deny["Condition"].items()
    assert operator in ("ArnNotEquals", "ArnNotLike")
    assert set(keys) == {"aws:PrincipalArn"}
    exempt = listed(keys["aws:PrincipalArn"])
    assert all(arn["Fn::GetAtt"][1] == "Arn" for arn in exempt)
    assert {arn["Fn::GetAtt"][0] for arn in exempt} == publishers


def test_every_queue_and_the_topic_refuse_plain_http():
    queue_policies = of_type("AWS::SQS::QueuePolicy").values()
    for name in of_type("AWS::SQS::Queue"):
        covering = [
            statement
            for policy in queue_policies
            if {"Ref": name} in policy["Properties"]["Queues"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if denies_plain_http(statement) and {"Fn::GetAtt": [name, "Arn"]} in listed(statement["Resource"])
        ]
        assert covering, f"{name} accepts plain HTTP"
        assert all(listed(s["Action"]) == ["sqs:*"] for s in covering), name
    topic_statements = [
        statement
        for policy in of_type("AWS::SNS::TopicPolicy").values()
        if {"Ref": "NotificationTopic"} in policy["Properties"]["Topics"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if denies_plain_http(statement)
    ]
    assert len(topic_statements) == 1
    # Every action a topic policy can name, publishing and subscribing first
    assert set(listed(topic_statements[0]["Action"])) == {
        "sns:Publish",
        "sns:Subscribe",
        "sns:ListSubscriptionsByTopic",
        "sns:GetTopicAttributes",
        "sns:SetTopicAttributes",
        "sns:AddPermission",
        "sns:RemovePermission",
        "sns:DeleteTopic",
    }


def test_no_function_may_write_the_whole_result_bucket():
    resolved = resolve_template(ROOT / "template.yaml", stack_name="t", parameters=WITH_KEY)
    bucket = resolved.attribute("ResultBucket", "Arn")
    for name in FUNCTIONS:
        for policy in resolved.properties(name)["Policies"]:
            for statement in policy.get("Statement", []):
                if "s3:PutObject" not in listed(statement["Action"]):
                    continue
                for resource in listed(statement["Resource"]):
                    if resource.startswith(bucket):
                        prefix = resource.removeprefix(f"{bucket}/").removesuffix("*")
                        assert prefix.endswith("/") and "*" not in prefix and len(prefix) > 1, (name, resource)


def test_each_function_writes_only_the_result_prefixes_the_layer_writes_it_to():
    """The policies name the prefixes as text; the layer's settings decide them. They must agree."""
    from ocr_pipeline.bootstrap import read_pipeline_settings

    resolved = resolve_template(ROOT / "template.yaml", stack_name="t", parameters=WITH_KEY)
    bucket = resolved.attribute("ResultBucket", "Arn")
    # Given the settings each function runs with: the layer's defaults and whatever its environment sets
    settings = {
        name: read_pipeline_settings(
            {k: str(v) for k, v in resolved.properties(name)["Environment"]["Variables"].items()}
        )
        for name in FUNCTIONS
    }
    # (page results and document results from the page worker, document results from the dead-letter
    # function, copies of URL sources from the request function, nothing from the upload function; the
    # batch lane's functions settle pages as the page worker does, and its submitter keeps batch files)
    writes = {
        "RecognizeFunction": lambda s: {s.work_prefix, s.result_prefix},
        "BatchSubmitFunction": lambda s: {s.work_prefix, s.result_prefix, s.batch_prefix},
        "BatchCollectFunction": lambda s: {s.work_prefix, s.result_prefix},
        "DeadLetterFunction": lambda s: {s.result_prefix},
        "RequestFunction": lambda s: {s.source_prefix},
    }
    for name in FUNCTIONS:
        # Then its policy may put objects under exactly those prefixes of the result bucket
        granted = {
            resource.removeprefix(f"{bucket}/").removesuffix("*")
            for policy in resolved.properties(name)["Policies"]
            for statement in policy.get("Statement", [])
            if "s3:PutObject" in listed(statement["Action"])
            for resource in listed(statement["Resource"])
            if resource.startswith(f"{bucket}/")
        }
        assert granted == writes.get(name, lambda s: set())(settings[name]), name
    # And the result bucket's lifecycle expires the prefixes the functions write to
    rules = {
        rule["Id"]: rule.get("Prefix")
        for rule in resolved.properties("ResultBucket")["LifecycleConfiguration"]["Rules"]
    }
    assert rules["expire-page-work"] == settings["RecognizeFunction"].work_prefix
    assert rules["expire-fetched-sources"] == settings["RequestFunction"].source_prefix
    assert rules["expire-batch-files"] == settings["BatchSubmitFunction"].batch_prefix


# --- a deploy that would start broken is refused, locally as by CloudFormation -------------------------------


def test_a_dashscope_deploy_without_an_api_key_secret_is_refused_by_the_template_rule():
    from ocr_devkit.stack.cfn import ResolvedTemplate, TemplateError

    with pytest.raises(TemplateError, match="ApiKeySecretArn is required"):
        ResolvedTemplate(TEMPLATE, stack_name="ocr")
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dashscope-AbCdEf"
    ResolvedTemplate(TEMPLATE, stack_name="ocr", parameters={"ApiKeySecretArn": arn})
    # A secret's name, or any other ARN, is refused by the parameter's pattern
    for wrong in ("ocr/dashscope-key", "arn:aws:ssm:us-east-1:123456789012:parameter/key"):
        with pytest.raises(TemplateError, match="AllowedPattern"):
            ResolvedTemplate(TEMPLATE, stack_name="ocr", parameters={"ApiKeySecretArn": wrong})
    # A self-hosted Qwen-VL behind the compatible endpoint may go without a key
    ResolvedTemplate(
        TEMPLATE, stack_name="ocr", parameters={"OcrProtocol": "openai", "OcrBaseUrl": "https://vl.internal/v1"}
    )


def test_data_outlives_the_stack_and_old_layers_and_logs_do_not():
    for name in ("InputBucket", "ResultBucket", "JobsTable"):
        assert RESOURCES[name].get("DeletionPolicy") == RESOURCES[name].get("UpdateReplacePolicy") == "Retain", name
    assert RESOURCES["SharedLayer"]["Properties"]["RetentionPolicy"] == "Delete"
    groups = {str(g["Properties"]["LogGroupName"]): g for g in of_type("AWS::Logs::LogGroup").values()}
    for name in FUNCTIONS:
        assert str({"Fn::Sub": f"/aws/lambda/${{{name}}}"}) in groups, f"{name} keeps its logs forever"
    for bucket in ("InputBucket", "ResultBucket"):
        rules = RESOURCES[bucket]["Properties"]["LifecycleConfiguration"]["Rules"]
        assert any("AbortIncompleteMultipartUpload" in rule for rule in rules), bucket
    assert RESOURCES["UploadFunction"]["Properties"]["ReservedConcurrentExecutions"] == {"Ref": "UploadMaxConcurrency"}


def test_the_topic_is_encrypted_and_every_function_that_publishes_may_use_its_key():
    topic = RESOURCES["NotificationTopic"]["Properties"]
    key = {"Fn::If": ["HasTopicKmsKey", {"Ref": "TopicKmsKeyArn"}, {"Fn::GetAtt": ["TopicKey", "Arn"]}]}
    assert topic["KmsMasterKeyId"] == key
    assert RESOURCES["TopicKey"]["Properties"]["EnableKeyRotation"] is True
    for name, function in FUNCTIONS.items():
        found = statements(function)
        publishes = any("sns:Publish" in s["Action"] for s in found)
        uses_key = any(s["Resource"] == key and "kms:GenerateDataKey" in s["Action"] for s in found)
        assert publishes == uses_key, name


# --- OcrMaxConcurrency: OCR calls in flight across the stack, whatever OcrCallsPerInstance is -------------------

KEY = {"ApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:dashscope-AbCdEf"}


def recognize_limits(resolved: Any) -> tuple[int, int, int, int]:
    """(instances, batch size, calls per instance, instances sharing the requests-per-second limit)."""
    properties = resolved.properties("RecognizeFunction")
    (pages,) = properties["Events"].values()
    variables = properties["Environment"]["Variables"]
    return (
        int(pages["Properties"]["ScalingConfig"]["MaximumConcurrency"]),
        int(pages["Properties"]["BatchSize"]),
        int(variables["OCR_CALLS_PER_INSTANCE"]),
        int(variables["OCR_RPS_SHARES"]),
    )


def test_the_cli_fits_every_calls_per_instance_the_template_allows_to_two_instances():
    from ocr_devkit.run import calls_fitting

    allowed = [int(v) for v in TEMPLATE.parameters["OcrCallsPerInstance"]["AllowedValues"]]
    assert [calls_fitting(2 * calls) for calls in allowed] == allowed
    assert calls_fitting(2 * max(allowed) + 1000) == max(allowed)


def test_the_instance_table_holds_the_quotient_of_every_max_concurrency_by_every_calls_per_instance():
    table = TEMPLATE.body["Mappings"]["RecognizeInstances"]
    allowed = [int(v) for v in TEMPLATE.parameters["OcrCallsPerInstance"]["AllowedValues"]]
    assert sorted(int(k) for k in table) == sorted(allowed)
    highest = TEMPLATE.parameters["OcrMaxConcurrency"]["MaxValue"]
    for calls in allowed:
        words = table[str(calls)]["ByMaxConcurrency"].split(" ")
        assert [int(w) for w in words] == [c // calls for c in range(highest + 1)]


@pytest.mark.parametrize("calls", [1, 2, 4, 8, 16, 32])
def test_the_stack_never_has_more_calls_in_flight_than_ocr_max_concurrency(calls):
    from ocr_devkit.stack.cfn import TemplateError

    lowest = TEMPLATE.parameters["OcrMaxConcurrency"]["MinValue"]
    highest = TEMPLATE.parameters["OcrMaxConcurrency"]["MaxValue"]
    for limit in sorted({lowest, 2 * calls - 1, 2 * calls, 2 * calls + 1, 10, 99, highest}):
        if limit < lowest:
            continue
        parameters = {**KEY, "OcrMaxConcurrency": str(limit), "OcrCallsPerInstance": str(calls)}
        if limit < 2 * calls:
            # Fewer than the event source mapping's two instances: refused before anything is made
            with pytest.raises(TemplateError, match="OcrMaxConcurrency must be at least"):
                resolve_template(TEMPLATE, stack_name="ocr", parameters=parameters)
            continue
        instances, batch, per_instance, shares = recognize_limits(
            resolve_template(TEMPLATE, stack_name="ocr", parameters=parameters)
        )
        assert 2 <= instances <= 1000 and instances * per_instance <= limit < (instances + 1) * per_instance
        # A delivery brings as many messages as the instance has calls; the rate is split over the instances
        assert (per_instance, batch, shares) == (calls, calls, instances)
