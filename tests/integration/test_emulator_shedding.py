"""The emulator under more load than its OCR engine can serve: callers that gave up cost it nothing,
and callers it cannot serve in time are throttled the way the vendor throttles."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import pytest
from ocr_devkit.emulator import EmulatorServer
from PIL import Image

pytestmark = pytest.mark.integration

NATIVE_PATH = "/services/aigc/multimodal-generation/generation"
AUTH = {"Authorization": "Bearer any"}


class HeldEngine:
    """An OCR engine whose calls last until the test lets them go; it counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def recognize(self, image: object, *, correct_rotation: bool = False) -> list[object]:
        self.calls += 1
        self.entered.set()
        self.release.wait(30)
        return []


def body(shade: int) -> dict[str, object]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32), (shade, shade, shade)).save(buffer, "PNG")
    image = f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"
    return {"model": "qwen-vl-ocr", "input": {"messages": [{"role": "user", "content": [{"image": image}]}]}}


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_request_whose_client_gave_up_never_runs_the_engine():
    # Given an emulator whose engine is busy with one page
    engine = HeldEngine()
    with EmulatorServer(engine=engine) as emulator:
        url = emulator.native_base + NATIVE_PATH
        first = threading.Thread(target=lambda: httpx.post(url, headers=AUTH, json=body(10), timeout=30))
        first.start()
        assert engine.entered.wait(10)

        # When a second caller gives up waiting (its read timeout) and closes its connection
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, headers=AUTH, json=body(200), timeout=httpx.Timeout(0.5, connect=5))
        wait_for(lambda: emulator.stats["abandoned"] == 1)
        # And the engine then becomes free
        engine.release.set()
        first.join(10)
        stats = emulator.stats

    # Then the engine ran for the first page only: the abandoned one was dropped unread
    assert engine.calls == 1
    assert stats["abandoned"] == 1
    assert stats["engine_calls"] == 1
    assert stats["successes"] == 1


def test_a_request_that_cannot_be_served_in_time_gets_the_vendors_throttling_reply():
    # Given an emulator that lets a request wait at most half a second for its engine, busy with one page
    engine = HeldEngine()
    with EmulatorServer(engine=engine, max_queue_wait_s=0.5) as emulator:
        url = emulator.native_base + NATIVE_PATH
        callers = [
            threading.Thread(target=lambda shade=shade: httpx.post(url, headers=AUTH, json=body(shade), timeout=30))
            for shade in (10, 60)
        ]
        callers[0].start()
        assert engine.entered.wait(10)
        # And one request next in line
        callers[1].start()
        wait_for(lambda: emulator.stats["requests"]["native"] == 2)

        # When another request arrives
        reply = httpx.post(url, headers=AUTH, json=body(200), timeout=30)
        engine.release.set()
        for caller in callers:
            caller.join(10)
        stats = emulator.stats

    # Then it is answered with 429 Throttling.RateQuota and when to come back, and never read
    assert reply.status_code == 429
    assert reply.json()["code"] == "Throttling.RateQuota"
    assert int(reply.headers["Retry-After"]) >= 1
    assert stats["shed"] == 1
    # And the engine read the other two pages
    assert engine.calls == 2
    assert stats["successes"] == 2
