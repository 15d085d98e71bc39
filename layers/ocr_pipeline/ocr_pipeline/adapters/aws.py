"""boto3 adapters of the pipeline ports. SDK errors become typed errors here and nowhere else.

Clients are injected or built lazily (and cached per process), never at import time.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterable
from functools import cache
from itertools import islice
from typing import Any, BinaryIO, cast

from ..pipeline.events import ErrorInfo, EventEnvelope
from ..pipeline.model import JobSpec
from ..pipeline.port_errors import QueueSendError, SourceAccessDenied, SourceNotFound, StorageError
from ..pipeline.records import Claim, JobState, JobStatus, ObjectInfo, PageRecord, PageStatus
from ..usage import Usage
from .ranged import RangedReader

SQS_BATCH_LIMIT = 10
JOB_SK = "JOB"
# Job records expire a while after the work is over; results live in S3.
JOB_RETENTION_S = 30 * 24 * 3600


# boto3's default session is not safe to create clients from in two threads at once; the clients are.
_CLIENT_CREATION = threading.Lock()


@cache
def aws_client(service: str) -> Any:
    import boto3

    with _CLIENT_CREATION:
        return boto3.client(service)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3ObjectStore:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("s3")
        return self._client

    def _version(self, version_id: str | None) -> dict[str, str]:
        return {"VersionId": version_id} if version_id else {}

    def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        try:
            response = self.client.head_object(Bucket=bucket, Key=key, **self._version(version_id))
        except Exception as exc:
            raise self._typed(exc, bucket, key, reading=True) from None
        return ObjectInfo(
            size=int(response.get("ContentLength", 0)),
            content_type=response.get("ContentType"),
            metadata={k.lower(): v for k, v in (response.get("Metadata") or {}).items()},
            etag=response.get("ETag"),
            version_id=response.get("VersionId"),
        )

    def get_bytes(
        self, bucket: str, key: str, version_id: str | None = None, byte_range: tuple[int, int] | None = None
    ) -> bytes:
        extra: dict[str, Any] = self._version(version_id)
        if byte_range is not None:
            extra["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        try:
            response = self.client.get_object(Bucket=bucket, Key=key, **extra)
            return bytes(response["Body"].read())
        except Exception as exc:
            raise self._typed(exc, bucket, key, reading=True) from None

    def open_reader(self, bucket: str, key: str, version_id: str | None, size: int) -> BinaryIO:
        def fetch(first: int, last: int) -> bytes:
            return self.get_bytes(bucket, key, version_id, byte_range=(first, last))

        return cast(BinaryIO, io.BufferedReader(RangedReader(size, fetch), buffer_size=64 * 1024))

    def put_json(self, bucket: str, key: str, body: str) -> None:
        try:
            self.client.put_object(
                Bucket=bucket, Key=key, Body=body.encode("utf-8"), ContentType="application/json; charset=utf-8"
            )
        except Exception as exc:
            raise self._typed(exc, bucket, key) from None

    def put_json_if_absent(self, bucket: str, key: str, body: str) -> bool:
        try:
            # S3's conditional write: 412 PreconditionFailed when the key exists (a 409 is retried, as S3 advises).
            self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body.encode("utf-8"),
                ContentType="application/json; charset=utf-8",
                IfNoneMatch="*",
            )
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412"):
                return False
            raise self._typed(exc, bucket, key) from None
        return True

    def put_file(self, bucket: str, key: str, body: BinaryIO, content_type: str | None = None) -> ObjectInfo:
        extra = {"ContentType": content_type} if content_type else {}
        try:
            # upload_fileobj switches to a multipart upload for large files, so memory stays bounded.
            self.client.upload_fileobj(_CallersFile(body), bucket, key, ExtraArgs=extra)
        except Exception as exc:
            raise self._typed(exc, bucket, key) from None
        return self.head(bucket, key)

    def get_text(self, bucket: str, key: str) -> str:
        return self.get_bytes(bucket, key).decode("utf-8")

    def find_text(self, bucket: str, key: str) -> str | None:
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
            return bytes(response["Body"].read()).decode("utf-8")
        except Exception as exc:
            # A 404 needs s3:ListBucket on the bucket; without it S3 answers 403, which stays an error.
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._typed(exc, bucket, key, reading=True) from None

    @staticmethod
    def _typed(exc: Exception, bucket: str, key: str, *, reading: bool = False) -> Exception:
        """Missing and forbidden reads are permanent; throttling, 5xx and time-outs stay retryable."""
        code = _error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound", "NoSuchVersion", "NoSuchBucket"):
            return SourceNotFound(f"s3://{bucket}/{key} does not exist", bucket=bucket, key=key)
        if reading and code in ("AccessDenied", "403", "Forbidden"):
            return SourceAccessDenied(
                f"s3://{bucket}/{key} may not be read by this function (S3 answers 403 for a missing key too, "
                "unless the reader may list the bucket)",
                bucket=bucket,
                key=key,
            )
        return StorageError(f"S3 failed on s3://{bucket}/{key}: {code or type(exc).__name__}", bucket=bucket, key=key)


class SqsWorkQueue:
    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("sqs")
        return self._client

    def send_all(self, bodies: Iterable[str]) -> None:
        """Send in SendMessageBatch chunks as the bodies come, so memory does not grow with their number."""
        failed: list[dict[str, Any]] = []
        sent = 0
        iterator = iter(bodies)
        while chunk := list(islice(iterator, SQS_BATCH_LIMIT)):
            entries = [{"Id": str(sent + i), "MessageBody": body} for i, body in enumerate(chunk)]
            sent += len(entries)
            try:
                response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as exc:
                failed.extend({"Id": e["Id"], "Code": _error_code(exc) or type(exc).__name__} for e in entries)
                continue
            failed.extend(response.get("Failed", []))
        if failed:
            raise QueueSendError(f"{len(failed)} of {sent} messages were not accepted by SQS", failed)


class SnsEventBus:
    def __init__(self, topic_arn: str, client: Any | None = None) -> None:
        self.topic_arn = topic_arn
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("sns")
        return self._client

    def publish(self, envelope: EventEnvelope) -> None:
        # Attributes let subscribers filter (FilterPolicy) without reading the message body.
        attributes = {
            "event_type": {"DataType": "String", "StringValue": envelope.event_type},
            "correlation_id": {"DataType": "String", "StringValue": envelope.correlation_id},
        }
        tenant = envelope.data.get("tenant")
        if isinstance(tenant, str) and tenant:
            attributes["tenant"] = {"DataType": "String", "StringValue": tenant}
        try:
            self.client.publish(TopicArn=self.topic_arn, Message=envelope.to_json(), MessageAttributes=attributes)
        except Exception as exc:
            raise StorageError(f"SNS publish of {envelope.event_type} failed: {_error_code(exc) or exc}") from None


def _page_sk(page: int) -> str:
    return f"PAGE#{page:06d}"


class DynamoTable:
    """One DynamoDB table, its client made on first use: what the stores on it (jobs, batches) share."""

    def __init__(self, table_name: str, client: Any | None = None, clock: Callable[[], float] = time.time) -> None:
        self.table_name = table_name
        self._client = client
        self._clock = clock

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("dynamodb")
        return self._client

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The item, read consistently; None when there is none."""
        try:
            response = self.client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        except Exception as exc:
            raise StorageError(f"DynamoDB failed: {_error_code(exc) or exc}") from None
        item: dict[str, Any] | None = response.get("Item")
        return item or None

    def _query(self, key_condition: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item the key condition selects, read consistently, page after page, in sort key order."""
        items: list[dict[str, Any]] = []
        try:
            paginator = self.client.get_paginator("query")
            for page in paginator.paginate(
                TableName=self.table_name,
                KeyConditionExpression=key_condition,
                ExpressionAttributeValues=values,
                ConsistentRead=True,
            ):
                items.extend(page.get("Items", []))
        except Exception as exc:
            raise StorageError(f"DynamoDB failed: {_error_code(exc) or exc}") from None
        return items

    def _transaction(self, items: list[dict[str, Any]]) -> bool:
        """One TransactWriteItems; False when its first item's condition refused it (the others' are invariants)."""
        try:
            self.client.transact_write_items(TransactItems=items)
            return True
        except Exception as exc:
            reasons = (getattr(exc, "response", None) or {}).get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise StorageError(f"DynamoDB transaction failed: {_error_code(exc) or exc}") from None

    def _conditional(self, call: Callable[..., Any], **kwargs: Any) -> bool:
        try:
            call(TableName=self.table_name, **kwargs)
            return True
        except Exception as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise StorageError(f"DynamoDB failed: {_error_code(exc) or exc}") from None


class DynamoJobStore(DynamoTable):
    """Jobs and their page markers in one table: pk = job id, sk = "JOB" or "PAGE#000001"."""

    def _claim(self, lease_attribute: str, now: float, **update: Any) -> Claim:
        """A conditional update that takes a lease; refused, it says how long the holder's lease still runs."""
        try:
            self.client.update_item(TableName=self.table_name, ReturnValuesOnConditionCheckFailure="ALL_OLD", **update)
            return Claim(granted=True)
        except Exception as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise StorageError(f"DynamoDB failed: {_error_code(exc) or exc}") from None
            held_until = getattr(exc, "response", {}).get("Item", {}).get(lease_attribute, {}).get("N")
            return Claim(granted=False, held_for_s=max(float(held_until) - now, 0.0) if held_until else 0.0)

    def create_job(self, spec: JobSpec, *, failed_with: ErrorInfo | None = None) -> bool:
        now = int(self._clock())
        item: dict[str, Any] = {
            **_item_key(spec.job_id, JOB_SK),
            "status": {"S": (JobStatus.FAILED if failed_with else JobStatus.RUNNING).value},
            "spec": {"S": spec.model_dump_json()},
            "page_count": {"N": str(spec.page_count)},
            "pages_done": {"N": "0"},
            "pages_failed": {"N": "0"},
            "created_at": {"N": str(now)},
            "expires_at": {"N": str(now + JOB_RETENTION_S)},
        }
        if failed_with is not None:
            item["error"] = {"S": failed_with.model_dump_json()}
        return self._conditional(self.client.put_item, Item=item, ConditionExpression="attribute_not_exists(pk)")

    def get_job(self, job_id: str) -> JobState | None:
        item = self._get(_item_key(job_id, JOB_SK))
        if not item:
            return None
        return _job_from_item(item)

    def mark_dispatched(self, job_id: str) -> None:
        self._conditional(
            self.client.update_item,
            Key=_item_key(job_id, JOB_SK),
            UpdateExpression="SET dispatched = :true",
            ExpressionAttributeValues={":true": {"BOOL": True}},
        )

    def record_page(self, job_id: str, record: PageRecord, *, usage_claim_s: float | None = None) -> bool:
        counter = "pages_done" if record.status is PageStatus.DONE else "pages_failed"
        now = self._clock()
        page_item = _page_item(job_id, record, expires_at=int(now) + JOB_RETENTION_S)
        if usage_claim_s is not None:
            # The claim claim_usage_publication would take, taken by the write that creates the marker.
            page_item["usage_claim_until"] = {"N": str(now + usage_claim_s)}
        return self._transaction(
            [
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": page_item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _item_key(job_id, JOB_SK),
                        "UpdateExpression": f"ADD {counter} :one",
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )

    def get_page(self, job_id: str, page: int) -> PageRecord | None:
        item = self._get(_item_key(job_id, _page_sk(page)))
        return _page_from_item(item) if item else None

    def list_pages(self, job_id: str) -> list[PageRecord]:
        items = self._query(
            "pk = :job AND begins_with(sk, :prefix)", {":job": {"S": job_id}, ":prefix": {"S": "PAGE#"}}
        )
        return sorted((_page_from_item(item) for item in items), key=lambda r: r.page)

    def claim_usage_publication(self, job_id: str, page: int, lease_s: float) -> Claim:
        now = self._clock()
        return self._claim(
            "usage_claim_until",
            now,
            Key=_item_key(job_id, _page_sk(page)),
            UpdateExpression="SET usage_claim_until = :until",
            ConditionExpression=(
                "attribute_exists(pk) AND usage_published = :false AND "
                "(attribute_not_exists(usage_claim_until) OR usage_claim_until < :now)"
            ),
            ExpressionAttributeValues={
                ":until": {"N": str(now + lease_s)},
                ":now": {"N": str(now)},
                ":false": {"BOOL": False},
            },
        )

    def mark_usage_published(self, job_id: str, page: int) -> None:
        self._conditional(
            self.client.update_item,
            Key=_item_key(job_id, _page_sk(page)),
            UpdateExpression="SET usage_published = :true",
            ExpressionAttributeValues={":true": {"BOOL": True}},
        )

    def claim_finalization(self, job_id: str, lease_s: float) -> Claim:
        now = self._clock()
        return self._claim(
            "finalize_until",
            now,
            Key=_item_key(job_id, JOB_SK),
            UpdateExpression="SET #status = :finalizing, finalize_until = :until",
            ConditionExpression="#status = :running OR (#status = :finalizing AND finalize_until < :now)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":finalizing": {"S": JobStatus.FINALIZING.value},
                ":running": {"S": JobStatus.RUNNING.value},
                ":until": {"N": str(now + lease_s)},
                ":now": {"N": str(now)},
            },
        )

    def finish_job(
        self, job_id: str, status: JobStatus, *, result_uri: str | None = None, error: ErrorInfo | None = None
    ) -> None:
        names = {"#status": "status"}
        values: dict[str, Any] = {":status": {"S": status.value}}
        sets = ["#status = :status"]
        if result_uri:
            sets.append("result_uri = :uri")
            values[":uri"] = {"S": result_uri}
        if error is not None:
            sets.append("#error = :error")
            names["#error"] = "error"
            values[":error"] = {"S": error.model_dump_json()}
        self._conditional(
            self.client.update_item,
            Key=_item_key(job_id, JOB_SK),
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )


