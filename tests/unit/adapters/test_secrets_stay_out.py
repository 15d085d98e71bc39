"""The API key never reaches an event, a stored result or an error message, whatever the API answers."""

from __future__ import annotations

import httpx
import pytest
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient
from ocr_pipeline.pipeline.upload import UploadedObject

from tests.support.fakes import INPUT, Pipeline, text_png
from tests.unit.adapters.test_client import NATIVE_OK

CANARY = "sk-canary-7f3e9c1d"


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, json=NATIVE_OK),
        httpx.Response(401, json={"code": "InvalidApiKey", "message": "Invalid API-key provided."}),
        httpx.Response(400, json={"code": "InvalidParameter", "message": "bad image"}),
        httpx.Response(500, text="upstream exploded"),
    ],
)
def test_the_key_appears_nowhere_the_pipeline_writes(reply):
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply

    client = QwenOcrClient(
        OcrServiceSettings(api_key=CANARY, max_attempts=1),
        http=httpx.Client(transport=httpx.MockTransport(answer)),
        sleep=lambda s: None,
    )
    p = Pipeline(ocr=client)
    p.store.put(INPUT, "a.png", text_png(), content_type="image/png")
    p.upload.accept(UploadedObject(bucket=INPUT, key="a.png"))
    try:
        p.drain()
    except Exception as error:  # a retryable failure goes back to the queue: its message must be clean too
        assert CANARY not in str(error)
    assert seen and seen[0].headers["authorization"] == f"Bearer {CANARY}"  # it was really used
    written = [e.to_json() for e in p.bus.events] + [
        body.decode("utf-8", "replace") for body, _ in p.store.objects.values()
    ]
    assert written and all(CANARY not in text for text in written)
    assert CANARY not in repr(client.settings) and CANARY not in client.settings.model_dump_json()
