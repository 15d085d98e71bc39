"""The vendor's Batch File API (OpenAI-compatible mode): batches created over uploaded files, run in the background.

Each batch gets a thread of its own once created. It moves `validating` -> `in_progress` -> `finalizing` ->
`completed` (or ends `failed`, `expired`, `cancelling` -> `cancelled`), and reaches its final status no
earlier than the completion delay after its creation (`batch_faults`), whatever it ends as, except a
batch that fails validation, which fails at once.

The guarantees:
- A line's body takes exactly the path of a `POST /compatible-mode/v1/chat/completions` request (the
  `complete` callable: the same parsing, engine, usage counting and reply body), without HTTP. Lines run
  one after another, each taking its turn at the engine through the same admission as the chat endpoint,
  so a batch never holds the engine for more than one page while a chat request waits. A line that the
  admission sheds waits its Retry-After and tries again: a batch is never in a hurry.
- A line the chat endpoint would refuse goes to the error file with the chat endpoint's status code and
  error body; so does a line an `error_lines` rule picks (it never reaches the engine).
- Every line run is logged in the emulator's request log and counters under the endpoint "batch", with
  its request id and usage, as the chat requests are.
- A cancelled batch keeps the lines done before the cancel: their results are in its output and error files.
- When the emulator stops, each batch thread ends after the engine call it is in, if any; the batch keeps
  its status and its lines done, and goes on when the emulator starts again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .admission import Refused, Verdict
from .batch_faults import BatchFaults, ErrorLineRule, Outcome, ScriptedOutcome
from .batch_files import BATCH_PURPOSE, BatchApiError, FileStore, bad_request, not_found
from .batch_input import ENDPOINTS, TEST_MODEL, LineError, fixed_completion, request_lines, validate
from .faults import Recorder
from .protocol import INTERNAL_ERROR, ApiError, compatible_error_body, new_request_id

logger = logging.getLogger(__name__)

# (chat request body, request id, whether to give up) -> the chat completion; raises ApiError or Refused.
Completer = Callable[[dict[str, Any], str, Callable[[], bool]], dict[str, Any]]

COMPLETION_WINDOW = "24h"
EXPIRES_AFTER_S = 24 * 3600
OPEN_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")
STATUSES = (*OPEN_STATUSES, "completed", "failed", "expired", "cancelled")
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100
# How often a batch waiting for its completion delay looks for a cancel or a stop.
POLL_INTERVAL_S = 0.05


class _Interrupted(Exception):
    """The batch's thread must end now: the emulator stops or forgets its batches."""


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    data: bytes
    outcome: ScriptedOutcome
    created_at: int
    # Monotonic: when the batch may reach its final status at the earliest.
    due: float
    key_suffix: str | None
    sequence: int
    status: str = "validating"
    times: dict[str, int | None] = field(default_factory=dict)
    errors: list[LineError] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    next_line: int = 0
    output_lines: list[bytes] = field(default_factory=list)
    error_lines: list[bytes] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    validated: bool = False
    cancel_requested: bool = False
    discarded: bool = False

    def describe(self) -> dict[str, Any]:
        stamp = self.times.get
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None
            if self.errors is None
            else {"object": "list", "data": [error.describe() for error in self.errors]},
            "input_file_id": self.input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": stamp("in_progress"),
            "expires_at": self.created_at + EXPIRES_AFTER_S,
            "finalizing_at": stamp("finalizing"),
            "completed_at": stamp("completed"),
            "failed_at": stamp("failed"),
            "expired_at": stamp("expired"),
            "cancelling_at": stamp("cancelling"),
            "cancelled_at": stamp("cancelled"),
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }


