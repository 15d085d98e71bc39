"""Several model calls in flight per instance: a message's pages go to the model together, bounded.

The guarantees of one call at a time hold with several: a page's result is in S3 before it is
recorded, a failed page does not stop its siblings, and a redelivery asks the model only for the
pages that have no stored result.
"""

from __future__ import annotations

import threading
import time

import pytest
from ocr_pipeline.errors import OcrServerError
from ocr_pipeline.pipeline.concurrency import ByteBudget
from ocr_pipeline.pipeline.model import PageWork
from ocr_pipeline.pipeline.upload import UploadedObject

from tests.support.fakes import INPUT, RESULTS, Pipeline
from tests.support.images import multipage_tiff


def upload(p: Pipeline, key: str, body: bytes) -> None:
    p.store.put(INPUT, key, body, content_type="image/tiff")
    p.upload.accept(UploadedObject(bucket=INPUT, key=key))


class OpenCalls:
    """Counts the model calls open at once; each call waits (up to 10 s) until `meet` calls are open."""

    def __init__(self, p: Pipeline, meet: int) -> None:
        self._lock = threading.Lock()
        self.open = 0
        self.peak = 0
        self.met: list[bool] = []
        self._barrier = threading.Barrier(meet)
        self._answer = p.ocr.recognize
        p.ocr.recognize = self.recognize  # type: ignore[method-assign]

    def recognize(self, call, *, deadline=None):
        with self._lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
        try:
            try:
                self._barrier.wait(timeout=10)
                self.met.append(True)
            except threading.BrokenBarrierError:
                self.met.append(False)
            return self._answer(call, deadline=deadline)
        finally:
            with self._lock:
                self.open -= 1


