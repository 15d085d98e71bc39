"""The emulator's Batch File API without sockets: its routes (`batch_api`) on an emulator that is not
listening, with a fake OCR engine, and batches run by their own threads with no completion delay."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from ocr_devkit.emulator import BatchFaults, BatchService, EmulatorServer, batch_files
from ocr_devkit.emulator.__main__ import batch_error_lines, parse_args
from ocr_devkit.emulator.admission import Refused, Verdict
from ocr_devkit.emulator.batch_api import BatchApi, Reply
from ocr_devkit.emulator.batch_files import BatchApiError, FileStore, parse_upload
from ocr_devkit.emulator.engine import Line
from ocr_devkit.emulator.faults import Recorder
from PIL import Image

MODEL = "qwen-vl-ocr"
CHAT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")


class CountingEngine:
    """Reads one fixed line in every image; counts its calls, and can hold them until released."""

    def __init__(self, *, held: bool = False) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        if not held:
            self.release.set()

    def recognize(self, image: object, *, correct_rotation: bool = False) -> list[Line]:
        self.calls += 1
        self.entered.set()
        self.release.wait(10)
        return [Line("Total 42.00", ((2, 2), (60, 2), (60, 20), (2, 20)), 0.99)]


def image_url(shade: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64 + shade, 32), (shade, shade, shade)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat_body(shade: int = 200, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": image_url(shade)}}, {"type": "text", "text": "Read it."}]
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def request_line(custom_id: str, body: dict[str, Any] | None = None, url: str = CHAT) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body or chat_body()}


def jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


class Api:
    """The routes as the HTTP handler calls them."""

    def __init__(self, routes: BatchApi) -> None:
        self.routes = routes

    def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        return self.routes.handle(method, "/compatible-mode/v1" + path, **kwargs)

    def json(self, method: str, path: str, payload: Any = None, query: str = "") -> Any:
        reply = self.call(method, path, query=query, body=json.dumps(payload).encode() if payload is not None else b"")
        assert reply.status == 200
        return json.loads(reply.body)

    def upload(self, data: bytes, purpose: str = "batch") -> dict[str, Any]:
        request = httpx.Request(
            "POST", "http://emulator/files", files={"file": ("in.jsonl", data)}, data={"purpose": purpose}
        )
        reply = self.call("POST", "/files", content_type=request.headers["Content-Type"], body=request.read())
        assert reply.status == 200
        return json.loads(reply.body)

    def create(self, lines: list[Any], endpoint: str = CHAT, **extra: Any) -> dict[str, Any]:
        uploaded = self.upload(jsonl(lines))
        body = {"input_file_id": uploaded["id"], "endpoint": endpoint, "completion_window": "24h", **extra}
        return self.json("POST", "/batches", body)

    def wait(self, batch_id: str, until: Callable[[dict[str, Any]], bool] = lambda b: b["status"] in FINAL) -> Any:
        deadline = time.monotonic() + 10
        while not until(batch := self.json("GET", f"/batches/{batch_id}")):
            assert time.monotonic() < deadline, f"batch stuck as {batch['status']}"
            time.sleep(0.01)
        return batch

    def lines(self, file_id: str | None) -> dict[str, dict[str, Any]]:
        if file_id is None:
            return {}
        reply = self.call("GET", f"/files/{file_id}/content")
        assert reply.content_type == "application/octet-stream"
        records = [json.loads(line) for line in reply.body.decode().splitlines()]
        by_id = {record["custom_id"]: record for record in records}
        assert len(by_id) == len(records), "a custom_id appears twice in a result file"
        return by_id


@pytest.fixture
def engine() -> CountingEngine:
    return CountingEngine()


@pytest.fixture
def make_server() -> Iterator[Callable[..., EmulatorServer]]:
    """Emulators that are never started; their batch threads are ended after the test."""
    made: list[EmulatorServer] = []

    def make(engine: CountingEngine, **options: Any) -> EmulatorServer:
        made.append(EmulatorServer(engine=engine, **{"batch_completion_delay_s": 0, **options}))
        return made[-1]

    yield make
    for emulator in made:
        emulator.batches.close()


@pytest.fixture
def server(make_server: Callable[..., EmulatorServer], engine: CountingEngine) -> EmulatorServer:
    return make_server(engine)


@pytest.fixture
def api(server: EmulatorServer) -> Api:
    return Api(server.batch_api)


def refusal(call: Callable[[], Any]) -> BatchApiError:
    with pytest.raises(BatchApiError) as caught:
        call()
    return caught.value


# --- the whole flow ---------------------------------------------------------------------------


def test_a_batch_answers_each_line_as_the_chat_endpoint_answers_its_body(api: Api, server: EmulatorServer) -> None:
    # Given two request lines on two different images
    bodies = {"page-1": chat_body(10), "page-2": chat_body(90)}

    # When they go through a batch to its end
    created = api.create([request_line(custom_id, body) for custom_id, body in bodies.items()], metadata={"job": "7"})
    done = api.wait(created["id"])

    # Then it completed with one output line per custom_id, each with the usage the chat endpoint reports
    assert created["status"] == "validating"
    assert created["expires_at"] == created["created_at"] + 24 * 3600
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert done["error_file_id"] is None
    assert done["metadata"] == {"job": "7"}
    assert None not in (done["in_progress_at"], done["finalizing_at"], done["completed_at"])
    output = api.lines(done["output_file_id"])
    assert set(output) == set(bodies)
    for custom_id, body in bodies.items():
        record = output[custom_id]
        assert record["error"] is None
        assert record["response"]["status_code"] == 200
        assert record["id"] == record["response"]["request_id"]
        reply = record["response"]["body"]
        assert reply["choices"][0]["message"]["content"] == "Total 42.00"
        assert reply["usage"] == server.reply_body("compatible", body, "direct")["usage"]


def test_every_line_run_is_in_the_request_log_with_its_request_id_and_usage(api: Api, server: EmulatorServer) -> None:
    # Given a completed batch of one line
    done = api.wait(api.create([request_line("only")])["id"])

    # When the emulator's request log is read
    (record,) = api.lines(done["output_file_id"]).values()
    logged = [entry for entry in server.requests if entry["endpoint"] == "batch"]

    # Then it shows the line once, under its request id, with the usage of its reply
    assert [entry["request_id"] for entry in logged] == [record["response"]["request_id"]]
    assert logged[0]["response_usage"] == record["response"]["body"]["usage"]
    assert server.stats["requests"]["batch"] == 1
    assert server.stats["batch"]["lines_done"] == 1


def test_a_batch_ends_no_earlier_than_the_completion_delay(
    make_server: Callable[..., EmulatorServer], engine: CountingEngine
) -> None:
    # Given an emulator whose batches take at least 0.4 s
    api = Api(make_server(engine, batch_completion_delay_s=0.4).batch_api)

    # When a one-line batch is created and polled
    started = time.monotonic()
    created = api.create([request_line("a")])
    in_progress = api.wait(created["id"], lambda batch: batch["status"] != "validating")
    done = api.wait(created["id"])
    elapsed = time.monotonic() - started

    # Then it was seen in progress, and completed only once the delay had passed
    assert in_progress["status"] == "in_progress"
    assert done["status"] == "completed"
    assert elapsed >= 0.4


def test_a_line_the_chat_endpoint_refuses_goes_to_the_error_file_with_its_status(api: Api) -> None:
    # Given a batch whose second line asks for 0 tokens and whose third has no image
    no_image = {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    lines = [request_line("good"), request_line("zero", chat_body(max_tokens=0)), request_line("bare", no_image)]

    # When it runs
    done = api.wait(api.create(lines)["id"])

    # Then both refused lines are in the error file with the chat endpoint's 400 and error body
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    assert set(api.lines(done["output_file_id"])) == {"good"}
    errors = api.lines(done["error_file_id"])
    assert set(errors) == {"zero", "bare"}
    for record in errors.values():
        assert record["response"]["status_code"] == 400
        assert record["error"]["code"] == "InvalidParameter"
        body_error = record["response"]["body"]["error"]
        assert body_error["code"] == "invalid_parameter_error"
        assert body_error["type"] == "invalid_request_error"
        assert body_error["message"] == record["error"]["message"]


def test_batch_test_model_answers_a_fixed_success_without_the_engine(api: Api, engine: CountingEngine) -> None:
    # Given a batch of the vendor's test model, on its test endpoint
    body = {"model": "batch-test-model", "messages": [{"role": "user", "content": "hello"}]}
    lines = [request_line(str(index), body, url="/v1/chat/ds-test") for index in range(3)]

    # When it runs
    done = api.wait(api.create(lines, endpoint="/v1/chat/ds-test")["id"])

    # Then every line succeeded with the fixed answer, and the engine never ran
    assert done["status"] == "completed"
    output = api.lines(done["output_file_id"])
    assert sorted(output) == ["0", "1", "2"]
    assert {record["response"]["body"]["choices"][0]["message"]["content"] for record in output.values()} == {
        "This is a test result."
    }
    assert engine.calls == 0


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "code", "line"),
    [
        ([request_line("a"), request_line("b", chat_body(model="qwen-vl-ocr-latest"))], "mismatched_model", 2),
        ([request_line("a"), request_line("a")], "duplicate_custom_id", 2),
        ([request_line("a"), request_line("b", url="/v1/embeddings")], "mismatched_url", 2),
        ([request_line("a", chat_body(model="qwen-vl-ocr-2025-11-20"))], "unsupported_model", 1),
        ([request_line("a"), "not an object"], "invalid_request_line", 2),
        ([{"custom_id": "a", "method": "GET", "url": CHAT, "body": chat_body()}], "invalid_request_line", 1),
        (
            [request_line(str(index), {"model": "batch-test-model", "messages": []}) for index in range(101)],
            "too_many_requests",
            None,
        ),
    ],
)
def test_a_file_that_breaks_the_rules_fails_the_batch_with_its_errors(
    api: Api, engine: CountingEngine, lines: list[Any], code: str, line: int | None
) -> None:
    # Given a file that breaks one rule of the Batch API
    # When a batch is created over it
    done = api.wait(api.create(lines)["id"])

    # Then the batch failed at validation with that error, ran nothing and has no output
    assert done["status"] == "failed"
    assert done["failed_at"] is not None and done["in_progress_at"] is None
    assert done["errors"]["object"] == "list"
    assert {"code": code, "line": line} in [{"code": e["code"], "line": e["line"]} for e in done["errors"]["data"]]
    assert done["output_file_id"] is None and done["error_file_id"] is None
    assert engine.calls == 0


def test_a_line_that_is_not_json_fails_validation_with_its_line_number(api: Api) -> None:
    data = jsonl([request_line("a")]) + b"\n" + b'{"custom_id": "b", \n'
    uploaded = api.upload(data)
    created = api.json(
        "POST", "/batches", {"input_file_id": uploaded["id"], "endpoint": CHAT, "completion_window": "24h"}
    )
    done = api.wait(created["id"])
    assert done["status"] == "failed"
    # The blank line 2 is skipped, and counts in the numbering.
    assert [(error["code"], error["line"]) for error in done["errors"]["data"]] == [("invalid_json_line", 3)]


# --- scripted outcomes -----------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["failed", "expired", "cancelled"])
def test_a_scripted_outcome_ends_the_next_batch_without_output(
    api: Api, server: EmulatorServer, engine: CountingEngine, outcome: str
) -> None:
    # Given the next batch scripted to end as `outcome`
    server.batch_faults.configure(outcomes=[outcome])

    # When two batches run, one after the other
    first = api.wait(api.create([request_line("a"), request_line("b")])["id"])
    second = api.wait(api.create([request_line("c")])["id"])

    # Then the first ended so, with no line run and no file; the next one completed normally
    assert first["status"] == outcome
    assert first[f"{outcome}_at"] is not None
    assert first["output_file_id"] is None and first["error_file_id"] is None
    assert first["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
    assert (first["errors"] is not None) == (outcome == "failed")
    if outcome == "cancelled":
        assert first["cancelling_at"] is not None
    assert second["status"] == "completed"
    assert engine.calls == 1


def test_an_expired_batch_can_keep_the_lines_it_did(api: Api, server: EmulatorServer) -> None:
    # Given the next batch scripted to expire after two of its three lines
    server.batch_faults.configure(outcomes=[{"outcome": "expired", "lines_done": 2}])

    # When it runs
    done = api.wait(api.create([request_line("a"), request_line("b"), request_line("c")])["id"])

    # Then it expired with the first two lines in its output, and the third in no file
    assert done["status"] == "expired"
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 0}
    assert set(api.lines(done["output_file_id"])) == {"a", "b"}
    assert done["error_file_id"] is None


def test_a_cancelled_batch_stops_between_lines_and_keeps_those_done(
    make_server: Callable[..., EmulatorServer],
) -> None:
    # Given a three-line batch whose first line is in the engine
    engine = CountingEngine(held=True)
    api = Api(make_server(engine).batch_api)
    created = api.create([request_line("a", chat_body(1)), request_line("b", chat_body(2)), request_line("c")])
    assert engine.entered.wait(10)

    # When it is cancelled, and the engine then finishes that line
    cancelling = api.json("POST", f"/batches/{created['id']}/cancel")
    engine.release.set()
    done = api.wait(created["id"])

    # Then it was cancelling at once, ended cancelled, and kept the one line done
    assert cancelling["status"] == "cancelling"
    assert done["status"] == "cancelled"
    assert done["cancelled_at"] is not None
    assert set(api.lines(done["output_file_id"])) == {"a"}
    assert engine.calls == 1
    # And a finished batch cannot be cancelled again
    error = refusal(lambda: api.call("POST", f"/batches/{created['id']}/cancel"))
    assert (error.status, error.code) == (400, "invalid_batch_status")


# --- error-file lines -----------------------------------------------------------------------------


def test_error_lines_are_injected_by_custom_id_and_by_position(
    api: Api, server: EmulatorServer, engine: CountingEngine
) -> None:
    # Given rules: "p-1" answers 400 InvalidParameter, and every third line 500 InternalError
    server.batch_faults.configure(
        error_lines=[
            {"custom_ids": ["p-1"], "status_code": 400, "code": "InvalidParameter"},
            {"every_nth": 3, "status_code": 500, "code": "InternalError"},
        ]
    )

    # When a six-line batch runs
    done = api.wait(api.create([request_line(f"p-{index}", chat_body(index)) for index in range(1, 7)])["id"])

    # Then those lines are in the error file with their codes, and only the others reached the engine
    errors = api.lines(done["error_file_id"])
    assert {custom_id: record["response"]["status_code"] for custom_id, record in errors.items()} == {
        "p-1": 400,
        "p-3": 500,
        "p-6": 500,
    }
    assert errors["p-1"]["error"]["code"] == "InvalidParameter"
    assert errors["p-3"]["error"]["code"] == "InternalError"
    assert errors["p-3"]["response"]["body"]["error"]["code"] == "internal_error"
    assert set(api.lines(done["output_file_id"])) == {"p-2", "p-4", "p-5"}
    assert done["request_counts"] == {"total": 6, "completed": 3, "failed": 3}
    assert engine.calls == 3


@pytest.mark.parametrize(
    "settings",
    [
        {"outcomes": ["vanished"]},
        {"outcomes": [{"outcome": "failed", "lines_done": 1}]},
        {"error_lines": [{"status_code": 500}]},
        {"error_lines": [{"every_nth": 0}]},
        {"error_lines": [{"custom_ids": ["a"], "status_code": 200}]},
        {"completion_delay_s": -1},
        {"speed": "fast"},
    ],
)
def test_bad_batch_fault_settings_are_refused_and_change_nothing(server: EmulatorServer, settings: Any) -> None:
    before = server.batch_faults.snapshot()
    with pytest.raises(ValueError):
        server.batch_faults.configure(**settings)
    assert server.batch_faults.snapshot() == before


# --- listing, ids, refusals -----------------------------------------------------------------------


def test_batches_are_listed_newest_first_a_page_at_a_time(api: Api) -> None:
    # Given five batches
    ids = [api.create([request_line("a")])["id"] for _ in range(5)]

    # When they are listed two at a time
    first = api.json("GET", "/batches", query="limit=2")
    second = api.json("GET", "/batches", query=f"limit=2&after={first['last_id']}")
    third = api.json("GET", "/batches", query=f"limit=2&after={second['last_id']}")

    # Then the pages hold them newest first, and say when more follow
    newest_first = ids[::-1]
    assert [batch["id"] for batch in first["data"]] == newest_first[:2]
    assert (first["object"], first["first_id"], first["has_more"]) == ("list", newest_first[0], True)
    assert [batch["id"] for batch in second["data"]] == newest_first[2:4]
    assert [batch["id"] for batch in third["data"]] == newest_first[4:]
    assert third["has_more"] is False
    assert refusal(lambda: api.call("GET", "/batches", query="after=batch_unknown")).status == 400
    assert refusal(lambda: api.call("GET", "/batches", query="limit=0")).status == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/files/file-batch-unknown"),
        ("GET", "/files/file-batch-unknown/content"),
        ("DELETE", "/files/file-batch-unknown"),
        ("GET", "/batches/batch_unknown"),
        ("POST", "/batches/batch_unknown/cancel"),
    ],
)
def test_unknown_ids_are_not_found(api: Api, method: str, path: str) -> None:
    error = refusal(lambda: api.call(method, path))
    assert (error.status, error.code) == (404, "not_found")
    assert error.body("r")["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("data", "purpose", "code"),
    [
        (jsonl([request_line("a")]), "fine-tune", "invalid_purpose"),
        (b"", "batch", "empty_file"),
        (b"\xff\xfe not utf-8\n", "batch", "invalid_encoding"),
    ],
)
def test_an_upload_the_vendor_refuses_is_refused(api: Api, data: bytes, purpose: str, code: str) -> None:
    error = refusal(lambda: api.upload(data, purpose))
    assert (error.status, error.code) == (400, code)


def test_a_file_over_the_size_limit_is_refused(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_files, "MAX_INPUT_BYTES", 100)
    error = refusal(lambda: api.upload(jsonl([request_line("a")])))
    assert (error.status, error.code) == (400, "file_too_large")
    # A body too big to read at all is refused the same way.
    assert refusal(lambda: api.call("POST", "/files", body=None)).code == "file_too_large"


def test_files_beyond_the_storage_cap_are_refused_until_some_are_deleted(
    make_server: Callable[..., EmulatorServer], engine: CountingEngine
) -> None:
    # Given an emulator that keeps 3 kB of files, holding a 2 kB file
    emulator = make_server(engine, max_file_storage_bytes=3000)
    api = Api(emulator.batch_api)
    data = jsonl([request_line("a", {"model": MODEL, "pad": "x" * 1900})])
    kept = api.upload(data)

    # When a second one is uploaded, then the first deleted and the second sent again
    error = refusal(lambda: api.upload(data))
    deleted = api.json("DELETE", f"/files/{kept['id']}")
    again = api.upload(data)

    # Then the second was refused at first, and taken once there was room
    assert (error.status, error.code) == (400, "file_storage_exceeded")
    assert deleted == {"id": kept["id"], "object": "file", "deleted": True}
    assert again["bytes"] == len(data)
    assert emulator.stats["batch"]["files"] == 1


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input_file_id": "file-batch-unknown"}, "input_file_id"),
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {"pages": 3}}, "metadata"),
    ],
)
def test_a_batch_the_vendor_would_not_create_is_refused(api: Api, change: dict[str, Any], param: str) -> None:
    uploaded = api.upload(jsonl([request_line("a")]))
    body = {"input_file_id": uploaded["id"], "endpoint": CHAT, "completion_window": "24h", **change}
    error = refusal(lambda: api.call("POST", "/batches", body=json.dumps(body).encode()))
    assert (error.status, error.param) == (400, param)


def test_an_output_file_cannot_be_the_input_of_a_batch(api: Api) -> None:
    done = api.wait(api.create([request_line("a")])["id"])
    body = {"input_file_id": done["output_file_id"], "endpoint": CHAT, "completion_window": "24h"}
    error = refusal(lambda: api.call("POST", "/batches", body=json.dumps(body).encode()))
    assert error.code == "invalid_input_file"


# --- reset, stop and start ---------------------------------------------------------------------------


def test_reset_forgets_files_batches_and_batch_faults(api: Api, server: EmulatorServer) -> None:
    # Given a finished batch, its files, and a scripted outcome
    done = api.wait(api.create([request_line("a")])["id"])
    server.batch_faults.configure(outcomes=["expired"], error_lines=[{"every_nth": 2}])
    assert server.stats["batch"]["batches"]["completed"] == 1

    # When the emulator is reset
    server.reset()

    # Then nothing of them is left
    assert refusal(lambda: api.call("GET", f"/batches/{done['id']}")).status == 404
    assert refusal(lambda: api.call("GET", f"/files/{done['input_file_id']}")).status == 404
    stats = server.stats["batch"]
    assert (stats["files"], stats["file_bytes"], stats["lines_done"]) == (0, 0, 0)
    assert set(stats["batches"].values()) == {0}
    assert server.batch_faults.snapshot() == {"completion_delay_s": 0.0, "outcomes": [], "error_lines": []}


def test_a_batch_stopped_midway_goes_on_when_the_emulator_resumes_and_runs_each_line_once(
    make_server: Callable[..., EmulatorServer],
) -> None:
    # Given a two-line batch whose first line is in the engine
    engine = CountingEngine(held=True)
    server = make_server(engine)
    api = Api(server.batch_api)
    created = api.create([request_line("a", chat_body(1)), request_line("b", chat_body(2))])
    assert engine.entered.wait(10)

    # When the batch threads are ended (the engine finishing its page meanwhile), then run again
    closing = threading.Thread(target=server.batches.close)
    closing.start()
    engine.release.set()
    closing.join(10)
    paused = api.json("GET", f"/batches/{created['id']}")
    server.batches.resume()
    done = api.wait(created["id"])

    # Then it stood in progress with one line done, and then completed, each line run once
    assert paused["status"] == "in_progress"
    assert paused["request_counts"]["completed"] == 1
    assert done["status"] == "completed"
    assert set(api.lines(done["output_file_id"])) == {"a", "b"}
    assert engine.calls == 2
    assert server.stats["batch"]["lines_done"] == 2


def test_a_line_the_admission_sheds_waits_and_is_run_again_not_failed() -> None:
    # Given a batch service whose chat path sheds the first attempt, as a busy engine does
    attempts: list[str] = []

    def complete(body: dict[str, Any], request_id: str, give_up: Callable[[], bool]) -> dict[str, Any]:
        attempts.append(request_id)
        if len(attempts) == 1:
            raise Refused(Verdict.SHED, retry_after_s=0)
        return {"choices": [], "usage": {"total_tokens": 7}}

    service = BatchService(FileStore(), BatchFaults(completion_delay_s=0), complete, Recorder())
    api = Api(BatchApi(service))
    try:
        # When a one-line batch runs
        done = api.wait(api.create([request_line("a")])["id"])
    finally:
        service.close()

    # Then the line succeeded on its second attempt, under the same request id
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
    assert len(attempts) == 2 and attempts[0] == attempts[1]
    assert api.lines(done["output_file_id"])["a"]["response"]["body"]["usage"] == {"total_tokens": 7}


def test_the_command_line_sets_the_batch_knobs() -> None:
    args = parse_args(
        ["--batch-outcomes", "expired, failed", "--batch-error-ids", "a,b", "--batch-error-status", "400"]
    )
    assert [item.strip() for item in args.batch_outcomes.split(",")] == ["expired", "failed"]
    (rule,) = batch_error_lines(args)
    faults = BatchFaults(error_lines=[rule])
    assert faults.snapshot()["error_lines"][0] | {"message": None} == {
        "custom_ids": ["a", "b"],
        "every_nth": None,
        "status_code": 400,
        "code": "InvalidParameter",
        "message": None,
    }
    assert batch_error_lines(parse_args([])) == []


def test_an_upload_keeps_its_bytes_exactly() -> None:
    # Given a multipart body as httpx sends it, of a file with non-ASCII text and CRLF line ends
    data = '{"custom_id": "résumé", "body": {"text": "領収書"}}\r\n'.encode() * 3
    request = httpx.Request(
        "POST", "http://emulator/files", files={"file": ("pages.jsonl", data)}, data={"purpose": "batch"}
    )

    # When it is parsed
    upload = parse_upload(request.headers["Content-Type"], request.read())

    # Then the file's bytes, name and purpose come out unchanged
    assert (upload.data, upload.filename, upload.purpose) == (data, "pages.jsonl", "batch")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/form-data", b"--x\r\n\r\n"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\n{}'),
    ],
)
def test_a_body_that_is_not_a_whole_multipart_form_is_refused(content_type: str, body: bytes) -> None:
    error = refusal(lambda: parse_upload(content_type, body))
    assert (error.status, error.code) == (400, "invalid_content_type")
