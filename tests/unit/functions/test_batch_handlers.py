"""The batch lane's scheduled handlers: a tick runs the service once and reports what it did."""

from __future__ import annotations

from ocr_pipeline.batch_api import BatchStatus

from tests.support.batch_lane import BatchLaneStack
from tests.support.fakes import text_png
from tests.support.lambda_helpers import FakeLambdaContext, load_event, load_function


def test_a_submit_tick_sends_the_queued_pages_and_a_collect_tick_settles_the_finished_batch():
    submit, collect = load_function("batch_submit"), load_function("batch_collect")
    lane = BatchLaneStack()
    lane.upload("archive/receipt.png", text_png())
    # A tick of the submit schedule sends the page in a batch
    submitted = submit.handler(load_event("batch_submit_schedule"), FakeLambdaContext(), service=lane.submission)
    assert (submitted["pages_submitted"], submitted["batches_opened"], submitted["messages_deleted"]) == (1, 1, 1)
    # A tick of the collect schedule before the vendor answers reports it open; after, settles it
    tick = load_event("batch_collect_schedule")
    assert collect.handler(tick, FakeLambdaContext(), service=lane.collection)["batches_open"] == 1
    lane.finish_all(BatchStatus.COMPLETED)
    collected = collect.handler(tick, FakeLambdaContext(), service=lane.collection)
    assert collected["batches_closed"] == {"completed": 1} and collected["pages_settled"] == 1
    assert [e.event_type for e in lane.p.bus.events] == ["usage.recorded", "document.completed"]
