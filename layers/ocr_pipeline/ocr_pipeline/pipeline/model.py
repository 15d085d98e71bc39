"""The pipeline's data: where a document came from, what to do with it, and the queue messages.

Queue messages are versioned pydantic models so that a worker can refuse one it does not
understand with a clear error instead of misreading it.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from ..catalog import Region
from ..tasks import TaskOptions


class SourceRef(BaseModel):
    """An S3 object at one version: the business identity of a document."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    # Where the document was downloaded from, when a request named a URL; bucket/key then hold our copy.
    url: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class DocumentKind(StrEnum):
    IMAGE = "image"
    PDF = "pdf"
    TIFF = "tiff"


class Lane(StrEnum):
    """How a document's pages reach the model: one call each now, or in the vendor's Batch File API at half price.

    Also how a page was priced (`pricing` of its usage event): a batch document's page that fell back to a
    real-time call is billed at the real-time price.
    """

    REALTIME = "realtime"
    BATCH = "batch"


class JobSpec(BaseModel):
    """Everything a worker needs to process any page of a document; travels in every page message."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    source: SourceRef
    kind: DocumentKind
    size_bytes: int
    content_type: str | None = None
    options: TaskOptions
    model: str
    region: Region
    tenant: str
    correlation_id: str
    page_count: int = Field(ge=1)
    lane: Lane = Lane.REALTIME


class PageWork(BaseModel):
    """One message on the page queue: a chunk of pages of one job.

    Version 2 names the job; its spec (options, a schema included) is read from the job record, stored
    once at admission. A large schema would otherwise travel in every page message and pass SQS's
    256 KB message limit. Version 1 carried the spec itself, and is still read.
    """

    model_config = ConfigDict(frozen=True)

    message_type: Literal["page_work"] = "page_work"
    version: Literal[1, 2] = 2
    job_id: str = Field(min_length=1)
    pages: list[int] = Field(min_length=1)  # 1-based page numbers
    job: JobSpec | None = None  # version 1 only
    # On the batch queue: the batch attempt these pages are for (1 the first; a page of an expired batch comes
    # back with the next). A page goes into one batch per attempt however often its message is delivered.
    attempt: int = Field(default=1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _job_id_of_version_1(cls, data: Any) -> Any:
        if isinstance(data, dict) and "job_id" not in data and isinstance(data.get("job"), dict):
            return {**data, "job_id": data["job"].get("job_id")}
        return data


class PageDispatch(BaseModel):
    """A message on the page queue that sends the next page messages of a job (see DocumentIntake.dispatch).

    Sending every page message of a 5,000-page document in one invocation could outlive the function;
    so each invocation sends a bounded number and hands the rest on with this message.
    """

    model_config = ConfigDict(frozen=True)

    message_type: Literal["page_dispatch"] = "page_dispatch"
    version: Literal[1] = 1
    job_id: str = Field(min_length=1)
    next_page: int = Field(ge=1)


PageQueueMessage = Annotated[PageWork | PageDispatch, Field(discriminator="message_type")]
PAGE_QUEUE_MESSAGE: TypeAdapter[PageWork | PageDispatch] = TypeAdapter(PageQueueMessage)


def job_id_for(
    source: SourceRef,
    options: TaskOptions,
    model: str,
    region: Region,
    *,
    requester: str | None = None,
    lane: Lane = Lane.REALTIME,
) -> str:
    """Deterministic, so a redelivered event finds the job it already created.

    A re-upload of new content under the same key has a new version id / etag, hence a new job.
    `requester` (a request's tenant and correlation id) keeps two requests for the same document
    apart: each asked for, and is owed, its own answer.
    """
    identity: dict[str, object] = {
        "bucket": source.bucket,
        "key": source.key,
        "version": source.version_id or source.etag,
        "options": options.model_dump(mode="json"),
        "model": model,
        "region": region.value,
    }
    if requester is not None:
        identity["requester"] = requester
    if lane is not Lane.REALTIME:
        # Real-time jobs keep the ids they always had; a batch job of the same object is another job.
        identity["lane"] = lane.value
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:32]
