"""Checks of extracted field values, as the vendor advises for critical fields. Pure functions.

The model can misread a digit, so a field whose format carries redundancy (a check digit, a
calendar) can be checked after extraction. A check only flags: the value in the result stays
exactly what the model returned, because a "corrected" ID or card number would be a guess.

A field opts in by naming its path in the extraction result and a validator
(`TaskOptions.validators`, e.g. {"ID Card Number": "cn_resident_id"}). A path is the keys from the
top of the result joined by "."; where the result holds a list, the rest of the path applies to
every element (as a result_schema's list is a template for each element) and the checks report
the element's index, e.g. `passengers[1].id`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict

# Years a document date may fall in: a wider window is no check at all, a narrower one would
# flag real birth dates and expiry dates.
PLAUSIBLE_YEARS = range(1900, 2101)

# What the model writes for a character it cannot read ("?", as its prompt asks) or one a
# document prints masked ("4107281991****5515" in the vendor's own example).
_UNREADABLE = frozenset("?*＊？")
# Card numbers are printed in groups; the grouping is layout, not part of the number.
_CARD_SEPARATORS = re.compile(r"[\s\-]")

# GB 11643-1999: weight of position i (0-based, of the first 17) is 2^(17 - i) mod 11.
_RESIDENT_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_RESIDENT_ID_CHECK = "10X98765432"  # indexed by (weighted sum mod 11)


def resident_id_check_character(first17: str) -> str:
    """The 18th character of a PRC resident identity number (ISO 7064 MOD 11-2; 10 is written X)."""
    total = sum(int(d) * w for d, w in zip(first17, _RESIDENT_ID_WEIGHTS, strict=True))
    return _RESIDENT_ID_CHECK[total % 11]


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of digits, check digit last."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def check_cn_resident_id(value: str) -> str | None:
    """None if `value` is a well-formed 18-character resident identity number, else why not."""
    text = value.strip()
    if _UNREADABLE & set(text):
        return "contains masked or unreadable characters"
    if len(text) == 15 and text.isdigit():
        return "a 15-digit first-generation number has no check digit to verify"
    if len(text) != 18:
        return f"has {len(text)} characters, not 18"
    first17, last = text[:17], text[17].upper()
    if not (first17.isascii() and first17.isdigit()) or not (last.isdigit() or last == "X"):
        return "must be 17 digits followed by a digit or X"
    if _real_date(int(first17[6:10]), int(first17[10:12]), int(first17[12:14])) is None:
        return (
            f"the birth date {first17[6:14]} is not a real date between {PLAUSIBLE_YEARS[0]} and {PLAUSIBLE_YEARS[-1]}"
        )
    expected = resident_id_check_character(first17)
    if last != expected:
        return f"check character is {last}, the first 17 digits give {expected}"
    return None


def check_bank_card(value: str) -> str | None:
    """None if `value` is 12 to 19 digits (spaces and hyphens ignored) passing the Luhn check."""
    text = value.strip()
    if _UNREADABLE & set(text):
        return "contains masked or unreadable characters"
    digits = _CARD_SEPARATORS.sub("", text)
    if not (digits.isascii() and digits.isdigit()):
        return "must be digits (spaces and hyphens allowed between them)"
    if not 12 <= len(digits) <= 19:
        return f"has {len(digits)} digits; card numbers have 12 to 19"
    if not luhn_valid(digits):
        return "fails the Luhn check"
    return None


_YEAR_FIRST = re.compile(r"(?P<y>\d{4})\s*[-/.年]\s*(?P<m>\d{1,2})\s*[-/.月]\s*(?P<d>\d{1,2})(?:\s*日)?")
_COMPACT = re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})")
_YEAR_LAST = re.compile(r"(?P<a>\d{1,2})\s*[-/.]\s*(?P<b>\d{1,2})\s*[-/.]\s*(?P<y>\d{4})")
# An optional time of day after the date: "2024-11-14 11:46", "2024-11-14T11:46:05".
_TIME = re.compile(r"(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?")


def check_date(value: str) -> str | None:
    """None if `value` is a real calendar date in a plausible year, else why not.

    Accepted: year first (2024-11-14, 2024/11/14, 2024.11.14, 2024年11月14日, 20241114) and
    year last (14/11/2024 or 11/14/2024: either reading will do, the order cannot be told),
    optionally followed by a time of day.
    """
    text = value.strip()
    if _UNREADABLE & set(text):
        return "contains masked or unreadable characters"
    for pattern in (_YEAR_FIRST, _COMPACT):
        match = pattern.match(text)
        if match and _TIME.fullmatch(text[match.end() :]):
            y, m, d = int(match["y"]), int(match["m"]), int(match["d"])
            if _real_date(y, m, d) is None:
                return (
                    f"{y:04d}-{m:02d}-{d:02d} is not a real date between {PLAUSIBLE_YEARS[0]} and {PLAUSIBLE_YEARS[-1]}"
                )
            return None
    match = _YEAR_LAST.match(text)
    if match and _TIME.fullmatch(text[match.end() :]):
        y, a, b = int(match["y"]), int(match["a"]), int(match["b"])
        if _real_date(y, b, a) is None and _real_date(y, a, b) is None:
            return f"{text} is not a real date (day/month or month/day) between {PLAUSIBLE_YEARS[0]} and {PLAUSIBLE_YEARS[-1]}"
        return None
    return "is not a date in a format we read (e.g. 2024-11-14, 2024年11月14日, 14/11/2024)"


def _real_date(year: int, month: int, day: int) -> date | None:
    if year not in PLAUSIBLE_YEARS:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


VALIDATORS: dict[str, Callable[[str], str | None]] = {
    "cn_resident_id": check_cn_resident_id,
    "bank_card": check_bank_card,
    "date": check_date,
}


class FieldCheck(BaseModel):
    """One checked value. `valid` is None when there was nothing to check (field absent or null)."""

    model_config = ConfigDict(frozen=True)

    path: str
    validator: str
    valid: bool | None
    reason: str | None = None


def check_value(value: Any, validator: str) -> tuple[bool | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "no value"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False, f"is a {type(value).__name__}, not text"
    reason = VALIDATORS[validator](str(value))
    return reason is None, reason


def validate_fields(kv: Mapping[str, Any] | None, validators: Mapping[str, str]) -> list[FieldCheck]:
    """Check every value the paths of `validators` reach in an extraction result, in path order."""
    checks: list[FieldCheck] = []
    for path, validator in validators.items():
        if validator not in VALIDATORS:
            raise ValueError(f"unknown validator {validator!r}")
        found = list(_resolve(kv, path.split("."), ""))
        if not found:
            checks.append(FieldCheck(path=path, validator=validator, valid=None, reason="not in the result"))
        for concrete, value in found:
            valid, reason = check_value(value, validator)
            checks.append(FieldCheck(path=concrete, validator=validator, valid=valid, reason=reason))
    return checks


def _resolve(node: Any, keys: list[str], prefix: str) -> Any:
    """(path with list indices, value) for every value the keys reach; a list fans out."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _resolve(item, keys, f"{prefix}[{index}]")
        return
    if not keys:
        yield prefix, node
        return
    if isinstance(node, Mapping) and keys[0] in node:
        head = keys[0]
        yield from _resolve(node[head], keys[1:], f"{prefix}.{head}" if prefix else head)


