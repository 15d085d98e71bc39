"""The requests-per-second cap towards the OCR API: request starts are spaced, and deadlines are kept."""

from __future__ import annotations

import itertools

import httpx
import pytest
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient
from ocr_pipeline.adapters.dashscope.ratelimit import RateLimiter
from ocr_pipeline.errors import OcrRetriesExhausted
from ocr_pipeline.tasks import TaskOptions

from tests.unit.adapters.test_client import NATIVE_OK, FakeClock, make_call


def test_request_starts_are_spaced_by_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        assert limiter.acquire()
        starts.append(clock.now)
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.25] * 4


def test_a_slot_after_the_deadline_is_refused_and_not_taken():
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    assert limiter.acquire()
    assert not limiter.acquire(deadline=clock.now + 0.5)  # the next slot is 1 s away
    assert limiter.acquire(deadline=clock.now + 1.0) and clock.slept == [1.0]


def test_the_client_waits_for_the_limiter_before_each_call():
    clock = FakeClock()
    sent_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_at.append(clock.now)
        return httpx.Response(200, json=NATIVE_OK)

    client = QwenOcrClient(
        OcrServiceSettings(api_key="sk-test"),
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=clock.sleep,
        clock=clock,
        limiter=RateLimiter(2.0, clock=clock, sleep=clock.sleep),
    )
    for _ in range(3):
        client.recognize(make_call(TaskOptions()))
    assert [t - sent_at[0] for t in sent_at] == [0.0, 0.5, 1.0]


def test_no_slot_before_the_deadline_gives_the_message_back_instead_of_overrunning():
    clock = FakeClock()
    client = QwenOcrClient(
        OcrServiceSettings(api_key="sk-test", max_attempts=2),
        http=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=NATIVE_OK))),
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: 0.0,
        limiter=RateLimiter(0.01, clock=clock, sleep=clock.sleep),  # one call per 100 s
    )
    client.recognize(make_call(TaskOptions()))
    with pytest.raises(OcrRetriesExhausted) as caught:
        client.recognize(make_call(TaskOptions()), deadline=clock.now + 30)
    assert caught.value.retryable and caught.value.last_error.code == "ocr.timeout"


@pytest.mark.parametrize(
    ("limit", "shares", "expected"),
    [("0", "10", None), ("", "", None), ("20", "10", 2.0), ("5", "", 5.0), ("3", "4", 0.75)],
)
def test_the_stack_limit_is_split_over_the_concurrent_instances(limit, shares, expected):
    settings = OcrServiceSettings.from_env({"OCR_RPS_LIMIT": limit, "OCR_RPS_SHARES": shares, "DASHSCOPE_API_KEY": "k"})
    assert settings.requests_per_second == expected
