"""The emulator and the client each carry their own copy of the vendor's facts; here they must agree.

When a test here fails, one of the two misread the documentation (/work/shared/reference/seeds/):
the documentation decides which. The emulator imports nothing of the client's catalog, prompts,
token formula or limits, so it cannot share a mistake made there.
"""

from __future__ import annotations

import ast
import io
import itertools
from pathlib import Path

import pytest
from ocr_devkit.emulator import vendor
from ocr_devkit.emulator.protocol import answer, parse_compatible, parse_native
from ocr_devkit.estimate import estimate
from ocr_pipeline import catalog, task_prompts, tasks, tokens
from ocr_pipeline.adapters.dashscope import WireProtocol
from ocr_pipeline.adapters.dashscope.wire import build_body
from ocr_pipeline.catalog import Region, model_spec
from ocr_pipeline.imaging import prepare_image
from ocr_pipeline.ocr_service import OcrCall
from ocr_pipeline.recognition import budget_for
from ocr_pipeline.tasks import OcrTask, TaskOptions
from PIL import Image

EMULATOR = Path(vendor.__file__).parent
# The vendor's compatible-mode extraction example's schema.
RIDE_SCHEMA = {
    "Ride Date": "Corresponds to the ride date and time in the image, in the format YYYY-MM-DD, e.g. 2025-03-05",
    "Invoice Code": "Extract the invoice code from the image, usually a combination of numbers or letters",
    "Invoice Number": "Extract the number from the invoice, usually composed of only digits.",
}


def test_the_emulator_imports_nothing_from_the_client_package():
    imported = set()
    for path in EMULATOR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                imported.update((path.name, alias.name) for alias in node.names)
    assert [(f, m) for f, m in imported if m.split(".")[0] == "ocr_pipeline"] == []


@pytest.mark.parametrize("name", sorted({*catalog.MODELS, *vendor.MODELS, *catalog.ALIASES, *vendor.ALIASES}))
def test_both_know_the_same_models_alike(name):
    theirs = vendor.find_model(name)
    ours = model_spec(name)
    assert theirs is not None
    assert (ours.name, ours.patch, ours.max_output_tokens, ours.supports_builtin_tasks) == (
        theirs.name,
        theirs.patch,
        theirs.max_output_tokens,
        theirs.builtin_tasks,
    )


def test_paths_defaults_and_limits_agree():
    assert (catalog.NATIVE_PATH, catalog.COMPATIBLE_PATH) == (vendor.NATIVE_PATH, vendor.COMPATIBLE_PATH)
    assert (catalog.DEFAULT_MIN_PIXELS, catalog.DEFAULT_MAX_PIXELS) == (
        vendor.DEFAULT_MIN_PIXELS,
        vendor.DEFAULT_MAX_PIXELS,
    )
    assert tasks.MAX_SCHEMA_DEPTH == vendor.MAX_SCHEMA_DEPTH
    assert [t.value for t in OcrTask] == [t.value for t in vendor.Task]
    nested = {"a": {"b": [{"c": {"d": ""}}]}}
    assert tasks.schema_depth(nested) == vendor.schema_depth(nested) == 4


@pytest.mark.parametrize("task", list(OcrTask))
def test_each_tasks_prompt_is_the_same_in_both_copies(task):
    assert task_prompts.TASK_PROMPTS[task] == vendor.TASK_PROMPTS[vendor.Task(task.value)]


@pytest.mark.parametrize("schema", [None, RIDE_SCHEMA, {"請求書番号": "", "明細": [{"品名": "", "金額": ""}]}])
def test_the_extraction_prompt_is_the_same_in_both_copies(schema):
    assert task_prompts.key_information_prompt(schema) == vendor.extraction_prompt(schema)


SIZES = [(11, 11), (12, 2000), (1000, 1000), (689, 487), (3508, 2480), (4000, 3000), (50, 9999), (7000, 35)]
BUDGETS = [(32, 3072, 8388608), (28, 3136, 6422528), (28, 3072, 8388608), (32, 4096, 1_000_000)]


@pytest.mark.parametrize(("size", "budget"), list(itertools.product(SIZES, BUDGETS)))
def test_the_token_formula_is_the_same_in_both_copies(size, budget):
    height, width = size
    patch, low, high = budget
    ours = tokens.PixelBudget(patch=patch, min_pixels=low, max_pixels=high)
    theirs = vendor.Budget(patch=patch, min_pixels=low, max_pixels=high)
    assert tokens.smart_resize(height, width, ours) == vendor.smart_resize(height, width, theirs)
    assert tokens.image_tokens(height, width, ours) == vendor.image_tokens(height, width, theirs)


def test_the_documented_1000_px_square_costs_the_same_on_both_sides():
    # 31 x 31 patches of 32 px + 2, 36 x 36 patches of 28 px + 2
    assert vendor.image_tokens(1000, 1000, vendor.Budget(patch=32)) == 963
    assert vendor.image_tokens(1000, 1000, vendor.Budget(patch=28, min_pixels=3136, max_pixels=6422528)) == 1298


@pytest.mark.parametrize("model", ["qwen-vl-ocr-2025-08-28", "qwen-vl-ocr-2025-11-20"])
@pytest.mark.parametrize("protocol", [WireProtocol.DASHSCOPE, WireProtocol.OPENAI])
def test_estimate_agrees_with_the_usage_the_emulator_returns(model, protocol, tmp_path):
    # Given an A4 scan at 300 dpi, estimated for the model
    path = tmp_path / "a4.png"
    Image.new("L", (2480, 3508), 255).save(path, "PNG")
    (estimated,) = estimate([path], TaskOptions(), [model], [Region.CN]).models
    # When the pipeline prepares it and sends it, and the emulator reads the request and answers
    spec = model_spec(model)
    prepared = prepare_image(path.read_bytes(), budget_for(spec, TaskOptions()))
    call = OcrCall(
        image_url=prepared.data_url,
        options=TaskOptions(),
        model=spec,
        image_width=prepared.width,
        image_height=prepared.height,
    )
    body = build_body(protocol, call)
    request = parse_native(body) if protocol is WireProtocol.DASHSCOPE else parse_compatible(body)
    reply = answer(request, [])
    # Then the emulator bills the image tokens the estimate promised
    assert reply.image_tokens == estimated.image_tokens


@pytest.mark.parametrize("model", sorted(catalog.MODELS))
@pytest.mark.parametrize("protocol", [WireProtocol.DASHSCOPE, WireProtocol.OPENAI])
def test_the_emulator_takes_the_max_tokens_we_send_and_refuses_a_raise_it_was_not_given(model, protocol):
    from ocr_devkit.emulator.protocol import ApiError

    spec = model_spec(model)
    image = prepare_image(_white_png(), budget_for(spec, TaskOptions()))
    call = OcrCall(
        image_url=image.data_url, options=TaskOptions(), model=spec, image_width=image.width, image_height=image.height
    )
    parse = parse_native if protocol is WireProtocol.DASHSCOPE else parse_compatible
    # The default, the model's documented maximum, is what the emulator holds for the model
    assert parse(build_body(protocol, call)).max_tokens == spec.max_output_tokens
    # A raised limit is per account; the emulator is an account without one, as docs/limits.md says
    with pytest.raises(ApiError) as refused:
        parse(build_body(protocol, call, max_tokens=spec.max_output_tokens + 1))
    assert refused.value.code == "InvalidParameter"


def _white_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buffer, "PNG")
    return buffer.getvalue()
