"""Command-line arguments and values that several `ocr-pipeline` commands share.

Kept apart from cli.py so that the commands' own modules (estimate, operate, invoke) can use them
without importing the entry point that imports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ocr_pipeline.tasks import parse_schema_text

from ocr_devkit.run import TEMPLATE

BACKENDS = ("emulator", "dashscope", "openai")


def load_schema(value: str | None) -> dict[str, Any] | None:
    """--schema takes a JSON file or inline JSON."""
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        return parse_schema_text(path.read_text(encoding="utf-8"))
    return parse_schema_text(value)


def existing_template(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such template: {value}")
    return path


def add_template_argument(parser: argparse.ArgumentParser) -> None:
    """`-t/--template`, as the SAM CLI spells it; the project's template.yaml when not given."""
    parser.add_argument(
        "-t",
        "--template",
        type=existing_template,
        default=TEMPLATE,
        metavar="PATH",
        help="the SAM template to run (default: template.yaml at the project root)",
    )