def parse_validators(text: str) -> dict[str, str]:
    """`path=validator` pairs separated by commas, or a JSON object {path: validator}.

    The JSON form is for field names that hold commas or "=", or that S3 metadata can only
    carry as \\u escapes (CJK field names).
    """
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"validators are not valid JSON: {exc.msg}") from None
        except RecursionError:
            raise ValueError("validators JSON is nested deeper than the parser follows") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("validators JSON must be an object of field path -> validator name")
        return value
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        path, sep, name = part.rpartition("=")
        if not sep or not path.strip() or not name.strip():
            raise ValueError(f"{part!r} is not path=validator")
        pairs[path.strip()] = name.strip()
    return pairs


def check_validator_names(validators: Mapping[str, str]) -> None:
    for path, name in validators.items():
        if not path or any(not key for key in path.split(".")):
            raise ValueError(f"field path {path!r} has an empty key")
        if name not in VALIDATORS:
            raise ValueError(f"unknown validator {name!r} for {path!r}; use one of {', '.join(VALIDATORS)}")


class InvalidField(BaseModel):
    model_config = ConfigDict(frozen=True)

    page: int
    path: str
    validator: str
    reason: str | None


class ValidationSummary(BaseModel):
    """What the document.completed event carries: counts, and where the invalid values are."""

    model_config = ConfigDict(frozen=True)

    checked: int
    invalid: int
    missing: int
    # At most MAX_LISTED_INVALID entries, so the event stays small whatever the document.
    invalid_fields: list[InvalidField]


MAX_LISTED_INVALID = 50


def summarize(checks_by_page: Mapping[int, list[FieldCheck]]) -> ValidationSummary:
    invalid = [
        InvalidField(page=page, path=c.path, validator=c.validator, reason=c.reason)
        for page, checks in sorted(checks_by_page.items())
        for c in checks
        if c.valid is False
    ]
    every = [c for checks in checks_by_page.values() for c in checks]
    return ValidationSummary(
        checked=sum(1 for c in every if c.valid is not None),
        invalid=len(invalid),
        missing=sum(1 for c in every if c.valid is None),
        invalid_fields=invalid[:MAX_LISTED_INVALID],
    )
