"""The pipeline's ports, protocols only. Each has an AWS adapter (`adapters/aws.py`) and an in-memory
fake (`tests/support/memory.py`); what they carry is in records.py, what they raise in port_errors.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO, Protocol

from .events import ErrorInfo, EventEnvelope
from .model import JobSpec
from .records import (
    BatchRecord,
    Claim,
    Download,
    InboxMessage,
    JobState,
    JobStatus,
    ObjectInfo,
    PageAssignment,
    PageRecord,
)


class ObjectStore(Protocol):
    def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo: ...

    def get_bytes(
        self, bucket: str, key: str, version_id: str | None = None, byte_range: tuple[int, int] | None = None
    ) -> bytes: ...

    def open_reader(self, bucket: str, key: str, version_id: str | None, size: int) -> BinaryIO:
        """A seekable file over the object that reads only the parts asked for."""
        ...

    def put_json(self, bucket: str, key: str, body: str) -> None: ...

    def put_json_if_absent(self, bucket: str, key: str, body: str) -> bool:
        """Store `body` unless an object is there already (a conditional write); False when one was."""
        ...

    def put_file(self, bucket: str, key: str, body: BinaryIO, content_type: str | None = None) -> ObjectInfo:
        """Store a (possibly large) file from its current position; returns the stored object's info."""
        ...

    def get_text(self, bucket: str, key: str) -> str: ...

    def find_text(self, bucket: str, key: str) -> str | None:
        """The object's text, or None when there is no such object (one GET either way)."""
        ...


class WorkQueue(Protocol):
    def send_all(self, bodies: Iterable[str]) -> None: ...


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


class JobStore(Protocol):
    def create_job(self, spec: JobSpec, *, failed_with: ErrorInfo | None = None) -> bool:
        """Create the job (already failed when `failed_with` is given); False when it exists (a redelivered event)."""
        ...

    def get_job(self, job_id: str) -> JobState | None: ...

    def mark_dispatched(self, job_id: str) -> None:
        """Remember that the job's page messages, or its failure event, went out."""
        ...

    def record_page(self, job_id: str, record: PageRecord, *, usage_claim_s: float | None = None) -> bool:
        """Store the page marker and bump the job's counter atomically; False when already recorded.

        With `usage_claim_s`, the new marker also holds the page's usage claim (claim_usage_publication)
        for that long, so the recorder bills the page without asking for the claim in another write.
        """
        ...

    def get_page(self, job_id: str, page: int) -> PageRecord | None: ...

    def list_pages(self, job_id: str) -> list[PageRecord]: ...

    def claim_usage_publication(self, job_id: str, page: int, lease_s: float) -> Claim: ...

    def mark_usage_published(self, job_id: str, page: int) -> None: ...

    def claim_finalization(self, job_id: str, lease_s: float) -> Claim: ...

    def finish_job(
        self, job_id: str, status: JobStatus, *, result_uri: str | None = None, error: ErrorInfo | None = None
    ) -> None: ...


class BatchStore(Protocol):
    """The batch lane's records (in the jobs table): batches of ours, and which batch holds each page."""

    def assign_page(self, job_id: str, page: int, attempt: int, batch_key: str) -> bool:
        """Put the page in this batch for this attempt, unless it is in one for this attempt or a later one
        (a redelivered message): False then, and the page is left out of this batch."""
        ...

    def page_assignment(self, job_id: str, page: int) -> PageAssignment | None: ...

    def reassign_page(self, job_id: str, page: int, attempt: int, from_key: str, to_key: str) -> bool:
        """Move the page's assignment for this attempt from a batch that was never staged (its submitter died
        while filling it) to another; False when it is no longer assigned to `from_key`."""
        ...

    def get_batch(self, batch_key: str) -> BatchRecord | None:
        """The batch, unfinished or closed; None when it was never staged."""
        ...

    def stage_batch(self, batch: BatchRecord) -> None:
        """Record a new batch (state staged) among the unfinished ones."""
        ...

    def batch_uploaded(self, batch_key: str, file_id: str) -> None: ...

    def batch_opened(self, batch_key: str, vendor_batch_id: str) -> None: ...

    def unfinished_batches(self) -> list[BatchRecord]:
        """Every batch not closed (staged, uploaded or open), oldest first."""
        ...

    def close_batch(self, batch_key: str, vendor_status: str) -> bool:
        """Close it; False when it was closed already (another run did)."""
        ...


class QueueInbox(Protocol):
    """A queue its consumer reads itself (the batch lane's submitter, on a schedule), not an event source mapping."""

    def receive(self, max_messages: int) -> list[InboxMessage]:
        """Up to `max_messages` (at most 10) messages, hidden from other readers for the queue's visibility
        timeout; none when the queue is empty."""
        ...

    def delete(self, receipts: Iterable[str]) -> None: ...
