"""The text-layer shortcut: PDF pages whose own text is complete skip OCR when configured."""

from __future__ import annotations

import io
import json

import pytest
from ocr_pipeline.bootstrap import read_pipeline_settings
from ocr_pipeline.pdf_text import TextLayerFacts, judge_text_layer, read_text_layer
from ocr_pipeline.pipeline.model import PageWork

from tests.support.fakes import INPUT, RESULTS, FakeOcrService, Pipeline

INVOICE = "Invoice 12345 Total due EUR 1,234.00"

# --- PDFs written by hand: what each page holds is exactly what the test says ---------------


def pdf(*pages: tuple[str | None, bool], invisible: bool = False) -> bytes:
    """Letter-size pages, each with an optional line of Helvetica text and optionally a
    full-page grey image (a scan). Helvetica is a standard font: nothing is embedded."""
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    objects.append(
        b"<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray /BitsPerComponent 8 /Length 4 >>\nstream\n\x80\x80\x80\x80\nendstream"
    )
    kids = []
    for text, scanned in pages:
        ops = []
        if scanned:
            ops.append("q 612 0 0 792 0 0 cm /Im1 Do Q")
        if text is not None:
            ops.append(f"BT /F1 12 Tf {3 if invisible else 0} Tr 72 720 Td ({text}) Tj ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >> >>" % len(objects)
        )
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def text_pdf(*texts: str) -> bytes:
    return pdf(*((text, False) for text in texts))


