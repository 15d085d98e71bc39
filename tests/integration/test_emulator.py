"""The offline DashScope emulator, driven over real HTTP with plain httpx, the way a client sees it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ocr_devkit.emulator import EmulatorServer
from ocr_pipeline.task_prompts import key_information_prompt
from ocr_pipeline.tokens import PixelBudget, image_tokens
from PIL import Image, ImageDraw, ImageFont

pytestmark = pytest.mark.integration

API_KEY = "sk-emulator-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
NATIVE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
COMPATIBLE_PATH = "/compatible-mode/v1/chat/completions"
MODEL = "qwen-vl-ocr-2025-11-20"
FONT = "DejaVuSans.ttf"


# --- images with known text ---------------------------------------------------------------


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def render(lines: dict[tuple[int, int], str], size: tuple[int, int] = (640, 160), font_size: int = 40) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, font_size)
    for position, text in lines.items():
        draw.text(position, text, font=font, fill="black")
    return image


HELLO_AT = (20, 20)
INVOICE_AT = (20, 90)
TWO_LINES = render({HELLO_AT: "Hello Emulator", INVOICE_AT: "Invoice Number: 12345"})
TWO_LINES_PNG = png(TWO_LINES)


def text_box(position: tuple[int, int], text: str, font_size: int = 40) -> tuple[int, int, int, int]:
    """Where PIL actually inked `text` drawn at `position`: (left, top, right, bottom)."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = draw.textbbox(position, text, font=ImageFont.truetype(FONT, font_size))
    return int(left), int(top), int(right), int(bottom)


# --- requests ------------------------------------------------------------------------------


def native_body(
    image: str,
    *,
    task: str | None = "text_recognition",
    schema: dict[str, Any] | None = None,
    model: str = MODEL,
    **image_options: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "input": {"messages": [{"role": "user", "content": [{"image": image, **image_options}]}]},
    }
    if task is not None:
        options: dict[str, Any] = {"task": task}
        if schema is not None:
            options["task_config"] = {"result_schema": schema}
        body["parameters"] = {"ocr_options": options}
    return body


def compatible_body(image: str, prompt: str | None, *, model: str = MODEL) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image}}]
    if prompt is not None:
        content.append({"type": "text", "text": prompt})
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def first_content(reply: httpx.Response) -> dict[str, Any]:
    content: dict[str, Any] = reply.json()["output"]["choices"][0]["message"]["content"][0]
    return content


def squash(text: str) -> str:
    return " ".join(text.split())


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    # One server and one OCR engine for the module: rapidocr loads once.
    with EmulatorServer(api_key=API_KEY) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def http(server: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def clean_slate(server: EmulatorServer) -> None:
    server.reset()


# --- tasks ---------------------------------------------------------------------------------


def test_native_text_recognition_returns_the_printed_text_and_the_documented_usage(http: httpx.Client) -> None:
    # Given a PNG with two printed lines
    # When it is sent to the native endpoint with the text_recognition task
    reply = http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG)))

    # Then the model's text is those lines, top to bottom
    assert reply.status_code == 200
    body = reply.json()
    assert body["output"]["choices"][0]["finish_reason"] == "stop"
    assert body["output"]["choices"][0]["message"]["role"] == "assistant"
    assert [squash(line) for line in first_content(reply)["text"].split("\n")] == [
        "Hello Emulator",
        "Invoice Number: 12345",
    ]
    assert "ocr_result" not in first_content(reply)
    # And usage follows the documented image-token formula (640x160 px at 32 px per side: 100 + 2)
    usage = body["usage"]
    expected_image_tokens = image_tokens(160, 640, PixelBudget(patch=32))
    assert expected_image_tokens == 102
    assert usage["image_tokens"] == usage["input_tokens_details"]["image_tokens"] == expected_image_tokens
    assert usage["input_tokens"] == usage["input_tokens_details"]["text_tokens"] + expected_image_tokens
    assert usage["output_tokens"] == usage["output_tokens_details"]["text_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert re.fullmatch(r"[0-9a-f-]{36}", body["request_id"])


def test_advanced_recognition_boxes_cover_where_the_text_is_printed(http: httpx.Client) -> None:
    # Given an image whose text positions are known
    # When advanced_recognition runs on it
    reply = http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG), task="advanced_recognition"))

    # Then each line comes with a box that contains the inked text
    assert reply.status_code == 200
    content = first_content(reply)
    words = {squash(word["text"]): word for word in content["ocr_result"]["words_info"]}
    assert set(words) == {"Hello Emulator", "Invoice Number: 12345"}
    for text, position in (("Hello Emulator", HELLO_AT), ("Invoice Number: 12345", INVOICE_AT)):
        xs, ys = words[text]["location"][0::2], words[text]["location"][1::2]
        left, top, right, bottom = text_box(position, text)
        slack = 3
        assert min(xs) <= left + slack and max(xs) >= right - slack
        assert min(ys) <= top + slack and max(ys) >= bottom - slack
        cx, cy, _, _, angle = words[text]["rotate_rect"]
        assert left <= cx <= right and top <= cy <= bottom
        assert -90 <= angle <= 90
    # And the text is the vendor's ```json fence carrying the same rectangles
    assert content["text"].startswith("```json\n") and content["text"].endswith("```")
    records = json.loads(content["text"][len("```json\n") : -3])
    assert [record["rotate_rect"] for record in records] == [
        w["rotate_rect"] for w in content["ocr_result"]["words_info"]
    ]


