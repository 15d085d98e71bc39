"""The HTTP adapter: request shapes in both protocols, error mapping, retries and deadlines.

httpx.MockTransport stands in for the network so the exact bytes sent can be asserted.
"""

from __future__ import annotations

import json

import httpx
import pytest
from ocr_pipeline import errors
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient, WireProtocol
from ocr_pipeline.adapters.dashscope.client import parse_retry_after
from ocr_pipeline.adapters.dashscope.wire import build_body, error_from_reply
from ocr_pipeline.catalog import model_spec
from ocr_pipeline.ocr_service import OcrCall
from ocr_pipeline.task_prompts import DEFAULT_PROMPT, TASK_PROMPTS, key_information_prompt
from ocr_pipeline.tasks import OcrTask, TaskOptions

IMAGE = "data:image/png;base64,iVBORw0KGgo="
SCHEMA = {"Invoice Number": "the number printed after 'No.'", "Seller": {"Name": "", "Tax ID": ""}}

NATIVE_OK = {
    "output": {
        "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": [{"text": "hello"}]}}]
    },
    "usage": {"input_tokens": 30, "output_tokens": 2, "total_tokens": 32, "image_tokens": 12},
    "request_id": "req-1",
}
COMPATIBLE_OK = {
    "id": "chatcmpl-1",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43},
}


def make_call(options: TaskOptions, model: str = "qwen-vl-ocr-2025-11-20") -> OcrCall:
    return OcrCall(image_url=IMAGE, options=options, model=model_spec(model), image_width=64, image_height=96)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def client_with(handler, protocol=WireProtocol.DASHSCOPE, clock: FakeClock | None = None, **settings) -> QwenOcrClient:
    clock = clock or FakeClock()
    return QwenOcrClient(
        OcrServiceSettings(protocol=protocol, api_key="sk-test", **settings),
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: 1.0,
    )


def scripted(*responses: httpx.Response | Exception):
    """A transport handler answering each request with the next scripted response."""
    queue = list(responses)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


# --- request shapes -----------------------------------------------------------------------


@pytest.mark.parametrize("task", [t for t in OcrTask if t is not OcrTask.KEY_INFORMATION_EXTRACTION])
def test_native_request_sets_the_builtin_task_and_no_prompt(task):
    body = build_body(WireProtocol.DASHSCOPE, make_call(TaskOptions(task=task)))
    assert body == {
        "model": "qwen-vl-ocr-2025-11-20",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [{"image": IMAGE, "min_pixels": 3072, "max_pixels": 8388608, "enable_rotate": False}],
                }
            ]
        },
        "parameters": {"max_tokens": 8192, "ocr_options": {"task": task.value}},
    }


def test_native_extraction_carries_the_result_schema_in_task_config():
    body = build_body(
        WireProtocol.DASHSCOPE, make_call(TaskOptions(task=OcrTask.KEY_INFORMATION_EXTRACTION, result_schema=SCHEMA))
    )
    assert body["parameters"] == {
        "max_tokens": 8192,
        "ocr_options": {"task": "key_information_extraction", "task_config": {"result_schema": SCHEMA}},
    }


def test_native_free_prompt_sends_text_and_no_ocr_options():
    options = TaskOptions(prompt="Read the total only.", min_pixels=4096, max_pixels=1_000_000, enable_rotate=True)
    body = build_body(WireProtocol.DASHSCOPE, make_call(options))
    assert body["parameters"] == {"max_tokens": 8192}
    assert body["input"]["messages"][0]["content"] == [
        {"image": IMAGE, "min_pixels": 4096, "max_pixels": 1_000_000, "enable_rotate": True},
        {"text": "Read the total only."},
    ]


def test_snapshot_without_builtin_tasks_gets_the_documented_prompt_instead():
    body = build_body(
        WireProtocol.DASHSCOPE, make_call(TaskOptions(task=OcrTask.TABLE_PARSING), "qwen-vl-ocr-2024-10-28")
    )
    assert body["parameters"] == {"max_tokens": 4096}
    assert body["input"]["messages"][0]["content"][1] == {"text": TASK_PROMPTS[OcrTask.TABLE_PARSING]}


@pytest.mark.parametrize("task", list(OcrTask))
def test_compatible_request_sends_each_tasks_documented_prompt(task):
    body = build_body(WireProtocol.OPENAI, make_call(TaskOptions(task=task)))
    expected_prompt = key_information_prompt(None) if task is OcrTask.KEY_INFORMATION_EXTRACTION else TASK_PROMPTS[task]
    assert body == {
        "model": "qwen-vl-ocr-2025-11-20",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": IMAGE}, "min_pixels": 3072, "max_pixels": 8388608},
                    {"type": "text", "text": expected_prompt},
                ],
            }
        ],
        "max_tokens": 8192,
    }