def pillow_pdf() -> bytes:
    """An image-only PDF, as scanners and Pillow write them."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (850, 1100), "white")
    ImageDraw.Draw(image).text((100, 100), INVOICE, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PDF")
    return buffer.getvalue()


def run(p: Pipeline, body: bytes, key: str = "docs/invoice.pdf", **metadata: str) -> dict:
    from ocr_pipeline.pipeline.upload import UploadedObject

    p.store.put(INPUT, key, body, content_type="application/pdf", metadata=metadata)
    job_id = p.upload.accept(UploadedObject(bucket=INPUT, key=key)).job_id
    p.drain()
    return json.loads(p.store.get_text(RESULTS, f"results/{key}/{job_id}.json"))


# --- the decision ----------------------------------------------------------------------------


def facts(**changes: object) -> TextLayerFacts:
    base = TextLayerFacts(
        text=INVOICE, visible_chars=31, unreadable_chars=0, text_objects=1, invisible_text_objects=0, image_coverage=0.0
    )
    return base.model_copy(update=changes)


@pytest.mark.parametrize(
    ("changes", "complete"),
    [
        ({}, True),
        ({"image_coverage": 0.1}, True),  # a logo
        ({"image_coverage": 0.9}, False),  # a scan under the text
        ({"visible_chars": 5}, False),  # a page number
        ({"unreadable_chars": 10}, False),  # a font without a Unicode map
        ({"invisible_text_objects": 1}, False),  # an OCR layer laid over a scan
    ],
)
def test_a_text_layer_is_complete_only_when_every_check_passes(changes, complete):
    assert judge_text_layer(facts(**changes)).complete is complete


def test_pdfium_facts_tell_a_text_page_from_a_scan_and_from_an_ocr_layer_over_one():
    # Given a text page, a scanned page, and a scanned page under invisible text
    mixed = pdf((INVOICE, False), (None, True))
    ocrd = pdf((INVOICE, True), invisible=True)
    # When their layers are read
    text_page, scanned = read_text_layer(mixed, 1), read_text_layer(mixed, 2)
    ocr_layer = read_text_layer(ocrd, 1)
    # Then only the text page's layer is complete, and it holds the page's words
    assert text_page.text == INVOICE and judge_text_layer(text_page).complete
    assert scanned.image_coverage == 1.0 and not judge_text_layer(scanned).complete
    assert ocr_layer.invisible_text_objects == 1 and not judge_text_layer(ocr_layer).complete


# --- the pipeline ----------------------------------------------------------------------------


def test_a_pdf_with_a_text_layer_takes_the_shortcut_when_it_is_configured():
    # Given the shortcut is preferred
    p = Pipeline(ocr=FakeOcrService("model text"), pdf_text_layer="prefer")
    # When a PDF with a complete text layer is processed
    document = run(p, text_pdf(INVOICE))
    # Then the model is not called, and the page is the embedded text, free, marked as such
    assert p.ocr.calls == []
    (page,) = document["pages"]
    assert page["text"] == INVOICE and page["method"] == "text_layer"
    assert page["usage"]["input_tokens"] == page["usage"]["output_tokens"] == page["usage"]["image_tokens"] == 0
    assert page["cost"] == "0" and page["currency"] == "USD"
    assert document["text"] == INVOICE and document["text_layer_pages"] == 1 and document["cost"] == "0"
    # And billing still sees the page, at no cost, and can tell how it was read
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["method"] == "text_layer" and usage.data["cost"] == "0"
    assert usage.data["input_tokens"] == usage.data["output_tokens"] == usage.data["image_tokens"] == 0
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["text_preview"] == INVOICE


def test_without_the_setting_a_text_pdf_is_ocrd():
    # Given the default setting
    p = Pipeline(ocr=FakeOcrService("model text"))
    # When the same PDF is processed
    document = run(p, text_pdf(INVOICE))
    # Then the model reads it, as before
    assert len(p.ocr.calls) == 1
    assert document["pages"][0]["text"] == "model text" and document["pages"][0]["method"] == "ocr"
    assert document["text_layer_pages"] == 0
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["method"] == "ocr" and usage.data["input_tokens"] > 0


def test_an_image_only_pdf_is_ocrd_even_when_the_shortcut_is_preferred():
    p = Pipeline(ocr=FakeOcrService("model text"), pdf_text_layer="prefer")
    document = run(p, pillow_pdf())
    assert len(p.ocr.calls) == 1 and document["pages"][0]["method"] == "ocr"


def test_a_task_other_than_text_recognition_is_ocrd_even_when_the_shortcut_is_preferred():
    # Given a table-parsing job on a PDF with a complete text layer
    p = Pipeline(ocr=FakeOcrService("<table><tr><td>12345</td></tr></table>"), pdf_text_layer="prefer")
    # When it is processed
    document = run(p, text_pdf(INVOICE), **{"ocr-task": "table_parsing"})
    # Then the model builds the structure the task asks for
    assert len(p.ocr.calls) == 1
    assert document["task"] == "table_parsing" and document["pages"][0]["method"] == "ocr"


def test_a_mixed_pdf_takes_the_shortcut_only_for_its_text_pages():
    # Given page 1 with a text layer and page 2 a scan
    p = Pipeline(ocr=FakeOcrService("scanned text"), pdf_text_layer="prefer")
    # When it is processed
    document = run(p, pdf((INVOICE, False), (None, True)))
    # Then only page 2 goes to the model, and both are billed
    assert len(p.ocr.calls) == 1
    assert [page["method"] for page in document["pages"]] == ["text_layer", "ocr"]
    assert document["text"] == f"{INVOICE}\n\nscanned text" and document["text_layer_pages"] == 1
    methods = {e.data["page"]: e.data["method"] for e in p.bus.of_type("usage.recorded")}
    assert methods == {1: "text_layer", 2: "ocr"}


def test_a_redelivered_shortcut_page_is_announced_once_and_still_as_text_layer():
    # Given a text-layer page recorded (with its billing claim), but the worker died before announcing its usage
    now = [1000.0]
    p = Pipeline(pdf_text_layer="prefer", claim_lease_s=60)
    p.jobs._clock = lambda: now[0]
    p.store.put(INPUT, "docs/a.pdf", text_pdf(INVOICE), content_type="application/pdf")
    from ocr_pipeline.pipeline.upload import UploadedObject

    p.upload.accept(UploadedObject(bucket=INPUT, key="docs/a.pdf"))
    work = PageWork.model_validate_json(p.queue.bodies.pop(0))
    publish = p.bus.publish
    p.bus.publish = lambda envelope: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        p.pages.process(work)
    p.bus.publish = publish  # type: ignore[method-assign]
    # When the message is delivered twice more, after the dead worker's claim ran out
    now[0] += 61
    p.pages.process(work)
    p.pages.process(work)
    # Then the usage is announced once, with how the page was read
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["method"] == "text_layer" and usage.data["cost"] == "0"
    assert p.ocr.calls == [] and len(p.bus.of_type("document.completed")) == 1


@pytest.mark.parametrize(("value", "expected"), [(None, "ocr"), ("prefer", "prefer"), ("OCR", "ocr")])
def test_the_setting_is_read_from_pdf_text_layer(value, expected):
    env = {"RESULT_BUCKET": "r", "TOPIC_ARN": "t", "PAGE_QUEUE_URL": "q", "JOBS_TABLE": "j", "DASHSCOPE_API_KEY": "k"}
    if value is not None:
        env["PDF_TEXT_LAYER"] = value
    assert read_pipeline_settings(env).pdf_text_layer == expected