class BatchService:
    """Batches by id, each run by a thread of its own (see the module's docstring). Thread-safe."""

    def __init__(self, files: FileStore, faults: BatchFaults, complete: Completer, recorder: Recorder) -> None:
        self.files = files
        self.faults = faults
        self._complete = complete
        self._recorder = recorder
        self._batches: dict[str, Batch] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._sequence = 0
        self._lines_done = 0

    # --- the API ----------------------------------------------------------------------------

    def create(self, body: Any, *, key_suffix: str | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("invalid_request", "the body must be a JSON object")
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise bad_request("invalid_input_file", "input_file_id must be a file id", param="input_file_id")
        try:
            source = self.files.get(file_id)
        except BatchApiError:
            raise bad_request("invalid_input_file", f"no file with id {file_id!r}", param="input_file_id") from None
        if source.purpose != BATCH_PURPOSE:
            raise bad_request(
                "invalid_input_file",
                f"file {file_id!r} has purpose {source.purpose!r}, not 'batch'",
                param="input_file_id",
            )
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise bad_request("invalid_endpoint", f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint")
        if body.get("completion_window") != COMPLETION_WINDOW:
            raise bad_request("invalid_completion_window", "completion_window must be '24h'", param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not all(isinstance(key, str) and isinstance(value, str) for key, value in metadata.items())
        ):
            raise bad_request("invalid_metadata", "metadata must map strings to strings", param="metadata")
        with self._lock:
            self._sequence += 1
            batch = Batch(
                id=f"batch_{uuid.uuid4()}",
                input_file_id=file_id,
                endpoint=str(endpoint),
                metadata=dict(metadata) if metadata is not None else None,
                data=source.data,
                outcome=self.faults.next_outcome(),
                created_at=int(time.time()),
                due=time.monotonic() + self.faults.completion_delay_s,
                key_suffix=key_suffix,
                sequence=self._sequence,
            )
            self._batches[batch.id] = batch
            described = batch.describe()
            self._start(batch)
        return described

    def get(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._find(batch_id).describe()

    def listing(self, *, after: str | None = None, limit: int = DEFAULT_LIST_LIMIT) -> dict[str, Any]:
        """Newest first; `after` is the last id of the previous page."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise bad_request("invalid_limit", f"limit must be in [1, {MAX_LIST_LIMIT}], got {limit}", param="limit")
        with self._lock:
            ordered = sorted(self._batches.values(), key=lambda batch: batch.sequence, reverse=True)
            if after is not None:
                cursor = self._batches.get(after)
                if cursor is None:
                    raise bad_request("invalid_cursor", f"no batch with id {after!r}", param="after")
                ordered = [batch for batch in ordered if batch.sequence < cursor.sequence]
            page = [batch.describe() for batch in ordered[:limit]]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(ordered) > limit,
        }

    def cancel(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._find(batch_id)
            if batch.status in ("validating", "in_progress"):
                batch.cancel_requested = True
                self._move(batch, "cancelling")
            elif batch.status != "cancelling":
                raise bad_request(
                    "invalid_batch_status", f"batch {batch_id!r} is {batch.status} and cannot be cancelled"
                )
            return batch.describe()

    def _find(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found("batch", batch_id)
        return batch

    # --- lifecycle -----------------------------------------------------------------------------

    def resume(self) -> None:
        """Run the batches left open by `close()` again."""
        with self._lock:
            self._closing.clear()
            for batch in self._batches.values():
                if batch.status in OPEN_STATUSES:
                    self._start(batch)

    def close(self) -> None:
        """End every batch thread (each after the engine call it is in) and wait for them."""
        self._closing.set()
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join()

    def clear(self) -> None:
        """Forget every batch and file; a batch thread still running ends at its next step."""
        with self._lock:
            for batch in self._batches.values():
                batch.discarded = True
            self._batches.clear()
            self._lines_done = 0
        self.files.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_status = dict.fromkeys(STATUSES, 0)
            for batch in self._batches.values():
                by_status[batch.status] += 1
            lines_done = self._lines_done
        return {**self.files.stats(), "batches": by_status, "lines_done": lines_done}

    def _start(self, batch: Batch) -> None:
        running = self._threads.get(batch.id)
        if self._closing.is_set() or (running is not None and running.is_alive()):
            return
        self._threads = {key: thread for key, thread in self._threads.items() if thread.is_alive()}
        thread = threading.Thread(target=self._run, args=(batch,), name=f"emulator-{batch.id}", daemon=True)
        self._threads[batch.id] = thread
        thread.start()

    # --- a batch's run -------------------------------------------------------------------------

    def _run(self, batch: Batch) -> None:
        try:
            if not batch.validated and not self._validate(batch):
                return
            scripted = batch.outcome
            if scripted.outcome is Outcome.COMPLETED:
                uncancelled = self._process(batch, limit=None)
            elif scripted.outcome is Outcome.EXPIRED:
                uncancelled = self._process(batch, limit=scripted.lines_done)
            else:
                uncancelled = not batch.cancel_requested
            if not (uncancelled and self._wait_until_due(batch)):
                self._finish(batch, "cancelled")
            elif scripted.outcome is Outcome.FAILED:
                self._finish(batch, "failed", errors=[LineError("batch_failed", "the batch failed (injected)")])
            elif scripted.outcome is Outcome.CANCELLED:
                with self._lock:
                    self._move(batch, "cancelling")
                self._finish(batch, "cancelled")
            elif scripted.outcome is Outcome.EXPIRED:
                self._finish(batch, "expired")
            else:
                with self._lock:
                    if not batch.cancel_requested:
                        self._move(batch, "finalizing")
                self._finish(batch, "completed")
        except _Interrupted:
            return
        except Exception:
            logger.exception("batch %s failed in the emulator", batch.id)
            self._finish(batch, "failed", errors=[LineError("internal_error", "the emulator failed on this batch")])

    def _validate(self, batch: Batch) -> bool:
        checked = validate(batch.data, batch.endpoint)
        with self._lock:
            self._check_interrupted(batch)
            if checked.errors:
                batch.errors = checked.errors
                batch.data = b""
                self._move(batch, "failed")
                return False
            batch.total = checked.requests
            batch.validated = True
            if batch.cancel_requested:
                return True
            self._move(batch, "in_progress")
        return True

    def _process(self, batch: Batch, *, limit: int | None) -> bool:
        """Run the lines not done yet (the first `limit` at most); False when a cancel stopped it."""
        for position, (_, raw) in enumerate(request_lines(batch.data), start=1):
            if position <= batch.next_line:
                continue
            if limit is not None and position > limit:
                break
            self._check_interrupted(batch)
            if batch.cancel_requested:
                return False
            try:
                line, ok = self._run_line(batch, position, raw)
            except _Interrupted:
                if batch.cancel_requested and not self._closing.is_set() and not batch.discarded:
                    return False
                raise
            with self._lock:
                (batch.output_lines if ok else batch.error_lines).append(line)
                if ok:
                    batch.completed += 1
                else:
                    batch.failed += 1
                batch.next_line = position
                self._lines_done += 1
        return not batch.cancel_requested

    def _run_line(self, batch: Batch, position: int, raw: bytes) -> tuple[bytes, bool]:
        """The output-file line (True) or error-file line (False) of one request line."""
        line = json.loads(raw)
        custom_id, body = line["custom_id"], line["body"]
        request_id = new_request_id()
        path = f"/compatible-mode/v1/batches/{batch.id}"
        entry = self._recorder.received("batch", path, body, key_suffix=batch.key_suffix)
        rule = self.faults.error_rule(custom_id, position)
        try:
            payload = self._answer(batch, body, request_id, rule)
        except ApiError as error:
            self._recorder.answered(entry, status=error.status, request_id=request_id, error_code=error.code)
            return _error_line(custom_id, request_id, error), False
        except _Interrupted:
            self._recorder.answered(entry, status=None, request_id=request_id)
            raise
        except Exception:
            logger.exception("emulator failed on batch line %s of %s", custom_id, batch.id)
            self._recorder.answered(entry, status=500, request_id=request_id, error_code=INTERNAL_ERROR.code)
            return _error_line(custom_id, request_id, INTERNAL_ERROR), False
        self._recorder.answered(entry, status=200, request_id=request_id, usage=payload.get("usage"))
        success = {
            "id": request_id,
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": payload},
            "error": None,
        }
        return _jsonl(success), True

    def _answer(
        self, batch: Batch, body: dict[str, Any], request_id: str, rule: ErrorLineRule | None
    ) -> dict[str, Any]:
        if rule is not None:
            raise ApiError(rule.status_code, rule.code, rule.message)
        if body.get("model") == TEST_MODEL:
            return fixed_completion()
        while True:
            try:
                return self._complete(body, request_id, lambda: self._gone(batch))
            except Refused as refused:
                if refused.why is not Verdict.SHED:
                    raise _Interrupted from None
                # Turned away because chat requests queue for the engine: let them pass, come back later.
                if not self._sleep(batch, time.monotonic() + refused.retry_after_s):
                    raise _Interrupted from None

    def _wait_until_due(self, batch: Batch) -> bool:
        """Wait for the completion delay; False when a cancel came first."""
        return self._sleep(batch, batch.due)

    def _sleep(self, batch: Batch, until: float) -> bool:
        while (remaining := until - time.monotonic()) > 0:
            self._check_interrupted(batch)
            if batch.cancel_requested:
                return False
            self._closing.wait(min(remaining, POLL_INTERVAL_S))
        self._check_interrupted(batch)
        return not batch.cancel_requested

    def _gone(self, batch: Batch) -> bool:
        return batch.cancel_requested or batch.discarded or self._closing.is_set()

    def _check_interrupted(self, batch: Batch) -> None:
        if batch.discarded or self._closing.is_set():
            raise _Interrupted

    def _finish(self, batch: Batch, status: str, *, errors: list[LineError] | None = None) -> None:
        """Store the result files of the lines done, then give the batch its final status.

        A cancel that came in meanwhile wins over any other ending."""
        if batch.discarded:
            return
        output = self._store(batch, "output", batch.output_lines)
        failures = self._store(batch, "error", batch.error_lines)
        with self._lock:
            if batch.discarded:
                return
            batch.output_file_id = output
            batch.error_file_id = failures
            # A finished batch holds no bytes: its input stays in the file store only while the file exists.
            batch.output_lines, batch.error_lines, batch.data = [], [], b""
            if errors is not None:
                batch.errors = errors
            self._move(batch, "cancelled" if batch.cancel_requested else status)

    def _store(self, batch: Batch, kind: str, lines: list[bytes]) -> str | None:
        if not lines:
            return None
        return self.files.store_result(kind, f"{batch.id}_{kind}.jsonl", b"".join(lines)).id

    def _move(self, batch: Batch, status: str) -> None:
        batch.status = status
        batch.times[status] = int(time.time())


def _error_line(custom_id: str, request_id: str, error: ApiError) -> bytes:
    failure = {
        "id": request_id,
        "custom_id": custom_id,
        "response": {
            "status_code": error.status,
            "request_id": request_id,
            "body": compatible_error_body(error, request_id),
        },
        "error": {"code": error.code, "message": error.message},
    }
    return _jsonl(failure)


def _jsonl(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
