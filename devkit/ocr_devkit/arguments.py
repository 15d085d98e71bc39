"""Command-line arguments and values that several `ocr-pipeline` commands share.

Kept apart from cli.py so that the commands' own modules (estimate, operate, invoke) can use them
without importing the entry point that imports them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ocr_pipeline.catalog import DEFAULT_MODEL, DEFAULT_REGION, Region, batch_lanes, batch_offered
from ocr_pipeline.errors import BatchLaneUnsupported
from ocr_pipeline.pipeline.model import Lane
from ocr_pipeline.tasks import parse_schema_text

from ocr_devkit.run import TEMPLATE
from ocr_devkit.run_batch import DEFAULT_BATCH_DELAY_S

BACKENDS = ("emulator", "dashscope", "openai")
# The CLI's exit code for a set-up it refuses before anything starts (cli.EXIT_CONFIGURATION).
EXIT_REFUSED = 3


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


def add_mode_argument(parser: argparse.ArgumentParser) -> None:
    """`--mode realtime|batch`: the lane, as the `ocr-mode` metadata names it."""
    parser.add_argument(
        "--mode",
        choices=[lane.value for lane in Lane],
        default=Lane.REALTIME.value,
        help="realtime: a call per page (default); batch: the vendor's Batch File API at the batch price "
        f"(offered for {batch_lanes()})",
    )


def non_negative_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value}") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"seconds cannot be negative: {value}")
    return seconds


def add_batch_delay_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-delay",
        type=non_negative_seconds,
        default=DEFAULT_BATCH_DELAY_S,
        metavar="SECONDS",
        help=f"--mode batch with the emulator: seconds until it completes a batch (default {DEFAULT_BATCH_DELAY_S:g})",
    )


def add_batch_fault_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-outcomes",
        default="",
        metavar="LIST",
        help="--mode batch with the emulator: how its next batches end, in order, comma-separated "
        "(completed, expired, failed, cancelled); later ones complete",
    )
    parser.add_argument(
        "--batch-error-every",
        type=int,
        default=0,
        metavar="N",
        help="--mode batch with the emulator: every Nth line of each batch is answered in the error file "
        "with a retryable 500 InternalError (0: none)",
    )


def check_batch_lane(models: list[str | None], regions: list[str | None]) -> None:
    """BatchLaneUnsupported for the first model and region pair the Batch File API does not take (None: the
    default), before anything starts: no lane is made up, and no price for one."""
    for model in models:
        for region in regions:
            name, where = model or DEFAULT_MODEL, Region(region or DEFAULT_REGION)
            if not batch_offered(name, where):
                raise BatchLaneUnsupported(
                    f"the batch lane is offered for {batch_lanes()}, not for {name} in {where.value}; "
                    "name a model and region it takes (--model, --ocr-region), or use --mode realtime",
                    model=name,
                    region=where.value,
                )


def refused(error: BatchLaneUnsupported) -> int:
    """Print a refusal of the set-up (as a model the region does not offer) and give its exit code."""
    print(f"error {error.code}: {error.message}", file=sys.stderr)
    return EXIT_REFUSED
