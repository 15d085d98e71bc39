"""`ocr-pipeline`: try the OCR core on a file, and run the pipeline on a laptop.

Exit codes: 0 success; 1 a document failed (the error code is printed); 2 bad command
line; 3 configuration error (missing key, unknown model, bad region, no AWS credentials, a template
rule or parameter refused); 4 an internal error (a bug of ours, never a document's fault); 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient, WireProtocol
from ocr_pipeline.catalog import DEFAULT_MODEL, Region
from ocr_pipeline.errors import BatchLaneUnsupported, ConfigurationError, InvalidRequest, OcrPipelineError
from ocr_pipeline.field_checks import parse_validators, validate_fields
from ocr_pipeline.pipeline.documents import SNIFF_BYTES, count_pages, detect_kind, prepare_page
from ocr_pipeline.pipeline.model import DocumentKind
from ocr_pipeline.pricing import format_money
from ocr_pipeline.recognition import Recognition, Recognizer, budget_for
from ocr_pipeline.tasks import OcrTask, TaskOptions

from ocr_devkit.arguments import (
    BACKENDS,
    add_batch_delay_argument,
    add_batch_fault_arguments,
    add_mode_argument,
    add_template_argument,
    check_batch_lane,
    load_schema,
    refused,
)
from ocr_devkit.run import EMULATOR_API_KEY

EXIT_OK = 0
EXIT_DOCUMENT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIGURATION = 3  # arguments.EXIT_REFUSED
EXIT_INTERNAL = 4


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", choices=[t.value for t in OcrTask], help="built-in OCR task (default text_recognition)"
    )
    parser.add_argument("--schema", help="result_schema for key_information_extraction: a JSON file or inline JSON")
    parser.add_argument("--prompt", help="a free prompt instead of a built-in task")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="emulator", help="where to send calls (default: emulator)"
    )
    parser.add_argument("--base-url", help="replace the region's base URL (…/api/v1 or …/compatible-mode/v1)")
    parser.add_argument("--model", default=None, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--ocr-region",
        "--region",
        dest="region",
        choices=[r.value for r in Region],
        default=None,
        help="the DashScope region: intl, us or cn (--region is its old name)",
    )
    parser.add_argument(
        "--allow-unlisted-model",
        action="store_true",
        help="send a model the region's table does not list (needs --model-patch; its cost is reported as null)",
    )
    parser.add_argument(
        "--model-patch",
        type=int,
        choices=(28, 32),
        default=None,
        help="pixels per image-token side of an unlisted model: 32 (Qwen3-VL generation) or 28 (older)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The model, region and unlisted-model settings the command line names."""
    overrides: dict[str, Any] = {
        "model": args.model,
        "region": args.region,
        "allow_unlisted_model": True if args.allow_unlisted_model else None,
        "unlisted_model_patch": args.model_patch,
    }
    return {k: v for k, v in overrides.items() if v is not None}


def check_model(args: argparse.Namespace) -> None:
    """Refuse a model the region does not offer before anything starts (ConfigurationError, exit 3)."""
    protocol = WireProtocol.OPENAI if args.backend == "openai" else WireProtocol.DASHSCOPE
    base_url = args.base_url if protocol is WireProtocol.OPENAI else None
    OcrServiceSettings(protocol=protocol, base_url=base_url, require_api_key=False, **model_overrides(args))


def task_options_from(args: argparse.Namespace) -> TaskOptions:
    task = OcrTask(args.task) if args.task else None
    schema = load_schema(args.schema)
    if schema is not None and task is None:
        task = OcrTask.KEY_INFORMATION_EXTRACTION
    return TaskOptions.build(task=task, result_schema=schema, prompt=args.prompt)


