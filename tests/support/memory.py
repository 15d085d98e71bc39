"""In-memory fakes of the pipeline ports, with the same conditional semantics as the AWS adapters.

Each fake counts the calls made to it by port method (`calls`), one call standing for one AWS
request of its adapter (a paginated listing aside), so tests can pin the requests a page costs.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import BinaryIO

from ocr_pipeline.pipeline.events import ErrorInfo, EventEnvelope
from ocr_pipeline.pipeline.model import JobSpec
from ocr_pipeline.pipeline.port_errors import SourceNotFound, StorageError
from ocr_pipeline.pipeline.records import Claim, JobState, JobStatus, ObjectInfo, PageRecord, PageStatus


class _Counted:
    """Counts calls by port method; several threads of one worker may call at once."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def _count(self, method: str) -> None:
        with self._count_lock:
            self.calls[method] += 1


class MemoryObjectStore(_Counted):
    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[tuple[str, str], tuple[bytes, ObjectInfo]] = {}
        self._lock = threading.Lock()

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
        self._count("head")
        try:
            return self.objects[(bucket, key)][1]
        except KeyError:
            raise SourceNotFound(f"s3://{bucket}/{key} does not exist") from None

    def get_bytes(self, bucket, key, version_id=None, byte_range=None) -> bytes:
        self._count("get_bytes")
        return self._body(bucket, key, byte_range)

    def _body(self, bucket: str, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
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
        # Ranged GETs on AWS, as many as the reader needs; counted as one here.
        self._count("open_reader")
        return io.BytesIO(self._body(bucket, key))

    def put_json(self, bucket: str, key: str, body: str) -> None:
        self._count("put_json")
        self.put(bucket, key, body.encode("utf-8"), content_type="application/json")

    def put_json_if_absent(self, bucket: str, key: str, body: str) -> bool:
        self._count("put_json_if_absent")
        with self._lock:
            if (bucket, key) in self.objects:
                return False
            self.put(bucket, key, body.encode("utf-8"), content_type="application/json")
            return True

    def put_file(self, bucket: str, key: str, body: BinaryIO, content_type: str | None = None) -> ObjectInfo:
        self._count("put_file")
        return self.put(bucket, key, body.read(), content_type=content_type)

    def get_text(self, bucket: str, key: str) -> str:
        self._count("get_text")
        return self._body(bucket, key).decode("utf-8")

    def find_text(self, bucket: str, key: str) -> str | None:
        self._count("find_text")
        found = self.objects.get((bucket, key))
        return found[0].decode("utf-8") if found is not None else None


class MemoryWorkQueue(_Counted):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[str] = []

    def send_all(self, bodies: Iterable[str]) -> None:
        self.bodies.extend(bodies)
        self._count("send_all")


class MemoryEventBus(_Counted):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[EventEnvelope] = []

    def publish(self, envelope: EventEnvelope) -> None:
        self._count("publish")
        self.events.append(envelope)

    def of_type(self, event_type: str) -> list[EventEnvelope]:
        return [e for e in self.events if e.event_type == event_type]


class MemoryJobStore(_Counted):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._clock = clock
        self.jobs: dict[str, JobState] = {}
        self.pages: dict[tuple[str, int], PageRecord] = {}
        self._usage_claims: dict[tuple[str, int], float] = {}
        self._final_claims: dict[str, float] = {}

    def create_job(self, spec: JobSpec, *, failed_with: ErrorInfo | None = None) -> bool:
        self._count("create_job")
        with self._lock:
            if spec.job_id in self.jobs:
                return False
            status = JobStatus.FAILED if failed_with else JobStatus.RUNNING
            self.jobs[spec.job_id] = JobState(spec=spec, status=status, error=failed_with)
            return True

    def get_job(self, job_id: str) -> JobState | None:
        self._count("get_job")
        with self._lock:
            job = self.jobs.get(job_id)
            return job.model_copy() if job else None

    def mark_dispatched(self, job_id: str) -> None:
        self._count("mark_dispatched")
        with self._lock:
            self.jobs[job_id].dispatched = True

    def record_page(self, job_id: str, record: PageRecord, *, usage_claim_s: float | None = None) -> bool:
        self._count("record_page")
        with self._lock:
            if (job_id, record.page) in self.pages:
                return False
            job = self.jobs[job_id]
            self.pages[(job_id, record.page)] = record
            if usage_claim_s is not None:
                self._usage_claims[(job_id, record.page)] = self._clock() + usage_claim_s
            if record.status is PageStatus.DONE:
                job.pages_done += 1
            else:
                job.pages_failed += 1
            return True

    def get_page(self, job_id: str, page: int) -> PageRecord | None:
        self._count("get_page")
        with self._lock:
            return self.pages.get((job_id, page))

    def list_pages(self, job_id: str) -> list[PageRecord]:
        self._count("list_pages")
        with self._lock:
            return sorted((r for (j, _), r in self.pages.items() if j == job_id), key=lambda r: r.page)

    def claim_usage_publication(self, job_id: str, page: int, lease_s: float) -> Claim:
        self._count("claim_usage_publication")
        with self._lock:
            record = self.pages[(job_id, page)]
            now = self._clock()
            held_until = self._usage_claims.get((job_id, page), 0)
            if record.usage_published or held_until > now:
                return Claim(granted=False, held_for_s=max(held_until - now, 0.0))
            self._usage_claims[(job_id, page)] = now + lease_s
            return Claim(granted=True)

    def mark_usage_published(self, job_id: str, page: int) -> None:
        self._count("mark_usage_published")
        with self._lock:
            record = self.pages[(job_id, page)]
            self.pages[(job_id, page)] = record.model_copy(update={"usage_published": True})

    def claim_finalization(self, job_id: str, lease_s: float) -> Claim:
        self._count("claim_finalization")
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
        self._count("finish_job")
        with self._lock:
            job = self.jobs[job_id]
            job.status = status
            job.result_uri = result_uri
            job.error = error
