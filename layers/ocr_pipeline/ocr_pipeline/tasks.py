"""Which OCR task to run and with what options. Pure data, validated at the edge."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import InvalidRequest
from .field_checks import check_validator_names

# The vendor allows result_schema objects nested at most three levels deep.
MAX_SCHEMA_DEPTH = 3
# The job record holds the schema once (DynamoDB items stop at 400 KB), and every page's prompt carries it.
MAX_SCHEMA_BYTES = 256 * 1024


class OcrTask(StrEnum):
    TEXT_RECOGNITION = "text_recognition"
    ADVANCED_RECOGNITION = "advanced_recognition"
    KEY_INFORMATION_EXTRACTION = "key_information_extraction"
    TABLE_PARSING = "table_parsing"
    DOCUMENT_PARSING = "document_parsing"
    FORMULA_RECOGNITION = "formula_recognition"
    MULTI_LAN = "multi_lan"


DEFAULT_TASK = OcrTask.TEXT_RECOGNITION


def schema_depth(value: Any) -> int:
    """Nesting depth of a result_schema; a list counts as the template of its elements."""
    if isinstance(value, dict):
        return 1 + max((schema_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((schema_depth(v) for v in value), default=0)
    return 0


class TaskOptions(BaseModel):
    """Everything about one recognition besides the image and the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: OcrTask | None = None
    result_schema: dict[str, Any] | None = None
    prompt: str | None = Field(default=None, min_length=1)
    # None: the model's defaults (catalog.default_pixels), which differ between 28-px and 32-px models.
    min_pixels: int | None = Field(default=None, gt=0)
    max_pixels: int | None = Field(default=None, gt=0)
    enable_rotate: bool = False
    # Opt-in checks of extracted values: field path -> validator name (see validation.py).
    validators: dict[str, str] = Field(default_factory=dict)

    @field_validator("validators")
    @classmethod
    def _known_validators(cls, value: dict[str, str]) -> dict[str, str]:
        check_validator_names(value)
        return value

    @model_serializer(mode="wrap")
    def _omit_no_validators(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Without validators the options serialize as before they existed, so job ids (a hash
        # of the options) and page messages of such documents stay what they were.
        data: dict[str, Any] = handler(self)
        if not self.validators:
            data.pop("validators", None)
        # Pixel bounds left to the model are left out, not written as null: options stored before
        # they became the model's hold numbers, and a null would read as "no bound" to any consumer.
        for name in ("min_pixels", "max_pixels"):
            if data.get(name, 0) is None:
                data.pop(name)
        return data

    @field_validator("result_schema")
    @classmethod
    def _schema_not_too_deep(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            if not value:
                raise ValueError("result_schema must name at least one field")
            depth = schema_depth(value)
            if depth > MAX_SCHEMA_DEPTH:
                raise ValueError(f"result_schema is nested {depth} levels deep; at most {MAX_SCHEMA_DEPTH} are allowed")
            size = len(json.dumps(value, ensure_ascii=False).encode())
            if size > MAX_SCHEMA_BYTES:
                raise ValueError(f"result_schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaskOptions:
        if self.result_schema is not None and self.effective_task is not OcrTask.KEY_INFORMATION_EXTRACTION:
            raise ValueError("result_schema only applies to key_information_extraction")
        if self.prompt is not None and self.task is not None:
            # A built-in task replaces the prompt on the vendor side; accepting both would silently drop one.
            raise ValueError("give either a built-in task or a free prompt, not both")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        if self.validators and self.effective_task not in (OcrTask.KEY_INFORMATION_EXTRACTION, None):
            # Only extraction (or a free prompt answered in JSON) has fields; checks would find nothing.
            raise ValueError("validators apply to key_information_extraction or a free prompt, whose reply has fields")
        return self

    @property
    def effective_task(self) -> OcrTask | None:
        """The built-in task to run, or None for a free prompt."""
        if self.prompt is not None:
            return None
        return self.task or DEFAULT_TASK

    @classmethod
    def build(cls, **fields: Any) -> TaskOptions:
        """Validate, turning pydantic's error into our typed one with a stable code."""
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(f"invalid task options: {problems}") from None


def parse_schema_text(text: str) -> dict[str, Any]:
    """A result_schema given as JSON text (CLI flag, S3 metadata)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"result_schema is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        # Deeper than the parser follows, so far deeper than the schema's three levels.
        raise InvalidRequest(f"result_schema is nested far deeper than {MAX_SCHEMA_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise InvalidRequest("result_schema must be a JSON object")
    return value
