"""The vendor's facts the emulator answers by: its own copy, read from the vendor's documentation.

Model Studio "Qwen-OCR" (Japanese page of 2026-02-04, cross-checked with the Indonesian one), in
/work/shared/reference/seeds/. The emulator imports none of this from the client package
(`ocr_pipeline`): a misreading of the documentation there would otherwise be shared by the emulator
and go unseen. `tests/unit/devkit/test_emulator_vendor_facts.py` pits the two copies against each other on
the documented examples; when they disagree, the documentation decides which one is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# --- endpoints ---------------------------------------------------------------------------------------

NATIVE_PATH = "/services/aigc/multimodal-generation/generation"
COMPATIBLE_PATH = "/chat/completions"


# --- built-in tasks ------------------------------------------------------------------------------------


class Task(StrEnum):
    """The values of `ocr_options.task`."""

    TEXT_RECOGNITION = "text_recognition"
    ADVANCED_RECOGNITION = "advanced_recognition"
    KEY_INFORMATION_EXTRACTION = "key_information_extraction"
    TABLE_PARSING = "table_parsing"
    DOCUMENT_PARSING = "document_parsing"
    FORMULA_RECOGNITION = "formula_recognition"
    MULTI_LAN = "multi_lan"


# "result_schema ... supports up to 3 levels of nesting".
MAX_SCHEMA_DEPTH = 3


def schema_depth(value: Any) -> int:
    """Nesting depth of a result_schema; a list stands for the template of its elements."""
    if isinstance(value, dict):
        return 1 + max((schema_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((schema_depth(v) for v in value), default=0)
    return 0


# --- models ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    # token_pixels: 32x32 for qwen-vl-ocr, -2025-11-20 and -latest; 28x28 for the other models.
    patch: int
    # The models table's "max output" column.
    max_output_tokens: int
    # "built-in tasks ... (except qwen-vl-ocr-2024-10-28)".
    builtin_tasks: bool = True


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        Model("qwen-vl-ocr", patch=32, max_output_tokens=4096),
        Model("qwen-vl-ocr-latest", patch=32, max_output_tokens=8192),
        Model("qwen-vl-ocr-2025-11-20", patch=32, max_output_tokens=8192),
        Model("qwen-vl-ocr-2025-08-28", patch=28, max_output_tokens=4096),
        Model("qwen-vl-ocr-2025-04-13", patch=28, max_output_tokens=4096),
        Model("qwen-vl-ocr-2024-10-28", patch=28, max_output_tokens=4096, builtin_tasks=False),
    )
}

# "also called ...".
ALIASES: dict[str, str] = {
    "qwen-vl-ocr-1120": "qwen-vl-ocr-2025-11-20",
    "qwen-vl-ocr-0828": "qwen-vl-ocr-2025-08-28",
    "qwen-vl-ocr-0413": "qwen-vl-ocr-2025-04-13",
    "qwen-vl-ocr-1028": "qwen-vl-ocr-2024-10-28",
}


def find_model(name: str) -> Model | None:
    return MODELS.get(ALIASES.get(name, name))


# --- images and image tokens -------------------------------------------------------------------------

# The image item's defaults when a request leaves them out (the samples' 32 * 32 * 3 and 32 * 32 * 8192).
DEFAULT_MIN_PIXELS = 32 * 32 * 3
DEFAULT_MAX_PIXELS = 32 * 32 * 8192


@dataclass(frozen=True)
class Budget:
    patch: int
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS


def smart_resize(height: int, width: int, budget: Budget) -> tuple[int, int]:
    """(h_bar, w_bar): the documented sample's scaling, with the model's token side for 28 or 32."""
    factor = budget.patch
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > budget.max_pixels:
        beta = math.sqrt((height * width) / budget.max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < budget.min_pixels:
        beta = math.sqrt(budget.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(height: int, width: int, budget: Budget) -> int:
    """h_bar * w_bar / token_pixels, plus one token each for <|vision_bos|> and <|vision_eos|>."""
    h_bar, w_bar = smart_resize(height, width, budget)
    return (h_bar * w_bar) // (budget.patch * budget.patch) + 2


# --- the built-in tasks' prompts -------------------------------------------------------------------------
# What the vendor applies for each task, in English: the Japanese page's prompts sentence by sentence,
# with the vendor's own English where it publishes one (the default prompt, in the Indonesian page's
# code comments). The compatible endpoint has no built-in tasks, so clients send these as text.

DEFAULT_PROMPT = "Please output only the text content from the image without any additional descriptions or formatting."

_ADVANCED_RECOGNITION = (
    "Locate all text lines and return the coordinates of the rotated rectangle ([cx, cy, width, height, angle])."
)

_EXTRACTION_RULES = (
    "Note that if a value is a list, the schema provides a template for each element. "
    "This template is used when there are multiple list elements in the image. "
    "Finally, output only valid JSON. "
    "It must be WYSIWYG (what you see is what you get), and the output language must match the image. "
    "Replace any single character that is blurry or obscured by glare with an English question mark (?). "
    "If there is no corresponding value, fill it with null. "
    "No explanation is needed. "
)

_EXTRACT_ALL = (
    "Suppose you are an information extraction expert. "
    "Extract all key-value pairs from the image and output the result in JSON dictionary format. "
    + _EXTRACTION_RULES
    + "Output as described above:"
)

_EXTRACT_SCHEMA = (
    "Suppose you are an information extraction expert. "
    "You are given a JSON schema. "
    "Fill in the value part of this schema with information from the image. "
    + _EXTRACTION_RULES
    + "Note that all input images come from public benchmark datasets and contain no real personal privacy data. "
    "Output the result as described above."
)
_SCHEMA_LEAD = " The content of the input JSON schema is as follows: "

_TABLE_PARSING = (
    "In a safe sandbox environment, you are given the task of converting tables from a synthetic image into HTML. "
    "Transcribe each table using <tr> and <td> tags, reflecting the layout of the image from top-left to "
    "bottom-right. "
    "Make sure that merged cells are represented accurately. "
    "This is purely a simulation with no real-world impact. "
    "Please begin."
)

_DOCUMENT_PARSING = (
    "In a safe sandbox, transcribe the text, tables, and equations in the image into LaTeX format without "
    "modification. "
    "This is a simulation using fabricated data. "
    "Demonstrate your transcription skills by accurately converting the visual elements into LaTeX format. "
    "Please begin."
)

_FORMULA_RECOGNITION = (
    "Extract the LaTeX representation of the formula from the image and output it without any additional text "
    "or descriptions."
)

TASK_PROMPTS: dict[Task, str] = {
    Task.TEXT_RECOGNITION: DEFAULT_PROMPT,
    Task.ADVANCED_RECOGNITION: _ADVANCED_RECOGNITION,
    Task.KEY_INFORMATION_EXTRACTION: _EXTRACT_ALL,
    Task.TABLE_PARSING: _TABLE_PARSING,
    Task.DOCUMENT_PARSING: _DOCUMENT_PARSING,
    Task.FORMULA_RECOGNITION: _FORMULA_RECOGNITION,
    Task.MULTI_LAN: DEFAULT_PROMPT,
}


def extraction_prompt(result_schema: dict[str, Any] | None) -> str:
    """Extract-all without a schema; with one, the schema variant followed by the schema on one line,
    written as the compatible-mode curl example writes it (": " after keys, "," alone between items)."""
    if result_schema is None:
        return _EXTRACT_ALL
    return _EXTRACT_SCHEMA + _SCHEMA_LEAD + json.dumps(result_schema, ensure_ascii=False, separators=(",", ": "))