class Gauge:
    """A count that goes up and down on several threads, and the highest it reached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def add(self, amount: int) -> None:
        with self._lock:
            self.now += amount
            self.peak = max(self.peak, self.now)


def answer_slowly(p: Pipeline, gauge: Gauge, *, count_the_call: bool) -> None:
    """The model answers after 50 ms; `gauge` goes down as each answer comes (and up as each call starts)."""
    answer = p.ocr.recognize

    def slowly(call, *, deadline=None):
        if count_the_call:
            gauge.add(1)
        time.sleep(0.05)
        try:
            return answer(call, deadline=deadline)
        finally:
            gauge.add(-1)

    p.ocr.recognize = slowly  # type: ignore[method-assign]


def test_a_messages_pages_are_with_the_model_at_once_up_to_the_calls_per_instance():
    # Given a 4-page TIFF in one message, and two calls per instance
    p = Pipeline(page_chunk_size=4, calls_per_instance=2)
    upload(p, "docs/fax.tiff", multipage_tiff(4))
    calls = OpenCalls(p, meet=2)

    # When the message is processed
    p.drain()

    # Then the pages went to the model two at a time, never more
    assert calls.met == [True] * 4
    assert calls.peak == 2
    # And each page was stored, recorded and billed once, and the document completed
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == [1, 2, 3, 4]
    assert len(p.bus.of_type("document.completed")) == 1
    job_id = next(iter(p.jobs.jobs))
    for page in range(1, 5):
        key = f"jobs/{job_id}/pages/{page:06d}.json"
        assert p.store.find_text(RESULTS, key) is not None
        assert p.jobs.get_page(job_id, page).result_key == key


def test_a_page_that_fails_leaves_its_siblings_stored_and_only_it_is_asked_for_again():
    # Given a 3-page TIFF in one message, three calls per instance, and a model that fails page 2 once
    p = Pipeline(page_chunk_size=3, calls_per_instance=3)
    upload(p, "docs/fax.tiff", multipage_tiff(3))
    (body,) = p.queue.bodies
    work = PageWork.model_validate_json(body)
    calls = OpenCalls(p, meet=3)
    lock = threading.Lock()
    answered: list[int] = []

    def failing_second_answer(call):
        # The second answer fails (retryable), whichever page it is for; the others succeed.
        with lock:
            answered.append(len(answered) + 1)
            number = answered[-1]
        return OcrServerError("the service is busy") if number == 2 else None

    p.ocr.fail = failing_second_answer

    # When the message is delivered: the three pages were with the model together
    with pytest.raises(OcrServerError):
        p.pages.process(work)
    assert calls.met == [True] * 3 and calls.peak == 3

    # Then the two others were stored and recorded, and the document is not finished
    job_id = work.job_id
    recorded = [page for page in (1, 2, 3) if p.jobs.get_page(job_id, page) is not None]
    assert len(recorded) == 2
    assert p.bus.of_type("document.completed") == []

    # And the redelivery asks the model only for the page that failed
    calls_before = len(p.ocr.calls)
    p.ocr.recognize = calls._answer  # type: ignore[method-assign]
    p.pages.process(work)
    assert len(p.ocr.calls) == calls_before + 1
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == [1, 2, 3]
    assert len(p.bus.of_type("document.completed")) == 1


def test_pages_are_prepared_no_further_ahead_than_one_page_past_the_calls():
    # Given a 5-page TIFF in one message, one call per instance, and a model that holds its first answer
    # for up to a second, or until a third page has been prepared
    p = Pipeline(page_chunk_size=5, calls_per_instance=1)
    upload(p, "docs/fax.tiff", multipage_tiff(5))
    prepared: list[int] = []
    third_prepared = threading.Event()
    prepare = p.pages._prepare

    def watched_prepare(spec, page, source):
        image = prepare(spec, page, source)
        prepared.append(page)
        if len(prepared) == 3:
            third_prepared.set()
        return image

    seen_while_first_call_was_open: list[list[int]] = []
    answer = p.ocr.recognize

    def recognize(call, *, deadline=None):
        if not p.ocr.calls:
            third_prepared.wait(timeout=1)
            seen_while_first_call_was_open.append(list(prepared))
        return answer(call, deadline=deadline)

    p.pages._prepare = watched_prepare  # type: ignore[method-assign]
    p.ocr.recognize = recognize  # type: ignore[method-assign]

    # When the message is processed
    p.drain()

    # Then while page 1 was with the model only page 2 was prepared ahead, and every page was billed once
    assert seen_while_first_call_was_open == [[1, 2]]
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == [1, 2, 3, 4, 5]


def test_the_records_of_a_delivery_share_one_bound_on_pages_prepared_and_drawn_at_once():
    # Given a 9-page TIFF in three messages of three pages, two calls per instance, and a model that takes
    # a moment to answer
    p = Pipeline(page_chunk_size=3, calls_per_instance=2)
    upload(p, "docs/fax.tiff", multipage_tiff(9))
    works = [PageWork.model_validate_json(body) for body in p.queue.bodies]
    preparing, unanswered = Gauge(), Gauge()
    prepare = p.pages._prepare

    def counted_prepare(spec, page, source):
        preparing.add(1)
        try:
            time.sleep(0.02)
            return prepare(spec, page, source)
        finally:
            preparing.add(-1)
            unanswered.add(1)

    p.pages._prepare = counted_prepare  # type: ignore[method-assign]
    answer_slowly(p, unanswered, count_the_call=False)

    # When the three messages are processed at once, as the records of one delivery are
    threads = [threading.Thread(target=p.pages.process, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then the instance held at most one page more than its calls, and drew at most two at a time,
    # not three records' worth of each
    assert len(works) == 3
    assert unanswered.peak <= 3
    assert preparing.peak <= 2
    # And every page was recognized and billed once, and the document completed
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == list(range(1, 10))
    assert len(p.bus.of_type("document.completed")) == 1


def test_calls_for_heavy_images_are_held_to_the_instances_byte_budget_and_the_rest_still_end():
    # Given a 4-page TIFF in one message, four calls per instance, and a budget that holds one page's image
    p = Pipeline(page_chunk_size=4, calls_per_instance=4)
    upload(p, "docs/fax.tiff", multipage_tiff(4))
    prepare = p.pages._prepare
    sizes: list[int] = []

    def measured_prepare(spec, page, source):
        image = prepare(spec, page, source)
        sizes.append(len(image.data))
        return image

    p.pages._prepare = measured_prepare  # type: ignore[method-assign]
    p.pages._with_the_model = ByteBudget(1)
    open_calls = Gauge()
    answer_slowly(p, open_calls, count_the_call=True)

    # When the message is processed
    p.drain()

    # Then each image, larger than the budget, went to the model alone, and every page ended once
    assert min(sizes) > 1
    assert open_calls.peak == 1
    assert sorted(e.data["page"] for e in p.bus.of_type("usage.recorded")) == [1, 2, 3, 4]
    assert len(p.bus.of_type("document.completed")) == 1


def test_a_byte_budget_lets_claims_share_it_up_to_its_limit_and_a_large_claim_run_alone():
    budget = ByteBudget(10)
    # Two claims that fill it together: one more byte does not fit before a deadline that has passed
    with budget.claim(4) as first, budget.claim(6) as second, budget.claim(1, deadline=time.monotonic()) as third:
        assert (first, second, third) == (True, True, False)
    # A claim larger than the limit fits once it is alone, and holds the budget meanwhile
    with budget.claim(25) as large, budget.claim(1, deadline=time.monotonic() + 0.05) as small:
        assert (large, small) == (True, False)
    released = threading.Event()

    def hold_then_release() -> None:
        with budget.claim(10):
            released.wait(timeout=5)

    holder = threading.Thread(target=hold_then_release)
    holder.start()
    time.sleep(0.05)
    threading.Timer(0.1, released.set).start()
    # A claim that waits gets its room when the holder ends
    with budget.claim(5, deadline=time.monotonic() + 5) as later:
        assert later is True
    holder.join()


def test_work_handed_to_another_thread_keeps_the_log_keys_of_its_unit_of_work():
    # Given two units of work on their own threads, each with its own value of a context variable
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from ocr_pipeline.pipeline.concurrency import in_context

    job = contextvars.ContextVar("job", default=None)
    seen: dict[str, object] = {}

    def unit(name: str, helpers: ThreadPoolExecutor) -> None:
        job.set(name)
        # When each hands work to a shared pool of helper threads
        in_context(helpers, lambda: seen.__setitem__(name, job.get())).result()

    with ThreadPoolExecutor(max_workers=1) as helpers, ThreadPoolExecutor(max_workers=2) as units:
        for future in [units.submit(contextvars.Context().run, unit, name, helpers) for name in ("a", "b")]:
            future.result()
        kept_by_the_pool = helpers.submit(job.get).result()

    # Then each helper saw its own unit's value, and the pool's thread kept none of it
    assert seen == {"a": "a", "b": "b"}
    assert kept_by_the_pool is None
