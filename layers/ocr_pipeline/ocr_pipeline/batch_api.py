"""The port to the vendor's Batch File API: a file of requests goes up, a file of answers comes back.

Neutral on purpose, like ocr_service.py: no HTTP and no wire format. The DashScope adapter
(adapters/dashscope/batch_client.py) speaks the OpenAI-compatible `/files` and `/batches` endpoints;
unit tests use an in-memory fake. Each line of a batch file is one page's chat request, named by a
`custom_id` that says which page of which job it is, and for which attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, BinaryIO, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .errors import OcrPipelineError
from .ocr_service import CallOutcome, OcrCall

# The one endpoint a line may name, as the vendor's batch documentation gives it.
BATCH_ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)


class VendorBatch(BaseModel):
    """A batch as the vendor reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: BatchStatus
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    # Why a batch failed validation, as the vendor words it.
    errors: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


def page_custom_id(job_id: str, page: int, attempt: int) -> str:
    """A line's name: the page, and the attempt it was sent for (a page of an expired batch goes again)."""
    return f"{job_id}-p{page}-a{attempt}"


def batch_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """One line of a batch file, as the vendor documents it."""
    return {"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}


@dataclass(frozen=True)
class BatchAnswer:
    """One line of a batch's output or error file: the call's outcome, or why it failed.

    `error` is classified like a real-time call's (retryable or not); `outcome` carries the usage
    the vendor bills for the line.
    """

    custom_id: str
    outcome: CallOutcome | None = None
    error: OcrPipelineError | None = None


class BatchApi(Protocol):
    """The port to the Batch File API: the DashScope adapter in production, a fake in unit tests."""

    def request_body(self, call: OcrCall) -> dict[str, Any]:
        """The chat request a line carries for this call (the compatible wire format, max_tokens included)."""
        ...

    def upload_file(self, name: str, data: BinaryIO) -> str:
        """Upload a JSONL file with purpose=batch; its file id."""
        ...

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> VendorBatch: ...

    def find_batch(self, input_file_id: str) -> VendorBatch | None:
        """A batch already made from this file, if any: a submitter that died between creating a batch and
        recording it finds it here instead of making a second one."""
        ...

    def get_batch(self, batch_id: str) -> VendorBatch: ...

    def delete_file(self, file_id: str) -> None:
        """Delete a file the vendor holds (a collected batch's input, output and error files): the vendor's file
        storage has a quota, and nothing is read from them again."""
        ...

    def answers(self, file_id: str, call_of: Callable[[str], OcrCall | None]) -> Iterator[BatchAnswer]:
        """The lines of an output or error file, read as they are downloaded. `call_of` gives the call a
        custom_id stands for (its model and image size read the reply); a line it does not know is skipped."""
        ...
