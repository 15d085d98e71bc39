"""PdfRenderDpi: read from the environment, and used for every PDF page the page service prepares."""

from __future__ import annotations

import ctypes
import io
import json

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from ocr_pipeline.bootstrap import read_pipeline_settings
from ocr_pipeline.errors import ConfigurationError
from ocr_pipeline.imaging import DEFAULT_PDF_RENDER_DPI
from ocr_pipeline.pipeline.upload import UploadedObject

from tests.support.fakes import INPUT, RESULTS, Pipeline

REQUIRED = {"RESULT_BUCKET": "r", "TOPIC_ARN": "t", "PAGE_QUEUE_URL": "q", "JOBS_TABLE": "j", "DASHSCOPE_API_KEY": "k"}


def text_pdf() -> bytes:
    document = pdfium.PdfDocument.new()
    page = document.new_page(595.28, 841.89)
    obj = pdfium_c.FPDFPageObj_NewTextObj(document.raw, b"Helvetica", ctypes.c_float(10.0))
    wide = ctypes.create_string_buffer("Invoice 12345 Total due EUR 1,234.00\x00".encode("utf-16-le"))
    pdfium_c.FPDFText_SetText(obj, ctypes.cast(wide, pdfium_c.FPDF_WIDESTRING))
    pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 50, 780)
    pdfium_c.FPDFPage_InsertObject(page.raw, obj)
    page.gen_content()
    page.close()
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def render_step(p: Pipeline) -> str:
    p.store.put(INPUT, "docs/a.pdf", text_pdf(), content_type="application/pdf")
    job_id = p.upload.accept(UploadedObject(bucket=INPUT, key="docs/a.pdf")).job_id
    p.drain()
    document = json.loads(p.store.get_text(RESULTS, f"results/docs/a.pdf/{job_id}.json"))
    (page,) = document["pages"]
    (step,) = [s for s in page["image"]["steps"] if s["action"] == "render"]
    return str(step["detail"])


@pytest.mark.parametrize(("value", "expected"), [(None, DEFAULT_PDF_RENDER_DPI), ("150", 150.0), ("0", 0.0)])
def test_pdf_render_dpi_is_read_from_the_environment(value: str | None, expected: float) -> None:
    env = dict(REQUIRED) if value is None else {**REQUIRED, "PDF_RENDER_DPI": value}
    assert read_pipeline_settings(env).pdf_render_dpi == expected


@pytest.mark.parametrize("value", ["-1", "601", "fine"])
def test_a_pdf_render_dpi_out_of_range_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError):
        read_pipeline_settings({**REQUIRED, "PDF_RENDER_DPI": value})


def test_the_page_result_says_which_resolution_the_page_was_drawn_at_and_why() -> None:
    # Given the same vector PDF through a stack at the default, at 120 dpi and at 0
    default, coarse, before = (
        render_step(Pipeline()),
        render_step(Pipeline(pdf_render_dpi=120)),
        render_step(Pipeline(pdf_render_dpi=0)),
    )

    # Then each page's render step names its resolution and the reason for it
    assert f"{DEFAULT_PDF_RENDER_DPI:.0f} dpi asked: PdfRenderDpi, for a page of text and drawings" in default
    assert "120 dpi asked: PdfRenderDpi" in coarse and "about 120 dpi" in coarse
    assert "PdfRenderDpi=0: drawn to the pixel budget; capped by the pixel budget" in before
