"""The Batch File API adapter over httpx: DashScope's OpenAI-compatible `/files` and `/batches`.

What callers can rely on:
- A refused or failed management call (upload, create, list, get, download) raises the errors the
  real-time client raises for the same status and body (wire.error_from_reply): 429 and 5xx are
  retryable, like a time-out or a dropped connection; any other 4xx is not. One exception: a 404 here
  names a file or batch that does not exist, not a model, so it is OcrInvalidParameter. The client
  does not retry: the scheduled functions that call it run again later.
- Each line of an output or error file becomes one BatchAnswer, classified as a real-time call with the
  line's status and body would be. A line that is not JSON, has no custom_id, or names a call
  `call_of` does not know is skipped and logged (by line number, never its content), and reading goes on.
- Files are streamed both ways: an upload is read from the file in chunks, and a download is handed out
  line by line as it arrives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import httpx

from ... import errors
from ...batch_api import BATCH_ENDPOINT, COMPLETION_WINDOW, BatchAnswer, BatchStatus, VendorBatch
from ...catalog import Region, endpoints_for
from ...ocr_service import CallOutcome, OcrCall
from .client import parse_retry_after, shared_http_client
from .credentials import ApiKeyProvider, api_key_provider_for
from .settings import OcrServiceSettings, WireProtocol
from .wire import build_body, error_from_reply, parse_reply

logger = logging.getLogger(__name__)

BATCH_PURPOSE = "batch"
JSONL_CONTENT_TYPE = "application/jsonl"
LIST_PAGE_SIZE = 100
# find_batch looks this many list pages back (newest first). It looks for a batch made moments before
# by a submitter that died before recording it, which sits near the top of the list.
MAX_LIST_PAGES = 10


class DashScopeBatchClient:
    """Implements the BatchApi port (batch_api.py) for DashScope's compatible mode."""

    def __init__(
        self,
        settings: OcrServiceSettings,
        *,
        http: httpx.Client | None = None,
        api_keys: ApiKeyProvider | None = None,
    ) -> None:
        self.settings = settings
        self._http = http
        self._api_keys = api_keys or api_key_provider_for(settings)

    @property
    def base_url(self) -> str:
        # The vendor offers the Batch File API for OCR models in Beijing only (catalog.BATCH_MODELS).
        return (self.settings.batch_base_url or endpoints_for(Region.CN).compatible_base).rstrip("/")

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = shared_http_client(self.settings.connect_timeout_s, self.settings.read_timeout_s)
        return self._http

    # --- the port ------------------------------------------------------------------------------

    def request_body(self, call: OcrCall) -> dict[str, Any]:
        return build_body(WireProtocol.OPENAI, call, max_tokens=self.settings.max_tokens_for(call.model))

    def upload_file(self, name: str, data: BinaryIO) -> str:
        """Upload from the file's start. A seekable file is sent with its length; any other goes chunked."""
        body = self._call(
            "POST",
            "/files",
            files={"file": (name, data, JSONL_CONTENT_TYPE)},
            data={"purpose": BATCH_PURPOSE},
        )
        file_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise errors.OcrMalformedResponse("POST /files answered without a file id")
        return file_id

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> VendorBatch:
        payload = {
            "input_file_id": input_file_id,
            "endpoint": BATCH_ENDPOINT,
            "completion_window": COMPLETION_WINDOW,
            "metadata": metadata,
        }
        return vendor_batch(self._call("POST", "/batches", json=payload), "POST /batches")

    def find_batch(self, input_file_id: str) -> VendorBatch | None:
        after: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params: dict[str, Any] = {"limit": LIST_PAGE_SIZE, **({"after": after} if after else {})}
            listing = self._call("GET", "/batches", params=params)
            items = listing.get("data") if isinstance(listing, dict) else None
            if not isinstance(items, list):
                raise errors.OcrMalformedResponse("GET /batches answered without a list of batches")
            for item in items:
                if isinstance(item, dict) and item.get("input_file_id") == input_file_id:
                    return vendor_batch(item, "GET /batches")
            after = listing.get("last_id") or (items[-1].get("id") if items and isinstance(items[-1], dict) else None)
            if not listing.get("has_more") or not isinstance(after, str):
                return None
        logger.warning(
            "no batch of file %s in the newest %d batches; looked no further",
            input_file_id,
            MAX_LIST_PAGES * LIST_PAGE_SIZE,
        )
        return None

    def get_batch(self, batch_id: str) -> VendorBatch:
        what = f"GET /batches/{batch_id}"
        return vendor_batch(self._call("GET", f"/batches/{batch_id}"), what)

    def delete_file(self, file_id: str) -> None:
        self._call("DELETE", f"/files/{file_id}")

    def answers(self, file_id: str, call_of: Callable[[str], OcrCall | None]) -> Iterator[BatchAnswer]:
        what = f"GET /files/{file_id}/content"
        with (
            _typed_transport_errors(what),
            self.http.stream("GET", self._url(f"/files/{file_id}/content"), headers=self._headers()) as response,
        ):
            if not response.is_success:
                response.read()
                raise _refused(what, response)
            for number, line in enumerate(_jsonl_lines(response.iter_bytes()), start=1):
                answer = answer_of_line(line, call_of, file_id=file_id, number=number)
                if answer is not None:
                    yield answer

    # --- HTTP ----------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _headers(self) -> dict[str, str]:
        key = self._api_keys.api_key()
        if key:
            return {"Authorization": f"Bearer {key}"}
        if self.settings.require_api_key:
            raise errors.ConfigurationError(
                "no API key: set DASHSCOPE_API_KEY, or DASHSCOPE_API_KEY_SECRET_ARN to read it from Secrets Manager"
            )
        return {}

    def _call(self, method: str, path: str, **request: Any) -> Any:
        """One management request; its JSON body, or the typed error its failure maps to."""
        what = f"{method} {path}"
        with _typed_transport_errors(what):
            response = self.http.request(method, self._url(path), headers=self._headers(), **request)
        if not response.is_success:
            raise _refused(what, response)
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError):
            raise errors.OcrMalformedResponse(
                f"{what} answered {response.status_code} with a body that is not JSON ({len(response.content)} bytes)",
                status_code=response.status_code,
                request_id=_request_id_header(response),
            ) from None


