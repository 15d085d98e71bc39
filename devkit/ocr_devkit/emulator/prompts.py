"""Which task a prompt asks for, and which prompt a built-in task stands for.

The compatible endpoint has no built-in tasks: clients send the task's documented prompt
(the emulator's own copy is in `vendor.py`). We recognize those exactly; other prompts are recognized by the
words that give their task away (HTML, LaTeX, JSON, rotated rectangles), in English or in the
vendor's Japanese, so that the vendor's own sample prompts behave sensibly too. A prompt with none
of them is plain text recognition.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

from .vendor import DEFAULT_PROMPT, TASK_PROMPTS, Task, extraction_prompt


@dataclass(frozen=True)
class PromptIntent:
    task: Task
    result_schema: dict[str, Any] | None = None
    # True when the prompt is one of the documented task prompts, word for word.
    exact: bool = False


def _squash(text: str) -> str:
    return " ".join(text.split())


_KNOWN: dict[str, Task] = {}
for _task, _prompt in TASK_PROMPTS.items():
    # text_recognition and multi_lan share a prompt; the first (text_recognition) wins.
    _KNOWN.setdefault(_squash(_prompt), _task)


def builtin_prompt(task: Task, result_schema: dict[str, Any] | None = None) -> str:
    """The prompt the vendor applies for a built-in task (what its text tokens are counted on)."""
    if task is Task.KEY_INFORMATION_EXTRACTION:
        return extraction_prompt(result_schema)
    return TASK_PROMPTS.get(task, DEFAULT_PROMPT)


def schema_in_prompt(prompt: str) -> dict[str, Any] | None:
    """The JSON object a prompt ends with (the extraction prompts append their schema), if any.

    The vendor's own sample prompts write it as a Python literal with single quotes, so that is
    accepted too.
    """
    decoder = json.JSONDecoder()
    start = prompt.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(prompt, start)
        except json.JSONDecodeError:
            value, end = _python_literal(prompt, start)
        if isinstance(value, dict) and value and not prompt[end:].strip(" \t\r\n.。:：'\""):
            return value
        start = prompt.find("{", start + 1)
    return None


def _python_literal(prompt: str, start: int) -> tuple[Any, int]:
    depth = 0
    for index in range(start, len(prompt)):
        if prompt[index] == "{":
            depth += 1
        elif prompt[index] == "}":
            depth -= 1
            if depth == 0:
                try:
                    return ast.literal_eval(prompt[start : index + 1]), index + 1
                except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                    return None, start
    return None, start


def classify_prompt(prompt: str | None) -> PromptIntent:
    """The task a prompt asks for; no prompt means the default prompt, i.e. text_recognition."""
    if prompt is None or not prompt.strip():
        return PromptIntent(Task.TEXT_RECOGNITION, exact=True)
    squashed = _squash(prompt)
    known = _KNOWN.get(squashed)
    if known is not None:
        return PromptIntent(known, exact=True)
    schema = schema_in_prompt(prompt)
    if schema is not None and _squash(extraction_prompt(schema)) == squashed:
        return PromptIntent(Task.KEY_INFORMATION_EXTRACTION, schema, exact=True)

    folded = squashed.casefold()
    if "rotate_rect" in folded or "rotated rect" in folded or "回転した長方形" in folded:
        return PromptIntent(Task.ADVANCED_RECOGNITION)
    if "html" in folded or "<table" in folded:
        return PromptIntent(Task.TABLE_PARSING)
    if "latex" in folded:
        mentions_formula = "formula" in folded or "数式" in folded
        mentions_document = "table" in folded or "テーブル" in folded or "document" in folded
        task = Task.FORMULA_RECOGNITION if mentions_formula and not mentions_document else Task.DOCUMENT_PARSING
        return PromptIntent(task)
    if "json" in folded:
        return PromptIntent(Task.KEY_INFORMATION_EXTRACTION, schema)
    return PromptIntent(Task.TEXT_RECOGNITION)
