"""Field validators: known good and bad numbers, opt-in through options, metadata and rules, and the result."""

from __future__ import annotations

import json

import pytest
from ocr_pipeline.errors import ConfigurationError, InvalidRequest
from ocr_pipeline.field_checks import (
    check_bank_card,
    check_cn_resident_id,
    check_date,
    luhn_valid,
    parse_validators,
    validate_fields,
)
from ocr_pipeline.pipeline.intake import IntakeDecision
from ocr_pipeline.pipeline.routing import choose_task, parse_routing_rules, task_options
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.tasks import OcrTask, TaskOptions

from tests.support.fakes import INPUT, RESULTS, FakeOcrService, Pipeline, text_png


def iso7064_mod11_2(digits: str) -> str:
    """The check character computed the standard's recursive way (not the weighted sum the module uses)."""
    p = 0
    for char in digits:
        p = ((p + int(char)) * 2) % 11
    value = (12 - p) % 11
    return "X" if value == 10 else str(value)


def resident_id(region: str, birth: str, sequence: str) -> str:
    first17 = region + birth + sequence
    return first17 + iso7064_mod11_2(first17)


# --- resident identity numbers (GB 11643-1999) ---------------------------------------------


def test_the_published_example_of_gb_11643_is_accepted():
    # Given the example the standard itself gives (check value 10, written X)
    # When it is checked
    # Then it passes, in either case of the X
    assert check_cn_resident_id("11010519491231002X") is None
    assert check_cn_resident_id("11010519491231002x") is None


@pytest.mark.parametrize(
    ("region", "birth", "sequence"),
    [("440305", "19850718", "123"), ("310101", "20000229", "456"), ("510107", "19991231", "001")],
)
def test_numbers_with_an_independently_computed_check_digit_are_accepted(region, birth, sequence):
    # Given numbers whose check digit the test computes with ISO 7064's recursive method
    number = resident_id(region, birth, sequence)
    # When checked / Then valid
    assert check_cn_resident_id(number) is None


def test_every_other_check_character_is_rejected():
    # Given a valid number, and the ten check characters it could wrongly end with
    good = resident_id("440305", "19850718", "123")
    wrong = [c for c in "0123456789X" if c != good[-1]]
    # When the last character is replaced / Then the check digit is reported wrong each time
    reasons = [check_cn_resident_id(good[:-1] + c) for c in wrong]
    assert len(wrong) == 10 and all(r is not None and "check character" in r for r in reasons)


def test_a_single_misread_digit_is_caught():
    # Given a valid number in which the model misread one digit (the vendor's concern)
    good = resident_id("310101", "19770412", "832")
    misread = good[:9] + str((int(good[9]) + 1) % 10) + good[10:]
    # When checked / Then it is invalid
    assert check_cn_resident_id(good) is None
    assert check_cn_resident_id(misread) is not None


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("4107281991****5515", "masked"),  # the vendor's own extraction example
        ("11010519491231002", "17 characters"),
        ("110105194912310", "first-generation"),
        ("1101051949123100AX", "17 digits"),
        (resident_id("110105", "19490230", "002"), "birth date"),  # 30 February
    ],
)
def test_malformed_resident_ids_are_rejected_with_a_reason(value, reason_part):
    reason = check_cn_resident_id(value)
    assert reason is not None and reason_part in reason


# --- bank cards (Luhn) ------------------------------------------------------------------


def test_the_luhn_algorithm_accepts_and_rejects_the_textbook_number():
    # Given the textbook Luhn example 79927398713 and the same number with its last digit changed
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


@pytest.mark.parametrize("card", ["4111111111111111", "4111 1111 1111 1111", "5555-5555-5555-4444", "6011111111111117"])
def test_public_test_card_numbers_are_accepted(card):
    # Given well-known public test card numbers, printed with or without groups
    # When checked / Then valid
    assert check_bank_card(card) is None


@pytest.mark.parametrize(
    ("card", "reason_part"),
    [
        ("4111111111111112", "Luhn"),
        ("4111111111111121", "Luhn"),  # two adjacent digits swapped
        ("4111 1111 1111 ****", "masked"),
        ("41111111111", "11 digits"),
        ("4111O11111111111", "digits"),  # a letter O read for a zero
    ],
)
def test_bad_card_numbers_are_rejected(card, reason_part):
    reason = check_bank_card(card)
    assert reason is not None and reason_part in reason


# --- dates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["2024-11-14", "2024-11-14 11:46", "2024/2/29", "2024.11.14", "2024年11月14日", "20241114", "14/11/2024"]
)
def test_real_dates_in_common_formats_are_accepted(value):
    assert check_date(value) is None


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("2023-02-29", "not a real date"),
        ("2024年13月01日", "not a real date"),
        ("1850-01-01", "between 1900"),
        ("32/13/2024", "not a real date"),
        ("next Tuesday", "format"),
        ("2024-1?-14", "unreadable"),
    ],
)
def test_impossible_or_implausible_dates_are_rejected(value, reason_part):
    reason = check_date(value)
    assert reason is not None and reason_part in reason


# --- paths and opting in --------------------------------------------------------------------


