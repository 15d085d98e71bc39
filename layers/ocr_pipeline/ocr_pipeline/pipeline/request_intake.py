"""Requests by message: another system asks for a document and hears back on the topic.

A request is one JSON object, validated by `OcrRequest`; its JSON schema is published as
`ocr_pipeline/schemas/ocr-request.v1.json` (generated from this model, and checked against it by a test).
The answer is the usual `document.completed` or `document.failed`, carrying the request's correlation id.
A request that cannot be read or is not allowed is answered with `document.failed` at once, never retried.
Reading a body never raises anything but `MalformedRequest`: a message too deep, too big or badly encoded
to parse is the sender's mistake, not a reason to crash the function and have the queue deliver it again.
"""

from __future__ import annotations

import json
import tempfile
from typing import Annotated, Any, BinaryIO, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..catalog import Region, offered_model
from ..errors import ConfigurationError, InvalidRequest, MalformedRequest, OcrPipelineError
from ..tasks import OcrTask, TaskOptions
from .config import PipelineSettings
from .intake import Admission, DocumentIntake, IntakeOutcome, Rejection, rejection_job_id
from .model import Lane, SourceRef
from .ports import SourceFetcher
from .records import ObjectInfo
from .sources import SourcePolicy

REQUEST_SCHEMA_VERSION = 1
# Downloads stay in memory up to this size, then spill to /tmp.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024

# Far deeper than any valid request (a result_schema is at most 3 levels), far shallower than the
# interpreter's recursion limit, which the schema checks and the validators walk recursively.
MAX_MESSAGE_DEPTH = 32

# Printable, without control characters: these travel in SNS message attributes and logs.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


class S3Source(BaseModel):
    """An object in a bucket the pipeline may read (the input bucket, or one named in RequestSourceBuckets)."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="S3Source")

    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    version_id: str | None = Field(default=None, min_length=1, max_length=1024)


class UrlSource(BaseModel):
    """An https URL whose host is on the URL allowlist and resolves only to public addresses."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="UrlSource")

    url: str = Field(min_length=9, max_length=2048, pattern=r"^https://")


class OcrRequest(BaseModel):
    """One document to recognize, and how."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, title="OcrRequest")

    version: Literal[1] = 1
    source: S3Source | UrlSource
    task: OcrTask | None = Field(default=None, description="A built-in task; the default task when omitted.")
    schema_: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="result_schema for key_information_extraction (implies that task); at most 3 levels deep.",
    )
    prompt: str | None = Field(default=None, min_length=1, max_length=8000, description="A free prompt, not a task.")
    validators: dict[str, str] | None = Field(
        default=None, description="Field checks on the reply: {field path: validator name}, see the README."
    )
    model: str | None = Field(default=None, min_length=1, max_length=128)
    region: Region | None = None
    mode: Lane = Field(
        default=Lane.REALTIME,
        description=(
            "batch: through the vendor's Batch File API, at half price, answered within 24 h "
            "(qwen-vl-ocr and qwen-vl-ocr-latest in cn only; refused otherwise)."
        ),
    )
    tenant: Identifier | None = Field(
        default=None,
        description="Who is billed, where the stack's RequestTenants lets this sender choose; refused otherwise.",
    )
    correlation_id: Identifier | None = Field(
        default=None, description="Echoed in the reply events; the SQS message id when omitted."
    )

    def task_options(self) -> TaskOptions:
        task = self.task
        if self.schema_ is not None and task is None:
            task = OcrTask.KEY_INFORMATION_EXTRACTION
        return TaskOptions.build(task=task, result_schema=self.schema_, prompt=self.prompt, validators=self.validators)


def request_json_schema() -> dict[str, Any]:
    schema = OcrRequest.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"urn:ocr-pipeline:ocr-request:v{REQUEST_SCHEMA_VERSION}"
    return schema


def read_message(body: str | bytes) -> Any:
    """The JSON value of an untrusted message body. Raises MalformedRequest and nothing else."""
    try:
        document = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(f"the message is not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise MalformedRequest("the message is JSON nested too deeply to read") from None
    except Exception as exc:  # too many digits (ValueError), undecodable bytes, out of memory...
        raise MalformedRequest(f"the message cannot be read as JSON ({type(exc).__name__}: {exc})"[:300]) from None
    if _nesting_exceeds(document, MAX_MESSAGE_DEPTH):
        raise MalformedRequest(f"the message is JSON nested more than {MAX_MESSAGE_DEPTH} levels deep")
    return document


def _nesting_exceeds(document: Any, limit: int) -> bool:
    """Without recursion, so the check itself cannot run out of stack."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def parse_request(body: str) -> OcrRequest:
    document = read_message(body)
    if not isinstance(document, dict):
        raise MalformedRequest(f"the message is JSON but not an object ({type(document).__name__})")
    try:
        return OcrRequest.model_validate(document)
    except ValidationError as exc:
        raise InvalidRequest(f"the request does not match the schema: {_problems(exc)}") from None


