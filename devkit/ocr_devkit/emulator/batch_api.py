"""The Batch File API's routes under the compatible base, from a request's parts to a reply, without sockets.

    POST   /compatible-mode/v1/files                 upload (multipart/form-data: file, purpose=batch)
    GET    /compatible-mode/v1/files                 every file, newest first
    GET    /compatible-mode/v1/files/{id}            the file object
    GET    /compatible-mode/v1/files/{id}/content    its bytes (application/octet-stream)
    DELETE /compatible-mode/v1/files/{id}            forget it (frees the emulator's file storage)
    POST   /compatible-mode/v1/batches               create a batch
    GET    /compatible-mode/v1/batches               list them, newest first (?after=<id>&limit=<n>)
    GET    /compatible-mode/v1/batches/{id}          the batch object
    POST   /compatible-mode/v1/batches/{id}/cancel   cancel it

The server authenticates a request as it does a chat request before it gets here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .batch_files import BatchApiError, bad_request, file_too_large, parse_upload
from .batches import DEFAULT_LIST_LIMIT, BatchService

PREFIX = "/compatible-mode/v1"
JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON_TYPE


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def is_batch_path(path: str) -> bool:
    rest = path.removeprefix(PREFIX)
    return rest != path and rest.split("/")[1:2] in (["files"], ["batches"])


def is_upload(method: str, path: str) -> bool:
    return method == "POST" and path.rstrip("/") == PREFIX + "/files"


class BatchApi:
    def __init__(self, service: BatchService) -> None:
        self.service = service

    def handle(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        content_type: str = "",
        body: bytes | None = b"",
        key_suffix: str | None = None,
    ) -> Reply:
        """The reply to one request; `body` is None when it was too big to read. Raises BatchApiError."""
        parts = path.removeprefix(PREFIX).strip("/").split("/")
        resource, rest = parts[0], parts[1:]
        if resource == "files":
            return self._files(method, rest, content_type, body)
        return self._batches(method, rest, query, body, key_suffix)

    def _files(self, method: str, rest: list[str], content_type: str, body: bytes | None) -> Reply:
        files = self.service.files
        if not rest:
            if method == "POST":
                if body is None:
                    raise file_too_large()
                return json_reply(200, files.upload(parse_upload(content_type, body)).describe())
            _allow(method, "GET")
            return json_reply(200, files.listing())
        if len(rest) == 1:
            if method == "DELETE":
                return json_reply(200, files.delete(rest[0]))
            _allow(method, "GET")
            return json_reply(200, files.get(rest[0]).describe())
        if len(rest) == 2 and rest[1] == "content":
            _allow(method, "GET")
            return Reply(200, files.get(rest[0]).data, "application/octet-stream")
        raise _no_route()

    def _batches(self, method: str, rest: list[str], query: str, body: bytes | None, key_suffix: str | None) -> Reply:
        if not rest:
            if method == "POST":
                return json_reply(200, self.service.create(_json(body), key_suffix=key_suffix))
            _allow(method, "GET")
            after, limit = _page(query)
            return json_reply(200, self.service.listing(after=after, limit=limit))
        if len(rest) == 1:
            _allow(method, "GET")
            return json_reply(200, self.service.get(rest[0]))
        if len(rest) == 2 and rest[1] == "cancel":
            _allow(method, "POST")
            return json_reply(200, self.service.cancel(rest[0]))
        raise _no_route()


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise BatchApiError(405, "method_not_allowed", f"{method} is not allowed here; use {allowed}")


def _no_route() -> BatchApiError:
    return BatchApiError(404, "not_found", "no such endpoint of the Batch File API")


def _json(body: bytes | None) -> Any:
    try:
        return json.loads(body or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad_request("invalid_request", "the request body is not valid JSON") from None


def _page(query: str) -> tuple[str | None, int]:
    fields = parse_qs(query)
    after = fields.get("after", [None])[-1]
    raw_limit = fields.get("limit", [str(DEFAULT_LIST_LIMIT)])[-1]
    try:
        limit = int(raw_limit)
    except ValueError:
        raise bad_request("invalid_limit", f"limit must be an integer, not {raw_limit!r}", param="limit") from None
    return after, limit