@contextmanager
def service_settings(args: argparse.Namespace) -> Iterator[OcrServiceSettings]:
    """Settings for the chosen backend; for the emulator, one runs for the duration of the block."""
    overrides = model_overrides(args)
    if args.backend == "emulator":
        from ocr_devkit.emulator.server import EmulatorServer

        with EmulatorServer() as server:
            yield OcrServiceSettings.from_env(
                {},
                protocol=WireProtocol.DASHSCOPE,
                base_url=args.base_url or server.native_base,
                api_key=EMULATOR_API_KEY,
                **overrides,
            )
        return
    protocol = WireProtocol.DASHSCOPE if args.backend == "dashscope" else WireProtocol.OPENAI
    extra: dict[str, Any] = {"protocol": protocol, "base_url": args.base_url, **overrides}
    if protocol is WireProtocol.OPENAI and args.base_url:
        # A self-hosted server (vLLM, SGLang) usually runs without a key.
        extra["require_api_key"] = False
    yield OcrServiceSettings.from_env(**{k: v for k, v in extra.items() if v is not None})


def recognition_json(recognition: Recognition) -> dict[str, Any]:
    result = recognition.result
    return {
        "text": result.text,
        "words": [w.model_dump() for w in result.words] if result.words is not None else None,
        "kv": result.kv,
        "html": result.html,
        "latex": result.latex,
        "task": recognition.task.value if recognition.task else None,
        "model": recognition.model,
        "region": recognition.region.value,
        "usage": {
            "input_tokens": recognition.usage.input_tokens,
            "output_tokens": recognition.usage.output_tokens,
            "image_tokens": recognition.usage.image_tokens,
        },
        "cost": format_money(recognition.cost.amount) if recognition.cost else None,
        "currency": recognition.cost.currency if recognition.cost else None,
        "request_id": recognition.request_id,
        "image": recognition.image.model_dump(mode="json"),
        "parse_warnings": result.parse_warnings,
        "warnings": recognition.warnings,
        "finish_reason": recognition.finish_reason,
        "truncated": recognition.truncated,
        "billed_attempts": [attempt.model_dump() for attempt in recognition.billed_attempts],
    }


def print_recognition(recognition: Recognition) -> None:
    result = recognition.result
    body = result.html or result.latex or (json.dumps(result.kv, ensure_ascii=False, indent=2) if result.kv else None)
    print(body if body is not None else result.text)
    usage = recognition.usage
    cost = (
        f"{format_money(recognition.cost.amount)} {recognition.cost.currency}" if recognition.cost else "unpriced model"
    )
    print(
        f"\n-- {recognition.task.value if recognition.task else 'prompt'} · {recognition.model} ({recognition.region.value})"
        f" · tokens in {usage.input_tokens} (image {usage.image_tokens}) out {usage.output_tokens} · cost {cost}",
        file=sys.stderr,
    )
    if recognition.truncated:
        print("-- truncated: the model stopped at its output limit; the text ends early", file=sys.stderr)
    for warning in [*recognition.warnings, *result.parse_warnings]:
        print(f"-- warning: {warning}", file=sys.stderr)


def command_recognize(args: argparse.Namespace) -> int:
    path = Path(args.image)
    if path.is_dir():
        raise InvalidRequest(
            f"{path} is a folder: recognize reads one file; `ocr-pipeline run {path} --out DIR` reads folders"
        )
    if not path.is_file():
        raise InvalidRequest(f"no such file: {path}")
    options = task_options_from(args)
    if args.validate:
        options = with_validators(options, args.validate)
    data = path.read_bytes()
    kind = detect_kind(data[:SNIFF_BYTES])
    pages: list[tuple[int | None, Recognition]]
    with service_settings(args) as settings:
        recognizer = Recognizer(QwenOcrClient(settings), settings.target())
        if kind is DocumentKind.IMAGE:
            if args.all_pages or args.page != 1:
                raise InvalidRequest(f"{path} is a single image: --page and --all-pages are for PDFs and TIFFs")
            pages = [(None, recognizer.recognize_bytes(data, options))]
        else:
            count = count_pages(io.BytesIO(data), kind, recognizer.limits)
            wanted = range(1, count + 1) if args.all_pages else [args.page]
            if not all(1 <= page <= count for page in wanted):
                raise InvalidRequest(f"{path} has {count} page(s); there is no page {args.page}")
            budget = budget_for(recognizer.model, options)
            pages = [
                (
                    page,
                    recognizer.recognize_prepared(
                        prepare_page(io.BytesIO(data), kind, page, budget, recognizer.limits), options
                    ),
                )
                for page in wanted
            ]
    results = []
    for page, recognition in pages:
        checks = validate_fields(recognition.result.kv, options.validators) if options.validators else None
        if args.json:
            payload = recognition_json(recognition)
            if page is not None:
                payload = {"page": page, **payload}
            if checks is not None:
                payload["validation"] = [c.model_dump() for c in checks]
            results.append(payload)
            continue
        if page is not None and len(pages) > 1:
            print(f"-- page {page} of {path.name}", file=sys.stderr)
        print_recognition(recognition)
        for check in checks or []:
            verdict = {True: "valid", False: "INVALID", None: "not checked"}[check.valid]
            print(
                f"-- {check.path} ({check.validator}): {verdict}{f': {check.reason}' if check.reason else ''}",
                file=sys.stderr,
            )
    if args.json:
        # One object for one page (as for an image); all pages of a document as {"pages": [...]}.
        print(json.dumps(results[0] if not args.all_pages else {"pages": results}, ensure_ascii=False))
    return EXIT_OK


