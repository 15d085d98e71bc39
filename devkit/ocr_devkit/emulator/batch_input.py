"""A batch's input file, checked as the vendor checks it while the batch is `validating`.

Facts from the vendor's "OpenAI-compatible - Batch (file input)": each line is
`{"custom_id", "method": "POST", "url": <the batch's endpoint>, "body": {chat request}}`, every line of a
file names the same model, a batch holds at most 50,000 requests and 100 MB, the OCR models the Batch API
offers are `qwen-vl-ocr` and `qwen-vl-ocr-latest`, and `batch-test-model` answers a fixed success without
inference, for files of at most 1 MB and 100 lines. The vendor's own test example sends
`batch-test-model` to the endpoint `/v1/chat/ds-test`; the emulator takes that endpoint for
`batch-test-model` only, and takes `batch-test-model` on `/v1/chat/completions` as well.

Blank lines are skipped (a trailing newline is common); every other line counts, numbered from 1 by its
place in the file. Validation keeps only the custom ids and the model, never the parsed bodies: a
100 MB file is read twice, line by line, rather than held in memory as objects.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .batch_files import MAX_INPUT_BYTES

CHAT_ENDPOINT = "/v1/chat/completions"
TEST_ENDPOINT = "/v1/chat/ds-test"
ENDPOINTS = (CHAT_ENDPOINT, TEST_ENDPOINT)
TEST_MODEL = "batch-test-model"
BATCH_MODELS = ("qwen-vl-ocr", "qwen-vl-ocr-latest", TEST_MODEL)
MAX_REQUESTS = 50_000
TEST_MODEL_MAX_REQUESTS = 100
TEST_MODEL_MAX_BYTES = 1024 * 1024
# A file with errors on every line reports the first ones only.
MAX_REPORTED_ERRORS = 100
TEST_REPLY = "This is a test result."


@dataclass(frozen=True)
class LineError:
    code: str
    message: str
    line: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": self.line}


@dataclass
class Validation:
    errors: list[LineError] = field(default_factory=list)
    requests: int = 0
    model: str | None = None

    def add(self, code: str, message: str, line: int | None = None) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(code, message, line))


def request_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(number in the file, raw line) of every line that is not blank."""
    for number, raw in enumerate(io.BytesIO(data), start=1):
        if raw.strip():
            yield number, raw


def validate(data: bytes, endpoint: str) -> Validation:
    """Every problem of the file, as the batch's `errors` lists them (first MAX_REPORTED_ERRORS)."""
    result = Validation()
    custom_ids: set[str] = set()
    models: set[str] = set()
    for number, raw in request_lines(data):
        result.requests += 1
        try:
            line = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            result.add("invalid_json_line", f"the line is not valid JSON: {exc}", number)
            continue
        problem = _shape_problem(line, endpoint)
        if problem is not None:
            result.add(problem[0], problem[1], number)
            continue
        custom_id, model = line["custom_id"], line["body"]["model"]
        if custom_id in custom_ids:
            result.add("duplicate_custom_id", f"custom_id {custom_id!r} appears on an earlier line", number)
        custom_ids.add(custom_id)
        if models and model not in models:
            first = next(iter(models))
            result.add("mismatched_model", f"the line uses model {model!r}; earlier lines use {first!r}", number)
        elif not models:
            models.add(model)
            result.model = model
            if model not in BATCH_MODELS or (endpoint == TEST_ENDPOINT and model != TEST_MODEL):
                result.add("unsupported_model", _unsupported(model, endpoint), number)
    if result.requests == 0:
        result.add("empty_file", "the file has no request line")
    testing = result.model == TEST_MODEL
    max_requests = TEST_MODEL_MAX_REQUESTS if testing else MAX_REQUESTS
    max_bytes = TEST_MODEL_MAX_BYTES if testing else MAX_INPUT_BYTES
    if result.requests > max_requests:
        result.add("too_many_requests", f"the file has {result.requests} requests; at most {max_requests} are allowed")
    if len(data) > max_bytes:
        result.add("file_too_large", f"the file has {len(data)} bytes; at most {max_bytes} are allowed")
    return result


def _shape_problem(line: Any, endpoint: str) -> tuple[str, str] | None:
    if not isinstance(line, dict):
        return "invalid_request_line", "the line must be a JSON object"
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "invalid_request_line", "custom_id must be a non-empty string"
    if line.get("method") != "POST":
        return "invalid_request_line", f"method must be 'POST', not {line.get('method')!r}"
    if line.get("url") != endpoint:
        return "mismatched_url", f"url {line.get('url')!r} is not the batch's endpoint {endpoint!r}"
    body = line.get("body")
    if not isinstance(body, dict):
        return "invalid_request_line", "body must be a JSON object (the chat request)"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "invalid_request_line", "body.model must be a non-empty string"
    return None


def _unsupported(model: str, endpoint: str) -> str:
    if endpoint == TEST_ENDPOINT:
        return f"the endpoint {TEST_ENDPOINT} takes {TEST_MODEL} only, not {model!r}"
    return f"the Batch API does not offer {model!r} for OCR; use one of: {', '.join(BATCH_MODELS)}"


def fixed_completion() -> dict[str, Any]:
    """The fixed success of batch-test-model: no inference, no tokens."""
    return {
        "choices": [
            {
                "message": {"content": TEST_REPLY, "role": "assistant"},
                "finish_reason": "stop",
                "index": 0,
                "logprobs": None,
            }
        ],
        "object": "chat.completion",
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "created": int(time.time()),
        "system_fingerprint": None,
        "model": TEST_MODEL,
        "id": f"chatcmpl-{uuid.uuid4()}",
    }
