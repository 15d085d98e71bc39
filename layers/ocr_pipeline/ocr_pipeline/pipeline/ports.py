"""The pipeline's ports. Each has an AWS adapter (`adapters/aws.py`) and an in-memory fake (`tests/support/memory.py`)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, BinaryIO, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..errors import OcrPipelineError
from ..usage import Usage
from .events import ErrorInfo, EventEnvelope
from .model import JobSpec


class SourceNotFound(OcrPipelineError):
    code = "source.not_found"


class SourceAccessDenied(OcrPipelineError):
    """The source exists or not, but this function may not read it: S3's 403. Permanent: a retry
    meets the same policy. (Without s3:ListBucket, S3 answers a missing key with 403 too.)"""

    code = "source.forbidden"


class StorageError(OcrPipelineError):
    code = "storage.error"
    retryable = True


class ClaimHeld(OcrPipelineError):
    """Another worker holds the claim to publish this page's bill or this document's ending.

    Retryable: the message comes back after the claim's lease, so a claimant that died is taken over
    instead of the message being deleted with the work undone.
    """

    code = "pipeline.claim_held"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        # When trying again can succeed: as the holder's lease runs out. A delivery that came back
        # sooner would only find the claim held again and spend one of the message's receives.
        self.retry_after_s = retry_after_s


class JobNotFound(OcrPipelineError):
    """A page queue message names a job with no record (expired, or deleted by hand): nothing to work for."""

    code = "pipeline.job_not_found"


class WorkInProgress(OcrPipelineError):
    """The same unit of work is running in another invocation (or died there and holds its key until its deadline)."""

    code = "pipeline.in_progress"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueSendError(OcrPipelineError):
    """Some entries of a batch were not accepted; `failed` lists their ids and reasons."""

    code = "queue.send_failed"
    retryable = True

    def __init__(self, message: str, failed: list[dict[str, Any]]) -> None:
        super().__init__(message, failed=failed)
        self.failed = failed


class ObjectInfo(BaseModel):
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    etag: str | None = None
    version_id: str | None = None


class ObjectStore(Protocol):
    def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo: ...

    def get_bytes(
        self, bucket: str, key: str, version_id: str | None = None, byte_range: tuple[int, int] | None = None
    ) -> bytes: ...

    def open_reader(self, bucket: str, key: str, version_id: str | None, size: int) -> BinaryIO:
        """A seekable file over the object that reads only the parts asked for."""
        ...

    def put_json(self, bucket: str, key: str, body: str) -> None: ...

    def put_file(self, bucket: str, key: str, body: BinaryIO, content_type: str | None = None) -> ObjectInfo:
        """Store a (possibly large) file from its current position; returns the stored object's info."""
        ...

    def get_text(self, bucket: str, key: str) -> str: ...

    def list_keys(self, bucket: str, prefix: str) -> list[str]: ...


class WorkQueue(Protocol):
    def send_all(self, bodies: Iterable[str]) -> None: ...


class Download(BaseModel):
    size: int
    sha256: str
    content_type: str | None = None


class SourceFetcher(Protocol):
    """Reads documents named by URL. The caller decides which addresses are safe; the fetcher connects only to those."""

    def resolve(self, host: str, port: int) -> list[str]:
        """Every IP address `host` resolves to now."""
        ...

    def download(self, url: str, address: str, sink: BinaryIO, max_bytes: int) -> Download:
        """GET `url` over a connection to `address` (TLS still verified for the URL's host), into `sink`."""
        ...


class EventBus(Protocol):
    def publish(self, envelope: EventEnvelope) -> None: ...


class Claim(BaseModel):
    """The answer to asking for a leased claim: granted, or held by someone else for `held_for_s` more."""

    model_config = ConfigDict(frozen=True)

    granted: bool
    held_for_s: float = 0.0


class JobStatus(StrEnum):
    RUNNING = "running"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"


class PageStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"


class PageRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    page: int
    status: PageStatus
    result_key: str | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    request_id: str | None = None
    usage_published: bool = False


class JobState(BaseModel):
    spec: JobSpec
    status: JobStatus
    pages_done: int = 0
    pages_failed: int = 0
    result_uri: str | None = None
    error: ErrorInfo | None = None
    dispatched: bool = False

    @property
    def settled(self) -> bool:
        return self.pages_done + self.pages_failed >= self.spec.page_count


class JobStore(Protocol):
    def create_job(self, spec: JobSpec, *, failed_with: ErrorInfo | None = None) -> bool:
        """Create the job (already failed when `failed_with` is given); False when it exists (a redelivered event)."""
        ...

    def get_job(self, job_id: str) -> JobState | None: ...

    def mark_dispatched(self, job_id: str) -> None:
        """Remember that the job's page messages, or its failure event, went out."""
        ...

    def record_page(self, job_id: str, record: PageRecord) -> bool:
        """Store the page marker and bump the job's counter atomically; False when already recorded."""
        ...

    def get_page(self, job_id: str, page: int) -> PageRecord | None: ...

    def list_pages(self, job_id: str) -> list[PageRecord]: ...

    def claim_usage_publication(self, job_id: str, page: int, lease_s: float) -> Claim: ...

    def mark_usage_published(self, job_id: str, page: int) -> None: ...

    def claim_finalization(self, job_id: str, lease_s: float) -> Claim: ...

    def finish_job(
        self, job_id: str, status: JobStatus, *, result_uri: str | None = None, error: ErrorInfo | None = None
    ) -> None: ...
