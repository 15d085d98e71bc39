"""`ocr-pipeline run`: the whole pipeline on this machine, driven the way a user drives it.

Starts the local stack from template.yaml (and the emulator, unless a real backend is chosen),
uploads every file to the input bucket with the options as object metadata, records every
message the topic publishes, and waits until each document has completed or failed.
With `mode=batch` the uploads carry `ocr-mode: batch` and the batch lane runs locally (run_batch.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ocr_pipeline.pipeline.events import EventEnvelope
from ocr_pipeline.pipeline.model import Lane
from ocr_pipeline.pipeline.routing import META_MODE, META_PROMPT, META_SCHEMA, META_TASK
from pydantic import BaseModel, Field

from ocr_devkit.run_batch import (
    BATCH_QUEUE,
    DEFAULT_BATCH_DELAY_S,
    SCHEDULE_INTERVAL_S,
    BatchProgress,
    BatchProgressReader,
    batch_allowance_s,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
LOCAL_SECRET_NAME = "ocr-pipeline/local/dashscope-api-key"
# With injected faults, a hung call must cost seconds, not the production read timeout of minutes: the
# functions' client gives up after FAULT_RUN_READ_TIMEOUT_S, before the emulator drops the connection.
FAULT_RUN_READ_TIMEOUT_S = 10.0
FAULT_RUN_HANG_S = 12.0
EMULATOR_API_KEY = "emulator-local-key"
# Function instances per event source when the emulator answers: it reads one page at a time, so more
# callers only wait in its queue, and each instance is a process of its own (about 100 MB resident).
# `--max-concurrency` (RunOptions.max_concurrency) sets another bound.
EMULATOR_RUN_CONCURRENCY = 3
# Calls in flight per instance when the emulator answers (unless --max-concurrency sets the limits): 12 at
# its engine at once, as many as it reads before a caller's read timeout. Lambda's default (16 calls per
# instance) is for a model that answers many calls at once; on this CPU engine they would only queue.
EMULATOR_RUN_CALLS_PER_INSTANCE = 4
SUPPORTED_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".gif", ".pdf"}
CONTENT_TYPES = {
    ".bmp": "image/bmp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".gif": "image/gif",
    ".pdf": "application/pdf",
}


class RunOptions(BaseModel):
    paths: list[Path]
    out_dir: Path
    task: str | None = None
    schema_text: str | None = None
    prompt: str | None = None
    backend: str = "emulator"
    base_url: str | None = None
    model: str | None = None
    region: str | None = None
    # A model the region's table does not list, sized at this patch (AllowUnlistedModel, UnlistedModelPatch).
    allow_unlisted_model: bool = False
    unlisted_model_patch: int | None = None
    timeout_s: float = 900.0
    fault_rate: float = 0.0
    duplicate_rate: float = 0.0
    kill_rate: float = Field(default=0.0, ge=0.0, le=1.0)  # share of invocations whose worker is killed midway
    seed: int | None = None
    emulator_latency_ms: int = 0
    max_concurrency: int | None = None  # OcrMaxConcurrency: OCR calls in flight across the stack
    # OcrCallsPerInstance; None with max_concurrency: the most that still leaves two instances.
    calls_per_instance: int | None = None
    stack_port: int | None = None  # the local AWS endpoint's port; a free one when None
    overlays: bool = False  # draw advanced_recognition boxes into out/overlays/
    template: Path = TEMPLATE  # the SAM template the local stack is derived from (`-t`)
    # Set in every function on top of the template's environment (as `sam local invoke --env-vars`).
    function_env: dict[str, str] = Field(default_factory=dict)
    # The lane of every upload: realtime (a call per page) or batch (the vendor's Batch File API).
    mode: Lane = Lane.REALTIME
    # Batch mode: seconds the emulator takes to complete a batch after it was created.
    batch_delay_s: float = Field(default=DEFAULT_BATCH_DELAY_S, ge=0.0)
    # Batch mode: how the emulator's next batches end (completed, expired, failed, cancelled), in order.
    batch_outcomes: list[str] = Field(default_factory=list)
    # Batch mode: every Nth line of each batch answered with a retryable error line (0: none).
    batch_error_every: int = Field(default=0, ge=0)


class Upload(BaseModel):
    path: Path
    key: str


class DocumentOutcome(BaseModel):
    path: str
    key: str
    status: str  # completed, failed, timed_out
    lane: str | None = None  # document.completed's or document.failed's lane
    job_id: str | None = None
    task: str | None = None
    pages: int | None = None
    pages_failed: list[int] = Field(default_factory=list)
    # Pages the model's output limit cut short (document.completed's pages_truncated).
    pages_truncated: list[int] = Field(default_factory=list)
    # Pages read again in two halves because the first answer was cut (document.completed's pages_split).
    pages_split: list[int] = Field(default_factory=list)
    # "page N: …" for each warning a page result carries (a damaged image, a model sent unlisted).
    warnings: list[str] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    cost: str | None = None
    currency: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    result_file: str | None = None


class RunReport(BaseModel):
    documents: list[DocumentOutcome]
    events_file: str
    event_counts: dict[str, int]
    elapsed_s: float
    stats: dict[str, Any] = Field(default_factory=dict)

    @property
    def failed(self) -> list[DocumentOutcome]:
        return [d for d in self.documents if d.status != "completed"]


def collect_uploads(paths: list[Path]) -> list[Upload]:
    """Files to upload and their keys: a folder's files keep their path relative to it."""
    uploads: list[Upload] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(path)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                if file.suffix.lower() in SUPPORTED_SUFFIXES:
                    uploads.append(Upload(path=file, key=relative.as_posix()))
        elif path.is_file():
            uploads.append(Upload(path=path, key=path.name))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    keys = [u.key for u in uploads]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ValueError(f"two inputs would have the same key: {', '.join(sorted(duplicates))}")
    return uploads


