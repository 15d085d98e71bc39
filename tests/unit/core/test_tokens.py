"""The documented image-token formula, checked against figures worked out by hand."""

import pytest
from ocr_pipeline.catalog import model_spec
from ocr_pipeline.tokens import PixelBudget, image_tokens, smart_resize

DEFAULT_32 = PixelBudget(patch=32)


@pytest.mark.parametrize(
    ("height", "width", "budget", "expected_dims", "expected_tokens"),
    [
        # within budget: round each side to the patch; 31*31 patches + 2 markers
        (1000, 1000, DEFAULT_32, (992, 992), 31 * 31 + 2),
        # the older snapshots count 28x28 px per token: 36*36 patches
        (1000, 1000, PixelBudget(patch=28), (1008, 1008), 36 * 36 + 2),
        # ... and 1008*1008 > 28*28*1280, so a smaller budget floors to 35 patches a side
        (1000, 1000, PixelBudget(patch=28, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 1280), (980, 980), 35 * 35 + 2),
        # over max_pixels (8,388,608): beta = sqrt(20e6 / 8388608); floors give 101 and 80 patches
        (5000, 4000, DEFAULT_32, (3232, 2560), 101 * 80 + 2),
        # under min_pixels (3072): beta = sqrt(3072 / 1600); ceils give 2 and 2 patches
        (40, 40, DEFAULT_32, (64, 64), 2 * 2 + 2),
        # a tall strip: 2340/32 = 73.125 -> 73 patches; 200/32 = 6.25 -> 6
        (2340, 200, DEFAULT_32, (2336, 192), 73 * 6 + 2),
    ],
)
def test_smart_resize_and_tokens_follow_the_documented_formula(height, width, budget, expected_dims, expected_tokens):
    # Given an image size and a pixel budget / When we apply the vendor's rule
    dims = smart_resize(height, width, budget)
    tokens = image_tokens(height, width, budget)
    # Then the scaled size and token count are the hand-computed ones
    assert dims == expected_dims
    assert tokens == expected_tokens


def test_rounding_is_python_round_like_the_vendor_sample():
    # 48 / 32 = 1.5 rounds to 2 (even) and 80 / 32 = 2.5 rounds to 2 (even), as Python's round() does
    assert smart_resize(48 * 100, 80 * 100, PixelBudget(patch=32, max_pixels=10**9)) == (4800, 8000)
    assert smart_resize(48, 80, PixelBudget(patch=32, min_pixels=1)) == (64, 64)


def test_result_is_a_fixed_point_so_the_model_resize_is_a_no_op():
    # Given any size resized by the rule / When the rule runs again on the result / Then nothing changes
    for height, width in [(3024, 4032), (1754, 1240), (120, 3900), (11, 2000), (7000, 7000)]:
        once = smart_resize(height, width, DEFAULT_32)
        assert smart_resize(*once, DEFAULT_32) == once


@pytest.mark.parametrize(
    ("model", "patch"),
    [
        ("qwen-vl-ocr", 32),
        ("qwen-vl-ocr-latest", 32),
        ("qwen-vl-ocr-2025-11-20", 32),
        ("qwen-vl-ocr-1120", 32),
        ("qwen-vl-ocr-2025-08-28", 28),
        ("qwen-vl-ocr-0413", 28),
        ("qwen-vl-ocr-2024-10-28", 28),
    ],
)
def test_each_model_counts_the_documented_pixels_per_token(model, patch):
    assert model_spec(model).patch == patch