@pytest.mark.parametrize("protocol", list(WireProtocol))
@pytest.mark.parametrize(
    ("model", "configured", "sent"),
    [
        ("qwen-vl-ocr-2025-11-20", 0, 8192),
        ("qwen-vl-ocr", 0, 4096),
        # An account whose limit the vendor raised sends the raised one.
        ("qwen-vl-ocr", 8192, 8192),
        ("qwen-vl-ocr-2025-11-20", 2000, 2000),
    ],
)
def test_max_tokens_is_sent_in_both_protocols_the_models_maximum_unless_configured(protocol, model, configured, sent):
    handler = scripted(httpx.Response(200, json=NATIVE_OK if protocol is WireProtocol.DASHSCOPE else COMPATIBLE_OK))
    client_with(handler, protocol=protocol, max_output_tokens=configured).recognize(make_call(TaskOptions(), model))
    body = json.loads(handler.seen[0].content)
    assert (body["parameters"] if protocol is WireProtocol.DASHSCOPE else body)["max_tokens"] == sent


def test_max_output_tokens_is_read_from_its_environment_variable():
    environ = {"DASHSCOPE_API_KEY": "sk-test", "OCR_MAX_OUTPUT_TOKENS": "8192", "OCR_MODEL": "qwen-vl-ocr"}
    settings = OcrServiceSettings.from_env(environ)
    assert settings.max_tokens_for(model_spec("qwen-vl-ocr")) == 8192
    assert OcrServiceSettings.from_env({"DASHSCOPE_API_KEY": "k"}).max_tokens_for(model_spec("qwen-vl-ocr")) == 4096


def test_compatible_extraction_with_schema_embeds_the_schema_in_the_prompt():
    body = build_body(
        WireProtocol.OPENAI, make_call(TaskOptions(task=OcrTask.KEY_INFORMATION_EXTRACTION, result_schema=SCHEMA))
    )
    prompt = body["messages"][0]["content"][1]["text"]
    assert prompt == key_information_prompt(SCHEMA)
    assert "Invoice Number" in prompt and "Tax ID" in prompt


def test_compatible_mode_refuses_native_only_rotation():
    with pytest.raises(errors.InvalidRequest):
        build_body(WireProtocol.OPENAI, make_call(TaskOptions(enable_rotate=True)))


def test_no_task_and_no_prompt_means_text_recognition():
    assert TaskOptions().effective_task is OcrTask.TEXT_RECOGNITION
    assert DEFAULT_PROMPT


def test_request_goes_to_the_documented_path_with_bearer_auth():
    handler = scripted(httpx.Response(200, json=NATIVE_OK))
    client = client_with(handler, region="us")
    outcome = client.recognize(make_call(TaskOptions()))
    request = handler.seen[0]
    assert str(request.url) == "https://dashscope-us.aliyuncs.com/api/v1/services/aigc/multimodal-generation/generation"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert json.loads(request.content)["parameters"]["ocr_options"]["task"] == "text_recognition"
    assert outcome.reply.result.text == "hello"
    assert (outcome.reply.usage.input_tokens, outcome.reply.usage.output_tokens, outcome.reply.usage.image_tokens) == (
        30,
        2,
        12,
    )


def test_base_url_override_replaces_the_region_base():
    handler = scripted(httpx.Response(200, json=COMPATIBLE_OK))
    client = client_with(handler, protocol=WireProtocol.OPENAI, base_url="http://127.0.0.1:9999/v1/")
    outcome = client.recognize(make_call(TaskOptions()))
    assert str(handler.seen[0].url) == "http://127.0.0.1:9999/v1/chat/completions"
    # the server reported no image tokens, so the documented formula fills them in and says so
    assert outcome.reply.usage.image_tokens == 3 * 2 + 2  # 96x64 px = 3x2 patches + 2 markers
    assert outcome.reply.usage.image_tokens_source == "estimate"


