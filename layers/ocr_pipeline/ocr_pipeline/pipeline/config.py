"""Pipeline configuration: one pydantic model, read from the environment by the composition root (bootstrap.py)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from ..catalog import OcrDefaults
from ..render_dpi import DEFAULT_PDF_RENDER_DPI, MAX_RENDER_DPI
from ..tasks import DEFAULT_TASK, OcrTask
from .routing import RequestTenants, RoutingRule, TenantRule, parse_routing_rules
from .sources import SourcePolicy

# Uploaders do not choose who pays unless the operator lists metadata:ocr-tenant.
DEFAULT_TENANT_RULE = "static:default"


class TruncationPolicy(StrEnum):
    """What to do with a page whose answer the model's output limit (max_tokens) cut short."""

    # Keep the page as read, billed, with `truncated: true` in its result, listed in document.completed's
    # `pages_truncated` and counted in the PagesTruncated metric.
    FLAG = "flag"
    # Read the page again as two overlapping halves at the same scale and stitch them (truncation.py);
    # every call is billed. A page whose task cannot be stitched, or whose half is cut again, is flagged.
    SPLIT = "split"


class BatchFallback(StrEnum):
    """What becomes of a batch page whose batches expired, failed or were cancelled on every attempt allowed."""

    # The page fails (batch.retries_exhausted); its document still ends, with the page listed as failed.
    FAIL = "fail"
    # The page is sent to the page queue and recognized in real time, at the real-time price.
    REALTIME = "realtime"


def env(variable: str) -> Any:
    """A field read from the environment variable `variable` (template.yaml sets it), or by its own name."""
    return AliasChoices(variable.lower(), variable)