def upload_metadata(options: RunOptions) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if options.task:
        metadata[META_TASK] = options.task
    if options.schema_text:
        metadata[META_SCHEMA] = options.schema_text
    if options.prompt:
        metadata[META_PROMPT] = options.prompt
    if options.mode is Lane.BATCH:
        metadata[META_MODE] = Lane.BATCH.value
    return metadata


@contextmanager
def ocr_backend(options: RunOptions) -> Iterator[tuple[dict[str, str], str | None, Any]]:
    """Template parameters for the chosen backend, the API key to store, and the emulator (if any)."""
    parameters: dict[str, str] = {}
    if options.model:
        parameters["DefaultModel"] = options.model
    if options.region:
        parameters["OcrRegion"] = options.region
    if options.allow_unlisted_model:
        parameters["AllowUnlistedModel"] = "true"
    if options.unlisted_model_patch:
        parameters["UnlistedModelPatch"] = str(options.unlisted_model_patch)
    if options.backend == "emulator":
        from ocr_devkit.emulator.server import EmulatorServer

        batch: dict[str, Any] = {}
        if options.mode is Lane.BATCH:
            batch["batch_completion_delay_s"] = options.batch_delay_s
            batch["batch_outcomes"] = options.batch_outcomes
            if options.batch_error_every:
                batch["batch_error_lines"] = [
                    {"every_nth": options.batch_error_every, "status_code": 500, "code": "InternalError"}
                ]
        with EmulatorServer(
            fault_rate=options.fault_rate,
            seed=options.seed,
            latency_ms=options.emulator_latency_ms,
            hang_seconds=FAULT_RUN_HANG_S,
            **batch,
        ) as server:
            parameters.update(OcrProtocol="dashscope", OcrBaseUrl=options.base_url or server.native_base)
            if options.mode is Lane.BATCH:
                # The Batch File API is served on the compatible-mode base, the emulator's as the vendor's.
                parameters["OcrBatchBaseUrl"] = server.compatible_base
            yield parameters, EMULATOR_API_KEY, server
        return
    parameters["OcrProtocol"] = "dashscope" if options.backend == "dashscope" else "openai"
    if options.base_url:
        parameters["OcrBaseUrl"] = options.base_url
    yield parameters, os.environ.get("DASHSCOPE_API_KEY"), None