def test_coordinates_are_in_the_image_the_model_sees_after_smart_resize(http: httpx.Client) -> None:
    # Given a max_pixels budget that makes the vendor shrink 640x160 to 448x96
    budget = PixelBudget(patch=32, max_pixels=32 * 32 * 50)
    body = native_body(data_url(TWO_LINES_PNG), task="advanced_recognition", max_pixels=budget.max_pixels)

    # When advanced_recognition runs
    reply = http.post(NATIVE_PATH, headers=AUTH, json=body)

    # Then the boxes lie in the 448x96 image, and the image tokens follow the same resize
    assert reply.status_code == 200
    words = first_content(reply)["ocr_result"]["words_info"]
    assert words
    assert max(v for w in words for v in w["location"][0::2]) <= 448
    assert max(v for w in words for v in w["location"][1::2]) <= 96
    assert reply.json()["usage"]["image_tokens"] == image_tokens(160, 640, budget) == 448 * 96 // 1024 + 2


def test_key_information_extraction_fills_the_schema_from_printed_pairs(http: httpx.Client) -> None:
    # Given a result_schema asking for a printed field and one that is not printed
    schema = {"Invoice Number": "the invoice's number, digits only", "Ride Date": "YYYY-MM-DD"}

    # When key_information_extraction runs
    body = native_body(data_url(TWO_LINES_PNG), task="key_information_extraction", schema=schema)
    reply = http.post(NATIVE_PATH, headers=AUTH, json=body)

    # Then the printed value fills its key, the absent one is null, in kv_result and in the ```json text
    assert reply.status_code == 200
    content = first_content(reply)
    assert content["ocr_result"]["kv_result"] == {"Invoice Number": "12345", "Ride Date": None}
    assert content["text"].startswith("```json\n") and content["text"].endswith("\n```")
    assert json.loads(content["text"][len("```json\n") : -len("\n```")]) == content["ocr_result"]["kv_result"]


def test_table_parsing_returns_an_html_table_of_rows_and_cells(http: httpx.Client) -> None:
    # Given a printed 3x3 table
    cells = [("Item", "Qty", "Price"), ("Apple", "3", "1.20"), ("Pear", "10", "0.80")]
    image = render(
        {(30 + c * 220, 20 + r * 60): cell for r, row in enumerate(cells) for c, cell in enumerate(row)},
        size=(640, 200),
        font_size=28,
    )

    # When table_parsing runs
    reply = http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(png(image)), task="table_parsing"))

    # Then the text is an ```html fence around a <table> with one <tr> per row and one <td> per cell
    assert reply.status_code == 200
    text = first_content(reply)["text"]
    assert text.startswith("```html\n<table>\n") and text.endswith("</table>\n```")
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", text, re.DOTALL)]
    assert rows == [list(row) for row in cells]