@contextmanager
def _typed_transport_errors(what: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise errors.OcrTimeout(f"{what}: the Batch File API did not answer in time ({type(exc).__name__})") from None
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise errors.OcrConnectionError(
            f"{what}: cannot reach the Batch File API: {type(exc).__name__}: {exc}"
        ) from None


def _request_id_header(response: httpx.Response) -> str | None:
    return response.headers.get("x-request-id") or response.headers.get("x-dashscope-request-id")


def _refused(what: str, response: httpx.Response) -> errors.OcrServiceError:
    """The real-time client's error for this status and body, its message saying which call was refused."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    error = error_from_reply(
        response.status_code, body, retry_after=parse_retry_after(response.headers.get("Retry-After"))
    )
    kind = errors.OcrInvalidParameter if response.status_code == 404 else type(error)
    return kind(
        f"{what} was refused with HTTP {response.status_code}: {error.message}",
        status_code=error.status_code,
        vendor_code=error.vendor_code,
        request_id=error.request_id or _request_id_header(response),
        retry_after=error.retry_after,
    )


def vendor_batch(body: Any, what: str) -> VendorBatch:
    """A batch object of the API as the port's VendorBatch; OcrMalformedResponse when it cannot be read."""
    try:
        if not isinstance(body, dict):
            raise TypeError("the body is not a JSON object")
        counts = body.get("request_counts") or {}
        return VendorBatch(
            id=body["id"],
            status=BatchStatus(body["status"]),
            input_file_id=body["input_file_id"],
            output_file_id=body.get("output_file_id") or None,
            error_file_id=body.get("error_file_id") or None,
            created_at=body.get("created_at"),
            total=counts.get("total"),
            completed=counts.get("completed"),
            failed=counts.get("failed"),
            errors=_batch_errors(body.get("errors")),
            metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise errors.OcrMalformedResponse(
            f"{what} answered with a batch that does not have the documented shape ({type(exc).__name__}: {exc})"
        ) from None


def _batch_errors(value: Any) -> list[str]:
    """`errors` of a batch ({"object": "list", "data": [{code, message, line}]}) as readable lines."""
    items = value.get("data") if isinstance(value, dict) else value
    if not isinstance(items, list):
        return []
    described = []
    for item in items:
        if not isinstance(item, dict):
            described.append(str(item))
            continue
        text = ": ".join(str(part) for part in (item.get("code"), item.get("message")) if part)
        line = item.get("line")
        described.append(f"{text} (line {line})" if line is not None else text)
    return described


# --- output and error files ------------------------------------------------------------------------


def _jsonl_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The file's lines, split on "\\n" only.

    httpx's iter_lines splits as str.splitlines does, also at U+2028, U+2029 and U+0085, which JSON allows
    unescaped inside a string: an OCR text holding one would be cut in two lines that are both not JSON.
    """
    pending = bytearray()
    for chunk in chunks:
        if b"\n" not in chunk:
            # Only the new bytes are searched, so a long line costs its length, not its length squared.
            pending += chunk
            continue
        first, *complete, rest = chunk.split(b"\n")
        pending += first
        yield bytes(pending)
        yield from complete
        pending = bytearray(rest)
    if pending:
        yield bytes(pending)


def answer_of_line(
    line: bytes, call_of: Callable[[str], OcrCall | None], *, file_id: str = "", number: int = 0
) -> BatchAnswer | None:
    """One line of an output or error file as a BatchAnswer; None (logged) for a line that cannot be one."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        logger.warning("skipped line %d of batch file %s: not JSON (%d bytes)", number, file_id, len(line))
        return None
    custom_id = record.get("custom_id") if isinstance(record, dict) else None
    if not isinstance(custom_id, str) or not custom_id:
        logger.warning("skipped line %d of batch file %s: no custom_id", number, file_id)
        return None
    call = call_of(custom_id)
    if call is None:
        logger.warning("skipped line %d of batch file %s: unknown custom_id %s", number, file_id, custom_id)
        return None
    response = record.get("response")
    response = response if isinstance(response, dict) else {}
    status = response.get("status_code")
    request_id = response.get("request_id") if isinstance(response.get("request_id"), str) else None
    if status == 200:
        try:
            reply = parse_reply(WireProtocol.OPENAI, response.get("body"), call)
        except errors.OcrMalformedResponse as error:
            error.status_code = 200
            error.request_id = error.request_id or request_id
            return BatchAnswer(custom_id=custom_id, error=error)
        if reply.request_id is None and request_id is not None:
            reply = reply.model_copy(update={"request_id": request_id})
        return BatchAnswer(custom_id=custom_id, outcome=CallOutcome(reply=reply, attempts=1, latency_ms=0))
    return BatchAnswer(
        custom_id=custom_id, error=_line_error(status, response.get("body"), record.get("error"), request_id)
    )


def _line_error(status: Any, body: Any, line_error: Any, request_id: str | None) -> errors.OcrServiceError:
    """An error line's error, as the real-time client classifies the same status and body.

    A line without an HTTP status never reached the model (the vendor writes such lines for requests a
    batch did not run before it expired or was cancelled): retryable, under the line's own error code.
    """
    detail = body if isinstance(body, dict) else {}
    if not isinstance(detail.get("error"), dict) and isinstance(line_error, dict):
        detail = {**detail, "error": line_error}
    if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
        error = error_from_reply(status, detail)
    else:
        code = detail["error"].get("code") if isinstance(detail.get("error"), dict) else None
        message = detail["error"].get("message") if isinstance(detail.get("error"), dict) else None
        error = errors.OcrServerError(
            f"the batch did not run this line: {message or code or 'no reason given'}",
            status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
            vendor_code=code if isinstance(code, str) else None,
        )
    error.request_id = error.request_id or request_id
    return error