def test_missing_key_is_a_configuration_error_before_any_request():
    handler = scripted()
    client = QwenOcrClient(OcrServiceSettings(), http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(errors.ConfigurationError):
        client.recognize(make_call(TaskOptions()))
    assert handler.seen == []


# --- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected", "retryable"),
    [
        (400, {"code": "InvalidParameter", "message": "bad image"}, errors.OcrInvalidParameter, False),
        (400, {"code": "DataInspectionFailed", "message": "moderated"}, errors.OcrContentRejected, False),
        (400, {"code": "Arrearage", "message": "overdue"}, errors.OcrAccountError, False),
        (401, {"code": "InvalidApiKey", "message": "no"}, errors.OcrUnauthorized, False),
        (403, {"code": "AccessDenied", "message": "no"}, errors.OcrAccessDenied, False),
        (404, {"code": "ModelNotFound", "message": "no"}, errors.OcrModelNotFound, False),
        (429, {"code": "Throttling.RateQuota", "message": "slow down"}, errors.OcrThrottled, True),
        (429, {"code": "Throttling.AllocationQuota", "message": "tokens"}, errors.OcrThrottled, True),
        (500, {"code": "InternalError", "message": "oops"}, errors.OcrServerError, True),
        (503, None, errors.OcrServerError, True),
        (
            400,
            {"error": {"code": "data_inspection_failed", "message": "moderated", "type": "data_inspection_failed"}},
            errors.OcrContentRejected,
            False,
        ),
        (429, {"error": {"code": "limit_requests", "message": "slow down"}}, errors.OcrThrottled, True),
    ],
)
def test_documented_codes_map_to_typed_errors(status, body, expected, retryable):
    error = error_from_reply(status, body)
    assert type(error) is expected
    assert error.retryable is retryable
    assert error.status_code == status


def test_permanent_errors_are_not_retried():
    handler = scripted(httpx.Response(400, json={"code": "InvalidParameter", "message": "bad", "request_id": "r9"}))
    client = client_with(handler)
    with pytest.raises(errors.OcrInvalidParameter) as caught:
        client.recognize(make_call(TaskOptions()))
    assert len(handler.seen) == 1
    assert caught.value.request_id == "r9" and caught.value.vendor_code == "InvalidParameter"


def test_throttling_honors_retry_after_then_succeeds():
    clock = FakeClock()
    handler = scripted(
        httpx.Response(429, json={"code": "Throttling.RateQuota", "message": "x"}, headers={"Retry-After": "3"}),
        httpx.Response(200, json=NATIVE_OK),
    )
    outcome = client_with(handler, clock=clock).recognize(make_call(TaskOptions()))
    assert outcome.attempts == 2
    assert clock.slept == [3.0]


def test_server_errors_back_off_exponentially_until_attempts_run_out():
    clock = FakeClock()
    handler = scripted(*[httpx.Response(500, json={"code": "InternalError", "message": "x"})] * 4)
    client = client_with(handler, clock=clock, max_attempts=4, backoff_base_s=0.5)
    with pytest.raises(errors.OcrRetriesExhausted) as caught:
        client.recognize(make_call(TaskOptions()))
    assert caught.value.attempts == 4
    assert caught.value.details["last_code"] == "ocr.server_error"
    assert clock.slept == [0.5, 1.0, 2.0]
    assert client.stats.retries == 3


def test_timeouts_and_malformed_bodies_are_retried():
    handler = scripted(
        httpx.ReadTimeout("slow"),
        httpx.Response(200, content=b'{"output": {"choi'),
        httpx.RemoteProtocolError("peer closed"),
        httpx.Response(200, json=NATIVE_OK),
    )
    client = client_with(handler)
    outcome = client.recognize(make_call(TaskOptions()))
    assert outcome.attempts == 4
    assert client.stats.by_code == {"ocr.timeout": 1, "ocr.malformed_response": 1, "ocr.connection_error": 1}


def test_a_200_without_the_documented_shape_is_malformed():
    handler = scripted(*[httpx.Response(200, json={"output": {}})] * 2)
    client = client_with(handler, max_attempts=2)
    with pytest.raises(errors.OcrRetriesExhausted) as caught:
        client.recognize(make_call(TaskOptions()))
    assert caught.value.last_error.code == "ocr.malformed_response"


def test_no_retry_starts_that_would_overrun_the_deadline():
    clock = FakeClock()
    handler = scripted(
        httpx.Response(429, json={"code": "Throttling.RateQuota", "message": "x"}, headers={"Retry-After": "10"}),
    )
    client = client_with(handler, clock=clock)
    with pytest.raises(errors.OcrRetriesExhausted) as caught:
        client.recognize(make_call(TaskOptions()), deadline=clock.now + 8)
    assert len(handler.seen) == 1
    assert clock.slept == []
    assert caught.value.last_error.code == "ocr.throttled"


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
