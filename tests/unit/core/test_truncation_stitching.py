"""Halving a prepared page and stitching what the two halves read (ocr_pipeline.truncation)."""

from __future__ import annotations

import io

import pytest
from ocr_pipeline.imaging import PreparationLimits, crop_rows, prepare_image
from ocr_pipeline.results import Word
from ocr_pipeline.tasks import OcrTask, TaskOptions
from ocr_pipeline.tokens import PixelBudget, smart_resize
from ocr_pipeline.truncation import plan_halves, stitch_text, stitch_words, why_not_stitchable
from PIL import Image

# --- text ------------------------------------------------------------------------------------


def test_the_overlap_bands_lines_are_kept_once():
    top = "alpha\nbeta\ngamma\ndelta"
    bottom = "gamma\ndelta\nepsilon\nzeta"
    assert stitch_text(top, bottom) == ("alpha\nbeta\ngamma\ndelta\nepsilon\nzeta", True)


def test_the_longest_run_wins_over_a_line_that_merely_repeats():
    # "Total" ends the top text and starts the bottom one, but the band is the three lines before it too.
    top = "Total\nitem 1\nitem 2\nTotal"
    bottom = "item 1\nitem 2\nTotal\nitem 3"
    assert stitch_text(top, bottom)[0] == "Total\nitem 1\nitem 2\nTotal\nitem 3"


def test_a_line_a_crop_edge_cut_through_is_dropped_the_other_half_has_it_whole():
    top = "one\ntwo\nthree\nfo#r (cut)"
    bottom = "tw= (cut)\nthree\nfour\nfive"
    assert stitch_text(top, bottom) == ("one\ntwo\nthree\nfour\nfive", True)


def test_lines_compare_with_their_spacing_collapsed():
    assert stitch_text("a\nb  c", "b c\nd") == ("a\nb  c\nd", True)


def test_texts_without_a_common_line_are_joined_and_say_so():
    assert stitch_text("a\nb", "c\nd") == ("a\nb\nc\nd", False)


def test_blank_lines_alone_are_not_an_overlap():
    assert stitch_text("a\n\n", "\n\nb")[1] is False


# --- boxes ------------------------------------------------------------------------------------


def box(text: str, top: float, bottom: float) -> Word:
    return Word(
        text=text, location=[0, top, 10, top, 10, bottom, 0, bottom], rotate_rect=[5, (top + bottom) / 2, 10, 0, 0]
    )


def test_boxes_of_the_band_are_kept_once_each_from_the_half_that_read_them_whole():
    seam = 100.0
    top = [box("a", 10, 20), box("b", 90, 98), box("c (cut)", 118, 120)]
    bottom = [box("b (cut)", 80, 82), box("b", 90, 98), box("c", 108, 120), box("d", 150, 160)]
    assert [w.text for w in stitch_words(top, bottom, seam)] == ["a", "b", "c", "d"]


# --- halves -----------------------------------------------------------------------------------


@pytest.mark.parametrize("patch", [28, 32])
def test_halves_are_cut_on_patch_boundaries_and_keep_the_scale(patch):
    budget = PixelBudget(patch=patch, min_pixels=patch * patch * 3, max_pixels=patch * patch * 8192)
    width, height = 40 * patch, 60 * patch
    plan = plan_halves(width, height, budget, PreparationLimits())
    assert plan is not None
    assert plan.top_end % patch == 0 and plan.bottom_start % patch == 0
    assert 0 < plan.bottom_start < plan.seam < plan.top_end < height
    for half_height in (plan.top_end, height - plan.bottom_start):
        # The vendor's resize leaves each half as it is
        assert smart_resize(half_height, width, budget) == (half_height, width)


def test_a_page_too_short_or_too_wide_to_halve_is_not_halved():
    budget = PixelBudget(patch=32)
    assert plan_halves(320, 96, budget, PreparationLimits()) is None
    # A 166:1 strip whose halves would be 250:1, over the vendor's 200:1
    assert plan_halves(32 * 1000, 32 * 6, budget, PreparationLimits()) is None


def test_a_cropped_half_maps_its_coordinates_back_to_the_original_page():
    # A page prepared at a scale other than 1 (scaled down to fit the budget)
    buffer = io.BytesIO()
    Image.new("L", (1000, 2000), 255).save(buffer, format="PNG")
    budget = PixelBudget(patch=32, min_pixels=3072, max_pixels=32 * 32 * 400)
    page = prepare_image(buffer.getvalue(), budget)
    assert page.mapping.scale_y < 1
    plan = plan_halves(page.width, page.height, budget, PreparationLimits())
    assert plan is not None
    bottom = crop_rows(page, plan.bottom_start, page.height, PreparationLimits())
    assert (bottom.width, bottom.height) == (page.width, page.height - plan.bottom_start)
    # A point of the half is the point of the page `bottom_start` rows lower
    assert bottom.mapping.to_original_point(7, 5) == page.mapping.to_original_point(7, 5 + plan.bottom_start)
    assert bottom.mapping.to_original_point(0, bottom.height)[1] == pytest.approx(2000)


@pytest.mark.parametrize(
    ("options", "stitchable"),
    [
        (TaskOptions(task=OcrTask.TEXT_RECOGNITION), True),
        (TaskOptions(task=OcrTask.ADVANCED_RECOGNITION), True),
        (TaskOptions(task=OcrTask.MULTI_LAN), True),
        (TaskOptions(task=OcrTask.TABLE_PARSING), False),
        (TaskOptions(task=OcrTask.KEY_INFORMATION_EXTRACTION), False),
        (TaskOptions(task=OcrTask.DOCUMENT_PARSING), False),
        (TaskOptions(task=OcrTask.FORMULA_RECOGNITION), False),
        (TaskOptions(prompt="Read the totals."), False),
    ],
)
def test_only_answers_made_of_lines_of_text_are_stitched(options, stitchable):
    assert (why_not_stitchable(options) is None) is stitchable
