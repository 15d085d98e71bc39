"""What the ports carry: object info, downloads, claims, and the job and page records of the jobs table."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ..usage import Pricing, Usage
from .events import ErrorInfo, PageMethod
from .model import JobSpec


class ObjectInfo(BaseModel):
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    etag: str | None = None
    version_id: str | None = None


class Download(BaseModel):
    size: int
    sha256: str
    content_type: str | None = None


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
    # How the page was read (its result's `method`), so billing a recorded page needs no read of that result.
    # None on records written before it was kept.
    method: PageMethod | None = None
    # The price its usage is billed at (its result's `pricing`).
    pricing: Pricing = "realtime"
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


# --- the batch lane ---------------------------------------------------------------------------


class BatchState(StrEnum):
    """Where a batch of ours stands. Each step is recorded before the next begins, so a submitter that dies
    anywhere leaves a record the next run finishes, and never a second vendor batch for the same pages."""

    # Its file is in S3 and its pages are assigned to it; not uploaded to the vendor yet.
    STAGED = "staged"
    # Uploaded: the vendor holds its file (`file_id`); the batch itself may or may not exist yet.
    UPLOADED = "uploaded"
    # The vendor's batch exists (`vendor_batch_id`); the collector polls it.
    OPEN = "open"
    # Its answers are settled, or its pages were sent again: nothing more to do.
    CLOSED = "closed"


class BatchRecord(BaseModel):
    """One batch file of ours and the vendor batch made from it."""

    model_config = ConfigDict(frozen=True)

    batch_key: str
    model: str
    state: BatchState
    # S3 keys (result bucket) of the JSONL file sent, and of the manifest naming each line's page.
    input_key: str
    manifest_key: str
    line_count: int
    input_bytes: int
    created_at: float
    file_id: str | None = None
    vendor_batch_id: str | None = None
    # The vendor's last word on it (completed, expired, ...), once closed.
    vendor_status: str | None = None


class PageAssignment(BaseModel):
    """Which batch a page of the batch lane was put in, for which attempt."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    batch_key: str


class InboxMessage(BaseModel):
    """A message received from a queue its consumer reads itself: its body, and the receipt that deletes it."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    body: str
    receipt: str
