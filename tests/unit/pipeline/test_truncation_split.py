"""TruncationPolicy split through the pipeline: a page whose answer was cut is read again in two halves.

The stand-in reads a page made of known lines at known rows: each call is answered with the lines
its image holds whole, and garbled text for a line a crop edge cuts through, as a model would.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from aws_lambda_powertools import Metrics
from ocr_pipeline.adapters.metrics import MeteredEventBus
from ocr_pipeline.ocr_service import CallOutcome, OcrCall, OcrReply
from ocr_pipeline.pipeline.config import TruncationPolicy
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.results import RecognitionResult, Word
from ocr_pipeline.tasks import OcrTask
from ocr_pipeline.usage import Usage
from PIL import Image, ImageDraw

from tests.support.fakes import INPUT, RESULTS, Pipeline
from tests.unit.adapters.test_metrics import emitted

# 480 x 1280 is already a whole number of 32-px patches within the budget: prepared as it is.
PAGE_SIZE = (480, 1280)
LINE_TOP, LINE_PITCH, LINE_HEIGHT = 40, 64, 40
LINES = [(f"line {index:02d} of the page", LINE_TOP + LINE_PITCH * index) for index in range(19)]


def page_png() -> bytes:
    image = Image.new("L", PAGE_SIZE, 255)
    draw = ImageDraw.Draw(image)
    for _, top in LINES:
        # A different grey per line, so rows of a half can be matched to rows of the page.
        draw.rectangle((20, top, 400, top + LINE_HEIGHT - 1), fill=(top * 7) % 200)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels_of(call: OcrCall) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(call.image_url.split(",", 1)[1])))


class LinesOnAPage:
    """Answers the whole page cut short, then each half with what it holds; `cut` names calls cut at max_tokens."""

    def __init__(self, cut: set[int] = frozenset({1})) -> None:  # type: ignore[assignment]
        self.cut = cut
        self.calls: list[OcrCall] = []

    def recognize(self, call: OcrCall, *, deadline: float | None = None) -> CallOutcome:
        self.calls.append(call)
        number = len(self.calls)
        assert call.image_height is not None and call.image_width is not None
        # The second call is the top half, the third the bottom half, which ends where the page ends.
        offset = PAGE_SIZE[1] - call.image_height if number == 3 else 0
        words: list[Word] = []
        for text, top in LINES:
            upper, lower = max(top, offset), min(top + LINE_HEIGHT, offset + call.image_height)
            if upper >= lower:
                continue
            whole = (upper, lower) == (top, top + LINE_HEIGHT)
            y1, y2 = upper - offset, lower - offset
            words.append(
                Word(
                    # A line cut through reads as something else, differently in each half.
                    text=text if whole else f"~ {'top' if upper > top else 'foot'} of {text[:7]} ~",
                    location=[20, y1, 400, y1, 400, y2, 20, y2],
                    rotate_rect=[210, (y1 + y2) / 2, 380, y2 - y1, 0],
                )
            )
        if number == 1:
            words = words[:5]  # the first answer stops early
        task = call.options.effective_task
        text = "\n".join(word.text for word in words)
        result = RecognitionResult(
            task=task, text=text, raw_text=text, words=words if task is OcrTask.ADVANCED_RECOGNITION else None
        )
        usage = Usage(input_tokens=1000 * number, output_tokens=10 * number, image_tokens=900 * number)
        reply = OcrReply(
            result=result,
            usage=usage,
            request_id=f"req-{number}",
            finish_reason="length" if number in self.cut else "stop",
        )
        return CallOutcome(reply=reply, attempts=1, latency_ms=1.0)


def run(ocr: LinesOnAPage, task: OcrTask, capsys=None, **settings) -> tuple[Pipeline, dict, list[dict]]:
    p = Pipeline(ocr=ocr, default_task=task, **settings)  # type: ignore[arg-type]
    metrics = Metrics(namespace="OcrPipeline", service="ocr-pipeline")
    metrics.clear_metrics()
    p.intake.bus = p.settlement.bus = MeteredEventBus(p.bus, metrics)
    p.store.put(INPUT, "page.png", page_png(), content_type="image/png")
    job_id = p.upload.accept(UploadedObject(bucket=INPUT, key="page.png")).job_id
    p.drain()
    metrics.flush_metrics()
    records = emitted(capsys) if capsys is not None else []
    metrics.clear_metrics()
    return p, json.loads(p.store.get_text(RESULTS, f"results/page.png/{job_id}.json")), records


EVERY_LINE = [text for text, _ in LINES]


@pytest.mark.parametrize("task", [OcrTask.TEXT_RECOGNITION, OcrTask.ADVANCED_RECOGNITION])
def test_a_cut_page_is_read_again_as_two_halves_at_its_scale_and_stitched(task, capsys):
    ocr = LinesOnAPage()
    p, document, metrics = run(ocr, task, capsys)
    whole, top, bottom = ocr.calls
    # The halves are smaller than the page, as wide, and together cover it with an overlap
    assert whole.image_height == PAGE_SIZE[1]
    for half in (top, bottom):
        assert half.image_width == whole.image_width and half.image_height < whole.image_height
    assert top.image_height + bottom.image_height > whole.image_height
    # at the page's scale: their pixels are the page's rows, not a resampling of them
    page = pixels_of(whole)
    assert pixels_of(top).tobytes() == page.crop((0, 0, PAGE_SIZE[0], top.image_height)).tobytes()
    start = PAGE_SIZE[1] - bottom.image_height
    assert pixels_of(bottom).tobytes() == page.crop((0, start, *PAGE_SIZE)).tobytes()
    (result,) = document["pages"]
    # The stitched text has every line once, the overlap band's too, and no line a crop edge cut
    assert result["text"].splitlines() == EVERY_LINE
    # Every call is billed: the cut one and both halves
    assert result["usage"]["input_tokens"] == 1000 + 2000 + 3000
    assert result["usage"]["output_tokens"] == 10 + 20 + 30
    assert result["calls"] == 3 and result["split"] is True
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["input_tokens"] == 6000
    # and the page is complete
    assert result["truncated"] is False and document["pages_truncated"] == []
    assert document["pages_split"] == [1]
    completed = p.bus.of_type("document.completed")[0].data
    assert completed["pages_truncated"] == [] and completed["pages_split"] == [1]
    assert sum(r.get("PagesSplit", 0) for r in metrics) == 1
    assert all("PagesTruncated" not in r for r in metrics)


def test_the_halves_boxes_are_on_the_page_each_line_once():
    ocr = LinesOnAPage()
    _, document, _ = run(ocr, OcrTask.ADVANCED_RECOGNITION)
    words = document["pages"][0]["words"]
    assert [word["text"] for word in words] == EVERY_LINE
    for word, (_, top) in zip(words, LINES, strict=True):
        xs, ys = word["location"][0::2], word["location"][1::2]
        assert all(0 <= x <= PAGE_SIZE[0] for x in xs) and all(0 <= y <= PAGE_SIZE[1] for y in ys)
        # Where the line is on the page, whichever half read it
        assert (min(ys), max(ys)) == (top, top + LINE_HEIGHT)
        assert word["rotate_rect"][1] == top + LINE_HEIGHT / 2


def test_a_half_cut_again_is_kept_and_the_page_stays_truncated(capsys):
    ocr = LinesOnAPage(cut={1, 3})
    p, document, metrics = run(ocr, OcrTask.TEXT_RECOGNITION, capsys)
    # No further split: three calls
    assert len(ocr.calls) == 3
    (result,) = document["pages"]
    assert result["split"] is True and result["truncated"] is True and result["finish_reason"] == "length"
    assert result["calls"] == 3 and result["usage"]["input_tokens"] == 6000
    assert any("cut short again" in warning for warning in result["warnings"])
    assert document["pages_truncated"] == [1]
    assert p.bus.of_type("document.completed")[0].data["pages_truncated"] == [1]
    assert sum(r.get("PagesTruncated", 0) for r in metrics) == 1
    assert sum(r.get("PagesSplit", 0) for r in metrics) == 1


@pytest.mark.parametrize(
    "task",
    [
        OcrTask.TABLE_PARSING,
        OcrTask.KEY_INFORMATION_EXTRACTION,
        OcrTask.DOCUMENT_PARSING,
        OcrTask.FORMULA_RECOGNITION,
    ],
)
def test_a_task_whose_answer_cannot_be_stitched_falls_back_to_flag_and_says_why(task):
    ocr = LinesOnAPage()
    _, document, _ = run(ocr, task)
    assert len(ocr.calls) == 1
    (result,) = document["pages"]
    assert result["truncated"] is True and result["split"] is False and result["calls"] == 1
    assert document["pages_truncated"] == [1] and document["pages_split"] == []
    (warning,) = [w for w in result["warnings"] if "not read again in halves" in w]
    assert task.value in warning


def test_with_flag_a_cut_page_is_not_read_again():
    ocr = LinesOnAPage()
    _, document, _ = run(ocr, OcrTask.TEXT_RECOGNITION, truncation_policy=TruncationPolicy.FLAG)
    assert len(ocr.calls) == 1
    (result,) = document["pages"]
    assert result["truncated"] is True and result["split"] is False and result["calls"] == 1
    assert result["text"].splitlines() == EVERY_LINE[:5]
    assert document["pages_truncated"] == [1] and document["pages_split"] == []


def test_a_page_the_model_finished_is_read_once():
    ocr = LinesOnAPage(cut=set())
    _, document, _ = run(ocr, OcrTask.TEXT_RECOGNITION)
    assert len(ocr.calls) == 1
    assert document["pages"][0]["split"] is False and document["pages_split"] == []
