"""The in-memory Batch File API that service tests drive: it must behave as the port says the vendor does."""

from __future__ import annotations

import io
import json

import pytest
from ocr_pipeline import errors
from ocr_pipeline.batch_api import BatchStatus, batch_line, page_custom_id
from ocr_pipeline.tasks import TaskOptions

from tests.support.batch_fakes import FakeBatchApi
from tests.support.fakes import FakeOcrService
from tests.unit.adapters.test_client import make_call

CALL = make_call(TaskOptions(), "qwen-vl-ocr")


def input_file(api: FakeBatchApi, custom_ids: list[str], model: str = "qwen-vl-ocr") -> io.BytesIO:
    lines = [batch_line(c, {**api.request_body(CALL), "model": model}) for c in custom_ids]
    return io.BytesIO(b"".join(json.dumps(line).encode() + b"\n" for line in lines))


def test_a_completed_batch_answers_each_line_by_running_the_ocr_service():
    # Given a batch of three pages
    ocr = FakeOcrService(text="page text")
    api = FakeBatchApi(ocr)
    ids = [page_custom_id("job-1", n, 1) for n in (1, 2, 3)]
    file_id = api.upload_file("b.jsonl", input_file(api, ids))
    batch = api.create_batch(file_id, {"batch_key": "k"})
    assert (batch.status, batch.total, batch.metadata) == (BatchStatus.VALIDATING, 3, {"batch_key": "k"})
    assert api.find_batch(file_id) == batch
    # When it completes with page 2 in the error file
    throttled = errors.OcrThrottled("slow down", status_code=429)
    done = api.finish(batch.id, error_lines={ids[1]: throttled})
    assert api.get_batch(batch.id) == done and (done.completed, done.failed) == (2, 1)
    # Then the output file answers pages 1 and 3 from the OCR service, and the error file page 2
    assert done.output_file_id is not None and done.error_file_id is not None
    output = list(api.answers(done.output_file_id, lambda custom_id: CALL))
    assert [a.custom_id for a in output] == [ids[0], ids[2]]
    assert all(a.outcome is not None and a.outcome.reply.result.text == "page text" for a in output)
    assert len(ocr.calls) == 2
    (failed,) = api.answers(done.error_file_id, lambda custom_id: CALL)
    assert (failed.custom_id, failed.error) == (ids[1], throttled)


def test_lines_the_caller_does_not_know_are_skipped():
    api = FakeBatchApi(FakeOcrService())
    batch = api.create_batch(api.upload_file("b.jsonl", input_file(api, ["a", "b"])), {})
    done = api.finish(batch.id)
    assert done.output_file_id is not None
    assert [a.custom_id for a in api.answers(done.output_file_id, lambda c: CALL if c == "b" else None)] == ["b"]


def test_an_ocr_failure_while_answering_becomes_the_lines_error():
    api = FakeBatchApi(FakeOcrService(fail=lambda call: errors.OcrContentRejected("moderated", status_code=400)))
    batch = api.create_batch(api.upload_file("b.jsonl", input_file(api, ["a"])), {})
    done = api.finish(batch.id)
    assert done.output_file_id is not None
    (answer,) = api.answers(done.output_file_id, lambda c: CALL)
    assert isinstance(answer.error, errors.OcrContentRejected) and answer.outcome is None


def test_an_expired_batch_keeps_only_what_it_ran():
    api = FakeBatchApi(FakeOcrService())
    batch = api.create_batch(api.upload_file("b.jsonl", input_file(api, ["a", "b"])), {})
    api.set_status(batch.id, BatchStatus.IN_PROGRESS)
    expired = api.finish(batch.id, BatchStatus.EXPIRED)
    assert expired.status.finished and expired.output_file_id is None and expired.error_file_id is None
    partial = api.finish(batch.id, BatchStatus.CANCELLED, answered=["a"])
    assert partial.output_file_id is not None
    assert [a.custom_id for a in api.answers(partial.output_file_id, lambda c: CALL)] == ["a"]


def test_a_file_the_vendor_would_not_validate_fails_the_batch():
    api = FakeBatchApi(FakeOcrService())
    mixed = input_file(api, ["a"]).getvalue() + input_file(api, ["b"], model="qwen-vl-ocr-latest").getvalue()
    batch = api.create_batch(api.upload_file("b.jsonl", io.BytesIO(mixed)), {})
    assert batch.status is BatchStatus.FAILED and batch.errors[0].startswith("mismatched_model")
    not_lines = api.create_batch(api.upload_file("c.jsonl", io.BytesIO(b"hello\n")), {})
    assert not_lines.status is BatchStatus.FAILED and not_lines.errors[0].startswith("invalid_json_line")


def test_unknown_files_and_batches_are_refused_as_the_adapter_refuses_them():
    api = FakeBatchApi(FakeOcrService())
    for call in (lambda: api.create_batch("file-x", {}), lambda: api.get_batch("batch-x")):
        with pytest.raises(errors.OcrInvalidParameter) as caught:
            call()
        assert not caught.value.retryable
    with pytest.raises(errors.OcrInvalidParameter):
        list(api.answers("file-x", lambda c: CALL))
    assert api.find_batch("file-x") is None
