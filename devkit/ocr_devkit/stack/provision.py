"""Create the stack's resources in a running moto server, in dependency order.

Storage, queues, topics, tables, secrets and parameters are created for real in moto. Lambda functions
and layers are recorded (their ARNs are needed by others) and run by `runner.py`. Types with no local
meaning (IAM, alarms, dashboards, log groups, permissions, ...) are skipped and listed with a reason.

Lambda is pushed to by S3 and SNS, which moto cannot do without Docker. For each such event source the
provisioner creates a hidden queue ("local_only") and wires it the way the push would be: an S3
QueueConfiguration with the same events and key filter, or an SNS subscription with the same filter
policy. The runner polls those queues. Each bucket gets its notification configuration once, with the
template's own queue/topic configurations merged in, so S3 sends one `s3:TestEvent` per destination.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .cfn import FUNCTION_TYPES, LAYER_TYPES, ResolvedTemplate, cfn_string, sam_transform
from .clients import ClientFactory
from .functions import S3EventSource, SnsEventSource, function_specs, hidden_queue_name
from .roles import create_roles, function_roles

_SKIP_REASONS: dict[str, str] = {
    "AWS::IAM::": "only function roles and managed policies are created locally",
    "AWS::CloudWatch::": "no metrics or alarms locally",
    "AWS::Logs::": "function logs go to the runner's log directory",
    "AWS::Lambda::Permission": "invoke permissions are not enforced locally",
    "AWS::Lambda::EventSourceMapping": "run by the local runner",
    "AWS::Lambda::EventInvokeConfig": "applied by the local runner",
    "AWS::KMS::": "encryption keys are not used locally",
    "AWS::Serverless::Connector": "permissions are not enforced locally",
}


# Queue properties that are plain SQS attributes, passed through as strings.
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "SqsManagedSseEnabled",
)

# The properties each provisioned type applies, and those it leaves out on purpose (no local effect: KMS keys,
# backups, deletion protection). Anything else is reported in StackResources.warnings.
_APPLIED: dict[str, frozenset[str]] = {
    "AWS::IAM::ManagedPolicy": frozenset({"PolicyDocument", "Description", "ManagedPolicyName", "Path", "Roles"}),
    "AWS::S3::Bucket": frozenset(
        {
            "BucketName",
            "BucketEncryption",
            "PublicAccessBlockConfiguration",
            "VersioningConfiguration",
            "LifecycleConfiguration",
            "CorsConfiguration",
            "OwnershipControls",
            "ObjectLockEnabled",
            "NotificationConfiguration",
            "Tags",
        }
    ),
    "AWS::S3::BucketPolicy": frozenset({"Bucket", "PolicyDocument"}),
    "AWS::SQS::Queue": frozenset(
        {
            "QueueName",
            *_QUEUE_ATTRIBUTES,
            "RedrivePolicy",
            "RedriveAllowPolicy",
            "Tags",
            "KmsMasterKeyId",
            "KmsDataKeyReusePeriodSeconds",
        }
    ),
    "AWS::SQS::QueuePolicy": frozenset({"Queues", "PolicyDocument"}),
    "AWS::SNS::Topic": frozenset(
        {
            "TopicName",
            "DisplayName",
            "FifoTopic",
            "ContentBasedDeduplication",
            "SignatureVersion",
            "Subscription",
            "Tags",
            "KmsMasterKeyId",
        }
    ),
    "AWS::SNS::Subscription": frozenset(
        {
            "TopicArn",
            "Protocol",
            "Endpoint",
            "FilterPolicy",
            "FilterPolicyScope",
            "RawMessageDelivery",
            "RedrivePolicy",
            "DeliveryPolicy",
            "Region",
        }
    ),
    "AWS::SNS::TopicPolicy": frozenset({"Topics", "PolicyDocument"}),
    "AWS::DynamoDB::Table": frozenset(
        {
            "TableName",
            "KeySchema",
            "AttributeDefinitions",
            "BillingMode",
            "ProvisionedThroughput",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "StreamSpecification",
            "TableClass",
            "TimeToLiveSpecification",
            "Tags",
            "SSESpecification",
            "PointInTimeRecoverySpecification",
            "DeletionProtectionEnabled",
            "ContributorInsightsSpecification",
        }
    ),
    "AWS::Serverless::SimpleTable": frozenset(
        {"TableName", "PrimaryKey", "ProvisionedThroughput", "SSESpecification", "Tags"}
    ),
    "AWS::SecretsManager::Secret": frozenset(
        {"Name", "Description", "SecretString", "GenerateSecretString", "Tags", "KmsKeyId", "ReplicaRegions"}
    ),
    "AWS::SSM::Parameter": frozenset(
        {"Name", "Type", "Value", "Description", "Tier", "DataType", "AllowedPattern", "Tags"}
    ),
}


@dataclass
class ProvisionedResource:
    logical_id: str
    type: str
    physical_name: str
    ref: Any
    arn: str | None = None
    url: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    local_only: bool = False  # a hidden queue standing in for a push integration (S3 → Lambda, SNS → Lambda)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StackResources:
    """What provisioning created: logical id → resource, plus what it skipped and why."""

    stack_name: str
    region: str
    account_id: str
    endpoint_url: str
    resources: dict[str, ProvisionedResource] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, logical_id: str) -> ProvisionedResource:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise KeyError(f"no provisioned resource {logical_id!r} (skipped: {sorted(self.skipped)})") from None

    def __contains__(self, logical_id: object) -> bool:
        return logical_id in self.resources

    def __iter__(self) -> Iterator[ProvisionedResource]:
        return iter(self.resources.values())

    def of_type(self, *types: str) -> list[ProvisionedResource]:
        return [r for r in self.resources.values() if r.type in types]

    def queue_url_for_arn(self, arn: str) -> str | None:
        for resource in self.of_type("AWS::SQS::Queue"):
            if resource.arn == arn:
                return resource.url
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack_name": self.stack_name,
            "region": self.region,
            "account_id": self.account_id,
            "endpoint_url": self.endpoint_url,
            "resources": {lid: r.to_dict() for lid, r in self.resources.items()},
            "skipped": dict(self.skipped),
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackResources:
        """The inverse of `to_dict`: the resources of a stack another process provisioned (`invoke`)."""
        resources = {lid: ProvisionedResource(**entry) for lid, entry in data["resources"].items()}
        return cls(
            stack_name=data["stack_name"],
            region=data["region"],
            account_id=data["account_id"],
            endpoint_url=data["endpoint_url"],
            resources=resources,
            skipped=dict(data.get("skipped") or {}),
            warnings=list(data.get("warnings") or []),
        )

    def record_in(self, resolved: ResolvedTemplate) -> None:
        """Make Ref and GetAtt of `resolved` answer with what was provisioned, as provisioning did."""
        for resource in self:
            if not resource.local_only and resource.logical_id in resolved.resources:
                resolved.record(resource.logical_id, {"Ref": resource.ref, **resource.attributes})


class ProvisioningError(RuntimeError):
    """moto refused to create a resource; the message names it."""


def provision(resolved: ResolvedTemplate, endpoint_url: str) -> StackResources:
    """Create every resource of `resolved` in the moto server at `endpoint_url`."""
    return _Provisioner(resolved, ClientFactory(endpoint_url, resolved.region)).run()


def _tags(props: dict[str, Any]) -> list[dict[str, str]]:
    tags = props.get("Tags") or []
    if isinstance(tags, dict):  # SAM resources take a plain map
        return [{"Key": str(k), "Value": cfn_string(v)} for k, v in tags.items()]
    return [{"Key": str(t["Key"]), "Value": cfn_string(t["Value"])} for t in tags]


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _filter_rules(filter_block: Any) -> dict[str, Any] | None:
    rules = ((filter_block or {}).get("S3Key") or {}).get("Rules") or []
    if not rules:
        return None
    return {"Key": {"FilterRules": [{"Name": str(r["Name"]).lower(), "Value": str(r["Value"])} for r in rules]}}


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's LifecycleConfiguration rule → the S3 API's."""
    out: dict[str, Any] = {"Status": rule.get("Status", "Enabled")}
    if "Id" in rule:
        out["ID"] = rule["Id"]
    tags = rule.get("TagFilters") or []
    prefix = rule.get("Prefix", "")
    if tags and (prefix or len(tags) > 1):
        out["Filter"] = {"And": {"Prefix": prefix, "Tags": tags}}
    elif tags:
        out["Filter"] = {"Tag": tags[0]}
    else:
        out["Filter"] = {"Prefix": prefix}
    expiration: dict[str, Any] = {}
    if "ExpirationInDays" in rule:
        expiration["Days"] = int(rule["ExpirationInDays"])
    if "ExpirationDate" in rule:
        expiration["Date"] = rule["ExpirationDate"]
    if "ExpiredObjectDeleteMarker" in rule:
        expiration["ExpiredObjectDeleteMarker"] = bool(rule["ExpiredObjectDeleteMarker"])
    if expiration:
        out["Expiration"] = expiration
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "NoncurrentVersionExpirationInDays" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(rule["NoncurrentVersionExpirationInDays"])}
    elif "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    transitions = list(rule.get("Transitions") or []) + ([rule["Transition"]] if "Transition" in rule else [])
    if transitions:
        out["Transitions"] = [
            {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
            if "TransitionInDays" in t
            else {"Date": t["TransitionDate"], "StorageClass": t["StorageClass"]}
            for t in transitions
        ]
    noncurrent = rule.get("NoncurrentVersionTransitions") or []
    if noncurrent:
        out["NoncurrentVersionTransitions"] = [
            {"NoncurrentDays": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]} for t in noncurrent
        ]
    return out


