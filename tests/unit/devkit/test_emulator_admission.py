"""The emulator's load shedding: who gets the OCR engine, who is throttled, who is dropped unread."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from ocr_devkit.emulator.admission import (
    EngineAdmission,
    Refused,
    Verdict,
    peer_closed,
    retry_after_s,
    verdict,
)

CALM = {
    "turn_free": False,
    "waited_s": 1.0,
    "ahead": 1,
    "mean_service_s": 2.0,
    "max_wait_s": 30.0,
    "client_gone": False,
    "stopping": False,
}


def test_a_request_whose_turn_has_come_is_admitted():
    assert verdict(**{**CALM, "turn_free": True}) is Verdict.ADMIT


def test_a_request_that_can_be_served_in_time_waits():
    # Given one request ahead at 2 s each and 1 s waited: 3 s in all, well inside 30 s
    assert verdict(**CALM) is Verdict.WAIT


def test_a_request_that_has_waited_its_bound_behind_others_is_shed():
    assert verdict(**{**CALM, "waited_s": 30.0, "ahead": 2}) is Verdict.SHED


def test_the_next_request_in_line_is_never_shed_so_the_engine_always_has_work():
    # Given a request next in line behind a page that takes a minute, having waited past its bound
    assert verdict(**{**CALM, "waited_s": 45.0, "ahead": 1, "mean_service_s": 60.0}) is Verdict.WAIT


def test_a_request_the_queue_ahead_would_make_late_is_shed_at_once():
    # Given 8 requests ahead at 5 s each: 40 s before its turn, more than the 30 s bound
    assert verdict(**{**CALM, "waited_s": 0.0, "ahead": 8, "mean_service_s": 5.0}) is Verdict.SHED


def test_without_a_timed_engine_call_a_request_is_not_shed_on_a_guess():
    assert verdict(**{**CALM, "waited_s": 0.0, "ahead": 50, "mean_service_s": None}) is Verdict.WAIT


def test_a_request_whose_client_has_gone_is_abandoned_even_when_its_turn_has_come():
    assert verdict(**{**CALM, "turn_free": True, "client_gone": True}) is Verdict.ABANDONED


def test_stopping_comes_before_everything():
    assert verdict(**{**CALM, "turn_free": True, "client_gone": True, "stopping": True}) is Verdict.STOPPING


@pytest.mark.parametrize(
    ("ahead", "mean", "expected"), [(2, None, 1), (3, None, 1), (2, 4.0, 4), (3, 4.0, 8), (3, 0.3, 1), (5, 2.5, 10)]
)
def test_retry_after_is_when_a_retry_would_be_next_in_line_in_whole_seconds(ahead, mean, expected):
    assert retry_after_s(ahead, mean) == expected


def test_a_waiting_request_is_refused_once_its_client_is_gone():
    # Given the engine held by one request, and a second one waiting
    admission = EngineAdmission(max_wait_s=30.0, stopping=threading.Event(), poll_interval_s=0.01)
    gone = threading.Event()
    outcome: list[object] = []
    with admission.turn(lambda: False):

        def second() -> None:
            try:
                with admission.turn(gone.is_set):
                    outcome.append("admitted")
            except Refused as refused:
                outcome.append(refused.why)

        waiter = threading.Thread(target=second)
        waiter.start()
        # When its client goes away while the engine is still busy
        gone.set()
        waiter.join(5)
    # Then it never got the engine, and is counted as abandoned
    assert outcome == [Verdict.ABANDONED]
    assert admission.stats.abandoned == 1
    assert admission.stats.admitted == 1


def test_a_request_waiting_past_its_bound_behind_the_next_in_line_is_shed_with_a_retry_after():
    # Given an engine held far longer than the 0.1 s a request may wait, and a request next in line
    admission = EngineAdmission(max_wait_s=0.1, stopping=threading.Event(), poll_interval_s=0.01)
    outcome: list[object] = []
    with admission.turn(lambda: False):

        def next_in_line() -> None:
            with admission.turn(lambda: False):
                outcome.append("admitted")

        waiter = threading.Thread(target=next_in_line)
        waiter.start()
        while len(admission._queue) < 1:
            time.sleep(0.005)
        # When a third request arrives, Then it is shed, told to come back in a whole number of seconds
        with pytest.raises(Refused) as refused, admission.turn(lambda: False):
            pass
    waiter.join(5)
    assert refused.value.why is Verdict.SHED
    assert refused.value.retry_after_s >= 1
    assert admission.stats.shed == 1
    # And the next in line got the engine
    assert outcome == ["admitted"]


def test_requests_get_the_engine_first_come_first_served():
    admission = EngineAdmission(max_wait_s=30.0, stopping=threading.Event(), poll_interval_s=0.01)
    order: list[int] = []

    def caller(number: int) -> None:
        with admission.turn(lambda: False):
            order.append(number)

    threads = []
    with admission.turn(lambda: False):
        for number in range(3):
            thread = threading.Thread(target=caller, args=(number,))
            thread.start()
            threads.append(thread)
            # Each one is queued before the next arrives
            while len(admission._queue) < number + 1:
                time.sleep(0.005)
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2]


def test_a_closed_peer_is_seen_without_reading_what_is_pending():
    # Given a connected pair of sockets
    server, client = socket.socketpair()
    try:
        # When the client has sent nothing, Then it is still there
        assert peer_closed(server) is False
        # When it pipelines more bytes, Then it is still there, and the bytes are left unread
        client.sendall(b"GET")
        assert peer_closed(server) is False
        assert server.recv(3) == b"GET"
        # When it closes its end, Then the server sees it gone
        client.close()
        assert peer_closed(server) is True
    finally:
        server.close()
