"""The limits towards the OCR API: request starts are spaced, requests in flight are bounded, deadlines are kept."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient
from ocr_pipeline.adapters.dashscope.client import DEADLINE_MARGIN_S
from ocr_pipeline.adapters.dashscope.ratelimit import CallSlots, RateLimiter
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


# --- calls in flight: at most OcrCallsPerInstance requests open from one instance --------------------------------


def test_call_slots_give_out_their_size_and_refuse_past_the_deadline():
    clock = FakeClock()
    slots = CallSlots(2, clock=clock)
    assert slots.acquire() and slots.acquire(deadline=clock.now + 5)
    # Both are taken: a deadline already reached refuses at once, without taking one
    assert not slots.acquire(deadline=clock.now)
    slots.release()
    assert slots.acquire(deadline=clock.now)


def test_the_client_keeps_at_most_its_slots_in_flight_whatever_the_threads():
    # Given a client with 2 call slots, and a service that holds each request until two are open
    lock = threading.Lock()
    open_now, peak = [0], [0]
    pair = threading.Barrier(2)
    met: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            open_now[0] += 1
            peak[0] = max(peak[0], open_now[0])
        try:
            pair.wait(timeout=10)
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        finally:
            with lock:
                open_now[0] -= 1
        return httpx.Response(200, json=NATIVE_OK)

    client = QwenOcrClient(
        OcrServiceSettings(api_key="sk-test"),
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        slots=CallSlots(2),
    )

    # When 6 threads call at once
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(lambda _: client.recognize(make_call(TaskOptions())), range(6)))

    # Then every call was answered, two at a time, never more
    assert len(outcomes) == 6 and met == [True] * 6
    assert peak[0] == 2


def test_no_call_slot_before_the_deadline_gives_the_message_back():
    # Given a client whose only slot another page holds
    slots = CallSlots(1)
    assert slots.acquire()
    client = QwenOcrClient(
        OcrServiceSettings(api_key="sk-test", max_attempts=1),
        http=httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, json=NATIVE_OK))),
        slots=slots,
    )
    # When a call must start within a moment, it fails retryably instead of waiting past its deadline
    with pytest.raises(OcrRetriesExhausted) as caught:
        client.recognize(make_call(TaskOptions()), deadline=time.monotonic() + DEADLINE_MARGIN_S + 0.05)
    assert caught.value.retryable and caught.value.last_error.code == "ocr.timeout"
    # And the slot it never took is still the other page's alone
    slots.release()
    assert client.recognize(make_call(TaskOptions())).reply.usage.input_tokens == 30


@pytest.mark.parametrize(("calls", "expected"), [("4", 4), ("", 0), ("0", 0)])
def test_the_calls_per_instance_come_from_the_environment_and_none_means_unbounded(calls, expected):
    settings = OcrServiceSettings.from_env({"OCR_CALLS_PER_INSTANCE": calls, "DASHSCOPE_API_KEY": "k"})
    assert settings.calls_in_flight == expected
