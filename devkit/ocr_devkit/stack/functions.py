"""What the runner needs to know about each Lambda function, read from the resolved template.

A `FunctionSpec` is one `AWS::Serverless::Function` (or an `AWS::Lambda::Function` whose code is a local
folder): handler, code and layer folders, limits, environment, and the event sources that push to it.

The event sources and async settings are read from SAM's transform (`cfn.sam_transform`), as
CloudFormation gets them: SQS event source mappings, SNS subscriptions, event invoke configs and dead-letter
configs, whether SAM generated them from `Events`/`EventInvokeConfig` or the template declares them. S3
events are the exception: SAM folds them into the bucket's NotificationConfiguration, where the event they
came from is lost, and the runner names each event's hidden queue after it; they are read as declared, and
so are Schedule and ScheduleV2 events (`schedules.py`), which the runner fires on a timer. Events that have
no local meaning (Api, streams, ...) are listed in `skipped_events`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .cfn import (
    FUNCTION_TYPES,
    LAYER_TYPES,
    SERVERLESS_FUNCTION,
    ResolvedTemplate,
    TemplateError,
    cfn_string,
    sam_transform,
    short_hash,
)
from .schedules import SCHEDULE_EVENT_TYPES, ScheduleEventSource, schedule_source

DEFAULT_TIMEOUT_S = 3
DEFAULT_MEMORY_MB = 128
DEFAULT_BATCH_SIZE = 10
DEFAULT_ASYNC_RETRIES = 2
DEFAULT_MAX_EVENT_AGE_S = 21_600


@dataclass(frozen=True)
class SqsEventSource:
    """An SQS event source mapping: the runner polls `queue_arn` and invokes with batches."""

    name: str
    queue_arn: str
    batch_size: int = DEFAULT_BATCH_SIZE
    batching_window_s: float = 0.0
    report_batch_item_failures: bool = False
    maximum_concurrency: int | None = None
    enabled: bool = True
    has_filter_criteria: bool = False
    kind: Literal["SQS"] = "SQS"


@dataclass(frozen=True)
class S3EventSource:
    """S3 notifications, delivered locally through a hidden queue (moto cannot invoke Lambda without Docker)."""

    name: str
    bucket: str
    events: tuple[str, ...]
    filter_rules: tuple[tuple[str, str], ...] = ()
    queue_logical_id: str = ""
    kind: Literal["S3"] = "S3"

    def notification_filter(self) -> dict[str, Any] | None:
        if not self.filter_rules:
            return None
        return {"Key": {"FilterRules": [{"Name": name, "Value": value} for name, value in self.filter_rules]}}


@dataclass(frozen=True)
class SnsEventSource:
    """An SNS subscription, delivered locally through a hidden queue subscribed to the topic."""

    name: str
    topic_arn: str
    filter_policy: dict[str, Any] | None = None
    filter_policy_scope: str | None = None
    queue_logical_id: str = ""
    kind: Literal["SNS"] = "SNS"


EventSource = SqsEventSource | S3EventSource | SnsEventSource | ScheduleEventSource


@dataclass(frozen=True)
class Destination:
    """Where an async invocation record goes: an SQS queue or SNS topic ARN (others are not supported locally)."""

    type: str
    arn: str


@dataclass(frozen=True)
class AsyncConfig:
    maximum_retry_attempts: int = DEFAULT_ASYNC_RETRIES
    maximum_event_age_s: int = DEFAULT_MAX_EVENT_AGE_S
    on_success: Destination | None = None
    on_failure: Destination | None = None
    dead_letter: Destination | None = None


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    function_name: str
    arn: str
    handler: str
    code_dir: Path
    runtime: str
    timeout_s: int
    memory_mb: int
    environment: dict[str, str]
    layer_dirs: tuple[Path, ...]
    events: tuple[EventSource, ...]
    reserved_concurrency: int | None = None
    async_config: AsyncConfig = field(default_factory=AsyncConfig)
    skipped_events: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        module, _, _ = self.handler.rpartition(".")
        return module.replace("/", ".")

    @property
    def attribute(self) -> str:
        return self.handler.rpartition(".")[2]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.function_name,
            "arn": self.arn,
            "handler": self.handler,
            "code_dir": str(self.code_dir),
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "events": [{"name": e.name, "type": e.kind} for e in self.events],
            "skipped_events": list(self.skipped_events),
        }


def hidden_queue_logical_id(function_logical_id: str, event_name: str) -> str:
    return f"{function_logical_id}{event_name}LocalQueue"


def hidden_queue_name(stack_name: str, function_logical_id: str, event_name: str) -> str:
    digest = short_hash(stack_name, function_logical_id, event_name)
    base = f"{stack_name}-{function_logical_id}-{event_name}"[: 80 - len(digest) - 7]
    return f"{base}-{digest}-local"


def _int(value: Any, default: int, where: str) -> int:
    if value is None:
        return default
    try:
        return int(float(cfn_string(value)))
    except ValueError as exc:
        raise TemplateError(f"{where}: {value!r} is not a number") from exc


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _destination(value: Any) -> Destination | None:
    if not isinstance(value, dict):
        return None
    arn = value.get("Destination") or value.get("TargetArn")
    kind = value.get("Type") or (_arn_service(arn).upper() if isinstance(arn, str) else None)
    if not arn or not kind:
        return None
    return Destination(type=str(kind).upper(), arn=str(arn))


def _arn_service(arn: str) -> str:
    parts = arn.split(":")
    return parts[2] if len(parts) > 2 else ""


def _layer_dirs(resolved: ResolvedTemplate, layers: list[Any], notes: list[str]) -> tuple[Path, ...]:
    by_arn: dict[str, str] = {}
    for layer in resolved.of_type(*LAYER_TYPES):
        by_arn[str(resolved.attribute(layer.logical_id, "Ref"))] = layer.logical_id
    dirs: list[Path] = []
    for arn in layers:
        logical_id = by_arn.get(str(arn))
        if logical_id is None:
            notes.append(f"layer {arn} is not in the template: its packages must be installed locally")
            continue
        properties = resolved.properties(logical_id)
        content = properties.get("ContentUri", properties.get("Content"))
        if not isinstance(content, str):
            notes.append(f"layer {logical_id} has no local ContentUri folder ({content!r}); skipped")
            continue
        folder = resolved.resolve_path(content)
        if not folder.is_dir():
            raise TemplateError(f"Resources.{logical_id}.Properties.ContentUri: {folder} is not a folder")
        # Lambda extracts a layer to /opt and puts /opt/python on sys.path; SAM builds a source folder into it.
        if (folder / "python").is_dir():
            dirs.append(folder / "python")
        dirs.append(folder)
    return tuple(dirs)


def _declared_events(
    resolved: ResolvedTemplate, logical_id: str, events: Mapping[str, Any], skipped: list[str]
) -> list[EventSource]:
    """The S3 and schedule events of a function's `Events` (see the module's docstring); the kinds with no
    local source are listed in `skipped`. SQS and SNS events come from the transform (`_generated_sources`)."""
    sources: list[EventSource] = []
    for name, event in events.items():
        where = f"Resources.{logical_id}.Properties.Events.{name}"
        if not isinstance(event, dict):
            raise TemplateError(f"{where}: not a map")
        kind = str(event.get("Type", ""))
        props = dict(event.get("Properties") or {})
        if kind == "S3":
            bucket = props.get("Bucket")
            if not isinstance(bucket, str):
                raise TemplateError(f"{where}.Properties.Bucket: must be a Ref to a bucket of the template")
            raw_events = props.get("Events", [])
            s3_events = (raw_events,) if isinstance(raw_events, str) else tuple(str(e) for e in raw_events)
            rules = ((props.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
            sources.append(
                S3EventSource(
                    name=name,
                    bucket=bucket,
                    events=s3_events,
                    filter_rules=tuple((str(r["Name"]).lower(), str(r["Value"])) for r in rules),
                    queue_logical_id=hidden_queue_logical_id(logical_id, name),
                )
            )
        elif kind in SCHEDULE_EVENT_TYPES:
            sources.append(schedule_source(resolved, logical_id, name, kind, props, where))
        elif kind not in ("SQS", "SNS"):
            skipped.append(f"{name} ({kind}): no local event source")
    return sources


def _sqs_source(name: str, props: Mapping[str, Any], where: str) -> SqsEventSource:
    queue = props.get("Queue", props.get("EventSourceArn"))
    if not isinstance(queue, str):
        raise TemplateError(f"{where}: needs a queue ARN")
    scaling = props.get("ScalingConfig") or {}
    response_types = props.get("FunctionResponseTypes") or []
    return SqsEventSource(
        name=name,
        queue_arn=queue,
        batch_size=_int(props.get("BatchSize"), DEFAULT_BATCH_SIZE, where),
        batching_window_s=float(props.get("MaximumBatchingWindowInSeconds") or 0),
        report_batch_item_failures="ReportBatchItemFailures" in response_types,
        maximum_concurrency=_int(scaling.get("MaximumConcurrency"), 0, where) or None,
        enabled=_bool(props.get("Enabled"), True),
        has_filter_criteria=bool(props.get("FilterCriteria")),
    )


def function_specs(resolved: ResolvedTemplate) -> dict[str, FunctionSpec]:
    """Every runnable function of the template, by logical id (resolve after provisioning, for real ARNs)."""
    specs: dict[str, FunctionSpec] = {}
    for resource in resolved.of_type(*FUNCTION_TYPES):
        spec = function_spec(resolved, resource.logical_id)
        if spec is not None:
            specs[spec.logical_id] = spec
    if not specs:
        return specs
    transformed = sam_transform(resolved.template, resolved.region) if resolved.template.uses_sam else {}
    generated = transformed.get("Resources") or resolved.template.resources
    for spec in specs.values():
        specs[spec.logical_id] = _with_generated_sources(resolved, spec, generated)
    return specs


def _function_of(resolved: ResolvedTemplate, spec: FunctionSpec, reference: Any) -> bool:
    return str(resolved.resolve(reference)) in (spec.function_name, spec.arn)


def _with_generated_sources(
    resolved: ResolvedTemplate, spec: FunctionSpec, resources: Mapping[str, Any]
) -> FunctionSpec:
    """`spec` with the event source mappings, SNS subscriptions and async settings that name it."""
    sources: list[EventSource] = []
    skipped = list(spec.skipped_events)
    # SAM's DeadLetterQueue becomes the function's DeadLetterConfig.
    function_props = (resources.get(spec.logical_id) or {}).get("Properties") or {}
    dead_letter = _destination(resolved.resolve(function_props.get("DeadLetterConfig")))
    async_config = AsyncConfig(dead_letter=dead_letter)
    declared = resolved.template.resources
    for logical_id, body in resources.items():
        condition = body.get("Condition")
        if condition is not None and not resolved.condition(str(condition)):
            continue
        kind = body.get("Type")
        props = body.get("Properties") or {}
        where = f"Resources.{logical_id}"
        # SAM names what it generates for an event after the function and the event (`RecognizeFunctionPages`).
        is_generated = logical_id not in declared
        name = logical_id.removeprefix(spec.logical_id) if is_generated else logical_id
        if kind == "AWS::Lambda::EventSourceMapping" and _function_of(resolved, spec, props.get("FunctionName")):
            props = resolved.resolve(props, path=f"{where}.Properties")
            source_arn = str(props.get("EventSourceArn", ""))
            if _arn_service(source_arn) == "sqs":
                sources.append(_sqs_source(name, props, where))
            elif not is_generated:  # a SAM event of another kind is already listed as skipped
                skipped.append(f"{logical_id} ({source_arn}): only SQS event source mappings run locally")
        elif (
            kind == "AWS::SNS::Subscription"
            and is_generated
            and props.get("Protocol") == "lambda"
            and _function_of(resolved, spec, props.get("Endpoint"))
        ):
            props = resolved.resolve(props, path=f"{where}.Properties")
            policy = props.get("FilterPolicy")
            sources.append(
                SnsEventSource(
                    name=name,
                    topic_arn=str(props.get("TopicArn")),
                    filter_policy=json.loads(policy) if isinstance(policy, str) else policy,
                    filter_policy_scope=props.get("FilterPolicyScope"),
                    queue_logical_id=hidden_queue_logical_id(spec.logical_id, name),
                )
            )
        elif kind == "AWS::Lambda::EventInvokeConfig" and _function_of(resolved, spec, props.get("FunctionName")):
            async_config = _async_config(resolved.resolve(props, path=f"{where}.Properties"), async_config.dead_letter)
    # In the order the function declares its events (the transform sorts them), then the mappings declared apart.
    declared_events = list(((declared.get(spec.logical_id) or {}).get("Properties") or {}).get("Events") or {})
    events = sorted(
        (*spec.events, *sources),
        key=lambda event: declared_events.index(event.name) if event.name in declared_events else len(declared_events),
    )
    return replace(spec, events=tuple(events), skipped_events=tuple(skipped), async_config=async_config)


def _async_config(props: Mapping[str, Any], dead_letter: Destination | None) -> AsyncConfig:
    destinations = props.get("DestinationConfig") or {}
    return AsyncConfig(
        maximum_retry_attempts=_int(props.get("MaximumRetryAttempts"), DEFAULT_ASYNC_RETRIES, "EventInvokeConfig"),
        maximum_event_age_s=_int(props.get("MaximumEventAgeInSeconds"), DEFAULT_MAX_EVENT_AGE_S, "EventInvokeConfig"),
        on_success=_destination(destinations.get("OnSuccess")),
        on_failure=_destination(destinations.get("OnFailure")),
        dead_letter=dead_letter,
    )


def function_spec(resolved: ResolvedTemplate, logical_id: str) -> FunctionSpec | None:
    """One function's spec, or None when it cannot run here (not Python, an image, code not in a folder)."""
    resource = resolved.resource(logical_id)
    props = resolved.properties(logical_id)
    where = f"Resources.{logical_id}.Properties"
    runtime = str(props.get("Runtime", ""))
    if props.get("PackageType") == "Image" or not runtime.startswith("python"):
        return None
    code = props.get("CodeUri") if resource.type == SERVERLESS_FUNCTION else props.get("Code")
    if not isinstance(code, str):
        return None
    code_dir = resolved.resolve_path(code)
    if not code_dir.is_dir():
        raise TemplateError(f"{where}.CodeUri: {code_dir} is not a folder")
    handler = str(props.get("Handler", ""))
    if "." not in handler:
        raise TemplateError(f"{where}.Handler: {handler!r} is not module.function")
    environment = {str(k): cfn_string(v) for k, v in ((props.get("Environment") or {}).get("Variables") or {}).items()}
    notes: list[str] = []
    skipped: list[str] = []
    events = _declared_events(resolved, logical_id, props.get("Events") or {}, skipped)
    reserved = props.get("ReservedConcurrentExecutions")
    return FunctionSpec(
        logical_id=logical_id,
        function_name=str(resolved.attribute(logical_id, "Ref")),
        arn=str(resolved.attribute(logical_id, "Arn")),
        handler=handler,
        code_dir=code_dir,
        runtime=runtime,
        timeout_s=_int(props.get("Timeout"), DEFAULT_TIMEOUT_S, f"{where}.Timeout"),
        memory_mb=_int(props.get("MemorySize"), DEFAULT_MEMORY_MB, f"{where}.MemorySize"),
        environment=environment,
        layer_dirs=_layer_dirs(resolved, list(props.get("Layers") or []), notes),
        events=tuple(events),
        reserved_concurrency=_int(reserved, 0, f"{where}.ReservedConcurrentExecutions")
        if reserved is not None
        else None,
        skipped_events=tuple(skipped),
        notes=tuple(notes),
    )
