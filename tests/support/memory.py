"""In-memory fakes of the pipeline ports, with the same conditional semantics as the AWS adapters."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO

from ocr_pipeline.pipeline.events import ErrorInfo, EventEnvelope
from ocr_pipeline.pipeline.model import JobSpec
from ocr_pipeline.pipeline.port_errors import SourceNotFound, StorageError
from ocr_pipeline.pipeline.records import Claim, JobState, JobStatus, ObjectInfo, PageRecord, PageStatus


class MemoryObjectStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, ObjectInfo]] = {}

    def put(self, bucket: str, key: str, body: bytes, *, content_type: str | None = None, metadata=None) -> ObjectInfo:
        info = ObjectInfo(
            size=len(body),
            content_type=content_type,
            metadata=dict(metadata or {}),
            etag=f'"{abs(hash(body)):x}"',
            version_id=None,
        )
        self.objects[(bucket, key)] = (body, info)
        return info

    def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        try:
            return self.objects[(bucket, key)][1]
        except KeyError:
            raise SourceNotFound(f"s3://{bucket}/{key} does not exist") from None

    def get_bytes(self, bucket, key, version_id=None, byte_range=None) -> bytes:
        try:
            body = self.objects[(bucket, key)][0]
        except KeyError:
            raise SourceNotFound(f"s3://{bucket}/{key} does not exist") from None
        if byte_range is not None:
            if byte_range[0] >= len(body):  # as S3: 416 InvalidRange, which the S3 adapter maps to this
                raise StorageError(f"S3 failed on s3://{bucket}/{key}: InvalidRange", bucket=bucket, key=key)
            return body[byte_range[0] : byte_range[1] + 1]
        return body

    def open_reader(self, bucket: str, key: str, version_id: str | None, size: int) -> BinaryIO:
        return io.BytesIO(self.get_bytes(bucket, key, version_id))

    def put_json(self, bucket: str, key: str, body: str) -> None:
        self.put(bucket, key, body.encode("utf-8"), content_type="application/json")

    def put_file(self, bucket: str, key: str, body: BinaryIO, content_type: str | None = None) -> ObjectInfo:
        return self.put(bucket, key, body.read(), content_type=content_type)

    def get_text(self, bucket: str, key: str) -> str:
        return self.get_bytes(bucket, key).decode("utf-8")

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        # A snapshot of the keys: another thread may be storing while this one lists.
        return sorted(k for (b, k) in tuple(self.objects) if b == bucket and k.startswith(prefix))


class MemoryWorkQueue:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send_all(self, bodies: Iterable[str]) -> None:
        self.bodies.extend(bodies)


class MemoryEventBus:
    def __init__(self) -> None:
        self.events: list[EventEnvelope] = []

    def publish(self, envelope: EventEnvelope) -> None:
        self.events.append(envelope)

    def of_type(self, event_type: str) -> list[EventEnvelope]:
        return [e for e in self.events if e.event_type == event_type]


class MemoryJobStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.jobs: dict[str, JobState] = {}
        self.pages: dict[tuple[str, int], PageRecord] = {}
        self._usage_claims: dict[tuple[str, int], float] = {}
        self._final_claims: dict[str, float] = {}

    def create_job(self, spec: JobSpec, *, failed_with: ErrorInfo | None = None) -> bool:
        with self._lock:
            if spec.job_id in self.jobs:
                return False
            status = JobStatus.FAILED if failed_with else JobStatus.RUNNING
            self.jobs[spec.job_id] = JobState(spec=spec, status=status, error=failed_with)
            return True

    def get_job(self, job_id: str) -> JobState | None:
        with self._lock:
            job = self.jobs.get(job_id)
            return job.model_copy() if job else None

    def mark_dispatched(self, job_id: str) -> None:
        with self._lock:
            self.jobs[job_id].dispatched = True

    def record_page(self, job_id: str, record: PageRecord) -> bool:
        with self._lock:
            if (job_id, record.page) in self.pages:
                return False
            job = self.jobs[job_id]
            self.pages[(job_id, record.page)] = record
            if record.status is PageStatus.DONE:
                job.pages_done += 1
            else:
                job.pages_failed += 1
            return True

    def get_page(self, job_id: str, page: int) -> PageRecord | None:
        with self._lock:
            return self.pages.get((job_id, page))

    def list_pages(self, job_id: str) -> list[PageRecord]:
        with self._lock:
            return sorted((r for (j, _), r in self.pages.items() if j == job_id), key=lambda r: r.page)

    def claim_usage_publication(self, job_id: str, page: int, lease_s: float) -> Claim:
        with self._lock:
            record = self.pages[(job_id, page)]
            now = self._clock()
            held_until = self._usage_claims.get((job_id, page), 0)
            if record.usage_published or held_until > now:
                return Claim(granted=False, held_for_s=max(held_until - now, 0.0))
            self._usage_claims[(job_id, page)] = now + lease_s
            return Claim(granted=True)

    def mark_usage_published(self, job_id: str, page: int) -> None:
        with self._lock:
            record = self.pages[(job_id, page)]
            self.pages[(job_id, page)] = record.model_copy(update={"usage_published": True})

    def claim_finalization(self, job_id: str, lease_s: float) -> Claim:
        with self._lock:
            job = self.jobs[job_id]
            now = self._clock()
            held_until = self._final_claims.get(job_id, 0)
            stale = job.status is JobStatus.FINALIZING and held_until <= now
            if job.status is JobStatus.RUNNING or stale:
                job.status = JobStatus.FINALIZING
                self._final_claims[job_id] = now + lease_s
                return Claim(granted=True)
            return Claim(granted=False, held_for_s=max(held_until - now, 0.0))

    def finish_job(self, job_id: str, status: JobStatus, *, result_uri=None, error=None) -> None:
        with self._lock:
            job = self.jobs[job_id]
            job.status = status
            job.result_uri = result_uri
            job.error = error
