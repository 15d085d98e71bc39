"""Hostile documents through the services: each ends once, with a stable code, after one attempt.

The contract under test (issue 6): truncated, corrupt, encrypted and lying PDFs, random bytes behind a
%PDF- header and objects too large to process fail in one delivery with a stable code (their errors
are not retryable, so nothing raises for SQS or Lambda to retry), in bounded memory; objects over the
size limit are refused before a byte is downloaded. Every input is generated here.
"""

from __future__ import annotations

import io
import random
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from ocr_pipeline.pipeline.documents import count_pages, detect_kind, prepare_page
from ocr_pipeline.pipeline.intake import IntakeDecision
from ocr_pipeline.pipeline.model import DocumentKind
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.tokens import PixelBudget

from tests.support.fakes import INPUT, Pipeline
from tests.support.memory import MemoryObjectStore
from tests.support.streams import CountingFile
from tests.unit.core.test_pdf_pages import A4, drawn_pdf, encrypted_pdf, handmade_pdf, hostile_pdfs, raster_pdf

# Every code a document may fail with because of what it is (README, "Error codes are stable").
DOCUMENT_CODES = {
    "document.unreadable",
    "document.encrypted",
    "document.empty",
    "document.too_many_pages",
    "input.too_large",
    "image.unsupported_format",
    "image.unreadable",
    "image.too_many_pixels",
    "image.too_small",
    "image.aspect_ratio",
    "image.encoded_too_large",
}