class EventRecorder:
    """Reads every message the topic delivered to a subscribed queue, in order."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.envelopes: list[EventEnvelope] = []
        self.raw: list[str] = []

    def poll(self, wait_s: int = 1) -> int:
        received = 0
        while True:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s if not received else 0
            )
            messages = response.get("Messages", [])
            if not messages:
                return received
            for message in messages:
                notification = json.loads(message["Body"])
                self.raw.append(notification["Message"])
                self.envelopes.append(EventEnvelope.model_validate_json(notification["Message"]))
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
            received += len(messages)


def _outcome(upload: Upload, envelope: EventEnvelope | None) -> DocumentOutcome:
    if envelope is None:
        return DocumentOutcome(
            path=str(upload.path),
            key=upload.key,
            status="timed_out",
            error_code="local.timeout",
            error_message="no document.completed or document.failed before the run's timeout",
        )
    data = envelope.data
    if envelope.event_type == "document.failed":
        return DocumentOutcome(
            path=str(upload.path),
            key=upload.key,
            status="failed",
            lane=data.get("lane"),
            job_id=data["job_id"],
            task=data.get("task"),
            pages=data.get("page_count"),
            error_code=data["error"]["code"],
            error_message=data["error"]["message"],
        )
    usage = data["usage"]
    return DocumentOutcome(
        path=str(upload.path),
        key=upload.key,
        status="completed",
        lane=data.get("lane"),
        job_id=data["job_id"],
        task=data.get("task"),
        pages=data["page_count"],
        pages_failed=data.get("pages_failed", []),
        pages_truncated=data.get("pages_truncated", []),
        pages_split=data.get("pages_split", []),
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        image_tokens=usage["image_tokens"],
        cost=data.get("cost"),
        currency=data.get("currency"),
    )


def page_warnings(document: dict[str, Any]) -> list[str]:
    """Each page's warnings, in page order, as "page N: …"."""
    return [
        f"page {page['page']}: {warning}" for page in document.get("pages", []) for warning in page.get("warnings", [])
    ]


def _result_name(key: str) -> str:
    return key.replace("/", "__") + ".json"


ProgressCallback = Callable[[dict[str, tuple[int, int]], set[str]], None]


def job_progress(dynamodb: Any, table: str) -> dict[str, tuple[int, int]]:
    """Pages settled and total per source key, read from the job records."""
    progress: dict[str, tuple[int, int]] = {}
    paginator = dynamodb.get_paginator("scan")
    for page in paginator.paginate(
        TableName=table,
        FilterExpression="sk = :job",
        ExpressionAttributeValues={":job": {"S": "JOB"}},
    ):
        for item in page.get("Items", []):
            spec = json.loads(item["spec"]["S"])
            settled = int(item["pages_done"]["N"]) + int(item["pages_failed"]["N"])
            progress[spec["source"]["key"]] = (settled, int(item["page_count"]["N"]))
    return progress


class LocalPipeline:
    """A running local pipeline: the stack, its buckets, and a recorder of everything the topic publishes."""

    def __init__(self, stack: Any, emulator: Any) -> None:
        self.stack = stack
        self.emulator = emulator
        self.s3 = stack.boto3_client("s3")
        self.input_bucket = stack.resources["InputBucket"].physical_name
        self.result_bucket = stack.resources["ResultBucket"].physical_name
        self.jobs_table = stack.resources["JobsTable"].physical_name
        self.recorder = EventRecorder(stack.boto3_client("sqs"), stack.subscribe_queue_to_topic("NotificationTopic"))

    def upload(self, key: str, body: bytes | Any, *, content_type: str, metadata: dict[str, str] | None = None) -> None:
        self.s3.put_object(
            Bucket=self.input_bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata or {}
        )

    def final_events(self, keys: set[str]) -> dict[str, EventEnvelope]:
        """The first document.completed / document.failed recorded for each of `keys`."""
        final: dict[str, EventEnvelope] = {}
        for envelope in self.recorder.envelopes:
            if envelope.event_type in ("document.completed", "document.failed"):
                key = (envelope.data.get("source") or {}).get("key")
                if key in keys:
                    final.setdefault(key, envelope)
        return final

    def wait_for_documents(
        self, keys: set[str], timeout_s: float, on_poll: Callable[[dict[str, EventEnvelope]], None] | None = None
    ) -> dict[str, EventEnvelope]:
        deadline = time.monotonic() + timeout_s
        final = self.final_events(keys)
        while keys - set(final) and time.monotonic() < deadline:
            self.recorder.poll(wait_s=1)
            final = self.final_events(keys)
            if on_poll is not None:
                on_poll(final)
        return final

    def read_result(self, result_uri: str) -> bytes:
        key = result_uri.removeprefix(f"s3://{self.result_bucket}/")
        return bytes(self.s3.get_object(Bucket=self.result_bucket, Key=key)["Body"].read())


