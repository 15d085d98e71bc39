"""Which task a document gets, and which tenant pays for it.

Order of precedence for the task: the object's own metadata (`ocr-task`, `ocr-schema`,
`ocr-prompt`), then the longest matching key-prefix rule, then the default task. Field
validators: the object's `ocr-validate` metadata, else those of the rule that chose the task.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from ..errors import ConfigurationError, InvalidRequest, TenantNotAllowed
from ..field_checks import check_validator_names, parse_validators
from ..tasks import DEFAULT_TASK, OcrTask, TaskOptions, parse_schema_text
from .model import Lane

META_TASK = "ocr-task"
META_SCHEMA = "ocr-schema"
META_PROMPT = "ocr-prompt"
META_TENANT = "ocr-tenant"
META_CORRELATION_ID = "ocr-correlation-id"
META_MODEL = "ocr-model"
# "batch" sends the document through the vendor's Batch File API (half price, answered within 24 h).
META_MODE = "ocr-mode"
# `path=validator,...` or a JSON object {path: validator}; see validation.py.
META_VALIDATE = "ocr-validate"


class RoutingRule(BaseModel):
    """Objects whose key starts with `prefix` get this task (and schema)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field(min_length=1)
    task: OcrTask | None = None
    prompt: str | None = None
    # Inline result_schema, or the key of a JSON object holding it in the input bucket.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    schema_key: str | None = None
    # Field path -> validator name, applied to documents this rule chooses the task for.
    validators: dict[str, str] | None = None
    # Who pays for every object under this prefix, whatever chose its task.
    tenant: str | None = Field(default=None, min_length=1, max_length=128)
    # The lane of every object under this prefix, unless its own `ocr-mode` metadata names one.
    mode: Lane | None = None

    @field_validator("validators")
    @classmethod
    def _known_validators(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # A typo in the stack's rules is a configuration error at cold start, not a failed document.
        if value is not None:
            check_validator_names(value)
        return value


_RULES = TypeAdapter(list[RoutingRule])


def parse_routing_rules(text: str | None) -> list[RoutingRule]:
    if not text or not text.strip():
        return []
    try:
        return _RULES.validate_json(text)
    except ValidationError as exc:
        raise ConfigurationError(f"ROUTING_RULES is not a valid list of rules: {exc.errors()[0]['msg']}") from None


class TaskChoice(BaseModel):
    """The task as chosen before any schema object is read."""

    task: OcrTask | None
    prompt: str | None = None
    inline_schema: dict[str, Any] | None = None
    schema_key: str | None = None
    validators: dict[str, str] | None = None
    decided_by: str  # "metadata", "rule:<prefix>" or "default", for logs and results


def choose_task(
    key: str, metadata: dict[str, str], rules: list[RoutingRule], default: OcrTask = DEFAULT_TASK
) -> TaskChoice:
    meta = {k.lower(): v for k, v in metadata.items()}
    validators = _validators_from_metadata(meta.get(META_VALIDATE))
    if any(name in meta for name in (META_TASK, META_SCHEMA, META_PROMPT)):
        raw_task = meta.get(META_TASK)
        try:
            task = OcrTask(raw_task.strip()) if raw_task else None
        except ValueError:
            known = ", ".join(t.value for t in OcrTask)
            raise InvalidRequest(f"unknown task {raw_task!r} in metadata {META_TASK}; use one of {known}") from None
        inline, schema_key = _schema_reference(meta.get(META_SCHEMA))
        if (inline or schema_key) and task is None:
            task = OcrTask.KEY_INFORMATION_EXTRACTION
        return TaskChoice(
            task=task,
            prompt=meta.get(META_PROMPT),
            inline_schema=inline,
            schema_key=schema_key,
            validators=validators,
            decided_by="metadata",
        )
    matching = [rule for rule in rules if key.startswith(rule.prefix)]
    if matching:
        rule = max(matching, key=lambda r: len(r.prefix))
        task = rule.task
        if (rule.schema_ or rule.schema_key) and task is None:
            task = OcrTask.KEY_INFORMATION_EXTRACTION
        return TaskChoice(
            task=task,
            prompt=rule.prompt,
            inline_schema=rule.schema_,
            schema_key=rule.schema_key,
            validators=validators if validators is not None else rule.validators,
            decided_by=f"rule:{rule.prefix}",
        )
    return TaskChoice(task=default, validators=validators, decided_by="default")


def choose_lane(key: str, metadata: dict[str, str], rules: list[RoutingRule]) -> Lane:
    """The object's `ocr-mode` metadata, else the longest matching rule that names a mode, else real time."""
    meta = {k.lower(): v for k, v in metadata.items()}
    raw = meta.get(META_MODE)
    if raw is not None and raw.strip():
        try:
            return Lane(raw.strip().lower())
        except ValueError:
            known = ", ".join(lane.value for lane in Lane)
            raise InvalidRequest(f"unknown mode {raw!r} in metadata {META_MODE}; use one of {known}") from None
    matching = [rule for rule in rules if rule.mode is not None and key.startswith(rule.prefix)]
    if matching:
        mode = max(matching, key=lambda r: len(r.prefix)).mode
        assert mode is not None
        return mode
    return Lane.REALTIME


def _validators_from_metadata(value: str | None) -> dict[str, str] | None:
    if value is None or not value.strip():
        return None
    try:
        return parse_validators(value)
    except ValueError as exc:
        raise InvalidRequest(f"metadata {META_VALIDATE}: {exc}") from None


def _schema_reference(value: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """`ocr-schema` holds inline JSON or the key of a schema object."""
    if value is None or not value.strip():
        return None, None
    text = value.strip()
    if text.startswith("{"):
        return parse_schema_text(text), None
    return None, text


def task_options(choice: TaskChoice, schema: dict[str, Any] | None) -> TaskOptions:
    return TaskOptions.build(
        task=choice.task,
        result_schema=schema or choice.inline_schema,
        prompt=choice.prompt,
        validators=choice.validators,
    )


def schema_from_object(body: bytes, key: str) -> dict[str, Any]:
    try:
        return parse_schema_text(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequest(f"schema object {key} is not UTF-8 text") from None


class TenantRule(BaseModel):
    """Who pays for an upload. Comma-separated alternatives tried in order: `metadata:<name>`, `prefix` (first
    key segment), `static:<name>`. A routing rule's `tenant` comes first for objects under its prefix.

    The uploader's own claim (`ocr-tenant` metadata) counts only where the operator listed
    `metadata:ocr-tenant`; otherwise an object carrying it is refused, not silently billed elsewhere.
    """

    alternatives: list[tuple[str, str]]

    @classmethod
    def parse(cls, text: str) -> TenantRule:
        alternatives: list[tuple[str, str]] = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            kind, _, arg = part.partition(":")
            if kind not in ("metadata", "prefix", "static") or (kind != "prefix" and not arg):
                raise ConfigurationError(f"TENANT_RULE part {part!r} is not metadata:<name>, prefix or static:<name>")
            alternatives.append((kind, arg))
        if not alternatives:
            raise ConfigurationError("TENANT_RULE is empty")
        return cls(alternatives=alternatives)

    def tenant_for(self, key: str, metadata: dict[str, str], rules: list[RoutingRule] | None = None) -> str:
        """Raises TenantNotAllowed when the object claims a tenant the rules do not let it choose."""
        meta = {k.lower(): v for k, v in metadata.items()}
        claimed = meta.get(META_TENANT)
        listed = {arg.lower() for kind, arg in self.alternatives if kind == "metadata"}
        if claimed and META_TENANT not in listed:
            raise TenantNotAllowed(
                f"metadata {META_TENANT} names tenant {claimed!r}, but the stack's TenantRule does not let uploads "
                "choose who pays"
            )
        ruled = [rule for rule in rules or [] if rule.tenant and key.startswith(rule.prefix)]
        if ruled:
            tenant = str(max(ruled, key=lambda r: len(r.prefix)).tenant)
            if claimed and claimed != tenant:
                raise TenantNotAllowed(f"objects under this prefix are billed to {tenant!r}, not {claimed!r}")
            return tenant
        return self.fallback(key, meta)

    def fallback(self, key: str, metadata: dict[str, str] | None = None) -> str:
        """The tenant the alternatives give, without judging any claim (for announcing a refused document)."""
        meta = {k.lower(): v for k, v in (metadata or {}).items()}
        for kind, arg in self.alternatives:
            if kind == "metadata" and meta.get(arg.lower()):
                return meta[arg.lower()]
            if kind == "prefix" and "/" in key:
                return key.split("/", 1)[0]
            if kind == "static":
                return arg
        return "default"


# An SQS SenderId: an IAM user id, or a role id with the session after a colon (AROA...:session).
ANY_SENDER = "*"
OWN_TENANT = "*"


class RequestTenants(BaseModel):
    """Who pays for a request, by who sent it: `SENDER=TENANT` pairs (REQUEST_TENANTS), as the operator maps them.

    SENDER is the SQS SenderId's principal (an IAM user id `AIDA...`, or a role id `AROA...`, without the
    session) or `*` for any sender. TENANT is a name, or `*`: that sender's request names its own `tenant`.
    Without a mapping a request is billed by TenantRule from its source key, and a request that names
    a tenant anyway is refused.
    """

    model_config = ConfigDict(frozen=True)

    by_sender: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> RequestTenants:
        by_sender: dict[str, str] = {}
        for part in (p.strip() for p in (text or "").split(",") if p.strip()):
            sender, equals, tenant = (x.strip() for x in part.partition("="))
            if not equals or not sender or not tenant:
                raise ConfigurationError(f"REQUEST_TENANTS part {part!r} is not SENDER=TENANT")
            by_sender[sender] = tenant
        return cls(by_sender=by_sender)

    def tenant_for(self, sender_id: str | None, requested: str | None, fallback: str) -> str:
        principal = (sender_id or "").split(":", 1)[0]
        mapped = self.by_sender.get(principal) or self.by_sender.get(ANY_SENDER)
        if mapped == OWN_TENANT:
            return requested or fallback
        if requested is not None and requested != (mapped or fallback):
            raise TenantNotAllowed(
                f"the request names tenant {requested!r}, but the stack's RequestTenants does not let its sender "
                "choose who pays"
            )
        return mapped or fallback
