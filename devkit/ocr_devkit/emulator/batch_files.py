"""The Batch File API's files, as the emulator keeps them: uploaded inputs and the batches' results.

Facts from the vendor's "OpenAI-compatible - Batch (file input)": an input is a UTF-8 JSONL file uploaded
with `purpose=batch`, of at most 100 MB, under an id starting `file-batch`.

Memory stays bounded: every file lives in memory, and the files together may take at most
`max_total_bytes` (200 MB by default). An upload that would pass the cap is refused (400
`file_storage_exceeded`) until files are deleted (`DELETE /files/{id}`) or the emulator is reset. A
batch's output and error files count towards the cap but are never refused: a finished batch always
has its results.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

MAX_INPUT_BYTES = 100 * 1024 * 1024
# A multipart body carries the file and a little more: its boundaries, headers and the purpose field.
MAX_UPLOAD_BODY_BYTES = MAX_INPUT_BYTES + 64 * 1024
DEFAULT_MAX_TOTAL_BYTES = 200 * 1024 * 1024
BATCH_PURPOSE = "batch"


class BatchApiError(Exception):
    """A refusal of the Batch File API, answered with an OpenAI-style error body."""

    def __init__(
        self, status: int, code: str, message: str, *, kind: str = "invalid_request_error", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.kind = kind
        self.param = param

    def body(self, request_id: str) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code},
            "request_id": request_id,
        }


def bad_request(code: str, message: str, *, param: str | None = None) -> BatchApiError:
    return BatchApiError(400, code, message, param=param)


def not_found(what: str, ident: str) -> BatchApiError:
    return BatchApiError(404, "not_found", f"no {what} with id {ident!r}")


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    data: bytes

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass(frozen=True)
class Upload:
    filename: str
    purpose: str | None
    data: bytes | None


def parse_upload(content_type: str, body: bytes) -> Upload:
    """The `file` and `purpose` fields of a multipart/form-data body (the stdlib's MIME parser reads it)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise bad_request("invalid_content_type", "upload the file as multipart/form-data with a 'file' part")
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body, policy=email.policy.HTTP
    )
    if not message.is_multipart():
        raise bad_request("invalid_content_type", "the multipart/form-data body could not be read")
    filename, purpose, data = "", None, None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if name == "file":
            filename, data = part.get_filename() or "upload.jsonl", payload
        elif name == "purpose":
            purpose = payload.decode("utf-8", "replace").strip()
    return Upload(filename=filename, purpose=purpose, data=data)


class FileStore:
    """Files by id, in memory, under a total cap (see the module's docstring). Thread-safe."""

    def __init__(self, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES) -> None:
        if max_total_bytes <= 0:
            raise ValueError(f"max_total_bytes must be positive, not {max_total_bytes}")
        self.max_total_bytes = max_total_bytes
        self._files: dict[str, StoredFile] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def upload(self, upload: Upload) -> StoredFile:
        """Store an input file, or refuse it as the vendor does (400)."""
        if upload.purpose != BATCH_PURPOSE:
            raise bad_request("invalid_purpose", f"purpose must be 'batch', not {upload.purpose!r}", param="purpose")
        if upload.data is None:
            raise bad_request("missing_file", "the form has no 'file' part", param="file")
        if not upload.data.strip():
            raise bad_request("empty_file", "the file is empty", param="file")
        if len(upload.data) > MAX_INPUT_BYTES:
            raise file_too_large(len(upload.data))
        try:
            upload.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad_request(
                "invalid_encoding", f"the file is not UTF-8 (byte {exc.start} cannot be decoded)", param="file"
            ) from None
        return self._add("file-batch-", upload.filename, BATCH_PURPOSE, upload.data, refuse_over_cap=True)

    def store_result(self, kind: str, filename: str, data: bytes) -> StoredFile:
        """A batch's output (`kind` "output") or error ("error") file; never refused."""
        return self._add(f"file-batch_{kind}-", filename, f"batch_{kind}", data, refuse_over_cap=False)

    def _add(self, prefix: str, filename: str, purpose: str, data: bytes, *, refuse_over_cap: bool) -> StoredFile:
        stored = StoredFile(
            id=prefix + uuid.uuid4().hex[:24],
            filename=filename,
            purpose=purpose,
            created_at=int(time.time()),
            data=data,
        )
        with self._lock:
            if refuse_over_cap and self._bytes + len(data) > self.max_total_bytes:
                raise bad_request(
                    "file_storage_exceeded",
                    f"the emulator keeps at most {self.max_total_bytes} bytes of files and holds {self._bytes}; "
                    "delete files (DELETE /files/{id}) or reset the emulator",
                )
            self._files[stored.id] = stored
            self._bytes += len(data)
        return stored

    def get(self, file_id: str) -> StoredFile:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise not_found("file", file_id)
        return stored

    def delete(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            stored = self._files.pop(file_id, None)
            if stored is not None:
                self._bytes -= len(stored.data)
        if stored is None:
            raise not_found("file", file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def listing(self) -> dict[str, Any]:
        with self._lock:
            files = sorted(self._files.values(), key=lambda item: item.created_at, reverse=True)
        return {"object": "list", "data": [item.describe() for item in files], "has_more": False}

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"files": len(self._files), "file_bytes": self._bytes, "max_file_bytes": self.max_total_bytes}


def file_too_large(size: int | None = None) -> BatchApiError:
    has = "is larger than that" if size is None else f"has {size} bytes"
    return bad_request("file_too_large", f"the Batch API takes files of at most 100 MB; this one {has}", param="file")
