"""min_pixels and max_pixels default to the model's own, by its patch size.

The vendor's documented defaults (32*32*3, 32*32*8192) are the 32-px models' values; the 28-px
generation (-2025-08-28, -2025-04-13, -2024-10-28) is sized 28*28*4 to 28*28*8192, as the vendor's
SDK sizes it. A bound the job names wins over the model's.
"""

from __future__ import annotations

import json

import pytest
from ocr_devkit.estimate import estimate
from ocr_pipeline.adapters.dashscope import WireProtocol
from ocr_pipeline.adapters.dashscope.wire import build_body
from ocr_pipeline.catalog import Region, model_spec
from ocr_pipeline.recognition import budget_for
from ocr_pipeline.tasks import OcrTask, TaskOptions
from ocr_pipeline.tokens import PixelBudget, image_tokens
from PIL import Image

from tests.unit.adapters.test_client import make_call
from tests.unit.devkit.test_estimate import documented_image_tokens

A4_300_DPI = (2480, 3508)  # width, height


@pytest.mark.parametrize(
    ("model", "bounds"),
    [
        ("qwen-vl-ocr", (32 * 32 * 3, 32 * 32 * 8192)),
        ("qwen-vl-ocr-latest", (32 * 32 * 3, 32 * 32 * 8192)),
        ("qwen-vl-ocr-2025-11-20", (3072, 8388608)),
        ("qwen-vl-ocr-2025-08-28", (28 * 28 * 4, 28 * 28 * 8192)),
        ("qwen-vl-ocr-0413", (3136, 6422528)),
        ("qwen-vl-ocr-2024-10-28", (3136, 6422528)),
    ],
)
def test_each_model_is_sent_its_own_pixel_bounds_in_both_protocols(model, bounds):
    # Given options that name no pixel bounds
    call = make_call(TaskOptions(task=OcrTask.TEXT_RECOGNITION), model)
    # When the request bodies are built
    native = build_body(WireProtocol.DASHSCOPE, call)["input"]["messages"][0]["content"][0]
    compatible = build_body(WireProtocol.OPENAI, call)["messages"][0]["content"][0]
    # Then both carry the model's bounds
    assert (native["min_pixels"], native["max_pixels"]) == bounds
    assert (compatible["min_pixels"], compatible["max_pixels"]) == bounds


def test_bounds_the_job_names_win_over_the_models():
    spec = model_spec("qwen-vl-ocr-2025-08-28")
    assert budget_for(spec, TaskOptions(min_pixels=10_000, max_pixels=2_000_000)) == PixelBudget(
        patch=28, min_pixels=10_000, max_pixels=2_000_000
    )
    # A floor named alone above the model's cap raises the cap; a cap named alone below the floor lowers it.
    assert budget_for(spec, TaskOptions(min_pixels=7_000_000)).max_pixels == 7_000_000
    assert budget_for(spec, TaskOptions(max_pixels=1_000)).min_pixels == 1_000


def test_options_that_leave_the_bounds_to_the_model_serialize_without_them():
    # Job ids hash the options: bounds left to the model are absent, not null.
    assert "min_pixels" not in TaskOptions().model_dump(mode="json")
    assert "max_pixels" not in json.loads(TaskOptions(task=OcrTask.TABLE_PARSING).model_dump_json())
    assert TaskOptions(min_pixels=4096).model_dump()["min_pixels"] == 4096


def test_options_stored_with_the_old_32_px_numbers_keep_them():
    # Given options written before the bounds became the model's (they hold the 32-px numbers)
    stored = TaskOptions.model_validate({"task": "text_recognition", "min_pixels": 3072, "max_pixels": 8388608})
    # Then a page of that job is still sent what the job was admitted with
    assert budget_for(model_spec("qwen-vl-ocr-2025-08-28"), stored) == PixelBudget(
        patch=28, min_pixels=3072, max_pixels=8388608
    )


def test_an_a4_page_at_300_dpi_costs_a_28_px_model_about_a_quarter_fewer_image_tokens():
    width, height = A4_300_DPI
    spec = model_spec("qwen-vl-ocr-2025-08-28")
    with_28_px_defaults = image_tokens(height, width, budget_for(spec, TaskOptions()))
    with_32_px_values = image_tokens(height, width, PixelBudget(patch=28, min_pixels=3072, max_pixels=8388608))
    assert with_28_px_defaults == documented_image_tokens(height, width, 28, 3136, 6422528) == 8134
    assert with_32_px_values == 10580  # 30 % more for the same page
    # The 28-px defaults give the same token count as a 32-px model on the same page.
    assert with_28_px_defaults == image_tokens(
        height, width, budget_for(model_spec("qwen-vl-ocr-2025-11-20"), TaskOptions())
    )


def test_estimate_uses_the_models_own_defaults(tmp_path):
    # Given an A4 scan at 300 dpi
    path = tmp_path / "a4.png"
    Image.new("L", A4_300_DPI, 255).save(path, "PNG")
    # When it is estimated for a 28-px and a 32-px model
    report = estimate([path], TaskOptions(), ["qwen-vl-ocr-2025-08-28", "qwen-vl-ocr-2025-11-20"], [Region.CN])
    old, new = report.models
    # Then each model is estimated at its own bounds, which the report names
    assert (old.min_pixels, old.max_pixels) == (3136, 6422528)
    assert (new.min_pixels, new.max_pixels) == (3072, 8388608)
    assert report.min_pixels is None and report.max_pixels is None
    assert old.image_tokens == 8134 and old.files[0].sent_sizes == [(2128, 2996)]