def test_compatible_mode_answers_in_the_openai_shape(http: httpx.Client) -> None:
    # Given the default prompt sent the OpenAI way
    prompt = "Please output only the text content from the image without any additional descriptions or formatting."

    # When it goes to the compatible endpoint
    reply = http.post(COMPATIBLE_PATH, headers=AUTH, json=compatible_body(data_url(TWO_LINES_PNG), prompt))

    # Then content is a string with the text, and usage has the prompt/completion counts and image tokens
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert squash(choice["message"]["content"]) == "Hello Emulator Invoice Number: 12345"
    usage = body["usage"]
    assert usage["prompt_tokens_details"]["image_tokens"] == 102
    assert usage["prompt_tokens"] == usage["prompt_tokens_details"]["text_tokens"] + 102
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_compatible_mode_recognizes_the_extraction_prompt_and_its_schema(http: httpx.Client) -> None:
    # Given the documented extraction prompt with a schema appended
    prompt = key_information_prompt({"Invoice Number": "the invoice number"})

    # When it goes to the compatible endpoint
    reply = http.post(COMPATIBLE_PATH, headers=AUTH, json=compatible_body(data_url(TWO_LINES_PNG), prompt))

    # Then the answer is the filled schema in a ```json fence
    assert reply.status_code == 200
    content = reply.json()["choices"][0]["message"]["content"]
    assert content.startswith("```json\n")
    assert json.loads(content[len("```json\n") : -len("\n```")]) == {"Invoice Number": "12345"}


def test_the_request_log_keeps_shapes_but_not_the_image(server: EmulatorServer, http: httpx.Client) -> None:
    # Given a request carrying a base64 image
    http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG), min_pixels=3072))

    # When the log is read from Python and over HTTP
    logged = server.requests
    over_http = http.get("/_emulator/requests").json()["requests"]

    # Then the image is replaced by its length and the sha256 of its bytes, the rest is kept
    assert logged == over_http
    item = logged[-1]["body"]["input"]["messages"][0]["content"][0]
    assert item["image"] == {
        "data_url": "image/png;base64",
        "base64_length": len(base64.b64encode(TWO_LINES_PNG)),
        "sha256": hashlib.sha256(TWO_LINES_PNG).hexdigest(),
    }
    assert item["min_pixels"] == 3072
    assert logged[-1]["status"] == 200 and logged[-1]["endpoint"] == "native"


# --- validation ----------------------------------------------------------------------------

TINY_PNG = png(Image.new("RGB", (10, 40), "white"))
TOO_DEEP = {"a": {"b": {"c": {"d": "four levels"}}}}


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        pytest.param({}, native_body(data_url(TWO_LINES_PNG)), 401, "InvalidApiKey", id="missing-auth"),
        pytest.param(
            {"Authorization": "Bearer sk-wrong"},
            native_body(data_url(TWO_LINES_PNG)),
            401,
            "InvalidApiKey",
            id="bad-key",
        ),
        pytest.param(AUTH, native_body(data_url(TWO_LINES_PNG), model="qwen-vl-max"), 404, "ModelNotFound", id="model"),
        pytest.param(AUTH, native_body(data_url(TWO_LINES_PNG), task="translate"), 400, "InvalidParameter", id="task"),
        pytest.param(
            AUTH,
            native_body(data_url(TWO_LINES_PNG), task="key_information_extraction", schema=TOO_DEEP),
            400,
            "InvalidParameter",
            id="schema-too-deep",
        ),
        pytest.param(
            AUTH,
            native_body(data_url(TWO_LINES_PNG), task="table_parsing", schema={"a": "b"}),
            400,
            "InvalidParameter",
            id="schema-without-extraction",
        ),
        pytest.param(AUTH, native_body(data_url(TINY_PNG)), 400, "InvalidParameter", id="tiny-image"),
        pytest.param(
            AUTH, native_body(data_url(TWO_LINES_PNG, "image/jpeg")), 400, "InvalidParameter", id="mime-mismatch"
        ),
        pytest.param(AUTH, native_body("https://example.com/a.png"), 400, "InvalidParameter", id="url-image"),
        pytest.param(
            AUTH,
            native_body(data_url(TWO_LINES_PNG), model="qwen-vl-ocr-2024-10-28"),
            400,
            "InvalidParameter",
            id="task-on-1028",
        ),
    ],
)
def test_native_validation_errors_use_the_vendor_codes(
    http: httpx.Client, headers: dict[str, str], body: dict[str, Any], status: int, code: str
) -> None:
    # When an invalid request reaches the native endpoint
    reply = http.post(NATIVE_PATH, headers=headers, json=body)

    # Then it is refused with the vendor's status, code and a request id
    assert reply.status_code == status
    error = reply.json()
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"]