def one_page_tree(page: bytes, count: int = 1) -> bytes:
    """A catalogue, a page tree claiming `count` pages, and one page dictionary `page`."""
    return handmade_pdf(
        [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count %d >>" % count, page]
    )


def four_pages() -> bytes:
    return drawn_pdf([A4] * 4, [(50, 50, 40, 40)] * 4, text="page")


class ReadCountingStore(MemoryObjectStore):
    """The in-memory store, counting every read of an object's bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get_bytes(self, bucket: str, key: str, version_id: Any = None, byte_range: Any = None) -> bytes:
        self.reads.append(f"get_bytes {key}")
        return super().get_bytes(bucket, key, version_id, byte_range)

    def open_reader(self, bucket: str, key: str, version_id: str | None, size: int) -> Any:
        self.reads.append(f"open_reader {key}")
        return super().open_reader(bucket, key, version_id, size)


def deliver(p: Pipeline, key: str, body: bytes) -> Any:
    """Upload `body`, hand its S3 event to the upload service once, and each page message once."""
    p.store.put(INPUT, key, body, content_type="application/pdf")
    outcome = p.upload.accept(UploadedObject(bucket=INPUT, key=key))
    p.drain()
    return outcome


def final_events(p: Pipeline) -> list[Any]:
    return [e for e in p.bus.events if e.event_type in ("document.completed", "document.failed")]


# --- refused at intake: before any page message ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("truncated.pdf", four_pages()[: len(four_pages()) // 2], "document.unreadable"),
        ("header only.pdf", b"%PDF-1.7\n", "document.unreadable"),
        ("header then noise.pdf", b"%PDF-1.7\n" + random.Random(3).randbytes(20_000), "document.unreadable"),
        ("no xref no trailer.pdf", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "document.unreadable"),
        ("encrypted.pdf", encrypted_pdf(b"secret"), "document.encrypted"),
        ("empty tree.pdf", handmade_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] >>"]), "document.empty"),
        # A few hundred bytes whose page tree claims thousands of pages must not fan out thousands of pages.
        ("lying count.pdf", one_page_tree(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] >>", 3000), "document.unreadable"),
    ],
)  # fmt: skip
def test_a_broken_pdf_is_refused_at_intake_once_with_a_stable_code(name: str, body: bytes, code: str) -> None:
    # Given a broken PDF uploaded
    p = Pipeline()

    # When its event is handled once (nothing may raise: a raise is a retry)
    outcome = deliver(p, name, body)

    # Then it is rejected with its code, in one document.failed, and no page is queued or recognized
    assert outcome.decision is IntakeDecision.REJECTED
    (failed,) = p.bus.events
    assert failed.event_type == "document.failed"
    assert failed.data["error"]["code"] == code
    assert p.queue.bodies == [] and p.ocr.calls == []

    # And a redelivery of the same event changes nothing
    p.upload.accept(UploadedObject(bucket=INPUT, key=name))
    assert len(p.bus.events) == 1


def test_a_page_count_beyond_pdfiums_limit_is_ignored_and_the_real_page_read() -> None:
    # Given one page under a tree claiming a billion: PDFium counts the kids instead
    p = Pipeline()
    deliver(p, "absurd count.pdf", one_page_tree(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] >>", 10**9))
    (final,) = final_events(p)
    assert (final.event_type, final.data["page_count"]) == ("document.completed", 1)
    assert len(p.bus.of_type("usage.recorded")) == 1


def test_a_real_pdf_over_the_page_limit_is_too_many_pages() -> None:
    p = Pipeline(max_pages=3)
    deliver(p, "long.pdf", four_pages())
    (failed,) = p.bus.events
    assert failed.data["error"]["code"] == "document.too_many_pages"
    assert p.queue.bodies == []


def test_an_object_over_the_size_limit_is_refused_before_a_byte_is_downloaded() -> None:
    # Given a PDF one byte over the limit, in a store that counts reads of object bytes
    body = four_pages()
    p = Pipeline(max_input_bytes=len(body) - 1)
    store = ReadCountingStore()
    p.store = p.intake.store = p.upload.store = p.pages.store = p.settlement.store = store

    # When it is uploaded
    outcome = deliver(p, "big.pdf", body)

    # Then it fails as too large, and its bytes were never read
    assert outcome.decision is IntakeDecision.REJECTED
    assert [e.data["error"]["code"] for e in p.bus.events] == ["input.too_large"]
    assert store.reads == []


# --- failing at the page: counted, then refused by the worker -----------------------------------


def test_a_page_with_an_impossible_aspect_ratio_fails_the_document_in_one_delivery() -> None:
    # Given a one-page PDF whose page is 200 inches wide and a twenty-fourth of an inch high
    p = Pipeline()
    body = one_page_tree(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 14400 3] >>")

    # When it is uploaded and its page message delivered once
    deliver(p, "strip.pdf", body)

    # Then the document failed with the image code, nothing was recognized or billed
    (failed,) = final_events(p)
    assert (failed.event_type, failed.data["error"]["code"]) == ("document.failed", "image.aspect_ratio")
    assert p.ocr.calls == [] and p.bus.of_type("usage.recorded") == []


def test_a_page_that_cannot_be_loaded_fails_alone_and_the_rest_is_billed() -> None:
    # Given a two-page tree whose first kid is not a page at all
    body = handmade_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [4 0 R 3 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] >>",
            b"(not a page)",
        ]
    )
    p = Pipeline()

    # When it is uploaded and each page message delivered once
    deliver(p, "half broken.pdf", body)

    # Then it ends once; whatever PDFium made of the odd kid, every page is accounted for
    (final,) = final_events(p)
    usage = p.bus.of_type("usage.recorded")
    if final.event_type == "document.completed":
        assert len(usage) == final.data["page_count"] - len(final.data["pages_failed"])
    else:
        assert final.data["error"]["code"] in DOCUMENT_CODES and usage == []


# --- bounded memory ----------------------------------------------------------------------------


@pytest.mark.parametrize("side", [14_400, 10**9], ids=["200-inch page", "absurd page"])
def test_a_page_claiming_a_huge_size_is_drawn_at_the_budget_in_bounded_memory(side: int) -> None:
    # Given a one-page PDF whose page claims to be `side` points square
    body = one_page_tree(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] >>" % (side, side))
    budget = PixelBudget()

    # When its page is prepared, tracing Python's allocations (PDFium's bitmap buffer included)
    tracemalloc.start()
    try:
        prepared = prepare_page(io.BytesIO(body), DocumentKind.PDF, 1, budget, Pipeline().pages.limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then it is drawn within the budget, and the peak stayed under two budget-sized RGBx frames
    # (one is the bitmap PDFium draws into), whatever size the page claims
    assert prepared.width * prepared.height <= budget.max_pixels
    assert peak < 2 * 4 * budget.max_pixels


def test_counting_the_pages_of_a_big_pdf_reads_a_small_part_of_it() -> None:
    # Given a 150-page PDF of about 40 kB per page, as a ranged file
    data = raster_pdf(150)
    source = CountingFile(data)

    # When its pages are counted (the last page loaded to prove the count)
    pages = count_pages(source, detect_kind(data[:16]), Pipeline().pages.limits)

    # Then the count is right, and under a tenth of the file was read
    assert pages == 150
    assert source.bytes_read < len(data) / 10


# --- any bytes ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile_pdfs)
def test_any_pdf_bytes_end_their_document_once_in_one_delivery(data: bytes) -> None:
    # Given random, %PDF--prefixed or mutated PDF bytes uploaded
    p = Pipeline()

    # When the upload event and each page message are delivered once (nothing may raise)
    deliver(p, "fuzzed.pdf", data)

    # Then the document ended exactly once: failed with a stable code, or completed with one bill per page
    (final,) = final_events(p)
    usage = p.bus.of_type("usage.recorded")
    if final.event_type == "document.failed":
        assert final.data["error"]["code"] in DOCUMENT_CODES
        assert usage == []
    else:
        assert len(usage) == final.data["page_count"] - len(final.data["pages_failed"])
    assert p.queue.bodies == []
