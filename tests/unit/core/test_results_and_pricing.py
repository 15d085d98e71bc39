"""Parsing quirks of model output, and cost arithmetic from the price table."""

from decimal import Decimal

import pytest
from ocr_pipeline.errors import InvalidRequest
from ocr_pipeline.pricing import PriceNotFound, default_price_table, format_money
from ocr_pipeline.results import parse_model_output, split_fence
from ocr_pipeline.tasks import OcrTask, TaskOptions
from ocr_pipeline.usage import Usage


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"a": 1}\n```', ("json", '{"a": 1}')),
        ('```json\n[{"x": 1}]```', ("json", '[{"x": 1}]')),  # closing fence glued to the body
        ("```html\n<table><tr><td>1</td></tr>", ("html", "<table><tr><td>1</td></tr>")),  # cut off: no closing fence
        ("Here you go:\n```latex\n$x$\n```\nDone.", ("latex", "$x$")),
        ("plain words", (None, "plain words")),
    ],
)
def test_fences_are_split_whatever_their_shape(text, expected):
    assert split_fence(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"Invoice Number": "123", "Total": "9.50",}\n```',  # trailing comma
        "```json\n{'Invoice Number': '123', 'Total': '9.50'}\n```",  # Python-style quotes
        '{"Invoice Number": "123", "Total": "9.50"}',  # no fence
    ],
)
def test_extraction_tolerates_the_json_quirks_models_write(text):
    result = parse_model_output(OcrTask.KEY_INFORMATION_EXTRACTION, text)
    assert result.kv == {"Invoice Number": "123", "Total": "9.50"}
    assert result.parse_warnings == []


def test_unreadable_extraction_keeps_the_raw_text_and_says_so():
    result = parse_model_output(OcrTask.KEY_INFORMATION_EXTRACTION, "I could not find an invoice.")
    assert result.kv is None
    assert result.text == "I could not find an invoice."
    assert result.parse_warnings == ["extraction reply is not JSON"]


def test_compatible_advanced_recognition_reads_boxes_written_in_the_text():
    text = '```json\n[{"text": "Total", "rotate_rect": [50, 20, 80, 20, 0]}]\n```'
    result = parse_model_output(OcrTask.ADVANCED_RECOGNITION, text)
    assert result.words is not None and result.words[0].text == "Total"
    assert result.words[0].location == [10.0, 10.0, 90.0, 10.0, 90.0, 30.0, 10.0, 30.0]


def test_schema_deeper_than_three_levels_is_refused_with_a_stable_code():
    deep = {"a": {"b": {"c": {"d": ""}}}}
    with pytest.raises(InvalidRequest) as caught:
        TaskOptions.build(task=OcrTask.KEY_INFORMATION_EXTRACTION, result_schema=deep)
    assert caught.value.code == "request.invalid"
    # three levels, with a list as the template of its elements, is fine
    TaskOptions.build(task=OcrTask.KEY_INFORMATION_EXTRACTION, result_schema={"a": {"b": [{"c": ""}]}})


@pytest.mark.parametrize(
    "fields",
    [
        {"task": OcrTask.TABLE_PARSING, "result_schema": {"a": ""}},  # schema only for extraction
        {"task": OcrTask.TABLE_PARSING, "prompt": "hi"},  # a task and a prompt would drop one of them
        {"min_pixels": 10_000, "max_pixels": 5_000},
    ],
)
def test_inconsistent_options_are_refused(fields):
    with pytest.raises(InvalidRequest):
        TaskOptions.build(**fields)


# --- cost ---------------------------------------------------------------------------------


def test_cost_is_the_price_table_arithmetic_in_decimal():
    table = default_price_table()
    usage = Usage(input_tokens=606, output_tokens=159, image_tokens=427)
    cost = table.cost(usage, "qwen-vl-ocr-2025-11-20", "intl")
    # 606 x 0.07 + 159 x 0.16 = 42.42 + 25.44 = 67.86 per million tokens
    assert cost.amount == Decimal("0.00006786")
    assert cost.currency == "USD"
    assert cost.model_dump(mode="json")["amount"] == "0.00006786"


def test_aliases_and_regions_pick_their_own_prices():
    table = default_price_table()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, image_tokens=0)
    assert table.cost(usage, "qwen-vl-ocr-1120", "cn").amount == Decimal("0.115")  # 0.043 + 0.072
    assert table.cost(usage, "qwen-vl-ocr", "intl").amount == Decimal("1.44")
    assert table.cost(usage, "qwen-vl-ocr", "cn", batch=True).amount == Decimal("0.717")  # half of 1.434


def test_a_model_the_table_does_not_list_is_never_priced_by_guess():
    with pytest.raises(PriceNotFound) as caught:
        default_price_table().price_for("my-selfhosted-qwen", "intl")
    assert caught.value.code == "config.price_not_found"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0.00006786"), "0.00006786"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("1.4400"), "1.44"),
        (Decimal(0), "0"),
    ],
)
def test_money_is_written_without_exponents(value, text):
    assert format_money(value) == text


def test_corners_follow_the_vendor_angle_convention_in_reading_order():
    # The vendor's own example: "Audience" at x 52-250, y 54-106 is [150, 80, 49, 197, -89]
    from ocr_pipeline.results import corners_of_rotate_rect

    corners = corners_of_rotate_rect([150, 80, 49, 197, -89])
    tl, tr, br, bl = (corners[i : i + 2] for i in range(0, 8, 2))
    assert tl[0] < tr[0] and bl[0] < br[0]  # left corners are left
    assert tl[1] < bl[1] and tr[1] < br[1]  # top corners are above
    assert abs(tl[0] - 52) < 4 and abs(tl[1] - 56) < 4 and abs(br[0] - 249) < 4 and abs(br[1] - 104) < 4
