"""The Batch File API adapter: the requests it sends, the JSON it reads, and the errors it raises.

httpx.MockTransport stands in for the network, as in test_client.py. The error cases are checked against
the real-time client itself: a batch line or a refused management call must be as retryable, or as
final, as the same status and body are for a real-time call.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from typing import Any

import httpx
import pytest
from ocr_pipeline import errors
from ocr_pipeline.adapters.dashscope import DashScopeBatchClient, OcrServiceSettings, QwenOcrClient, WireProtocol
from ocr_pipeline.adapters.dashscope.batch_client import MAX_LIST_PAGES, _jsonl_lines
from ocr_pipeline.adapters.dashscope.wire import build_body
from ocr_pipeline.batch_api import BatchStatus, VendorBatch, batch_line, page_custom_id
from ocr_pipeline.tasks import TaskOptions

from tests.unit.adapters.test_client import COMPATIBLE_OK, make_call, scripted

BASE = "https://dashscope.aliyuncs.com/compatible-mode/v1"
CALL = make_call(TaskOptions(), "qwen-vl-ocr")
A_BATCH: dict[str, Any] = {
    "id": "batch_cf957e2b",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "errors": None,
    "input_file_id": "file-batch-ADvr",
    "completion_window": "24h",
    "status": "in_progress",
    "output_file_id": None,
    "error_file_id": None,
    "created_at": 1764748800,
    "in_progress_at": 1764748810,
    "expires_at": 1764835200,
    "request_counts": {"total": 3, "completed": 1, "failed": 0},
    "metadata": {"batch_key": "20251203T080000Z-a"},
}


def batch_client(handler, **settings: Any) -> DashScopeBatchClient:
    return DashScopeBatchClient(
        OcrServiceSettings(api_key="sk-test", **settings), http=httpx.Client(transport=httpx.MockTransport(handler))
    )


def output_line(custom_id: str, body: Any, status: int = 200) -> dict[str, Any]:
    return {
        "id": "line-1",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": "req-batch-1", "body": body},
        "error": None,
    }


def error_line(custom_id: str, status: int, code: str, message: str = "refused") -> dict[str, Any]:
    detail = {"code": code, "message": message}
    return {
        "id": "line-2",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": "req-batch-2", "body": {"error": detail}},
        "error": detail,
    }


def jsonl(*lines: Any) -> bytes:
    return b"".join(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n" for line in lines)


def known(*custom_ids: str):
    return lambda custom_id: CALL if custom_id in custom_ids else None


# --- requests -------------------------------------------------------------------------------------


def test_a_line_carries_the_compatible_chat_body_with_max_tokens():
    client = batch_client(scripted(), max_output_tokens=2048)
    body = client.request_body(CALL)
    assert body == build_body(WireProtocol.OPENAI, CALL, max_tokens=2048)
    assert body["model"] == "qwen-vl-ocr" and body["max_tokens"] == 2048
    # And it goes in a line as the vendor documents it
    assert batch_line("job-1-p3-a1", body) == {
        "custom_id": "job-1-p3-a1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    }


def test_the_base_is_beijings_compatible_mode_unless_a_setting_names_another():
    assert batch_client(scripted()).base_url == BASE
    assert batch_client(scripted(), batch_base_url="http://127.0.0.1:9/compatible-mode/v1/").base_url == (
        "http://127.0.0.1:9/compatible-mode/v1"
    )
    settings = OcrServiceSettings.from_env({"OCR_BATCH_BASE_URL": "http://localhost:8/v1", "DASHSCOPE_API_KEY": "k"})
    assert settings.batch_base_url == "http://localhost:8/v1"
    with pytest.raises(errors.ConfigurationError):
        OcrServiceSettings.from_env({"OCR_BATCH_BASE_URL": "localhost:8"})


class ReadsRecorded(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)


def test_an_upload_streams_the_file_as_multipart_with_purpose_batch():
    # Given a 1.5 MB JSONL file
    lines = [batch_line(f"job-1-p{n}-a1", {"model": "qwen-vl-ocr", "pad": "x" * 1000}) for n in range(1500)]
    data = jsonl(*lines)
    source = ReadsRecorded(data)
    handler = scripted(httpx.Response(200, json={"id": "file-batch-1", "object": "file", "purpose": "batch"}))
    # When it is uploaded
    file_id = batch_client(handler).upload_file("20251203T080000Z-a.jsonl", source)
    # Then the file id comes back, from one POST /files with the key, its length and both form fields
    assert file_id == "file-batch-1"
    (request,) = handler.seen
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/files")
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    sent = request.read()
    assert int(request.headers["Content-Length"]) == len(sent)
    assert b'name="purpose"\r\n\r\nbatch\r\n' in sent
    assert b'name="file"; filename="20251203T080000Z-a.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n' in sent
    assert data in sent
    # And the file was read in chunks, never whole
    assert source.sizes and all(0 < size <= 64 * 1024 for size in source.sizes)


def test_creating_a_batch_sends_the_documented_fields_and_reads_the_batch():
    handler = scripted(httpx.Response(200, json={**A_BATCH, "status": "validating"}))
    batch = batch_client(handler).create_batch("file-batch-ADvr", {"batch_key": "20251203T080000Z-a"})
    (request,) = handler.seen
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/batches")
    assert json.loads(request.content) == {
        "input_file_id": "file-batch-ADvr",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"batch_key": "20251203T080000Z-a"},
    }
    assert batch == VendorBatch(
        id="batch_cf957e2b",
        status=BatchStatus.VALIDATING,
        input_file_id="file-batch-ADvr",
        created_at=1764748800,
        total=3,
        completed=1,
        failed=0,
        metadata={"batch_key": "20251203T080000Z-a"},
    )


def test_a_finished_batch_names_its_files_and_why_it_failed():
    failed = {
        **A_BATCH,
        "status": "failed",
        "metadata": None,
        "request_counts": None,
        "errors": {
            "object": "list",
            "data": [{"code": "mismatched_model", "message": "one model per file", "line": 7, "param": None}],
        },
    }
    completed = {**A_BATCH, "status": "completed", "output_file_id": "file-out-1", "error_file_id": "file-err-1"}
    handler = scripted(httpx.Response(200, json=failed), httpx.Response(200, json=completed))
    client = batch_client(handler)
    first = client.get_batch("batch_cf957e2b")
    assert str(handler.seen[0].url) == f"{BASE}/batches/batch_cf957e2b"
    assert first.status is BatchStatus.FAILED and first.status.finished
    assert first.errors == ["mismatched_model: one model per file (line 7)"]
    assert (first.metadata, first.total) == ({}, None)
    second = client.get_batch("batch_cf957e2b")
    assert (second.output_file_id, second.error_file_id) == ("file-out-1", "file-err-1")


@pytest.mark.parametrize(
    "body",
    [[], {"id": "b", "status": "in_progress"}, {**A_BATCH, "status": "paused"}, {**A_BATCH, "request_counts": 3}],
)
def test_a_batch_without_the_documented_shape_is_a_malformed_response(body):
    with pytest.raises(errors.OcrMalformedResponse) as caught:
        batch_client(scripted(httpx.Response(200, json=body))).get_batch("b")
    assert caught.value.retryable


# --- finding a batch by its file ---------------------------------------------------------------------


def listing(ids: list[str], has_more: bool, match: str | None = None) -> dict[str, Any]:
    data = [{**A_BATCH, "id": i, "input_file_id": match if i == match else f"file-of-{i}"} for i in ids]
    return {"object": "list", "data": data, "first_id": ids[0], "last_id": ids[-1], "has_more": has_more}


def test_find_batch_follows_the_list_pages_to_the_batch_of_the_file():
    handler = scripted(
        httpx.Response(200, json=listing(["b9", "b8"], True)),
        httpx.Response(200, json=listing(["b7", "b6"], True)),
        httpx.Response(200, json=listing(["b5", "b4"], True, match="b4")),
    )
    found = batch_client(handler).find_batch("b4")
    assert found is not None and found.id == "b4" and found.input_file_id == "b4"
    queries = [dict(request.url.params) for request in handler.seen]
    assert queries == [{"limit": "100"}, {"limit": "100", "after": "b8"}, {"limit": "100", "after": "b6"}]


def test_find_batch_is_none_when_the_list_ends_without_it():
    handler = scripted(httpx.Response(200, json=listing(["b2", "b1"], False)))
    assert batch_client(handler).find_batch("file-batch-x") is None
    assert len(handler.seen) == 1


def test_find_batch_looks_a_bounded_number_of_pages_back(caplog):
    handler = scripted(*[httpx.Response(200, json=listing([f"b{n}"], True)) for n in range(MAX_LIST_PAGES + 5)])
    with caplog.at_level(logging.WARNING):
        assert batch_client(handler).find_batch("file-batch-x") is None
    assert len(handler.seen) == MAX_LIST_PAGES
    assert "looked no further" in caplog.text


# --- answers ------------------------------------------------------------------------------------------


def test_an_output_line_is_the_calls_outcome():
    handler = scripted(httpx.Response(200, content=jsonl(output_line("job-1-p1-a1", COMPATIBLE_OK))))
    (answer,) = batch_client(handler).answers("file-out-1", known("job-1-p1-a1"))
    assert str(handler.seen[0].url) == f"{BASE}/files/file-out-1/content"
    assert answer.custom_id == "job-1-p1-a1" and answer.error is None
    assert answer.outcome is not None and (answer.outcome.attempts, answer.outcome.latency_ms) == (1, 0)
    reply = answer.outcome.reply
    assert reply.result.text == "hello" and reply.finish_reason == "stop"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (40, 3)
    assert reply.request_id == "chatcmpl-1"


def test_an_output_line_without_a_request_id_in_its_body_takes_the_lines():
    body = {key: value for key, value in COMPATIBLE_OK.items() if key != "id"}
    handler = scripted(httpx.Response(200, content=jsonl(output_line("c1", body))))
    (answer,) = batch_client(handler).answers("f", known("c1"))
    assert answer.outcome is not None and answer.outcome.reply.request_id == "req-batch-1"


def test_an_output_line_whose_body_cannot_be_read_is_a_malformed_response_with_its_billed_usage():
    unreadable = {"id": "chatcmpl-2", "choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 3}}
    handler = scripted(httpx.Response(200, content=jsonl(output_line("c1", unreadable), output_line("c2", "oops"))))
    first, second = batch_client(handler).answers("f", known("c1", "c2"))
    assert isinstance(first.error, errors.OcrMalformedResponse) and first.outcome is None
    assert first.error.retryable and first.error.status_code == 200
    assert first.error.billed_usage is not None and first.error.billed_usage.input_tokens == 40
    assert isinstance(second.error, errors.OcrMalformedResponse) and second.error.billed_usage is None
    assert second.error.request_id == "req-batch-1"


ERROR_CASES = [
    (400, {"error": {"code": "InvalidParameter", "message": "bad image"}}),
    (400, {"error": {"code": "DataInspectionFailed", "message": "moderated"}}),
    (400, {"error": {"code": "Arrearage", "message": "pay up"}}),
    (401, {"error": {"code": "invalid_api_key", "message": "no"}}),
    (403, {"error": {"code": "AccessDenied", "message": "no"}}),
    (404, {"error": {"code": "model_not_found", "message": "no such model"}}),
    (408, {"error": {"code": "RequestTimeOut", "message": "slow"}}),
    (429, {"error": {"code": "Throttling.RateQuota", "message": "slow down"}}),
    (500, {"error": {"code": "InternalError", "message": "oops"}}),
    (503, {"code": "ServiceUnavailable", "message": "later"}),
]


def realtime_error(status: int, body: Any) -> errors.OcrServiceError:
    """What the real-time client raises for this reply, unwrapped from its retries."""
    client = QwenOcrClient(
        OcrServiceSettings(protocol=WireProtocol.OPENAI, api_key="sk-test", max_attempts=1),
        http=httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body))),
    )
    with pytest.raises(errors.OcrServiceError) as caught:
        client.recognize(CALL)
    error = caught.value
    return error.last_error if isinstance(error, errors.OcrRetriesExhausted) else error


@pytest.mark.parametrize(("status", "body"), ERROR_CASES)
def test_an_error_line_is_classified_as_the_realtime_client_classifies_its_reply(status, body):
    line = {"custom_id": "c1", "response": {"status_code": status, "request_id": "req-9", "body": body}}
    line["error"] = body.get("error") or {"code": body.get("code"), "message": body.get("message")}
    handler = scripted(httpx.Response(200, content=jsonl(line)))
    (answer,) = batch_client(handler).answers("file-err-1", known("c1"))
    expected = realtime_error(status, body)
    assert answer.outcome is None and answer.error is not None
    assert type(answer.error) is type(expected) and answer.error.retryable == expected.retryable
    assert (answer.error.code, answer.error.status_code) == (expected.code, status)
    assert answer.error.request_id == "req-9"


def test_an_error_line_whose_body_says_nothing_takes_the_lines_error():
    line = {
        "custom_id": "c1",
        "response": {"status_code": 400, "body": None},
        "error": {"code": "DataInspectionFailed", "message": "moderated"},
    }
    (answer,) = batch_client(scripted(httpx.Response(200, content=jsonl(line)))).answers("f", known("c1"))
    assert isinstance(answer.error, errors.OcrContentRejected) and answer.error.vendor_code == "DataInspectionFailed"


def test_a_line_the_batch_never_ran_is_retryable():
    # The vendor's lines for requests an expired or cancelled batch did not run have no HTTP status
    line = {"custom_id": "c1", "response": None, "error": {"code": "batch_expired", "message": "not run in time"}}
    (answer,) = batch_client(scripted(httpx.Response(200, content=jsonl(line)))).answers("f", known("c1"))
    assert isinstance(answer.error, errors.OcrServerError) and answer.error.retryable
    assert answer.error.vendor_code == "batch_expired" and "not run in time" in answer.error.message


def test_lines_that_are_not_answers_are_skipped_and_logged_without_their_content(caplog):
    # Given a file with a line of another batch, a line that is not JSON, one without custom_id and a blank one
    content = (
        jsonl(output_line("someone-else", COMPATIBLE_OK))
        + b'{"custom_id": "c1", "response": {SECRET TEXT\n'
        + jsonl({"response": {}})
        + b"\n"
        + jsonl(error_line("c2", 429, "Throttling"))
    )
    handler = scripted(httpx.Response(200, content=content))
    # When its answers are read
    with caplog.at_level(logging.WARNING):
        answers = list(batch_client(handler).answers("file-err-1", known("c1", "c2")))
    # Then only the known, readable line is answered, and each other one is logged, never crashed on
    assert [(a.custom_id, type(a.error)) for a in answers] == [("c2", errors.OcrThrottled)]
    assert "unknown custom_id someone-else" in caplog.text
    assert "line 2 of batch file file-err-1: not JSON" in caplog.text
    assert "line 3 of batch file file-err-1: no custom_id" in caplog.text
    assert "SECRET TEXT" not in caplog.text


def test_answers_stream_line_by_line_across_chunk_boundaries():
    # Given an output file of 50 lines whose text holds a line separator (U+2028) and multi-byte characters,
    # served in 7-byte chunks, so lines and characters are cut at chunk boundaries
    text = "請求書\u2028Invoice №"
    body = {**COMPATIBLE_OK, "choices": [{"message": {"content": text}, "finish_reason": "stop"}]}
    data = jsonl(*[output_line(page_custom_id("job-1", n, 1), body) for n in range(1, 51)])
    served: list[int] = []

    def chunks():
        for start in range(0, len(data), 7):
            served.append(start)
            yield data[start : start + 7]

    handler = scripted(httpx.Response(200, content=chunks()))
    answers = batch_client(handler).answers("f", lambda custom_id: CALL)
    # When the first answer is read
    first = next(answers)
    # Then it came before the file was downloaded whole
    assert first.custom_id == "job-1-p1-a1" and len(served) < len(data) // 7 / 2
    # And every line is read whole, the line separator inside the text kept
    rest = list(answers)
    assert len(rest) == 49
    assert {a.outcome.reply.result.text for a in [first, *rest] if a.outcome} == {text}


# --- refused management calls --------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body"), ERROR_CASES)
def test_a_refused_call_raises_what_the_realtime_client_raises_for_that_reply(status, body):
    handler = scripted(httpx.Response(status, json=body, headers={"x-request-id": "req-h"}))
    with pytest.raises(errors.OcrServiceError) as caught:
        batch_client(handler).create_batch("file-batch-1", {})
    expected = realtime_error(status, body)
    if status == 404:
        # A 404 here names a file or batch, not a model
        expected = errors.OcrInvalidParameter("")
    assert type(caught.value) is type(expected) and caught.value.retryable == expected.retryable
    assert caught.value.message.startswith(f"POST /batches was refused with HTTP {status}: ")
    assert caught.value.request_id == "req-h"


def test_a_throttled_call_carries_the_servers_retry_after():
    handler = scripted(httpx.Response(429, json={"error": {"code": "Throttling"}}, headers={"Retry-After": "30"}))
    with pytest.raises(errors.OcrThrottled) as caught:
        batch_client(handler).get_batch("b1")
    assert caught.value.retry_after == 30.0 and caught.value.retryable


def test_a_missing_batch_is_not_retryable_and_says_which():
    handler = scripted(httpx.Response(404, json={"error": {"code": "not_found", "message": "no batch 'b1'"}}))
    with pytest.raises(errors.OcrInvalidParameter) as caught:
        batch_client(handler).get_batch("b1")
    assert not caught.value.retryable
    assert caught.value.message == "GET /batches/b1 was refused with HTTP 404: no batch 'b1'"


def test_a_refused_download_raises_before_any_answer():
    handler = scripted(httpx.Response(503, text="busy"))
    with pytest.raises(errors.OcrServerError) as caught:
        list(batch_client(handler).answers("file-out-1", known()))
    assert caught.value.retryable and caught.value.message.startswith("GET /files/file-out-1/content was refused")


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (httpx.ConnectError("refused"), errors.OcrConnectionError),
        (httpx.ReadTimeout("slow"), errors.OcrTimeout),
        (httpx.RemoteProtocolError("dropped"), errors.OcrConnectionError),
    ],
)
def test_transport_failures_are_the_realtime_clients_retryable_errors(failure, kind):
    for call in (
        lambda c: c.upload_file("a.jsonl", io.BytesIO(b"{}\n")),
        lambda c: c.find_batch("f"),
        lambda c: list(c.answers("f", known())),
    ):
        with pytest.raises(kind) as caught:
            call(batch_client(scripted(failure)))
        assert caught.value.retryable


def test_a_connection_dropped_mid_download_is_retryable():
    def chunks():
        yield jsonl(output_line("c1", COMPATIBLE_OK))
        raise httpx.RemoteProtocolError("peer closed connection")

    answers = batch_client(scripted(httpx.Response(200, content=chunks()))).answers("f", known("c1"))
    assert next(answers).custom_id == "c1"
    with pytest.raises(errors.OcrConnectionError):
        next(answers)


@pytest.mark.parametrize("reply", [httpx.Response(200, text="<html>"), httpx.Response(200, json={"object": "file"})])
def test_an_upload_answer_without_a_file_id_is_malformed(reply):
    with pytest.raises(errors.OcrMalformedResponse):
        batch_client(scripted(reply)).upload_file("a.jsonl", io.BytesIO(b"{}\n"))


def test_without_an_api_key_nothing_is_sent():
    handler = scripted()
    client = DashScopeBatchClient(OcrServiceSettings(), http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(errors.ConfigurationError):
        client.get_batch("b1")
    assert handler.seen == []


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64 * 1024])
def test_a_file_splits_into_the_same_lines_whatever_its_chunks(size):
    data = b'{"a": 1}\r\n\n{"b": "\xe2\x80\xa8"}\n{"c": 3}'
    chunks = [data[start : start + size] for start in range(0, len(data), size)]
    assert list(_jsonl_lines(iter(chunks))) == [b'{"a": 1}\r', b"", b'{"b": "\xe2\x80\xa8"}', b'{"c": 3}']


def test_the_package_loads_the_batch_client_only_when_it_is_asked_for():
    # A function that reads only the settings must not pay for httpx at its cold start
    script = (
        "import sys\n"
        "from ocr_pipeline.adapters.dashscope import OcrServiceSettings\n"
        "print('httpx' in sys.modules, 'ocr_pipeline.adapters.dashscope.batch_client' in sys.modules)\n"
        "from ocr_pipeline.adapters.dashscope import DashScopeBatchClient\n"
        "print(DashScopeBatchClient.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.split("\n")[:2] == ["False False", "ocr_pipeline.adapters.dashscope.batch_client"]