def test_paths_reach_nested_fields_and_every_element_of_a_list():
    # Given an extraction result with a nested object and a list
    kv = {
        "Passenger": {"ID Card Number": "11010519491231002X"},
        "Cards": [{"Number": "4111111111111111"}, {"Number": "4111111111111112"}, {"Number": None}],
    }
    # When the validators name them
    checks = validate_fields(kv, {"Passenger.ID Card Number": "cn_resident_id", "Cards.Number": "bank_card"})
    # Then each value is checked once, with list indices in its path, and null counts as missing
    assert [(c.path, c.valid) for c in checks] == [
        ("Passenger.ID Card Number", True),
        ("Cards[0].Number", True),
        ("Cards[1].Number", False),
        ("Cards[2].Number", None),
    ]


def test_a_field_the_result_lacks_is_reported_missing_not_invalid():
    checks = validate_fields({"Total": "12"}, {"Date": "date"})
    assert [(c.path, c.valid, c.reason) for c in checks] == [("Date", None, "not in the result")]


def test_validators_are_parsed_from_pairs_or_json():
    assert parse_validators("id=cn_resident_id, card = bank_card") == {"id": "cn_resident_id", "card": "bank_card"}
    assert parse_validators('{"身份证号": "cn_resident_id"}') == {"身份证号": "cn_resident_id"}
    with pytest.raises(ValueError):
        parse_validators("id")


def test_task_options_refuse_unknown_validators_and_tasks_without_fields():
    with pytest.raises(InvalidRequest, match="unknown validator"):
        TaskOptions.build(task=OcrTask.KEY_INFORMATION_EXTRACTION, validators={"id": "luhn"})
    with pytest.raises(InvalidRequest, match="validators apply"):
        TaskOptions.build(task=OcrTask.TEXT_RECOGNITION, validators={"id": "cn_resident_id"})


def test_options_without_validators_serialize_as_before_so_job_ids_do_not_change():
    assert "validators" not in TaskOptions().model_dump(mode="json")
    with_validators = TaskOptions.build(task=OcrTask.KEY_INFORMATION_EXTRACTION, validators={"d": "date"})
    assert with_validators.model_dump(mode="json")["validators"] == {"d": "date"}
    assert TaskOptions.model_validate_json(with_validators.model_dump_json()) == with_validators


def test_metadata_validators_win_over_the_rule_and_the_rule_applies_otherwise():
    # Given a rule that extracts an ID and validates it
    rules = parse_routing_rules(
        '[{"prefix": "ids/", "schema": {"id": "", "card": ""}, "validators": {"id": "cn_resident_id"}}]'
    )
    # When an object under it has no ocr-validate, and another has one
    plain = task_options(choose_task("ids/a.png", {}, rules), None)
    overridden = task_options(choose_task("ids/b.png", {"ocr-validate": "card=bank_card"}, rules), None)
    # Then the first gets the rule's validators, the second only its own
    assert plain.validators == {"id": "cn_resident_id"}
    assert overridden.validators == {"card": "bank_card"}


def test_a_rule_naming_an_unknown_validator_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        parse_routing_rules('[{"prefix": "ids/", "validators": {"id": "isbn"}}]')


# --- through the pipeline -----------------------------------------------------------------

EXTRACTED = {
    "Passenger": "Du Xiaoguang",
    "ID Card Number": "110105194912310021",  # the published example with its last character misread
    "Card": "4111 1111 1111 1111",
    "Date": "2024-11-14 11:46",
}


def run_extraction(metadata: dict[str, str]) -> tuple[Pipeline, dict]:
    p = Pipeline(ocr=FakeOcrService(text="```json\n" + json.dumps(EXTRACTED) + "\n```"))
    schema = json.dumps({key: "" for key in EXTRACTED})
    p.store.put(
        INPUT, "tickets/t.png", text_png(), content_type="image/png", metadata={"ocr-schema": schema, **metadata}
    )
    outcome = p.upload.accept(UploadedObject(bucket=INPUT, key="tickets/t.png"))
    assert outcome.decision is IntakeDecision.ENQUEUED
    assert p.spec_of(p.queue.bodies[0]).options.validators == parse_validators(metadata.get("ocr-validate", ""))
    p.drain()
    (completed,) = p.bus.of_type("document.completed")
    document = json.loads(p.store.get_text(RESULTS, completed.data["result_uri"].split(f"{RESULTS}/", 1)[1]))
    return p, document


def test_invalid_values_are_flagged_in_the_result_and_never_changed():
    # Given an upload that asks for three checks, and a model reply with one misread ID
    _, document = run_extraction({"ocr-validate": "ID Card Number=cn_resident_id,Card=bank_card,Date=date"})
    # When the document completes
    page = document["pages"][0]
    # Then the page lists every check, the ID is flagged, and the value is the model's own
    assert [(c["path"], c["valid"]) for c in page["validation"]] == [
        ("ID Card Number", False),
        ("Card", True),
        ("Date", True),
    ]
    assert page["kv"]["ID Card Number"] == "110105194912310021"
    summary = document["validation"]
    assert (summary["checked"], summary["invalid"], summary["missing"]) == (3, 1, 0)
    assert [(f["page"], f["path"]) for f in summary["invalid_fields"]] == [(1, "ID Card Number")]


def test_without_validators_the_result_has_no_validation():
    _, document = run_extraction({})
    assert document["validation"] is None and document["pages"][0]["validation"] is None


def test_the_completed_event_carries_the_validation_summary():
    p, _ = run_extraction({"ocr-validate": "ID Card Number=cn_resident_id"})
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["validation"]["invalid"] == 1
    assert completed.data["validation"]["invalid_fields"][0]["path"] == "ID Card Number"
