"""The emulator's Batch File API over real HTTP, with the real OCR engine, the way a batch client sees it."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ocr_devkit.emulator import EmulatorServer
from PIL import Image

pytestmark = pytest.mark.integration

API_KEY = "sk-batch-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
RECEIPT = Path(__file__).resolve().parents[2] / "samples" / "receipt.png"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key=API_KEY, batch_completion_delay_s=0.2) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def http(server: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.compatible_base, headers=AUTH, timeout=120) as client:
        yield client


@pytest.fixture(autouse=True)
def clean_slate(server: EmulatorServer) -> None:
    server.reset()


def receipt_body() -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(RECEIPT.read_bytes()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Read all the text."}]
    return {"model": "qwen-vl-ocr", "messages": [{"role": "user", "content": content}]}


def upload(http: httpx.Client, lines: list[dict[str, Any]]) -> httpx.Response:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return http.post("/files", files={"file": ("pages.jsonl", data, "application/jsonl")}, data={"purpose": "batch"})


def create(http: httpx.Client, lines: list[dict[str, Any]]) -> dict[str, Any]:
    uploaded = upload(http, lines)
    assert uploaded.status_code == 200, uploaded.text
    body = {"input_file_id": uploaded.json()["id"], "endpoint": CHAT, "completion_window": "24h"}
    created = http.post("/batches", json=body)
    assert created.status_code == 200, created.text
    return dict(created.json())


def poll(http: httpx.Client, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (batch := http.get(f"/batches/{batch_id}").json())["status"] not in (
        "completed",
        "failed",
        "expired",
        "cancelled",
    ):
        assert time.monotonic() < deadline, f"batch stuck as {batch['status']}"
        time.sleep(0.1)
    return dict(batch)


def results(http: httpx.Client, file_id: str) -> dict[str, dict[str, Any]]:
    reply = http.get(f"/files/{file_id}/content")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/octet-stream"
    return {record["custom_id"]: record for record in map(json.loads, reply.text.splitlines())}


def test_a_page_goes_through_upload_batch_poll_and_download_as_through_the_chat_endpoint(http: httpx.Client) -> None:
    # Given a batch of the receipt and of a line whose image is not an image
    broken = receipt_body()
    broken["messages"][0]["content"][0]["image_url"]["url"] = "data:image/png;base64,bm90IGFuIGltYWdl"
    lines = [
        {"custom_id": "receipt", "method": "POST", "url": CHAT, "body": receipt_body()},
        {"custom_id": "broken", "method": "POST", "url": CHAT, "body": broken},
    ]

    # When it is created, polled until it ends, and its files downloaded
    done = poll(http, create(http, lines)["id"])
    output = results(http, done["output_file_id"])
    errors = results(http, done["error_file_id"])
    chat = http.post("/chat/completions", json=receipt_body())
    chat_broken = http.post("/chat/completions", json=broken)

    # Then the receipt was read as the chat endpoint reads it, with the same usage,
    # and the broken line failed as the chat endpoint fails it
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    reply = output["receipt"]["response"]["body"]
    assert reply["choices"][0]["message"]["content"] == chat.json()["choices"][0]["message"]["content"]
    assert reply["choices"][0]["message"]["content"].strip()
    assert reply["usage"] == chat.json()["usage"]
    assert errors["broken"]["response"]["status_code"] == chat_broken.status_code == 400
    assert errors["broken"]["response"]["body"]["error"]["code"] == chat_broken.json()["error"]["code"]


def test_the_batch_endpoints_want_the_same_key_as_the_chat_endpoint(server: EmulatorServer) -> None:
    with httpx.Client(base_url=server.compatible_base, timeout=30) as anonymous:
        # When the batch endpoints are called without a key, and with a wrong one
        replies = [
            anonymous.get("/batches"),
            anonymous.post("/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "batch"}),
            anonymous.get("/batches", headers={"Authorization": "Bearer wrong"}),
        ]

    # Then each is refused as the chat endpoint refuses it
    assert [reply.status_code for reply in replies] == [401, 401, 401]
    assert {reply.json()["error"]["code"] for reply in replies} == {"invalid_api_key"}
    assert server.stats["batch"]["files"] == 0


def test_unknown_ids_and_refused_uploads_get_openai_style_errors(http: httpx.Client) -> None:
    missing = [http.get("/files/file-batch-nope"), http.get("/files/file-batch-nope/content"), http.get("/batches/b")]
    wrong_purpose = http.post("/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "fine-tune"})

    assert [reply.status_code for reply in missing] == [404, 404, 404]
    assert {reply.json()["error"]["type"] for reply in missing} == {"invalid_request_error"}
    assert wrong_purpose.status_code == 400
    assert wrong_purpose.json()["error"]["code"] == "invalid_purpose"


def test_batch_faults_are_set_through_the_control_api(server: EmulatorServer, http: httpx.Client) -> None:
    # Given the next batch scripted to expire, and every line sent to the error file
    control = httpx.Client(base_url=server.base_url, timeout=30)
    settings = {"outcomes": ["expired"], "error_lines": [{"every_nth": 1, "status_code": 500, "code": "InternalError"}]}
    configured = control.post("/_emulator/batch-faults", json=settings)
    refused = control.post("/_emulator/batch-faults", json={"outcomes": ["lost"]})
    line = {"custom_id": "a", "method": "POST", "url": CHAT, "body": receipt_body()}

    # When two batches run
    expired = poll(http, create(http, [line])["id"])
    errored = poll(http, create(http, [line])["id"])
    errored_line = results(http, errored["error_file_id"])["a"]
    stats = control.get("/_emulator/stats").json()["batch"]
    control.post("/_emulator/reset")
    after_reset = control.get("/_emulator/stats").json()["batch"]
    control.close()

    # Then the first expired without output, the second put its line in the error file with a 500,
    # the stats counted them, and the reset forgot them
    assert configured.status_code == 200 and configured.json()["outcomes"] == ["expired"]
    assert refused.status_code == 400
    assert (expired["status"], expired["output_file_id"], expired["error_file_id"]) == ("expired", None, None)
    assert errored["status"] == "completed"
    assert errored_line["response"]["status_code"] == 500
    assert stats["batches"]["expired"] == 1 and stats["batches"]["completed"] == 1
    assert stats["lines_done"] == 1
    assert after_reset["files"] == 0 and sum(after_reset["batches"].values()) == 0


class RecordingEngine:
    """Records the width of each image it reads (the images differ by width); holds its first call."""

    def __init__(self) -> None:
        self.widths: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def recognize(self, image: Any, *, correct_rotation: bool = False) -> list[Any]:
        self.widths.append(image.width)
        self.entered.set()
        self.release.wait(30)
        return []


def sized_body(width: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.new("RGB", (width, 64), "white").save(buffer, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return {
        "model": "qwen-vl-ocr",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
    }


def test_a_chat_request_waits_for_one_batch_page_at_most() -> None:
    # Given a batch of three pages, the first of them in the engine
    engine = RecordingEngine()
    lines = [{"custom_id": str(w), "method": "POST", "url": CHAT, "body": sized_body(w)} for w in (320, 352, 384)]
    with (
        EmulatorServer(engine=engine, batch_completion_delay_s=0) as emulator,
        httpx.Client(base_url=emulator.compatible_base, headers=AUTH, timeout=60) as client,
    ):
        batch = create(client, lines)
        assert engine.entered.wait(30)

        # When a chat request comes in, and the engine then finishes its page
        chat = threading.Thread(target=lambda: client.post("/chat/completions", json=sized_body(640)))
        chat.start()
        deadline = time.monotonic() + 30
        while emulator.stats["requests"]["compatible"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)  # time enough for it to decode its image and queue for the engine
        engine.release.set()
        chat.join(30)
        done = poll(client, batch["id"])

    # Then the chat page was read right after the batch page in progress, before the batch's other pages
    assert done["status"] == "completed"
    assert engine.widths == [320, 640, 352, 384]