def with_validators(options: TaskOptions, pairs: list[str]) -> TaskOptions:
    """--validate PATH=VALIDATOR, repeatable; the pairs go through TaskOptions' own checks."""
    validators: dict[str, str] = {}
    for pair in pairs:
        try:
            validators.update(parse_validators(pair))
        except ValueError as exc:
            raise InvalidRequest(f"--validate {pair!r}: {exc}") from None
    return TaskOptions.build(**{**options.model_dump(), "validators": validators})


def command_run(args: argparse.Namespace) -> int:
    from ocr_devkit.run import RunOptions, run_pipeline
    from ocr_devkit.summary import ProgressDisplay, print_summary, report_json

    if args.schema:
        # validated here so a bad schema is a command-line error, not a failed document per file
        load_schema(args.schema)
    schema_text = json.dumps(load_schema(args.schema), ensure_ascii=False) if args.schema else None
    check_model(args)
    if args.mode == "batch":
        try:
            check_batch_lane([args.model], [args.region])
        except BatchLaneUnsupported as error:
            return refused(error)
    options = RunOptions(
        paths=[Path(p) for p in args.paths],
        out_dir=Path(args.out),
        task=args.task,
        schema_text=schema_text,
        prompt=args.prompt,
        backend=args.backend,
        base_url=args.base_url,
        model=args.model,
        region=args.region,
        allow_unlisted_model=args.allow_unlisted_model,
        unlisted_model_patch=args.model_patch,
        timeout_s=args.timeout,
        fault_rate=args.fault_rate,
        duplicate_rate=args.duplicate_rate,
        kill_rate=args.kill_rate,
        seed=args.seed,
        overlays=args.overlays,
        template=args.template,
        mode=args.mode,
        batch_delay_s=args.batch_delay,
        batch_outcomes=[item.strip() for item in args.batch_outcomes.split(",") if item.strip()],
        batch_error_every=args.batch_error_every,
    )
    display = None if args.json or not sys.stderr.isatty() else ProgressDisplay()
    if display is not None:
        with display:
            report = run_pipeline(options, on_progress=display.update, on_batch_progress=display.update_batches)
    else:
        report = run_pipeline(options)
    if args.json:
        print(json.dumps(report_json(report), ensure_ascii=False))
    else:
        print_summary(report)
    return EXIT_OK if not report.failed else EXIT_DOCUMENT_FAILED


