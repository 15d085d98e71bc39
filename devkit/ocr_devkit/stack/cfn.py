"""Load a CloudFormation/SAM template and resolve it the way CloudFormation would for one stack.

`load_template` reads the YAML (short-form tags become their long `Fn::` form), and `resolve_template`
binds it to a stack: parameters (defaults, overrides, constraints), pseudo parameters, conditions,
mappings, and the Ref/GetAtt values of every resource. Before provisioning, those values are predicted
from the physical names; the provisioner replaces them with what moto actually returned
(`ResolvedTemplate.record`), so a resource created later sees the real ARN of one created earlier.

What SAM adds is left to SAM's own transform (aws-sam-translator, `sam_transform`): its Globals merge,
and the resources it generates (execution roles, event source mappings, invoke configs, notifications).
What is hand-written here is what the transform leaves to CloudFormation: evaluating intrinsics,
parameters, conditions and rules, and binding physical names, which moto needs before it can create
anything.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from samtranslator.yaml_helper import intrinsics_multi_constructor

MOTO_ACCOUNT_ID = "123456789012"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"
FUNCTION_TYPES = frozenset({SERVERLESS_FUNCTION, LAMBDA_FUNCTION})
LAYER_TYPES = frozenset({"AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"})

# The property that carries an explicit physical name, per resource type.
NAME_PROPERTY: dict[str, str] = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Serverless::SimpleTable": "TableName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::SSM::Parameter": "Name",
    SERVERLESS_FUNCTION: "FunctionName",
    LAMBDA_FUNCTION: "FunctionName",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::Policy": "PolicyName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CloudWatch::Dashboard": "DashboardName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Events::Rule": "Name",
    "AWS::Events::EventBus": "Name",
    "AWS::KMS::Alias": "AliasName",
}

# Services that limit name length; S3 also wants lower case.
_NAME_LIMITS: dict[str, int] = {
    "AWS::S3::Bucket": 63,
    "AWS::SQS::Queue": 80,
    "AWS::SNS::Topic": 256,
    "AWS::DynamoDB::Table": 255,
    "AWS::Serverless::SimpleTable": 255,
    SERVERLESS_FUNCTION: 64,
    LAMBDA_FUNCTION: 64,
    "AWS::IAM::Role": 64,
    "AWS::IAM::ManagedPolicy": 128,
    "AWS::Serverless::LayerVersion": 140,
    "AWS::Lambda::LayerVersion": 140,
}
_DEFAULT_NAME_LIMIT = 128

PSEUDO_PARAMETERS = frozenset(
    {
        "AWS::Region",
        "AWS::AccountId",
        "AWS::StackName",
        "AWS::StackId",
        "AWS::Partition",
        "AWS::URLSuffix",
        "AWS::NoValue",
        "AWS::NotificationARNs",
    }
)

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class TemplateError(Exception):
    """The template cannot be loaded or resolved; the message says where."""


class UnsupportedIntrinsicError(TemplateError):
    """An intrinsic function that has no local meaning (e.g. Fn::ImportValue)."""


class _NoValue:
    """`AWS::NoValue`: the key or list item that holds it disappears."""

    _instance: _NoValue | None = None

    def __new__(cls) -> _NoValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


# ---------------------------------------------------------------------------------------------------------------------
# Loading


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader + CloudFormation short-form tags.

    Unquoted dates (`Version: 2012-10-17`) stay strings, as CloudFormation reads them.
    """


_TemplateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# Short-form tags (!Ref, !Sub, !GetAtt a.b ...) become their long form, as SAM's own parser reads them.
_TemplateLoader.add_multi_constructor("!", intrinsics_multi_constructor)


@dataclass(frozen=True)
class Template:
    """A loaded template: the raw document (long-form intrinsics) and the folder it came from."""

    body: dict[str, Any]
    directory: Path
    path: Path | None = None

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(self.body.get("Resources") or {})

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return dict(self.body.get("Parameters") or {})

    @property
    def globals(self) -> dict[str, Any]:
        return dict(self.body.get("Globals") or {})

    @property
    def uses_sam(self) -> bool:
        return any(
            str((body or {}).get("Type", "")).startswith("AWS::Serverless::") for body in self.resources.values()
        )


