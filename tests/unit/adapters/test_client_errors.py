"""Error replies as the vendor writes them: which are retried, how long we wait, what the user sees.

The status-code page answers 408, 429 and the 5xx with "please try again later"; content moderation
(`DataInspection*`) refuses the same input again however often it is sent.
"""

from __future__ import annotations

import httpx
import pytest
from ocr_pipeline import errors
from ocr_pipeline.adapters.dashscope.wire import error_from_reply
from ocr_pipeline.tasks import TaskOptions

from .test_client import NATIVE_OK, FakeClock, client_with, make_call, scripted


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_every_try_again_status_is_retryable(status):
    # Given an error reply with one of the statuses the vendor says to try again later
    error = error_from_reply(status, {"code": "Whatever", "message": "try again later"})
    # Then it is a retryable error
    assert error.retryable, (status, type(error))
    assert error.status_code == status


def test_a_408_is_retried_and_the_page_completes():
    # Given a service that first answers 408 RequestTimeOut, then succeeds
    handler = scripted(
        httpx.Response(408, json={"code": "RequestTimeOut", "message": "Request timed out, please try again later."}),
        httpx.Response(200, json=NATIVE_OK),
    )
    client = client_with(handler)
    # When a page is recognized
    outcome = client.recognize(make_call(TaskOptions()))
    # Then the second attempt's answer is the outcome
    assert outcome.attempts == 2
    assert outcome.reply.result.text == "hello"
    assert client.stats.by_code == {"ocr.timeout": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"code": "InvalidParameter", "message": "bad image", "request_id": "r-1"},
        {"code": "InvalidParameter", "msg": "bad image", "request_id": "r-1"},
        {
            "error": {"code": "InvalidParameter", "message": "bad image", "type": "invalid_request_error"},
            "request_id": "r-1",
        },
        {"error": {"code": "InvalidParameter", "msg": "bad image", "request_id": "r-1"}},
    ],
    ids=["native", "native-msg", "compatible", "compatible-msg"],
)
def test_code_message_and_request_id_are_read_from_either_body_shape(body):
    # When an error reply of either shape is mapped
    error = error_from_reply(400, body)
    # Then its code, message and request id are all found
    assert type(error) is errors.OcrInvalidParameter
    assert (error.vendor_code, error.message, error.request_id) == ("InvalidParameter", "bad image", "r-1")


@pytest.mark.parametrize(
    "body",
    [
        {"code": "DataInspectionFailed", "message": "Input data may contain inappropriate content."},
        {"code": "InvalidParameter.DataInspection", "message": "The media format is not supported or incorrect"},
        {"error": {"code": "data_inspection_failed", "message": "moderated", "type": "data_inspection_failed"}},
        {"error": {"message": "moderated", "type": "data_inspection_failed"}},
    ],
)
def test_data_inspection_in_any_spelling_is_content_rejected(body):
    error = error_from_reply(400, body)
    assert type(error) is errors.OcrContentRejected
    assert error.code == "ocr.data_inspection_failed"
    assert not error.retryable


def test_content_rejection_is_sent_once():
    handler = scripted(httpx.Response(400, json={"code": "InvalidParameter.DataInspection", "message": "no"}))
    with pytest.raises(errors.OcrContentRejected):
        client_with(handler).recognize(make_call(TaskOptions()))
    assert len(handler.seen) == 1


def test_retry_after_is_honored_in_full_when_the_deadline_allows():
    # Given a throttle asking for 45 s, more than the backoff ceiling of 20 s, and two minutes left
    clock = FakeClock()
    handler = scripted(
        httpx.Response(429, json={"code": "Throttling.RateQuota", "message": "x"}, headers={"Retry-After": "45"}),
        httpx.Response(200, json=NATIVE_OK),
    )
    # When the page is recognized
    outcome = client_with(handler, clock=clock).recognize(make_call(TaskOptions()), deadline=clock.now + 120)
    # Then the client waited what the server asked, not less (which would only meet the throttle again)
    assert clock.slept == [45.0]
    assert outcome.attempts == 2


def test_retry_after_past_the_deadline_gives_the_work_back_for_when_the_server_said():
    # Given a 503 asking for 90 s with 30 s left
    clock = FakeClock()
    handler = scripted(
        httpx.Response(503, json={"code": "ServiceUnavailable", "message": "busy"}, headers={"Retry-After": "90"}),
    )
    # When the page is recognized
    with pytest.raises(errors.OcrRetriesExhausted) as caught:
        client_with(handler, clock=clock).recognize(make_call(TaskOptions()), deadline=clock.now + 30)
    # Then there is no second attempt, and the error says when the work may come back
    assert clock.slept == [] and len(handler.seen) == 1
    assert caught.value.retryable
    assert caught.value.retry_after_s == 90.0
    assert caught.value.last_error.code == "ocr.server_error"


def test_without_a_deadline_an_excessive_retry_after_gives_up_at_once():
    clock = FakeClock()
    handler = scripted(
        httpx.Response(
            429, json={"code": "Throttling.AllocationQuota", "message": "x"}, headers={"Retry-After": "3600"}
        )
    )
    with pytest.raises(errors.OcrRetriesExhausted) as caught:
        client_with(handler, clock=clock, retry_after_max_s=300).recognize(make_call(TaskOptions()))
    assert clock.slept == []
    assert "3600" in caught.value.message


def test_an_error_body_that_is_not_json_still_maps_by_status():
    error = error_from_reply(504, None)
    assert type(error) is errors.OcrServerError and error.message == "HTTP 504"