class _CallersFile:
    """The caller's file as upload_fileobj reads it: s3transfer closes the file it reads, and this one is the
    caller's to close (the batch submitter uploads the same file to the vendor next)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return self._file.seekable()

    def close(self) -> None:
        pass


def _item_key(job_id: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": job_id}, "sk": {"S": sk}}


def _job_from_item(item: dict[str, Any]) -> JobState:
    return JobState(
        spec=JobSpec.model_validate_json(item["spec"]["S"]),
        status=JobStatus(item["status"]["S"]),
        pages_done=int(item["pages_done"]["N"]),
        pages_failed=int(item["pages_failed"]["N"]),
        result_uri=item.get("result_uri", {}).get("S"),
        error=ErrorInfo.model_validate_json(item["error"]["S"]) if "error" in item else None,
        dispatched=bool(item.get("dispatched", {}).get("BOOL", False)),
    )


def _page_item(job_id: str, record: PageRecord, *, expires_at: int) -> dict[str, Any]:
    page_item: dict[str, Any] = {
        **_item_key(job_id, _page_sk(record.page)),
        "page": {"N": str(record.page)},
        "status": {"S": record.status.value},
        "usage_published": {"BOOL": False},
        "expires_at": {"N": str(expires_at)},
    }
    if record.result_key:
        page_item["result_key"] = {"S": record.result_key}
    if record.usage is not None:
        page_item["usage"] = {"S": record.usage.model_dump_json()}
    if record.error is not None:
        page_item["error"] = {"S": record.error.model_dump_json()}
    if record.request_id:
        page_item["request_id"] = {"S": record.request_id}
    if record.method is not None:
        page_item["method"] = {"S": record.method}
    if record.pricing != "realtime":
        page_item["pricing"] = {"S": record.pricing}
    return page_item


def _page_from_item(item: dict[str, Any]) -> PageRecord:
    return PageRecord(
        page=int(item["page"]["N"]),
        status=PageStatus(item["status"]["S"]),
        result_key=item.get("result_key", {}).get("S"),
        usage=Usage.model_validate_json(item["usage"]["S"]) if "usage" in item else None,
        error=ErrorInfo.model_validate_json(item["error"]["S"]) if "error" in item else None,
        request_id=item.get("request_id", {}).get("S"),
        method=item.get("method", {}).get("S"),
        pricing=item.get("pricing", {}).get("S", "realtime"),
        usage_published=bool(item.get("usage_published", {}).get("BOOL", False)),
    )
