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

import codecs
import email.message
import email.parser
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
    """The `file` and `purpose` fields of a multipart/form-data body.

    The parts are cut out of the body by their boundary here, and only their headers go through the
    stdlib's MIME parser: parsing a whole 100 MB body with it holds eight times that in memory.
    """
    header = email.message.Message(policy=email.policy.HTTP)
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise bad_request("invalid_content_type", "upload the file as multipart/form-data with a 'file' part")
    delimiter = b"--" + boundary.encode("latin-1")
    filename, purpose, data = "", None, None
    position = body.find(delimiter)
    while position != -1 and body[position + len(delimiter) : position + len(delimiter) + 2] != b"--":
        start = position + len(delimiter) + 2  # past the delimiter's CRLF
        end = body.find(b"\r\n" + delimiter, start)
        headers_end = body.find(b"\r\n\r\n", start, end)
        if end == -1 or headers_end == -1:
            raise bad_request("invalid_content_type", "the multipart/form-data body is cut short or malformed")
        headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(body[start:headers_end])
        name = headers.get_param("name", header="content-disposition")
        if name == "file":
            filename, data = headers.get_filename() or "upload.jsonl", body[headers_end + 4 : end]
        elif name == "purpose":
            purpose = body[headers_end + 4 : end].decode("utf-8", "replace").strip()
        position = end + 2
    return Upload(filename=filename, purpose=purpose, data=data)


def is_utf8(data: bytes) -> tuple[bool, int]:
    """Whether `data` is UTF-8, and where it stops being so; decoded a megabyte at a time, kept nowhere."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    chunk = 1024 * 1024
    for offset in range(0, len(data), chunk):
        try:
            decoder.decode(data[offset : offset + chunk], final=offset + chunk >= len(data))
        except UnicodeDecodeError as exc:
            return False, offset + exc.start
    return True, len(data)


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
        utf8, where = is_utf8(upload.data)
        if not utf8:
            raise bad_request(
                "invalid_encoding", f"the file is not UTF-8 (byte {where} cannot be decoded)", param="file"
            )
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