def fault_run_environment(options: RunOptions) -> dict[str, str]:
    """What the functions get on top of the template's environment when the emulator injects faults."""
    if options.backend != "emulator" or options.fault_rate <= 0:
        return {}
    return {"OCR_READ_TIMEOUT_S": f"{FAULT_RUN_READ_TIMEOUT_S:g}"}


def calls_fitting(max_concurrency: int, template: Path = TEMPLATE) -> int:
    """The most calls per instance the template allows (OcrCallsPerInstance's AllowedValues) that leave the
    two instances the event source mapping needs at least."""
    from ocr_devkit.stack.cfn import load_template

    allowed = load_template(template).parameters.get("OcrCallsPerInstance", {}).get("AllowedValues") or [1]
    return max(calls for calls in map(int, allowed) if calls == 1 or 2 * calls <= max_concurrency)


@contextmanager
def local_stack(
    options: RunOptions, *, log_dir: Path, extra_parameters: dict[str, str] | None = None
) -> Iterator[tuple[Any, Any]]:
    """Emulator (unless a real backend is chosen) + the local stack from the template, with the API key stored."""
    from ocr_devkit.stack.local import LocalStack

    with ExitStack() as stack:
        parameters, api_key, emulator = stack.enter_context(ocr_backend(options))

        def store_api_key(clients: Any) -> dict[str, str]:
            """The key's secret exists before the stack, as on AWS, whose policy names its ARN."""
            if not api_key:
                return {}
            secret = clients.client("secretsmanager").create_secret(Name=LOCAL_SECRET_NAME, SecretString=api_key)
            return {"ApiKeySecretArn": secret["ARN"]}

        if options.max_concurrency:
            parameters["OcrMaxConcurrency"] = str(options.max_concurrency)
        calls = options.calls_per_instance or (
            options.max_concurrency and calls_fitting(options.max_concurrency, options.template)
        )
        if emulator is not None and not calls:
            calls = EMULATOR_RUN_CALLS_PER_INSTANCE
        if calls:
            parameters["OcrCallsPerInstance"] = str(calls)
        parameters.update(extra_parameters or {})
        runner_options: dict[str, Any] = {"kill_rate": options.kill_rate}
        if emulator is not None:
            runner_options["concurrency_cap"] = options.max_concurrency or EMULATOR_RUN_CONCURRENCY
        if options.mode is Lane.BATCH:
            runner_options["schedule_interval_s"] = SCHEDULE_INTERVAL_S
        local = stack.enter_context(
            LocalStack(
                options.template,
                parameters=parameters,
                log_dir=log_dir,
                extra_env={**fault_run_environment(options), **options.function_env},
                duplicate_rate=options.duplicate_rate,
                seed=options.seed,
                runner_options=runner_options,
                port=options.stack_port,
                before_provision=store_api_key,
            )
        )
        yield local, emulator


@contextmanager
def local_pipeline(
    options: RunOptions, *, log_dir: Path, extra_parameters: dict[str, str] | None = None
) -> Iterator[LocalPipeline]:
    """The local stack plus an event recorder: what `run` and the integration tests drive."""
    with local_stack(options, log_dir=log_dir, extra_parameters=extra_parameters) as (local, emulator):
        yield LocalPipeline(local, emulator)


@contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does: the stack and the emulator are stopped in order (exit 130).

    Without it the default action ends the process at once (143, not a documented exit code) and
    leaves the interpreter no chance to stop the emulator's engine and the function workers first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def release_emulator_engine() -> None:
    """Unload the emulator's OCR models at the end of a run, its emulator stopped: nothing of onnxruntime
    is left for the interpreter to tear down at exit. Any emulator still running in this process (a
    test's) loads them again on its next page."""
    from ocr_devkit.emulator.engine import shared_engine

    if shared_engine.cache_info().currsize:
        shared_engine().close()


