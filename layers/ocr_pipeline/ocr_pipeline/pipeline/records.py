"""What the ports carry: object info, downloads, claims, and the job and page records of the jobs table."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ..usage import Usage
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
