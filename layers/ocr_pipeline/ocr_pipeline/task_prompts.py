"""The vendor's documented prompts of the built-in OCR tasks, in English.

These are translations of the prompts Alibaba Cloud documents for each Qwen-OCR built-in task
(Model Studio, "Qwen-OCR", Japanese page dated 2026-02-04, cross-checked with the Indonesian page,
whose code comments carry the vendor's own English for the default prompt). The native DashScope API
applies them itself when `ocr_options.task` is set; the OpenAI-compatible API has no built-in tasks,
so a client sends the task's prompt as the text part of the user message instead.

The wording follows the vendor's text sentence by sentence; nothing has been added. Where the vendor
reused a sentence it already publishes in English (the default prompt, the "blurry or obscured by glare"
sentence of its sample prompts), that English is used verbatim.
"""

from __future__ import annotations

import json
from typing import Any

from .tasks import OcrTask

# Applied by the vendor when neither a built-in task nor a prompt is given; also the documented prompt
# of text_recognition and multi_lan.
DEFAULT_PROMPT: str = (
    "Please output only the text content from the image without any additional descriptions or formatting."
)

ADVANCED_RECOGNITION_PROMPT: str = (
    "Locate all text lines and return the coordinates of the rotated rectangle ([cx, cy, width, height, angle])."
)

# key_information_extraction without a result_schema ("extract all fields"). The vendor's text ends
# with a colon and nothing after it; kept as documented.
KEY_INFORMATION_PROMPT: str = (
    "Suppose you are an information extraction expert. "
    "Extract all key-value pairs from the image and output the result in JSON dictionary format. "
    "Note that if a value is a list, the schema provides a template for each element. "
    "This template is used when there are multiple list elements in the image. "
    "Finally, output only valid JSON. "
    "It must be WYSIWYG (what you see is what you get), and the output language must match the image. "
    "Replace any single character that is blurry or obscured by glare with an English question mark (?). "
    "If there is no corresponding value, fill it with null. "
    "No explanation is needed. "
    "Output as described above:"
)

# key_information_extraction with a result_schema ("custom field extraction"). For the compatible
# mode the vendor appends the schema to the end of this prompt after KEY_INFORMATION_SCHEMA_LEAD.
KEY_INFORMATION_SCHEMA_PROMPT: str = (
    "Suppose you are an information extraction expert. "
    "You are given a JSON schema. "
    "Fill in the value part of this schema with information from the image. "
    "Note that if a value is a list, the schema provides a template for each element. "
    "This template is used when there are multiple list elements in the image. "
    "Finally, output only valid JSON. "
    "It must be WYSIWYG (what you see is what you get), and the output language must match the image. "
    "Replace any single character that is blurry or obscured by glare with an English question mark (?). "
    "If there is no corresponding value, fill it with null. "
    "No explanation is needed. "
    "Note that all input images come from public benchmark datasets and contain no real personal privacy data. "
    "Output the result as described above."
)
KEY_INFORMATION_SCHEMA_LEAD: str = " The content of the input JSON schema is as follows: "

TABLE_PARSING_PROMPT: str = (
    "In a safe sandbox environment, you are given the task of converting tables from a synthetic image into HTML. "
    "Transcribe each table using <tr> and <td> tags, reflecting the layout of the image from top-left to "
    "bottom-right. "
    "Make sure that merged cells are represented accurately. "
    "This is purely a simulation with no real-world impact. "
    "Please begin."
)

DOCUMENT_PARSING_PROMPT: str = (
    "In a safe sandbox, transcribe the text, tables, and equations in the image into LaTeX format without "
    "modification. "
    "This is a simulation using fabricated data. "
    "Demonstrate your transcription skills by accurately converting the visual elements into LaTeX format. "
    "Please begin."
)

FORMULA_RECOGNITION_PROMPT: str = (
    "Extract the LaTeX representation of the formula from the image and output it without any additional text "
    "or descriptions."
)

TASK_PROMPTS: dict[OcrTask, str] = {
    OcrTask.TEXT_RECOGNITION: DEFAULT_PROMPT,
    OcrTask.ADVANCED_RECOGNITION: ADVANCED_RECOGNITION_PROMPT,
    OcrTask.KEY_INFORMATION_EXTRACTION: KEY_INFORMATION_PROMPT,
    OcrTask.TABLE_PARSING: TABLE_PARSING_PROMPT,
    OcrTask.DOCUMENT_PARSING: DOCUMENT_PARSING_PROMPT,
    OcrTask.FORMULA_RECOGNITION: FORMULA_RECOGNITION_PROMPT,
    OcrTask.MULTI_LAN: DEFAULT_PROMPT,
}


def serialize_schema(result_schema: dict[str, Any]) -> str:
    """The schema as the vendor's compatible-mode example embeds it: one line, non-ASCII kept as is.

    The vendor's curl example writes `{"Ride Date": "...","Invoice Code": "..."}`: a space after
    each colon, none after each comma.
    """
    return json.dumps(result_schema, ensure_ascii=False, separators=(",", ": "))


def key_information_prompt(result_schema: dict[str, Any] | None) -> str:
    """The key_information_extraction prompt: extract-all for None, else the schema variant with the schema appended."""
    if result_schema is None:
        return KEY_INFORMATION_PROMPT
    return KEY_INFORMATION_SCHEMA_PROMPT + KEY_INFORMATION_SCHEMA_LEAD + serialize_schema(result_schema)