def run_pipeline(
    options: RunOptions,
    *,
    on_progress: ProgressCallback | None = None,
    on_batch_progress: Callable[[BatchProgress], None] | None = None,
) -> RunReport:
    with termination_as_interrupt():
        try:
            return _run_pipeline(options, on_progress=on_progress, on_batch_progress=on_batch_progress)
        finally:
            if options.backend == "emulator":
                release_emulator_engine()


def _run_pipeline(
    options: RunOptions,
    *,
    on_progress: ProgressCallback | None,
    on_batch_progress: Callable[[BatchProgress], None] | None,
) -> RunReport:
    started = time.monotonic()
    uploads = collect_uploads(options.paths)
    out = options.out_dir
    (out / "results").mkdir(parents=True, exist_ok=True)
    events_file = out / "events.jsonl"
    with local_pipeline(options, log_dir=out / "logs") as pipeline:
        metadata = upload_metadata(options)
        for upload in uploads:
            content_type = CONTENT_TYPES.get(upload.path.suffix.lower(), "application/octet-stream")
            with upload.path.open("rb") as body:
                pipeline.upload(upload.key, body, content_type=content_type, metadata=metadata)
        dynamodb = pipeline.stack.boto3_client("dynamodb")
        batches = None
        timeout_s = options.timeout_s
        if options.mode is Lane.BATCH:
            queue_url = pipeline.stack.resources[BATCH_QUEUE].url
            batches = BatchProgressReader(pipeline.stack.boto3_client("sqs"), queue_url, dynamodb, pipeline.jobs_table)
            timeout_s += batch_allowance_s(options.batch_delay_s)

        def report_progress(final: dict[str, EventEnvelope]) -> None:
            if on_progress is not None:
                on_progress(job_progress(dynamodb, pipeline.jobs_table), set(final))
            if batches is not None:
                progress = batches.read()
                if on_batch_progress is not None:
                    on_batch_progress(progress)

        final = pipeline.wait_for_documents({u.key for u in uploads}, timeout_s, report_progress)
        # Billing events of the last pages, and late duplicates, may still be on their way.
        from ocr_devkit.stack.invocation import IdleTimeoutError

        with contextlib.suppress(IdleTimeoutError):
            pipeline.stack.wait_until_idle(timeout=30.0)
        pipeline.recorder.poll(wait_s=1)
        documents: list[DocumentOutcome] = []
        progress = job_progress(dynamodb, pipeline.jobs_table)
        for upload in uploads:
            envelope = final.get(upload.key)
            outcome = _outcome(upload, envelope)
            if envelope is None and upload.key in progress:
                # Unfinished, but counted: its pages are in the totals next to the billing events they caused.
                settled, total = progress[upload.key]
                outcome.pages = total
                outcome.error_message = f"{outcome.error_message}; {settled} of {total} page(s) settled"
            target = out / "results" / _result_name(upload.key)
            if envelope is not None and envelope.event_type == "document.completed":
                target.write_bytes(pipeline.read_result(envelope.data["result_uri"]))
                outcome.warnings = page_warnings(json.loads(target.read_text(encoding="utf-8")))
                if options.overlays:
                    from ocr_devkit.overlay import write_run_overlays

                    write_run_overlays(target, upload.path, out / "overlays")
            else:
                target.write_text(json.dumps(outcome.model_dump(), indent=2, ensure_ascii=False), encoding="utf-8")
            outcome.result_file = str(target)
            documents.append(outcome)
        events_file.write_text("".join(raw + "\n" for raw in pipeline.recorder.raw), encoding="utf-8")
        counts: dict[str, int] = {}
        for envelope in pipeline.recorder.envelopes:
            counts[envelope.event_type] = counts.get(envelope.event_type, 0) + 1
        stats: dict[str, Any] = {"functions": pipeline.stack.runner.stats_dict()}
        if pipeline.emulator is not None:
            stats["emulator"] = pipeline.emulator.stats
        if batches is not None:
            stats["batch"] = batches.read().model_dump()
    return RunReport(
        documents=documents,
        events_file=str(events_file),
        event_counts=counts,
        elapsed_s=round(time.monotonic() - started, 2),
        stats=stats,
    )