def parse_template(text: str, directory: Path | str = ".") -> Template:
    try:
        body = yaml.load(text, Loader=_TemplateLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TemplateError(f"template is not valid YAML: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("Resources"), dict):
        raise TemplateError("template has no Resources section")
    return Template(body=body, directory=Path(directory).resolve())


def load_template(path: Path | str) -> Template:
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from exc
    template = parse_template(text, path.parent)
    return Template(body=template.body, directory=template.directory, path=path)


# ---------------------------------------------------------------------------------------------------------------------
# Resources


@dataclass(frozen=True)
class Resource:
    """One resource of the stack, with SAM Globals already merged into its properties (still unresolved)."""

    logical_id: str
    type: str
    properties: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    condition: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    implicit: bool = False  # created by the SAM transform (e.g. a function's execution role)


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def generated_name(stack_name: str, logical_id: str, resource_type: str, *, suffix: str = "") -> str:
    """`<stack>-<LogicalId>-<hash>`, trimmed to the service's limit, lower case for S3."""
    digest = short_hash(stack_name, logical_id)
    limit = _NAME_LIMITS.get(resource_type, _DEFAULT_NAME_LIMIT) - len(suffix)
    budget = limit - len(digest) - 2
    stack_part = stack_name[: max(1, budget // 2)]
    logical_part = logical_id[: max(1, budget - len(stack_part))]
    name = f"{stack_part}-{logical_part}-{digest}"
    if resource_type == "AWS::S3::Bucket":
        name = re.sub(r"[^a-z0-9.-]", "-", name.lower())
    elif resource_type == "AWS::SQS::Queue" or resource_type == "AWS::SNS::Topic":
        name = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    return name + suffix


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def cfn_string(value: Any) -> str:
    """How CloudFormation turns a scalar into a string property value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------------------------------------------------
# Resolution


class ResolvedTemplate:
    """A template bound to one stack (name, region, account, parameter values).

    `properties(logical_id)` returns a resource's properties with every intrinsic resolved. `attribute`
    answers Ref/GetAtt: predicted from the physical name until `record` stores the provisioned values.
    """

    def __init__(
        self,
        template: Template,
        *,
        stack_name: str,
        region: str = "us-east-1",
        account_id: str = MOTO_ACCOUNT_ID,
        parameters: Mapping[str, Any] | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.template = template
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.mappings: dict[str, Any] = dict(template.body.get("Mappings") or {})
        self.parameters = self._bind_parameters(parameters or {})
        self._condition_definitions: dict[str, Any] = dict(template.body.get("Conditions") or {})
        self._conditions: dict[str, bool] = {}
        self._evaluating_conditions: set[str] = set()
        self._recorded: dict[str, dict[str, Any]] = {}
        self._names: dict[str, str] = {}
        self._naming: set[str] = set()
        self.resources: dict[str, Resource] = {}  # conditions cannot refer to resources
        self.conditions = {name: self.condition(name) for name in self._condition_definitions}
        self._check_rules()
        self.resources = self._collect_resources()

    # -- parameters -----------------------------------------------------------------------------------------------

    def _bind_parameters(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        declared = self.template.parameters
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"parameter overrides name unknown parameters: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            spec = spec or {}
            if name in overrides:
                raw = overrides[name]
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                raise TemplateError(f"parameter {name} has no Default and no override was given")
            values[name] = self._check_parameter(name, spec, raw)
        return values

    @staticmethod
    def _check_parameter(name: str, spec: Mapping[str, Any], raw: Any) -> Any:
        kind = str(spec.get("Type", "String"))
        is_list = kind == "CommaDelimitedList" or kind.startswith("List<")
        if is_list:
            items = [cfn_string(v).strip() for v in raw] if isinstance(raw, list) else cfn_string(raw).split(",")
            items = [item.strip() for item in items] if items != [""] else []
        else:
            items = [cfn_string(raw)]
        allowed = spec.get("AllowedValues")
        pattern = spec.get("AllowedPattern")
        for item in items:
            if allowed is not None and item not in [cfn_string(a) for a in allowed]:
                raise TemplateError(f"parameter {name}={item!r} is not one of AllowedValues {allowed}")
            if pattern is not None and not re.fullmatch(str(pattern), item):
                raise TemplateError(f"parameter {name}={item!r} does not match AllowedPattern {pattern!r}")
            if "MinLength" in spec and len(item) < int(spec["MinLength"]):
                raise TemplateError(f"parameter {name} is shorter than MinLength {spec['MinLength']}")
            if "MaxLength" in spec and len(item) > int(spec["MaxLength"]):
                raise TemplateError(f"parameter {name} is longer than MaxLength {spec['MaxLength']}")
            if kind == "Number" or kind == "List<Number>":
                try:
                    number = float(item)
                except ValueError as exc:
                    raise TemplateError(f"parameter {name}={item!r} is not a Number") from exc
                if "MinValue" in spec and number < float(spec["MinValue"]):
                    raise TemplateError(f"parameter {name}={item} is below MinValue {spec['MinValue']}")
                if "MaxValue" in spec and number > float(spec["MaxValue"]):
                    raise TemplateError(f"parameter {name}={item} is above MaxValue {spec['MaxValue']}")
        # CloudFormation hands every parameter to Ref as a string (or a list of strings).
        return items if is_list else items[0]

    # -- conditions -----------------------------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name in self._conditions:
            return self._conditions[name]
        if name not in self._condition_definitions:
            raise TemplateError(f"unknown condition {name!r}")
        if name in self._evaluating_conditions:
            raise TemplateError(f"condition {name!r} refers to itself")
        self._evaluating_conditions.add(name)
        try:
            value = self._evaluate_condition(self._condition_definitions[name], f"Conditions.{name}")
        finally:
            self._evaluating_conditions.discard(name)
        self._conditions[name] = value
        return value

    def _evaluate_condition(self, value: Any, path: str) -> bool:
        resolved = self.resolve(value, path=path)
        if isinstance(resolved, bool):
            return resolved
        if isinstance(resolved, str) and resolved.lower() in ("true", "false"):
            return resolved.lower() == "true"
        raise TemplateError(f"{path}: a condition must evaluate to true or false, got {resolved!r}")

    def _check_rules(self) -> None:
        """The template's Rules, as CloudFormation checks them before creating anything: a rule whose
        RuleCondition holds (or that has none) fails the stack with its AssertDescription."""
        for name, rule in (self.template.body.get("Rules") or {}).items():
            where = f"Rules.{name}"
            if "RuleCondition" in rule and not self._evaluate_condition(rule["RuleCondition"], where):
                continue
            for index, assertion in enumerate(rule.get("Assertions") or []):
                if not self._evaluate_condition(assertion["Assert"], f"{where}.Assertions[{index}]"):
                    description = assertion.get("AssertDescription") or "assertion failed"
                    raise TemplateError(f"template rule {name}: {' '.join(str(description).split())}")

    # -- resources ------------------------------------------------------------------------------------------------

    def _collect_resources(self) -> dict[str, Resource]:
        # SAM's own Globals merge (maps merge, lists add up, the resource's scalars win, IgnoreGlobals).
        sam_globals = _sam_globals(self.template)
        resources: dict[str, Resource] = {}
        for logical_id, body in self.template.resources.items():
            if not isinstance(body, dict) or "Type" not in body:
                raise TemplateError(f"Resources.{logical_id} has no Type")
            condition = body.get("Condition")
            if condition is not None and not self.condition(str(condition)):
                continue
            properties = dict(body.get("Properties") or {})
            if sam_globals is not None:
                properties = sam_globals.merge(str(body["Type"]), properties, logical_id, body.get("IgnoreGlobals"))
            depends_on = body.get("DependsOn") or ()
            resources[logical_id] = Resource(
                logical_id=logical_id,
                type=str(body["Type"]),
                properties=properties,
                depends_on=(depends_on,) if isinstance(depends_on, str) else tuple(depends_on),
                condition=str(condition) if condition is not None else None,
                metadata=dict(body.get("Metadata") or {}),
            )
        # The execution roles the SAM transform generates: templates refer to them (`!GetAtt FnRole.Arn`), and
        # provisioning records them. Their policies are read from the transform's output (roles.py).
        if self.template.uses_sam:
            for logical_id, body in sam_transform(self.template, self.region)["Resources"].items():
                condition = body.get("Condition")
                if (
                    body["Type"] == "AWS::IAM::Role"
                    and logical_id not in resources
                    and (condition is None or self.condition(str(condition)))
                ):
                    resources[logical_id] = Resource(logical_id, "AWS::IAM::Role", {}, implicit=True)
        return resources

    def resource(self, logical_id: str, *, where: str = "") -> Resource:
        try:
            return self.resources[logical_id]
        except KeyError:
            declared = logical_id in self.template.resources
            reason = "its Condition is false" if declared else "no such resource"
            prefix = f"{where}: " if where else ""
            raise TemplateError(f"{prefix}resource {logical_id!r} is not part of the stack ({reason})") from None

    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type in types]

    def properties(self, logical_id: str) -> dict[str, Any]:
        resource = self.resource(logical_id)
        resolved = self.resolve(resource.properties, path=f"Resources.{logical_id}.Properties")
        return resolved if isinstance(resolved, dict) else {}

    def physical_name(self, logical_id: str) -> str:
        if logical_id in self._names:
            return self._names[logical_id]
        resource = self.resource(logical_id)
        if logical_id in self._naming:
            raise TemplateError(f"the name of {logical_id} depends on itself")
        self._naming.add(logical_id)
        try:
            name_property = NAME_PROPERTY.get(resource.type)
            explicit = resource.properties.get(name_property) if name_property else None
            if explicit is not None:
                value = self.resolve(explicit, path=f"Resources.{logical_id}.Properties.{name_property}")
                name = None if value is NO_VALUE else cfn_string(value)
            else:
                name = None
            if name is None:
                fifo = resource.type in ("AWS::SQS::Queue", "AWS::SNS::Topic") and _truthy(
                    self.resolve(
                        resource.properties.get("FifoQueue", resource.properties.get("FifoTopic", False)),
                        path=f"Resources.{logical_id}.Properties",
                    )
                )
                name = generated_name(self.stack_name, logical_id, resource.type, suffix=".fifo" if fifo else "")
        finally:
            self._naming.discard(logical_id)
        self._names[logical_id] = name
        return name

    def predicted_attributes(self, logical_id: str) -> dict[str, Any]:
        """Ref ("Ref") and GetAtt values CloudFormation would give, computed from the physical name."""
        resource = self.resource(logical_id)
        name = self.physical_name(logical_id)
        region, account, partition = self.region, self.account_id, PARTITION
        kind = resource.type
        if kind == "AWS::S3::Bucket":
            return {
                "Ref": name,
                "Arn": f"arn:{partition}:s3:::{name}",
                "DomainName": f"{name}.s3.{URL_SUFFIX}",
                "RegionalDomainName": f"{name}.s3.{region}.{URL_SUFFIX}",
                "DualStackDomainName": f"{name}.s3.dualstack.{region}.{URL_SUFFIX}",
                "WebsiteURL": f"http://{name}.s3-website-{region}.{URL_SUFFIX}",
            }
        if kind == "AWS::SQS::Queue":
            url = self.queue_url(name)
            return {
                "Ref": url,
                "QueueUrl": url,
                "QueueName": name,
                "Arn": f"arn:{partition}:sqs:{region}:{account}:{name}",
            }
        if kind == "AWS::SNS::Topic":
            arn = f"arn:{partition}:sns:{region}:{account}:{name}"
            return {"Ref": arn, "TopicArn": arn, "TopicName": name}
        if kind in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
            arn = f"arn:{partition}:dynamodb:{region}:{account}:table/{name}"
            return {"Ref": name, "Arn": arn, "StreamArn": f"{arn}/stream/1970-01-01T00:00:00.000"}
        if kind == "AWS::SecretsManager::Secret":
            arn = f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name}-{short_hash(name, length=6)}"
            return {"Ref": arn, "Id": arn}
        if kind == "AWS::SSM::Parameter":
            return {"Ref": name, "Type": "String"}
        if kind in FUNCTION_TYPES:
            return {"Ref": name, "Arn": f"arn:{partition}:lambda:{region}:{account}:function:{name}"}
        if kind in LAYER_TYPES:
            arn = f"arn:{partition}:lambda:{region}:{account}:layer:{name}:1"
            return {"Ref": arn, "LayerVersionArn": arn}
        if kind == "AWS::IAM::Role":
            return {
                "Ref": name,
                "Arn": f"arn:{partition}:iam::{account}:role/{name}",
                "RoleId": f"AROA{short_hash(name)}",
            }
        if kind == "AWS::IAM::ManagedPolicy":
            arn = f"arn:{partition}:iam::{account}:policy/{name}"
            return {"Ref": arn, "PolicyArn": arn}
        if kind == "AWS::Logs::LogGroup":
            return {"Ref": name, "Arn": f"arn:{partition}:logs:{region}:{account}:log-group:{name}:*"}
        if kind == "AWS::CloudWatch::Alarm":
            return {"Ref": name, "Arn": f"arn:{partition}:cloudwatch:{region}:{account}:alarm:{name}"}
        if kind == "AWS::SNS::Subscription":
            return {"Ref": f"arn:{partition}:sns:{region}:{account}:{name}:local-subscription"}
        if kind == "AWS::KMS::Key":
            key_id = str(_uuid_like(self.stack_name, logical_id))
            return {"Ref": key_id, "KeyId": key_id, "Arn": f"arn:{partition}:kms:{region}:{account}:key/{key_id}"}
        if kind == "AWS::Events::Rule":
            return {"Ref": name, "Arn": f"arn:{partition}:events:{region}:{account}:rule/{name}"}
        return {"Ref": name}

    def queue_url(self, queue_name: str) -> str:
        if self.endpoint_url:
            return f"{self.endpoint_url}/{self.account_id}/{queue_name}"
        return f"https://sqs.{self.region}.{URL_SUFFIX}/{self.account_id}/{queue_name}"

    def record(self, logical_id: str, attributes: Mapping[str, Any]) -> None:
        """Store the values provisioning produced; later Ref/GetAtt return these."""
        self._recorded.setdefault(logical_id, {}).update(attributes)

    def attribute(self, logical_id: str, attribute: str = "Ref", *, path: str = "") -> Any:
        recorded = self._recorded.get(logical_id, {})
        if attribute in recorded:
            return recorded[attribute]
        predicted = self.predicted_attributes(logical_id)
        if attribute in predicted:
            return predicted[attribute]
        resource = self.resource(logical_id)
        if resource.type in _KNOWN_ATTRIBUTE_TYPES:
            known = sorted(a for a in predicted if a != "Ref")
            raise TemplateError(
                f"{path or logical_id}: {resource.type} {logical_id} has no attribute {attribute!r} (known: {known})"
            )
        # Types with no local meaning (alarms, roles, ...): any attribute is a stable placeholder.
        return f"local:{logical_id}.{attribute}"

    # -- intrinsic functions --------------------------------------------------------------------------------------

    def resolve(self, value: Any, *, path: str = "") -> Any:
        """Resolve every intrinsic in `value`; `NO_VALUE` keys and list items are removed."""
        if isinstance(value, dict):
            if len(value) == 1:
                key, argument = next(iter(value.items()))
                # {"Condition": name} is an intrinsic only when it names a condition (an IAM statement's
                # Condition block is a map, not a name).
                named_condition = isinstance(argument, str) and argument in self._condition_definitions
                if key == "Ref" or key.startswith("Fn::") or (key == "Condition" and named_condition):
                    return self._intrinsic(key, argument, path)
            result: dict[str, Any] = {}
            for key, item in value.items():
                resolved = self.resolve(item, path=f"{path}.{key}" if path else str(key))
                if resolved is not NO_VALUE:
                    result[key] = resolved
            return result
        if isinstance(value, list):
            items = [self.resolve(item, path=f"{path}[{index}]") for index, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        return value

    def _intrinsic(self, name: str, argument: Any, path: str) -> Any:
        here = f"{path}: {name}" if path else name
        if name == "Ref":
            return self._ref(self._expect_str(self.resolve(argument, path=path), here), here)
        if name == "Condition":
            return self.condition(self._expect_str(argument, here))
        if name == "Fn::GetAtt":
            return self._get_att(argument, here, path)
        if name == "Fn::Sub":
            return self._sub(argument, here, path)
        if name == "Fn::Join":
            delimiter, items = self._expect_list(argument, here, 2)
            resolved = self.resolve(items, path=path)
            if not isinstance(resolved, list):
                raise TemplateError(f"{here}: the second argument must be a list")
            return self.resolve(delimiter, path=path).join(
                cfn_string(item) for item in resolved if item is not NO_VALUE
            )
        if name == "Fn::Select":
            index, items = self._expect_list(argument, here, 2)
            resolved = self.resolve(items, path=path)
            position = int(self.resolve(index, path=path))
            if not isinstance(resolved, list) or not 0 <= position < len(resolved):
                raise TemplateError(f"{here}: index {position} is out of range for {resolved!r}")
            return resolved[position]
        if name == "Fn::Split":
            delimiter, text = self._expect_list(argument, here, 2)
            return self._expect_str(self.resolve(text, path=path), here).split(self.resolve(delimiter, path=path))
        if name == "Fn::If":
            condition, when_true, when_false = self._expect_list(argument, here, 3)
            chosen = when_true if self.condition(self._expect_str(condition, here)) else when_false
            return self.resolve(chosen, path=path)
        if name == "Fn::Equals":
            left, right = self._expect_list(argument, here, 2)
            return _comparable(self.resolve(left, path=path)) == _comparable(self.resolve(right, path=path))
        if name == "Fn::Not":
            (inner,) = self._expect_list(argument, here, 1)
            return not self._evaluate_condition(inner, path)
        if name == "Fn::And":
            return all(self._evaluate_condition(item, path) for item in self._expect_list(argument, here))
        if name == "Fn::Or":
            return any(self._evaluate_condition(item, path) for item in self._expect_list(argument, here))
        if name == "Fn::Contains":
            # A rule function: whether the list holds the value.
            items, value = self._expect_list(argument, here, 2)
            resolved = self.resolve(items, path=path)
            if not isinstance(resolved, list):
                raise TemplateError(f"{here}: the first argument must be a list")
            wanted = _comparable(self.resolve(value, path=path))
            return any(_comparable(item) == wanted for item in resolved)
        if name == "Fn::FindInMap":
            return self._find_in_map(argument, here, path)
        if name == "Fn::GetAZs":
            region = self.resolve(argument, path=path) or self.region
            return [f"{region}{zone}" for zone in "abc"]
        if name == "Fn::Base64":
            text = self._expect_str(self.resolve(argument, path=path), here)
            return base64.b64encode(text.encode()).decode()
        if name == "Fn::Length":
            resolved = self.resolve(argument, path=path)
            if not isinstance(resolved, list):
                raise TemplateError(f"{here}: needs a list")
            return len(resolved)
        if name == "Fn::ToJsonString":
            return json.dumps(self.resolve(argument, path=path), separators=(",", ":"))
        if name == "Fn::ImportValue":
            raise UnsupportedIntrinsicError(
                f"{here}: cross-stack imports cannot be resolved locally; "
                "pass the value as a template parameter and override it instead"
            )
        raise UnsupportedIntrinsicError(f"{here}: not supported by the local stack")

    def _ref(self, target: str, here: str) -> Any:
        if target in PSEUDO_PARAMETERS:
            return self._pseudo(target)
        if target in self.parameters:
            return self.parameters[target]
        if target in self.resources:
            return self.attribute(target, "Ref", path=here)
        if target in self.template.resources:
            self.resource(target, where=here)  # raises: the resource's condition is false
        raise TemplateError(f"{here}: {target!r} is neither a parameter nor a resource of the stack")

    def _pseudo(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:{PARTITION}:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/"
                f"{_uuid_like(self.stack_name)}"
            ),
            # As CloudFormation answers in China and GovCloud regions; moto's own ARNs stay in "aws".
            "AWS::Partition": "aws-cn"
            if self.region.startswith("cn-")
            else "aws-us-gov"
            if self.region.startswith("us-gov-")
            else PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::NotificationARNs": [],
        }[name]

    def _get_att(self, argument: Any, here: str, path: str) -> Any:
        if isinstance(argument, str):
            logical_id, _, attribute = argument.partition(".")
        else:
            logical_id, attribute = self._expect_list(argument, here, 2)
            logical_id = self._expect_str(self.resolve(logical_id, path=path), here)
            attribute = self._expect_str(self.resolve(attribute, path=path), here)
        if logical_id not in self.resources:
            self.resource(logical_id, where=here)  # raises with the reason
        return self.attribute(logical_id, attribute, path=here)

    def _sub(self, argument: Any, here: str, path: str) -> str:
        if isinstance(argument, list):
            text, variables = self._expect_list(argument, here, 2)
            if not isinstance(variables, dict):
                raise TemplateError(f"{here}: the second argument must be a map of variables")
            bound = {key: self.resolve(item, path=path) for key, item in variables.items()}
        else:
            text, bound = argument, {}
        text = self._expect_str(text, here)

        def substitute(match: re.Match[str]) -> str:
            variable = match.group(1)
            if variable.startswith("!"):
                return "${" + variable[1:] + "}"
            variable = variable.strip()
            if variable in bound:
                value = bound[variable]
            elif variable in PSEUDO_PARAMETERS or variable in self.parameters or variable in self.template.resources:
                value = self._ref(variable, here)
            elif "." in variable:
                logical_id, _, attribute = variable.partition(".")
                value = self._get_att([logical_id, attribute], here, path)
            else:
                raise TemplateError(f"{here}: ${{{variable}}} names no parameter, resource or variable")
            if isinstance(value, list):
                raise TemplateError(f"{here}: ${{{variable}}} is a list and cannot be substituted into a string")
            return cfn_string(value)

        return _SUB_VARIABLE.sub(substitute, text)

    def _find_in_map(self, argument: Any, here: str, path: str) -> Any:
        items = self._expect_list(argument, here)
        if len(items) not in (3, 4):
            raise TemplateError(f"{here}: needs [MapName, TopLevelKey, SecondLevelKey]")
        default = None
        if len(items) == 4:
            options = self.resolve(items[3], path=path)
            if not isinstance(options, dict) or "DefaultValue" not in options:
                raise TemplateError(f"{here}: the fourth argument must be {{DefaultValue: ...}}")
            default = options["DefaultValue"]
        keys = [cfn_string(self.resolve(item, path=path)) for item in items[:3]]
        try:
            return self.mappings[keys[0]][keys[1]][keys[2]]
        except (KeyError, TypeError):
            if default is not None:
                return default
            raise TemplateError(f"{here}: no mapping value at {keys}") from None

    @staticmethod
    def _expect_list(value: Any, here: str, length: int | None = None) -> list[Any]:
        if not isinstance(value, list) or (length is not None and len(value) != length):
            expected = f"a list of {length}" if length is not None else "a list"
            raise TemplateError(f"{here}: expects {expected}, got {value!r}")
        return value

    @staticmethod
    def _expect_str(value: Any, here: str) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cfn_string(value)
        if not isinstance(value, str):
            raise TemplateError(f"{here}: expects a string, got {value!r}")
        return value

    # -- dependencies ---------------------------------------------------------------------------------------------

    def dependencies(self, logical_id: str) -> set[str]:
        """Resources this one refers to (Ref, GetAtt, Sub variables) or names in DependsOn."""
        resource = self.resource(logical_id)
        found = set(resource.depends_on)
        found.update(_references(resource.properties))
        return {d for d in found if d in self.resources and d != logical_id}

    def creation_order(self) -> list[str]:
        """Every resource after the ones it depends on; template order among independent ones."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(logical_id: str, chain: tuple[str, ...]) -> None:
            if state.get(logical_id) == 2:
                return
            if state.get(logical_id) == 1:
                cycle = " -> ".join((*chain[chain.index(logical_id) :], logical_id))
                raise TemplateError(f"circular dependency between resources: {cycle}")
            state[logical_id] = 1
            for dependency in sorted(self.dependencies(logical_id), key=list(self.resources).index):
                visit(dependency, (*chain, logical_id))
            state[logical_id] = 2
            order.append(logical_id)

        for logical_id in self.resources:
            visit(logical_id, ())
        return order

    def outputs(self) -> dict[str, Any]:
        """The template's Outputs, resolved; a value that cannot be resolved locally says why instead."""
        resolved: dict[str, Any] = {}
        for name, body in (self.template.body.get("Outputs") or {}).items():
            body = body or {}
            if "Condition" in body and not self.condition(str(body["Condition"])):
                continue
            try:
                resolved[name] = self.resolve(body.get("Value"), path=f"Outputs.{name}.Value")
            except TemplateError as exc:
                resolved[name] = f"<unresolved: {exc}>"
        return resolved

    def resolve_path(self, relative: str) -> Path:
        """A CodeUri/ContentUri folder, relative to the template."""
        return (self.template.directory / relative).resolve()


# Types whose attribute list is known: an unknown GetAtt on them is a template bug worth reporting.
_KNOWN_ATTRIBUTE_TYPES = frozenset(
    {
        "AWS::S3::Bucket",
        "AWS::SQS::Queue",
        "AWS::SNS::Topic",
        "AWS::DynamoDB::Table",
        "AWS::Serverless::SimpleTable",
        "AWS::SecretsManager::Secret",
        *FUNCTION_TYPES,
        *LAYER_TYPES,
    }
)


def _comparable(value: Any) -> Any:
    return cfn_string(value) if isinstance(value, (str, int, float, bool)) else value


def _uuid_like(*parts: str) -> str:
    digest = short_hash(*parts, length=32)
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if len(value) == 1:
            key, argument = next(iter(value.items()))
            if key == "Ref" and isinstance(argument, str):
                yield argument
                return
            if key == "Fn::GetAtt":
                if isinstance(argument, str):
                    yield argument.partition(".")[0]
                elif isinstance(argument, list) and argument and isinstance(argument[0], str):
                    yield argument[0]
                return
            if key == "Fn::Sub":
                text, variables = (argument[0], argument[1]) if isinstance(argument, list) else (argument, {})
                if isinstance(text, str):
                    for variable in _SUB_VARIABLE.findall(text):
                        if not variable.startswith("!") and variable not in (variables or {}):
                            yield variable.strip().partition(".")[0]
                yield from _references(variables)
                return
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def resolve_template(
    template: Template | Path | str,
    *,
    stack_name: str,
    region: str = "us-east-1",
    account_id: str = MOTO_ACCOUNT_ID,
    parameters: Mapping[str, Any] | None = None,
    endpoint_url: str | None = None,
) -> ResolvedTemplate:
    if not isinstance(template, Template):
        template = load_template(template)
    return ResolvedTemplate(
        template,
        stack_name=stack_name,
        region=region,
        account_id=account_id,
        parameters=parameters,
        endpoint_url=endpoint_url,
    )


# ---------------------------------------------------------------------------------------------------------------------
# SAM's transform

_PACKAGED_CODE = ("CodeUri", "ContentUri")


class _NoManagedPolicyNames:
    """SAM looks managed-policy names up with IAM ListPolicies; offline, names must be given as ARNs."""

    def load(self) -> dict[str, str]:
        return {}


def _sam_globals(template: Template) -> Any:
    """The translator's Globals section object, or None for a template without one."""
    if not template.globals:
        return None
    from samtranslator.plugins.globals.globals import Globals, InvalidGlobalsSectionException

    try:
        return Globals(template.body)
    except InvalidGlobalsSectionException as exc:
        raise TemplateError(f"Globals: {exc.message}") from exc


@functools.lru_cache(maxsize=8)
def _translate(text: str, region: str) -> dict[str, Any]:
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    body = json.loads(text)
    for resource in body.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        for key in _PACKAGED_CODE:
            # SAM accepts only packaged code (what `sam package` leaves); the local stack runs the folders,
            # which it reads from the template as written, so a placeholder location is enough here.
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://local-code/{hashlib.sha1(properties[key].encode()).hexdigest()}"
    # The region only picks the partition of the ARNs SAM writes; no AWS call is made.
    session = boto3.session.Session(region_name=region, aws_access_key_id="unused", aws_secret_access_key="unused")
    translated: dict[str, Any] = Translator(None, Parser(), boto_session=session).translate(
        body, {}, _NoManagedPolicyNames()
    )
    return translated


def sam_transform(template: Template, region: str) -> dict[str, Any]:
    """The template as plain CloudFormation, as SAM's transform makes it (cached per text and region).

    Intrinsics are left for `ResolvedTemplate.resolve`; the generated resources refer to the declared
    ones by their logical ids, so they resolve against the same stack.
    """
    try:
        return copy.deepcopy(_translate(json.dumps(template.body, default=str), region))
    except Exception as exc:  # samtranslator's InvalidDocumentException lists every problem in its message
        raise TemplateError(f"SAM transform failed: {exc}") from exc