def test_an_image_url_is_refused_with_a_message_that_says_why(http: httpx.Client) -> None:
    reply = http.post(NATIVE_PATH, headers=AUTH, json=native_body("https://example.com/a.png"))

    assert reply.status_code == 400
    assert "data:" in reply.json()["message"]


def test_compatible_errors_use_the_openai_shape(http: httpx.Client) -> None:
    # When an unknown model is asked for through the compatible endpoint
    reply = http.post(
        COMPATIBLE_PATH, headers=AUTH, json=compatible_body(data_url(TWO_LINES_PNG), None, model="gpt-4o")
    )

    # Then the error is OpenAI-shaped, with the request id beside it
    assert reply.status_code == 404
    body = reply.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "model_not_found"
    assert body["request_id"]


# --- faults --------------------------------------------------------------------------------


def test_throttle_answers_429_with_the_vendor_body_and_retry_after(server: EmulatorServer, http: httpx.Client) -> None:
    # Given two scripted throttles and a Retry-After of 2 s
    server.faults.configure(script=["throttle", "throttle"], retry_after_seconds=2)

    # When a native and a compatible request arrive
    native = http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG)))
    compatible = http.post(COMPATIBLE_PATH, headers=AUTH, json=compatible_body(data_url(TWO_LINES_PNG), None))

    # Then both are 429 in their endpoint's error shape, with Retry-After
    assert native.status_code == compatible.status_code == 429
    assert native.headers["Retry-After"] == compatible.headers["Retry-After"] == "2"
    body = native.json()
    assert body["code"] == "Throttling.RateQuota"
    assert body["message"] == "Requests rate limit exceeded, please try again later."
    assert body["request_id"]
    assert compatible.json()["error"]["code"] == "limit_requests"
    assert server.stats["faults"]["throttle"] == 2


def test_server_error_answers_500_internal_error(server: EmulatorServer, http: httpx.Client) -> None:
    server.faults.enqueue("server_error")

    reply = http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG)))

    assert reply.status_code == 500
    assert reply.json()["code"] == "InternalError"


def test_malformed_answers_200_with_a_body_that_is_not_json(server: EmulatorServer, http: httpx.Client) -> None:
    server.faults.enqueue("malformed")

    reply = http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG)))

    assert reply.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.content)


def test_hang_holds_the_request_until_the_client_times_out(server: EmulatorServer, http: httpx.Client) -> None:
    # Given a hang scripted over the control API, held for a short time
    configured = http.post("/_emulator/faults", json={"script": ["hang"], "hang_seconds": 2})
    assert configured.status_code == 200 and configured.json()["script"] == ["hang"]

    # When a client with a short timeout sends a request
    with pytest.raises(httpx.ReadTimeout):
        http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG)), timeout=0.5)

    # Then other requests are still served meanwhile, and the hang is counted
    assert http.get("/_emulator/health").json() == {"status": "ok"}
    assert http.get("/_emulator/stats").json()["faults"]["hang"] == 1