def readable_correlation_id(body: str) -> str | None:
    """The correlation id of a request that failed validation, when one can still be read from it."""
    try:
        document = read_message(body)
    except MalformedRequest:
        return None
    value = document.get("correlation_id") if isinstance(document, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return OcrRequest.model_validate(
            {"source": {"url": "https://x.invalid"}, "correlation_id": value}
        ).correlation_id
    except ValidationError:
        return None


def _problems(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "request"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


class RequestMessage(BaseModel):
    """A request as the queue delivered it: its SQS message id, raw body, and who sent it (SQS SenderId)."""

    message_id: str
    body: str
    sender_id: str | None = None


class RequestService:
    def __init__(
        self, settings: PipelineSettings, intake: DocumentIntake, fetcher: SourceFetcher, policy: SourcePolicy
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.store = intake.store
        self.fetcher = fetcher
        self.policy = policy

    def handle(self, body: str, message_id: str, sender_id: str | None = None) -> IntakeOutcome:
        """Admit the request's document, or answer it with document.failed. Raises only what another delivery may fix."""
        ocr = self.settings.ocr
        rejection = Rejection(
            job_id=rejection_job_id("request", message_id, body),
            source=None,
            model=ocr.model,
            region=ocr.region,
            tenant=None,
            correlation_id=readable_correlation_id(body) or message_id,
        )
        try:
            request = parse_request(body)
            correlation_id = request.correlation_id or message_id
            tenant = self.tenant_for(request, sender_id)
            rejection = rejection.model_copy(update={"tenant": tenant, "correlation_id": correlation_id})
            region = request.region or ocr.region
            model = self._model(request.model, region)
            options = request.task_options()
            rejection = rejection.model_copy(update={"model": model, "region": region, "options": options})
            source, info = self._resolve(request.source)
            rejection = rejection.model_copy(update={"source": source, "size": info.size})
        except OcrPipelineError as error:
            if error.retryable:
                raise
            return self.intake.reject(rejection, error)
        admission = Admission(
            source=source,
            size=info.size,
            content_type=info.content_type,
            options=options,
            model=model,
            region=region,
            tenant=tenant,
            correlation_id=correlation_id,
            requester=f"{tenant}/{correlation_id}",
            lane=request.mode,
        )
        return self.intake.admit(admission)

    def tenant_for(self, request: OcrRequest, sender_id: str | None) -> str:
        """Who pays: as the operator maps the sender; the request's own `tenant` only where that allows it."""
        key = request.source.key if isinstance(request.source, S3Source) else ""
        by_key = self.settings.tenant_rule.tenant_for(key, {}, self.settings.routing_rules)
        return self.settings.request_tenants.tenant_for(sender_id, request.tenant, by_key)

    def _model(self, requested: str | None, region: Region) -> str:
        ocr = self.settings.ocr
        if requested is None:
            return ocr.model
        if ocr.catalog_checked:
            # Refused here, answered at once: sent on, every page would fail with config.invalid.
            try:
                offered_model(requested, region)
            except ConfigurationError as error:
                raise InvalidRequest(error.message) from None
        # Not checked: a self-hosted server's model has a name only its operator knows.
        return requested

    def _resolve(self, source: S3Source | UrlSource) -> tuple[SourceRef, ObjectInfo]:
        if isinstance(source, S3Source):
            self.policy.check_bucket(source.bucket)
            info = self.store.head(source.bucket, source.key, source.version_id)
            ref = SourceRef(
                bucket=source.bucket,
                key=source.key,
                version_id=info.version_id or source.version_id,
                etag=(info.etag or "").strip('"') or None,
            )
            return ref, info
        return self._fetch(source.url)

    def _fetch(self, url: str) -> tuple[SourceRef, ObjectInfo]:
        """Download to a content-addressed copy in the result bucket, which the page workers then read."""
        target = self.policy.check_url(url)
        address = self.policy.check_addresses(target.host, self.fetcher.resolve(target.host, target.port))
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
            sink = cast(BinaryIO, spool)
            download = self.fetcher.download(target.url, address, sink, self.settings.max_input_bytes)
            sink.seek(0)
            key = f"{self.settings.source_prefix}{download.sha256}"
            info = self.store.put_file(self.settings.result_bucket, key, sink, download.content_type)
        ref = SourceRef(bucket=self.settings.result_bucket, key=key, etag=download.sha256, url=target.url)
        return ref, info.model_copy(update={"size": download.size})


if __name__ == "__main__":  # `make schemas` regenerates the published file from the model
    import sys
    from pathlib import Path

    target = Path(__file__).resolve().parent.parent / "schemas" / f"ocr-request.v{REQUEST_SCHEMA_VERSION}.json"
    target.write_text(json.dumps(request_json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