EPILOG = """exit codes:
  0    success
  1    a document failed, or did not finish in time (its error code is printed)
  2    bad command line
  3    configuration: missing API key, a model the region does not offer, no AWS credentials,
       a template rule or parameter refused, --mode batch where the batch lane is not offered
  4    internal error, a bug of ours (OCR_PIPELINE_DEBUG=1 shows the traceback)
  130  interrupted

environment:
  DASHSCOPE_API_KEY            the API key for --backend dashscope
  OCR_BASE_URL, OCR_PROTOCOL   a self-hosted or other endpoint (see --base-url, --backend)
  AWS_PROFILE, AWS_REGION      the AWS account of submit and replay (or --profile, --aws-region)
  OCR_PIPELINE_DEBUG=1         tracebacks instead of one-line errors
"""


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ocr-pipeline")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocr-pipeline",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    recognize = commands.add_parser("recognize", help="recognize one image or document page and print the result")
    recognize.add_argument("image", help="an image (BMP, JPEG, PNG, TIFF, WEBP, HEIC, GIF) or a PDF")
    pages = recognize.add_mutually_exclusive_group()
    pages.add_argument("--page", type=int, default=1, help="the page of a PDF or multi-page TIFF (1-based; 1)")
    pages.add_argument("--all-pages", action="store_true", help="every page of a PDF or multi-page TIFF, in order")
    add_service_arguments(recognize)
    recognize.add_argument(
        "--validate", action="append", metavar="PATH=VALIDATOR", help="check an extracted field (repeatable)"
    )
    recognize.set_defaults(handler=command_recognize)

    run = commands.add_parser("run", help="run the whole pipeline locally on files and folders")
    run.add_argument("paths", nargs="+", help="files or folders (walked) to upload")
    add_service_arguments(run)
    add_template_argument(run)
    run.add_argument("--out", required=True, help="folder for results/, events.jsonl and logs/")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for every document (900)")
    run.add_argument("--fault-rate", type=float, default=0.0, help="emulator faults: share of OCR calls (0-1)")
    run.add_argument("--duplicate-rate", type=float, default=0.0, help="share of deliveries the runner repeats")
    run.add_argument(
        "--kill-rate", type=float, default=0.0, help="share of invocations whose worker the runner kills midway"
    )
    run.add_argument("--seed", type=int, default=None, help="seed for injected faults and duplicates")
    run.add_argument(
        "--overlays", action="store_true", help="draw the boxes of advanced_recognition into out/overlays/"
    )
    add_mode_argument(run)
    add_batch_delay_argument(run)
    add_batch_fault_arguments(run)
    run.set_defaults(handler=command_run)

    from ocr_devkit.operate import add_commands

    add_commands(commands)

    from ocr_devkit import estimate, invoke, overlay

    invoke.add_commands(commands)
    estimate.add_commands(commands)
    overlay.add_commands(commands)
    return parser


# Commands where --region used to mean the DashScope region; it still does there, for one more release.
OLD_REGION_FLAG_COMMANDS = {"recognize", "run", "up", "estimate"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    tokens = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(tokens)
    if getattr(args, "command", None) in OLD_REGION_FLAG_COMMANDS and any(
        t == "--region" or t.startswith("--region=") for t in tokens
    ):
        print(
            "warning: --region is now --ocr-region here (the DashScope region); the old name goes in a later release",
            file=sys.stderr,
        )
    try:
        return int(args.handler(args))
    except ConfigurationError as error:
        print(f"error {error.code}: {error.message}", file=sys.stderr)
        return EXIT_CONFIGURATION
    except OcrPipelineError as error:
        print(f"error {error.code}: {error.message}", file=sys.stderr)
        return EXIT_DOCUMENT_FAILED
    except KeyboardInterrupt:
        print("error interrupted: stopped by the user", file=sys.stderr)
        return 130
    except Exception as error:
        configuration = _configuration_problem(error)
        if configuration is not None:
            print(f"error {configuration}", file=sys.stderr)
            return EXIT_CONFIGURATION
        # A bug of ours: still one line, but say how to see the traceback.
        if os.environ.get("OCR_PIPELINE_DEBUG"):
            raise
        print(
            f"error internal.error: {type(error).__name__}: {error} (set OCR_PIPELINE_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _configuration_problem(error: Exception) -> str | None:
    """`code: message` when the error is the user's set-up, not a bug: a refused template, no AWS credentials.

    Imported here, not at the top: most commands never load the template or botocore.
    """
    from botocore.exceptions import NoCredentialsError

    from ocr_devkit.stack.cfn import TemplateError

    if isinstance(error, TemplateError):
        return f"config.template: {error}"
    if isinstance(error, NoCredentialsError):
        return (
            "config.aws_credentials: no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY)"
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
