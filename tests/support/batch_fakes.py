"""In-memory fakes of the batch lane's ports: the batch store and the vendor's Batch File API.

InMemoryBatchStore keeps DynamoBatchStore's conditional semantics (tests/unit/adapters/test_batch_store.py
runs the same assertions on both). FakeBatchApi keeps files and batches in memory; a test moves a batch
along (`set_status`, `finish`), and the lines of a finished batch are answered by running a given
OcrService on the calls they stand for, so the services can be driven end to end without HTTP.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from ocr_pipeline import errors
from ocr_pipeline.adapters.dashscope import WireProtocol
from ocr_pipeline.adapters.dashscope.wire import build_body
from ocr_pipeline.batch_api import BATCH_ENDPOINT, BatchAnswer, BatchStatus, VendorBatch
from ocr_pipeline.ocr_service import OcrCall, OcrService
from ocr_pipeline.pipeline.port_errors import BatchStateConflict
from ocr_pipeline.pipeline.records import BatchRecord, BatchState, PageAssignment

from tests.support.memory import _Counted

# The steps each state may be reached from (besides repeating the same step with the same id).
_STEPS_FROM = {
    BatchState.UPLOADED: (BatchState.STAGED,),
    BatchState.OPEN: (BatchState.STAGED, BatchState.UPLOADED),
}


class InMemoryBatchStore(_Counted):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.assignments: dict[tuple[str, int], PageAssignment] = {}
        self.unfinished: dict[str, BatchRecord] = {}
        self.closed: dict[str, BatchRecord] = {}

    def assign_page(self, job_id: str, page: int, attempt: int, batch_key: str) -> bool:
        self._count("assign_page")
        with self._lock:
            held = self.assignments.get((job_id, page))
            if held is not None and held.attempt >= attempt:
                return False
            self.assignments[(job_id, page)] = PageAssignment(attempt=attempt, batch_key=batch_key)
            return True

    def page_assignment(self, job_id: str, page: int) -> PageAssignment | None:
        self._count("page_assignment")
        with self._lock:
            return self.assignments.get((job_id, page))

    def reassign_page(self, job_id: str, page: int, attempt: int, from_key: str, to_key: str) -> bool:
        self._count("reassign_page")
        with self._lock:
            held = self.assignments.get((job_id, page))
            if held is None or held.attempt != attempt or held.batch_key != from_key:
                return False
            self.assignments[(job_id, page)] = PageAssignment(attempt=attempt, batch_key=to_key)
            return True

    def get_batch(self, batch_key: str) -> BatchRecord | None:
        self._count("get_batch")
        with self._lock:
            return self.unfinished.get(batch_key) or self.closed.get(batch_key)

    def stage_batch(self, batch: BatchRecord) -> None:
        self._count("stage_batch")
        if batch.state is not BatchState.STAGED:
            raise ValueError(f"a new batch is staged, not {batch.state.value}")
        with self._lock:
            held = self.unfinished.get(batch.batch_key)
            if held is not None and held != batch:
                raise BatchStateConflict(f"a different batch with key {batch.batch_key} exists already")
            self.unfinished[batch.batch_key] = batch

    def batch_uploaded(self, batch_key: str, file_id: str) -> None:
        self._count("batch_uploaded")
        self._step(batch_key, BatchState.UPLOADED, "file_id", file_id)

    def batch_opened(self, batch_key: str, vendor_batch_id: str) -> None:
        self._count("batch_opened")
        self._step(batch_key, BatchState.OPEN, "vendor_batch_id", vendor_batch_id)

    def _step(self, batch_key: str, to: BatchState, attribute: str, value: str) -> None:
        with self._lock:
            record = self.unfinished.get(batch_key)
            if record is None:
                raise BatchStateConflict(f"batch {batch_key} is not unfinished (closed, or never staged)")
            repeated = record.state is to and getattr(record, attribute) == value
            if record.state not in _STEPS_FROM[to] and not repeated:
                raise BatchStateConflict(f"batch {batch_key} is {record.state.value}; it cannot become {to.value}")
            self.unfinished[batch_key] = record.model_copy(update={"state": to, attribute: value})

    def unfinished_batches(self) -> list[BatchRecord]:
        self._count("unfinished_batches")
        with self._lock:
            return [self.unfinished[key] for key in sorted(self.unfinished)]

    def close_batch(self, batch_key: str, vendor_status: str) -> bool:
        self._count("close_batch")
        with self._lock:
            record = self.unfinished.pop(batch_key, None)
            if record is None:
                return False
            update = {"state": BatchState.CLOSED, "vendor_status": vendor_status}
            self.closed[batch_key] = record.model_copy(update=update)
            return True


class FakeBatchApi(_Counted):
    """The Batch File API in memory. Lines of a finished batch are answered by `ocr` when they are read.

    As the vendor does, a batch whose file has a line that is not a chat request line, or mixes models,
    fails validation (status failed, `errors` saying why), and a refusal is the adapter's typed error.
    """

    def __init__(self, ocr: OcrService, *, max_tokens: int | None = None) -> None:
        super().__init__()
        self.ocr = ocr
        self._max_tokens = max_tokens
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, VendorBatch] = {}
        # What a file of answers holds: the custom_ids the OCR service answers, and the error lines.
        self._answered: dict[str, list[str]] = {}
        self._error_lines: dict[str, dict[str, errors.OcrPipelineError]] = {}

    def request_body(self, call: OcrCall) -> dict[str, Any]:
        self._count("request_body")
        return build_body(WireProtocol.OPENAI, call, max_tokens=self._max_tokens)

    def upload_file(self, name: str, data: BinaryIO) -> str:
        self._count("upload_file")
        with self._lock:
            file_id = f"file-batch-{next(self._ids)}"
            self.files[file_id] = data.read()
            return file_id

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> VendorBatch:
        self._count("create_batch")
        with self._lock:
            if input_file_id not in self.files:
                raise errors.OcrInvalidParameter(f"no file with id {input_file_id!r}", status_code=400)
            lines, problems = _read_input(self.files[input_file_id])
            batch = VendorBatch(
                id=f"batch_{next(self._ids)}",
                status=BatchStatus.FAILED if problems else BatchStatus.VALIDATING,
                input_file_id=input_file_id,
                total=len(lines),
                completed=0,
                failed=0,
                errors=problems,
                metadata=dict(metadata),
            )
            self.batches[batch.id] = batch
            return batch

    def find_batch(self, input_file_id: str) -> VendorBatch | None:
        self._count("find_batch")
        with self._lock:
            return next((b for b in reversed(self.batches.values()) if b.input_file_id == input_file_id), None)

    def get_batch(self, batch_id: str) -> VendorBatch:
        self._count("get_batch")
        with self._lock:
            if batch_id not in self.batches:
                raise errors.OcrInvalidParameter(f"no batch with id {batch_id!r}", status_code=404)
            return self.batches[batch_id]

    def delete_file(self, file_id: str) -> None:
        self._count("delete_file")
        with self._lock:
            if self.files.pop(file_id, None) is None and not (
                self._answered.pop(file_id, None) is not None or self._error_lines.pop(file_id, None) is not None
            ):
                raise errors.OcrInvalidParameter(f"no file with id {file_id!r}", status_code=404)

    def answers(self, file_id: str, call_of: Callable[[str], OcrCall | None]) -> Iterator[BatchAnswer]:
        self._count("answers")
        if file_id not in self._answered and file_id not in self._error_lines:
            raise errors.OcrInvalidParameter(f"no file with id {file_id!r}", status_code=404)
        for custom_id in self._answered.get(file_id, []):
            if (call := call_of(custom_id)) is not None:
                yield self._run(custom_id, call)
        for custom_id, error in self._error_lines.get(file_id, {}).items():
            if call_of(custom_id) is not None:
                yield BatchAnswer(custom_id=custom_id, error=error)

    def _run(self, custom_id: str, call: OcrCall) -> BatchAnswer:
        try:
            outcome = self.ocr.recognize(call)
        except errors.OcrPipelineError as error:
            return BatchAnswer(custom_id=custom_id, error=error)
        return BatchAnswer(custom_id=custom_id, outcome=outcome.model_copy(update={"attempts": 1, "latency_ms": 0}))

    # --- what a test does to the vendor's side --------------------------------------------------

    def custom_ids(self, batch_id: str) -> list[str]:
        """The custom_ids of a batch's input file, in order."""
        return [line["custom_id"] for line in _read_input(self.files[self.batches[batch_id].input_file_id])[0]]

    def set_status(self, batch_id: str, status: BatchStatus) -> VendorBatch:
        with self._lock:
            batch = self.batches[batch_id].model_copy(update={"status": status})
            self.batches[batch_id] = batch
            return batch

    def finish(
        self,
        batch_id: str,
        status: BatchStatus = BatchStatus.COMPLETED,
        *,
        answered: Iterable[str] | None = None,
        error_lines: dict[str, errors.OcrPipelineError] | None = None,
    ) -> VendorBatch:
        """End a batch. Its output file holds `answered` (every line not in `error_lines` when completed,
        none otherwise: an expired or cancelled batch keeps what it ran); its error file `error_lines`."""
        error_lines = dict(error_lines or {})
        if answered is None:
            done = status is BatchStatus.COMPLETED
            answered = [c for c in self.custom_ids(batch_id) if c not in error_lines] if done else []
        answered = list(answered)
        with self._lock:
            update: dict[str, Any] = {"status": status, "completed": len(answered), "failed": len(error_lines)}
            if answered:
                update["output_file_id"] = f"file-output-{batch_id}"
                self._answered[update["output_file_id"]] = answered
            if error_lines:
                update["error_file_id"] = f"file-error-{batch_id}"
                self._error_lines[update["error_file_id"]] = error_lines
            batch = self.batches[batch_id].model_copy(update=update)
            self.batches[batch_id] = batch
            return batch


def _read_input(data: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """An input file's lines, and what makes it fail validation (as the vendor words it, roughly)."""
    lines: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            problems.append(f"invalid_json_line: line {number} is not JSON")
            continue
        if (
            not isinstance(line, dict)
            or not isinstance(line.get("custom_id"), str)
            or line.get("url") != BATCH_ENDPOINT
        ):
            problems.append(f"invalid_request: line {number} is not a {BATCH_ENDPOINT} request line")
            continue
        lines.append(line)
    if len({line.get("body", {}).get("model") for line in lines}) > 1:
        problems.append("mismatched_model: the lines of one file must use the same model")
    if not lines and not problems:
        problems.append("empty_file: the file has no request lines")
    return lines, problems