def test_scripted_faults_hit_the_next_requests_in_order(http: httpx.Client) -> None:
    # Given a script of three faults
    http.post("/_emulator/faults", json={"script": ["server_error", "throttle", "malformed"]})

    # When four requests follow
    replies = [http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG))) for _ in range(4)]

    # Then the first three get the faults in order and the fourth succeeds
    assert [reply.status_code for reply in replies] == [500, 429, 200, 200]
    assert replies[3].json()["output"]["choices"][0]["finish_reason"] == "stop"
    stats = http.get("/_emulator/stats").json()
    assert stats["faults"] == {"throttle": 1, "server_error": 1, "hang": 0, "malformed": 1}
    assert stats["successes"] == 1
    assert stats["requests"]["native"] == 4


def test_random_faults_are_reproducible_with_a_seed(http: httpx.Client) -> None:
    # Faults come before authentication, so unauthenticated requests show them without any OCR:
    # a request that escapes the faults is a 401.
    def statuses() -> list[int]:
        settings = {"fault_rate": 0.5, "seed": 7, "kinds": ["throttle", "server_error"], "script": []}
        http.post("/_emulator/faults", json=settings)
        return [http.post(NATIVE_PATH, json={}).status_code for _ in range(12)]

    # Given the same rate and seed twice, When twelve requests are sent each time
    first, second = statuses(), statuses()

    # Then both runs fail the same requests the same way, with a mix of outcomes
    assert first == second
    assert {401, 429, 500} <= set(first)


def test_latency_delays_successful_replies(server: EmulatorServer, http: httpx.Client) -> None:
    # Given an image already recognized once (so the OCR itself is quick) and 400 ms of latency
    http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG)))
    server.faults.latency_ms = 400

    # When the same request is sent again
    started = time.monotonic()
    reply = http.post(NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG)))

    # Then it succeeds no sooner than the latency allows
    assert reply.status_code == 200
    assert time.monotonic() - started >= 0.4


class _SlowEngine:
    """An OCR engine that takes a second per image and reads nothing."""

    def recognize(self, image: object, *, correct_rotation: bool = False) -> list[object]:
        time.sleep(1.0)
        return []


def test_latency_is_a_service_time_that_covers_the_emulators_own_work() -> None:
    # Given an emulator whose OCR takes 1 s and whose latency is 1.5 s
    with EmulatorServer(engine=_SlowEngine(), latency_ms=1500) as emulator, httpx.Client(timeout=30) as client:
        # When one image is sent
        started = time.monotonic()
        reply = client.post(emulator.base_url + NATIVE_PATH, headers=AUTH, json=native_body(data_url(TWO_LINES_PNG)))
        elapsed = time.monotonic() - started

    # Then the reply took the latency, not the OCR's second on top of it (2.5 s)
    assert reply.status_code == 200
    assert 1.5 <= elapsed < 2.3


def test_stopping_does_not_wait_for_a_hanging_request() -> None:
    # Given a separate emulator holding a request for 30 s
    emulator = EmulatorServer(script=["hang"], hang_seconds=30).start()
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(emulator.native_base + NATIVE_PATH.removeprefix("/api/v1"), json={}, timeout=20)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while emulator.stats["faults"]["hang"] == 0 and caller.is_alive():
        time.sleep(0.02)

    # When it is stopped
    started = time.monotonic()
    emulator.stop()
    caller.join(timeout=10)

    # Then it stops at once and the client sees the connection drop
    assert time.monotonic() - started < 5
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.RemoteProtocolError | httpx.ReadError)


def test_started_without_a_key_the_compatible_endpoint_takes_keyless_calls_like_a_self_hosted_server():
    with EmulatorServer() as open_server, httpx.Client(base_url=open_server.base_url, timeout=30) as client:
        compatible = client.post(COMPATIBLE_PATH, json=compatible_body(data_url(TWO_LINES_PNG), None))
        assert compatible.status_code == 200, compatible.text
        # DashScope's own API always wants a key
        native = client.post(NATIVE_PATH, json=native_body(data_url(TWO_LINES_PNG)))
        assert native.status_code == 401 and native.json()["code"] == "InvalidApiKey"