class PipelineSettings(BaseModel):
    """What every function is configured with. Each field names its environment variable; the environment
    is read by the composition root (bootstrap.py), and values come as the template writes them."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, populate_by_name=True)

    result_bucket: str = Field(validation_alias=env("RESULT_BUCKET"))
    topic_arn: str = Field(validation_alias=env("TOPIC_ARN"))
    page_queue_url: str = Field(validation_alias=env("PAGE_QUEUE_URL"))
    jobs_table: str = Field(validation_alias=env("JOBS_TABLE"))
    default_task: OcrTask = Field(default=DEFAULT_TASK, validation_alias=env("DEFAULT_TASK"))
    routing_rules: list[RoutingRule] = Field(default_factory=list, validation_alias=env("ROUTING_RULES"))
    tenant_rule: TenantRule = Field(
        default_factory=lambda: TenantRule.parse(DEFAULT_TENANT_RULE), validation_alias=env("TENANT_RULE")
    )
    request_tenants: RequestTenants = Field(default_factory=RequestTenants, validation_alias=env("REQUEST_TENANTS"))
    # Refused from the object's size alone, before a byte is downloaded.
    max_input_bytes: int = Field(default=100 * 1024 * 1024, gt=0, validation_alias=env("MAX_INPUT_BYTES"))
    max_pages: int = Field(default=5000, gt=0, validation_alias=env("MAX_PAGES"))
    page_chunk_size: int = Field(default=4, gt=0, le=100, validation_alias=env("PAGE_CHUNK_SIZE"))
    # Model calls one function instance keeps in flight (OcrCallsPerInstance): a message's pages go to
    # the model this many at a time. The OCR client bounds the whole process to the same number.
    calls_per_instance: int = Field(default=1, gt=0, validation_alias=env("OCR_CALLS_PER_INSTANCE"))
    # Page messages one invocation sends before it hands the rest on (a PageDispatch message): 100
    # messages are 10 SendMessageBatch calls, well inside any function's timeout.
    dispatch_messages_per_call: int = Field(default=100, gt=0, validation_alias=env("DISPATCH_MESSAGES_PER_CALL"))
    # How long a worker may hold a claim (publishing a usage event, finalizing a job) before another
    # may take over. Sized to the work, not to the function timeout: a worker that dies holding one
    # (out of memory, a host failure) holds up its document only this long. A holder that finds its
    # lease nearly run out before it publishes gives up instead (settlement.py), so a slow holder and its
    # successor never both announce. Finalizing reads every page result, so it gets more per page.
    # More than settlement.LEASE_PUBLISH_MARGIN_S.
    claim_lease_s: float = Field(default=120.0, gt=10, validation_alias=env("CLAIM_LEASE_S"))
    claim_lease_per_page_s: float = Field(default=0.05, ge=0, validation_alias=env("CLAIM_LEASE_PER_PAGE_S"))
    result_prefix: str = "results/"
    work_prefix: str = "jobs/"
    # Copies of documents that requests named by URL, keyed by their SHA-256.
    source_prefix: str = "sources/"
    # Requests may name objects in the input bucket and in these.
    input_bucket: str | None = Field(default=None, validation_alias=env("INPUT_BUCKET"))
    request_source_buckets: list[str] = Field(default_factory=list, validation_alias=env("REQUEST_SOURCE_BUCKETS"))
    # Hosts request URLs may name: exact names or "*.example.com".
    url_allowlist: list[str] = Field(default_factory=list, validation_alias=env("URL_ALLOWLIST"))
    # Powertools Idempotency records; None turns the guard off (the services stay safe to repeat).
    idempotency_table: str | None = Field(default=None, validation_alias=env("IDEMPOTENCY_TABLE"))
    # "prefer": a PDF page whose embedded text layer is complete is read from it, not OCR'd,
    # when the task is plain text recognition (other tasks need the model's structure).
    pdf_text_layer: Literal["ocr", "prefer"] = Field(default="ocr", validation_alias=env("PDF_TEXT_LAYER"))
    # Dots per inch a PDF page of text and drawings is drawn at (pdf_resolution.py); 0: to the pixel budget.
    pdf_render_dpi: float = Field(
        default=DEFAULT_PDF_RENDER_DPI, ge=0, le=MAX_RENDER_DPI, validation_alias=env("PDF_RENDER_DPI")
    )
    truncation_policy: TruncationPolicy = Field(
        default=TruncationPolicy.SPLIT, validation_alias=env("TRUNCATION_POLICY")
    )
    # The model and region of jobs that name none; the OCR service's own settings are the adapter's.
    ocr: OcrDefaults = Field(default_factory=OcrDefaults)
    # --- the batch lane (pipeline/batch_submission.py, pipeline/batch_collection.py) ---
    # Its page queue; None in a stack without the lane, where a batch document is refused at intake.
    batch_queue_url: str | None = Field(default=None, validation_alias=env("BATCH_QUEUE_URL"))
    # Batches a page may be sent in (a batch that expired, failed or was cancelled, or a line that failed
    # retryably, sends it again) before BatchFallback decides.
    batch_max_attempts: int = Field(default=3, ge=1, le=10, validation_alias=env("BATCH_MAX_ATTEMPTS"))
    batch_fallback: BatchFallback = Field(default=BatchFallback.FAIL, validation_alias=env("BATCH_FALLBACK"))
    # Lines of one batch file. The vendor takes up to 50,000; each line is a page prepared by the
    # submitting function, which must prepare them all within its timeout, and settled by the collecting
    # one within its own: 10,000 is more than either does in 15 minutes.
    batch_max_lines: int = Field(default=2000, ge=1, le=10_000, validation_alias=env("BATCH_MAX_LINES"))
    # Bytes of one batch file: the vendor's limit is 100 MB; kept under it for the JSON around each line.
    batch_max_file_bytes: int = Field(
        default=95 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, validation_alias=env("BATCH_MAX_FILE_BYTES")
    )
    batch_prefix: str = "batches/"

    @field_validator("routing_rules", mode="before")
    @classmethod
    def _read_routing_rules(cls, value: Any) -> Any:
        return parse_routing_rules(value) if isinstance(value, str) else value

    @field_validator("tenant_rule", mode="before")
    @classmethod
    def _read_tenant_rule(cls, value: Any) -> Any:
        return TenantRule.parse(value or DEFAULT_TENANT_RULE) if isinstance(value, str) else value

    @field_validator("request_tenants", mode="before")
    @classmethod
    def _read_request_tenants(cls, value: Any) -> Any:
        return RequestTenants.parse(value) if isinstance(value, str) else value

    @field_validator("request_source_buckets", "url_allowlist", mode="before")
    @classmethod
    def _read_names(cls, value: Any) -> Any:
        # A CommaDelimitedList, as CloudFormation joins one.
        return read_names(value) if isinstance(value, str) else value

    @field_validator("pdf_text_layer", "truncation_policy", "batch_fallback", mode="before")
    @classmethod
    def _read_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def source_policy(self) -> SourcePolicy:
        buckets = {*self.request_source_buckets, *([self.input_bucket] if self.input_bucket else [])}
        return SourcePolicy(buckets=frozenset(buckets), url_hosts=tuple(self.url_allowlist))

    @field_validator("result_prefix", "work_prefix", "source_prefix", "batch_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value if not value or value.endswith("/") else value + "/"


def read_names(text: str | None) -> list[str]:
    """A comma-separated list, as CloudFormation joins a CommaDelimitedList."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]