class _Provisioner:
    def __init__(self, resolved: ResolvedTemplate, clients: ClientFactory) -> None:
        self.resolved = resolved
        self.result = StackResources(
            stack_name=resolved.stack_name,
            region=resolved.region,
            account_id=resolved.account_id,
            endpoint_url=clients.endpoint_url,
        )
        self.s3 = clients.client("s3")
        self.sqs = clients.client("sqs")
        self.sns = clients.client("sns")
        self.dynamodb = clients.client("dynamodb")
        self.secretsmanager = clients.client("secretsmanager")
        self.ssm = clients.client("ssm")
        self.iam = clients.client("iam")
        self.sts = clients.client("sts")
        # bucket name → S3 API NotificationConfiguration, put once at the end
        self.notifications: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._handlers: dict[str, Callable[[str], None]] = {
            "AWS::S3::Bucket": self._bucket,
            "AWS::S3::BucketPolicy": self._bucket_policy,
            "AWS::SQS::Queue": self._queue,
            "AWS::SQS::QueuePolicy": self._queue_policy,
            "AWS::SNS::Topic": self._topic,
            "AWS::SNS::Subscription": self._subscription,
            "AWS::SNS::TopicPolicy": self._topic_policy,
            "AWS::DynamoDB::Table": self._table,
            "AWS::Serverless::SimpleTable": self._simple_table,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::SSM::Parameter": self._parameter,
            "AWS::IAM::ManagedPolicy": self._managed_policy,
        }

    def run(self) -> StackResources:
        for logical_id in self.resolved.creation_order():
            resource = self.resolved.resources[logical_id]
            handler = self._handlers.get(resource.type)
            if resource.type in FUNCTION_TYPES or resource.type in LAYER_TYPES:
                self._record(logical_id, note="run by the local runner")
            elif resource.type == "AWS::IAM::Role":
                continue  # function roles are created last, once everything their policies name exists
            elif handler is None:
                self._skip(logical_id, self._skip_reason(resource.type))
            else:
                try:
                    handler(logical_id)
                except Exception as exc:
                    if isinstance(exc, ProvisioningError):
                        raise
                    raise ProvisioningError(f"cannot create {resource.type} {logical_id}: {exc}") from exc
                unapplied = sorted(set(resource.properties) - _APPLIED.get(resource.type, frozenset()))
                if unapplied:
                    self._warn(f"{logical_id}: {', '.join(unapplied)} not applied locally")
        self._wire_push_event_sources()
        self._put_bucket_notifications()
        self._function_roles()
        return self.result

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    def _skip(self, logical_id: str, reason: str) -> None:
        self.result.skipped[logical_id] = {"type": self.resolved.resources[logical_id].type, "reason": reason}

    @staticmethod
    def _skip_reason(resource_type: str) -> str:
        for prefix, reason in _SKIP_REASONS.items():
            if resource_type.startswith(prefix):
                return reason
        return "no local equivalent: not provisioned"

    def _record(
        self,
        logical_id: str,
        *,
        attributes: dict[str, Any] | None = None,
        url: str | None = None,
        note: str | None = None,
    ) -> ProvisionedResource:
        resolved = self.resolved
        values = {**resolved.predicted_attributes(logical_id), **(attributes or {})}
        resolved.record(logical_id, values)
        arn = values.get("Arn") or values.get("TopicArn") or values.get("LayerVersionArn")
        if arn is None and str(values["Ref"]).startswith("arn:"):  # secrets, subscriptions: Ref is the ARN
            arn = values["Ref"]
        provisioned = ProvisionedResource(
            logical_id=logical_id,
            type=resolved.resources[logical_id].type,
            physical_name=resolved.physical_name(logical_id),
            ref=values["Ref"],
            arn=arn,
            url=url,
            attributes={k: v for k, v in values.items() if k != "Ref"},
            note=note,
        )
        self.result.resources[logical_id] = provisioned
        return provisioned

    def _warn(self, message: str) -> None:
        self.result.warnings.append(message)

    # -- IAM ------------------------------------------------------------------------------------------------------

    def _managed_policy(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        name = str(props.get("ManagedPolicyName") or self.resolved.physical_name(logical_id))
        arn = self.iam.create_policy(
            PolicyName=name,
            Path=str(props.get("Path", "/")),
            PolicyDocument=_json_text(props["PolicyDocument"]),
            Description=str(props.get("Description", "")),
        )["Policy"]["Arn"]
        for role in props.get("Roles") or []:
            self.iam.attach_role_policy(RoleName=str(role), PolicyArn=arn)
        self._record(logical_id, attributes={"Ref": arn, "PolicyArn": arn})

    def _function_roles(self) -> None:
        """Every function's role as SAM makes it (roles.py), trusting the runner as Lambda's stand-in."""
        runner_arn = self.sts.get_caller_identity()["Arn"]
        specs = function_roles(self.resolved)
        arns = create_roles(self.iam, specs, runner_arn)
        for function, spec in specs.items():
            if spec.logical_id in self.resolved.resources:
                self._record(spec.logical_id, attributes={"Ref": spec.role_name, "Arn": arns[function]})
        for resource in self.resolved.of_type("AWS::IAM::Role"):
            if resource.logical_id not in self.result.resources:
                self._skip(resource.logical_id, "not a function's role: nothing local assumes it")

    # -- S3 -------------------------------------------------------------------------------------------------------

    def _bucket(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        name = self.resolved.physical_name(logical_id)
        create: dict[str, Any] = {"Bucket": name}
        if self.resolved.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": self.resolved.region}
        if props.get("ObjectLockEnabled"):
            create["ObjectLockEnabledForBucket"] = True
        self.s3.create_bucket(**create)
        encryption = (props.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration")
        if encryption:
            rules = [_encryption_rule(rule) for rule in encryption]
            self.s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        block = props.get("PublicAccessBlockConfiguration")
        if block:
            self.s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration={k: bool(v) for k, v in block.items()}
            )
        versioning = props.get("VersioningConfiguration")
        if versioning:
            self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
        lifecycle = (props.get("LifecycleConfiguration") or {}).get("Rules")
        if lifecycle:
            try:
                rules = [_lifecycle_rule(rule) for rule in lifecycle]
                self.s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
            except Exception as exc:  # best effort: nothing expires during a local run anyway
                self._warn(f"{logical_id}: LifecycleConfiguration not applied ({exc})")
        cors = (props.get("CorsConfiguration") or {}).get("CorsRules")
        if cors:
            self.s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [_cors_rule(r) for r in cors]})
        ownership = (props.get("OwnershipControls") or {}).get("Rules")
        if ownership:
            self.s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={"Rules": ownership})
        tags = _tags(props)
        if tags:
            self.s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tags})
        own = props.get("NotificationConfiguration") or {}
        config = self.notifications.setdefault(name, {})
        for item in own.get("QueueConfigurations") or []:
            config.setdefault("QueueConfigurations", []).append(
                _without_none(
                    {"QueueArn": item["Queue"], "Events": [item["Event"]], "Filter": _filter_rules(item.get("Filter"))}
                )
            )
        for item in own.get("TopicConfigurations") or []:
            config.setdefault("TopicConfigurations", []).append(
                _without_none(
                    {"TopicArn": item["Topic"], "Events": [item["Event"]], "Filter": _filter_rules(item.get("Filter"))}
                )
            )
        if own.get("LambdaConfigurations"):
            self._warn(f"{logical_id}: LambdaConfigurations are not delivered locally; declare SAM S3 events instead")
        if own.get("EventBridgeConfiguration"):
            self._warn(f"{logical_id}: EventBridge notifications are not delivered locally")
        self._record(logical_id)

    def _bucket_policy(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        document = dict(props["PolicyDocument"])
        statements = document.get("Statement") or []
        statements = statements if isinstance(statements, list) else [statements]
        # The local endpoint is plain HTTP, and moto enforces bucket policies: a TLS-only deny
        # would refuse every local request. It is kept in the cloud and dropped here, with a warning.
        kept = [s for s in statements if not _denies_plain_http(s)]
        if len(kept) != len(statements):
            self.result.warnings.append(
                f"{logical_id}: TLS-only (aws:SecureTransport) deny not applied to the local HTTP endpoint"
            )
        if kept:
            document["Statement"] = kept
            self.s3.put_bucket_policy(Bucket=str(props["Bucket"]), Policy=_json_text(document))
        self._record(logical_id)

    # -- SQS ------------------------------------------------------------------------------------------------------

    def _queue(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        name = self.resolved.physical_name(logical_id)
        attributes: dict[str, str] = {}
        for key in _QUEUE_ATTRIBUTES:
            if key in props:
                attributes[key] = cfn_string(props[key])
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if key in props:
                attributes[key] = _json_text(props[key])
        # KmsMasterKeyId / KmsDataKeyReusePeriodSeconds: moto stores but never uses them; not worth a KMS key.
        tags = {t["Key"]: t["Value"] for t in _tags(props)}
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self._record(logical_id, attributes={"Ref": url, "QueueUrl": url, "Arn": arn, "QueueName": name}, url=url)

    def _queue_policy(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        policy = _json_text(props["PolicyDocument"])
        for url in props.get("Queues") or []:
            self.sqs.set_queue_attributes(QueueUrl=str(url), Attributes={"Policy": policy})
        self._record(logical_id)

    def _hidden_queue(self, logical_id: str, name: str, visibility_timeout: int, note: str) -> ProvisionedResource:
        url = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout)})[
            "QueueUrl"
        ]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        provisioned = ProvisionedResource(
            logical_id=logical_id,
            type="AWS::SQS::Queue",
            physical_name=name,
            ref=url,
            arn=arn,
            url=url,
            attributes={"QueueUrl": url, "Arn": arn, "QueueName": name},
            local_only=True,
            note=note,
        )
        self.result.resources[logical_id] = provisioned
        return provisioned

    # -- SNS ------------------------------------------------------------------------------------------------------

    def _topic(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        name = self.resolved.physical_name(logical_id)
        attributes = {
            key: cfn_string(props[key])
            for key in ("DisplayName", "FifoTopic", "ContentBasedDeduplication", "SignatureVersion")
            if key in props
        }
        create: dict[str, Any] = {"Name": name, "Attributes": attributes}
        if _tags(props):
            create["Tags"] = _tags(props)
        arn = self.sns.create_topic(**create)["TopicArn"]
        for subscription in props.get("Subscription") or []:
            self._subscribe(logical_id, arn, str(subscription["Protocol"]), str(subscription["Endpoint"]), {})
        self._record(logical_id, attributes={"Ref": arn, "TopicArn": arn, "TopicName": name})

    def _subscribe(
        self, logical_id: str, topic_arn: str, protocol: str, endpoint: str, attributes: dict[str, str]
    ) -> str | None:
        if protocol != "sqs":
            self._warn(f"{logical_id}: {protocol} subscription to {endpoint} is not delivered locally")
            return None
        response = self.sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=endpoint, Attributes=attributes, ReturnSubscriptionArn=True
        )
        return str(response["SubscriptionArn"])

    def _subscription(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        attributes: dict[str, str] = {}
        for key in ("FilterPolicy", "RedrivePolicy", "DeliveryPolicy"):
            if key in props:
                attributes[key] = _json_text(props[key])
        for key in ("FilterPolicyScope", "RawMessageDelivery"):
            if key in props:
                attributes[key] = cfn_string(props[key])
        arn = self._subscribe(
            logical_id, str(props["TopicArn"]), str(props["Protocol"]), str(props["Endpoint"]), attributes
        )
        if arn is None:
            self._skip(logical_id, f"{props['Protocol']} subscriptions are not delivered locally")
            return
        self._record(logical_id, attributes={"Ref": arn})

    def _topic_policy(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        policy = _json_text(props["PolicyDocument"])
        for arn in props.get("Topics") or []:
            self.sns.set_topic_attributes(TopicArn=str(arn), AttributeName="Policy", AttributeValue=policy)
        self._record(logical_id)

    # -- DynamoDB -------------------------------------------------------------------------------------------------

    def _table(self, logical_id: str, props: dict[str, Any] | None = None) -> None:
        props = self.resolved.properties(logical_id) if props is None else props
        name = self.resolved.physical_name(logical_id)
        billing = str(props.get("BillingMode", "PROVISIONED"))
        default_throughput = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        create: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": billing,
        }
        if billing == "PROVISIONED":
            create["ProvisionedThroughput"] = _throughput(props.get("ProvisionedThroughput"), default_throughput)
        indexes = []
        for index in props.get("GlobalSecondaryIndexes") or []:
            gsi = {k: index[k] for k in ("IndexName", "KeySchema", "Projection") if k in index}
            if billing == "PROVISIONED":
                gsi["ProvisionedThroughput"] = _throughput(index.get("ProvisionedThroughput"), default_throughput)
            indexes.append(gsi)
        if indexes:
            create["GlobalSecondaryIndexes"] = indexes
        local_indexes = [
            {k: index[k] for k in ("IndexName", "KeySchema", "Projection") if k in index}
            for index in props.get("LocalSecondaryIndexes") or []
        ]
        if local_indexes:
            create["LocalSecondaryIndexes"] = local_indexes
        stream = props.get("StreamSpecification")
        if stream:
            create["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
        if "TableClass" in props:
            create["TableClass"] = props["TableClass"]
        if _tags(props):
            create["Tags"] = _tags(props)
        description = self.dynamodb.create_table(**create)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and _truthy(ttl.get("Enabled", False)):
            self.dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
            )
        attributes = {"Ref": name, "Arn": description["TableArn"]}
        if description.get("LatestStreamArn"):
            attributes["StreamArn"] = description["LatestStreamArn"]
        self._record(logical_id, attributes=attributes)

    def _simple_table(self, logical_id: str) -> None:
        # SAM's transform makes it an AWS::DynamoDB::Table (key, billing mode), which is what is created.
        table = sam_transform(self.resolved.template, self.resolved.region)["Resources"][logical_id]
        self._table(logical_id, self.resolved.resolve(table["Properties"], path=f"Resources.{logical_id}.Properties"))

    # -- Secrets Manager, SSM -------------------------------------------------------------------------------------

    def _secret(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        name = self.resolved.physical_name(logical_id)
        create: dict[str, Any] = {"Name": name, "SecretString": _secret_string(props)}
        if "Description" in props:
            create["Description"] = str(props["Description"])
        if _tags(props):
            create["Tags"] = _tags(props)
        arn = self.secretsmanager.create_secret(**create)["ARN"]
        self._record(logical_id, attributes={"Ref": arn, "Id": arn})

    def _parameter(self, logical_id: str) -> None:
        props = self.resolved.properties(logical_id)
        name = self.resolved.physical_name(logical_id)
        put: dict[str, Any] = {
            "Name": name,
            "Type": str(props.get("Type", "String")),
            "Value": cfn_string(props["Value"]),
        }
        if "Description" in props:
            put["Description"] = str(props["Description"])
        self.ssm.put_parameter(**put, Overwrite=True)
        self._record(logical_id, attributes={"Ref": name, "Type": str(props.get("Type", "String"))})

    # -- push event sources (S3 → Lambda, SNS → Lambda) -------------------------------------------------------------

    def _wire_push_event_sources(self) -> None:
        for spec in function_specs(self.resolved).values():
            # Long enough for the first attempt and the async retries, so a slow handler is not redelivered.
            visibility = min(43_200, (spec.timeout_s + 30) * (spec.async_config.maximum_retry_attempts + 1) + 60)
            for source in spec.events:
                if isinstance(source, S3EventSource):
                    queue = self._hidden_queue(
                        source.queue_logical_id,
                        hidden_queue_name(self.resolved.stack_name, spec.logical_id, source.name),
                        visibility,
                        f"S3 events of {source.bucket} for {spec.logical_id} ({source.name})",
                    )
                    configuration = _without_none(
                        {
                            "Id": f"{spec.logical_id}-{source.name}",
                            "QueueArn": queue.arn,
                            "Events": list(source.events),
                            "Filter": source.notification_filter(),
                        }
                    )
                    self.notifications.setdefault(source.bucket, {}).setdefault("QueueConfigurations", []).append(
                        configuration
                    )
                elif isinstance(source, SnsEventSource):
                    queue = self._hidden_queue(
                        source.queue_logical_id,
                        hidden_queue_name(self.resolved.stack_name, spec.logical_id, source.name),
                        visibility,
                        f"SNS messages of {source.topic_arn} for {spec.logical_id} ({source.name})",
                    )
                    attributes = {"RawMessageDelivery": "false"}
                    if source.filter_policy is not None:
                        attributes["FilterPolicy"] = json.dumps(source.filter_policy)
                    if source.filter_policy_scope:
                        attributes["FilterPolicyScope"] = source.filter_policy_scope
                    subscription = self._subscribe(spec.logical_id, source.topic_arn, "sqs", str(queue.arn), attributes)
                    queue.attributes["SubscriptionArn"] = subscription

    def _put_bucket_notifications(self) -> None:
        for bucket, configuration in self.notifications.items():
            if configuration:
                self.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)


def _encryption_rule(rule: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    default = rule.get("ServerSideEncryptionByDefault")
    if default:
        out["ApplyServerSideEncryptionByDefault"] = {
            k: default[k] for k in ("SSEAlgorithm", "KMSMasterKeyID") if k in default
        }
    if "BucketKeyEnabled" in rule:
        out["BucketKeyEnabled"] = _truthy(rule["BucketKeyEnabled"])
    return out


def _cors_rule(rule: dict[str, Any]) -> dict[str, Any]:
    renamed = {"ExposedHeaders": "ExposeHeaders", "MaxAge": "MaxAgeSeconds", "Id": "ID"}
    return {renamed.get(k, k): v for k, v in rule.items()}


def _throughput(value: Any, default: dict[str, int]) -> dict[str, int]:
    if not value:
        return default
    return {k: int(value[k]) for k in ("ReadCapacityUnits", "WriteCapacityUnits")}


def _truthy(value: Any) -> bool:
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def _without_none(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def _secret_string(props: dict[str, Any]) -> str:
    if "SecretString" in props:
        return cfn_string(props["SecretString"])
    generate = props.get("GenerateSecretString") or {}
    length = int(generate.get("PasswordLength", 32))
    excluded = set(str(generate.get("ExcludeCharacters", "")))
    alphabet = string.ascii_letters + string.digits
    if not _truthy(generate.get("ExcludePunctuation", False)):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    alphabet = "".join(c for c in alphabet if c not in excluded)
    password = "".join(secrets.choice(alphabet) for _ in range(length))
    template = generate.get("SecretStringTemplate")
    key = generate.get("GenerateStringKey")
    if template and key:
        document = json.loads(template)
        document[key] = password
        return json.dumps(document)
    return password


def _denies_plain_http(statement: Any) -> bool:
    if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
        return False
    condition = statement.get("Condition") or {}
    return any(
        str(values.get("aws:SecureTransport", "")).lower() == "false"
        for operator, values in condition.items()
        if operator == "Bool" and isinstance(values, dict)
    )
