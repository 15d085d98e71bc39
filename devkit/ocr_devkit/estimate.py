"""`ocr-pipeline estimate`: pages, tokens and cost of files before sending them, with no API call.

Image tokens are exact: each page is sized the way the pipeline will size it (`render_target`,
the same geometry `prepare_image` and `prepare_pdf_page` use, padding included; a PDF page at the
resolution `prepare_pdf_page` chooses for it, its scan's or PdfRenderDpi) and counted with the
vendor's formula (`image_tokens`). The text of the prompt is counted with the emulator's
stand-in tokenizer, so it is close but not exact; it is small next to the image.

Output tokens cannot be known before the model reads the page, so they are given as a range from
a heuristic, per page, in proportion to the page's image tokens (a page that becomes more patches
can hold more text; a PDF page's tokens drawn to the budget, whatever resolution it is sent at, since
a page drawn coarser holds as much text), scaled by what the task writes around the text:

- plain text (text_recognition, multi_lan, a free prompt): 0.5 % to 25 % of the image tokens. A
  full A4 page at the default budget is 8,194 image tokens; a dense page of English is about
  600-900 text tokens (about 10 %) and a dense page of Chinese 1,500-2,000 (about 20-25 %);
  0.5 % is a page with a few lines (samples/report.pdf, five lines a page, measured 2 % with
  advanced_recognition on the emulator, whose text and box records are the documented format). Small images hold more text per patch than pages (a
  receipt photographed at 1000x1000 px is 963 image tokens for ~200-300 tokens of text), which the
  upper end covers only roughly.
- advanced_recognition: x2 to x4, for the JSON record and five coordinates written per line.
- table_parsing: x1.5 to x3, for the <tr>/<td> markup around every cell.
- document_parsing: x1 to x1.5, for LaTeX commands.
- key_information_extraction with a result_schema: 3 to 40 tokens per leaf field of the schema
  (key, quotes and value; a list's template counts once). Without one: x0.5 to x1.5 of plain text.
- formula_recognition: 10 to 500 tokens.

Every range is capped at the model's maximum output (4,096 or 8,192 tokens). Cost per model and
region comes from the price table: input x input price + output x output price, as a range over
the output range; an unpriced model/region pair says so instead of guessing. With `--mode batch` the
batch price (the table's batch discount) stands next to the real-time one; a model and region the
Batch File API does not take are refused (exit 3) rather than given a price the lane does not have.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ocr_pipeline.catalog import ModelSpec, Region, model_spec
from ocr_pipeline.errors import BatchLaneUnsupported, OcrPipelineError
from ocr_pipeline.imaging import (
    DEFAULT_LIMITS,
    DEFAULT_PDF_RENDER_DPI,
    PreparationLimits,
    probe_image,
    render_target,
)
from ocr_pipeline.ocr_service import prompt_for
from ocr_pipeline.pdf import MAX_RENDER_DPI, POINTS_PER_INCH, pdf_page_count, pdf_page_resolutions
from ocr_pipeline.pipeline.documents import SNIFF_BYTES, detect_kind
from ocr_pipeline.pipeline.model import DocumentKind, Lane
from ocr_pipeline.pricing import PriceNotFound, PriceTable, UnitPrice, default_price_table, format_money
from ocr_pipeline.recognition import budget_for
from ocr_pipeline.tasks import OcrTask, TaskOptions
from ocr_pipeline.tokens import image_tokens
from pydantic import BaseModel, Field, field_serializer

from ocr_devkit.arguments import add_mode_argument, check_batch_lane, load_schema, refused
from ocr_devkit.emulator.tokenizer import prompt_tokens
from ocr_devkit.run import collect_uploads

# Share of a page's image tokens that its plain text takes, low and high (see the module docstring).
PLAIN_TEXT_SHARE = (0.005, 0.25)
TASK_FACTORS: dict[OcrTask | None, tuple[float, float]] = {
    None: (1.0, 1.0),  # a free prompt
    OcrTask.TEXT_RECOGNITION: (1.0, 1.0),
    OcrTask.MULTI_LAN: (1.0, 1.0),
    OcrTask.ADVANCED_RECOGNITION: (2.0, 4.0),
    OcrTask.TABLE_PARSING: (1.5, 3.0),
    OcrTask.DOCUMENT_PARSING: (1.0, 1.5),
    OcrTask.KEY_INFORMATION_EXTRACTION: (0.5, 1.5),  # without a result_schema
}
TOKENS_PER_SCHEMA_FIELD = (3, 40)
FORMULA_TOKENS = (10, 500)


class TokenRange(BaseModel):
    low: int
    high: int

    def __add__(self, other: TokenRange) -> TokenRange:
        return TokenRange(low=self.low + other.low, high=self.high + other.high)


class PageSource(BaseModel):
    """A page's size before preparation: pixels of an image, or PDF points at the resolution chosen for the page."""

    width: float
    height: float
    # A PDF page drawn to the budget: how much text it can hold does not shrink with the resolution it
    # is sent at, so output tokens are guessed from this size (None: the page's own size).
    capacity: tuple[float, float] | None = None


class MeasuredFile(BaseModel):
    path: str
    kind: str | None = None
    pages: list[PageSource] = Field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None


class FileEstimate(BaseModel):
    path: str
    kind: str | None
    pages: int
    # (width, height) of each page as the model will receive it.
    sent_sizes: list[tuple[int, int]]
    image_tokens: int
    text_input_tokens: int
    input_tokens: int
    output_tokens: TokenRange
    error_code: str | None = None
    error_message: str | None = None


class BatchCost(BaseModel):
    """The same tokens at the batch price (the vendor's Batch File API)."""

    input_per_million: Decimal
    output_per_million: Decimal
    low: Decimal
    high: Decimal

    @field_serializer("input_per_million", "output_per_million", "low", "high")
    def _money(self, value: Decimal) -> str:
        return format_money(value)


class RegionCost(BaseModel):
    region: Region
    priced: bool
    currency: str | None = None
    input_per_million: Decimal | None = None
    output_per_million: Decimal | None = None
    price_table: str | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    note: str | None = None
    batch: BatchCost | None = None  # with --mode batch

    @field_serializer("input_per_million", "output_per_million", "low", "high")
    def _money(self, value: Decimal | None) -> str | None:
        return None if value is None else format_money(value)


class ModelEstimate(BaseModel):
    model: str
    patch: int
    max_output_tokens: int
    # The bounds sent to this model: the options', else its own defaults by patch size.
    min_pixels: int
    max_pixels: int
    files: list[FileEstimate]
    pages: int
    image_tokens: int
    input_tokens: int
    output_tokens: TokenRange
    costs: list[RegionCost]


class EstimateReport(BaseModel):
    task: str | None
    mode: str = "realtime"
    # The bounds the options name; None: each model's own defaults (see ModelEstimate).
    min_pixels: int | None
    max_pixels: int | None
    models: list[ModelEstimate]

    @property
    def failed(self) -> list[FileEstimate]:
        return [f for f in self.models[0].files if f.error_code] if self.models else []


# --- measuring ------------------------------------------------------------------------------


def measure_file(path: Path, limits: PreparationLimits = DEFAULT_LIMITS) -> MeasuredFile:
    """Page sizes as the pipeline's page preparation sees them; reads headers and page trees only."""
    measured = MeasuredFile(path=str(path))
    try:
        with path.open("rb") as file:
            kind = detect_kind(file.read(SNIFF_BYTES))
            measured.kind = kind.value
            file.seek(0)
            measured.pages = _page_sources(file, kind, limits)
    except OcrPipelineError as error:
        measured.error_code, measured.error_message = error.code, error.message
    except OSError as error:
        measured.error_code, measured.error_message = "source.unreadable", str(error)
    return measured


def _page_sources(file: Any, kind: DocumentKind, limits: PreparationLimits) -> list[PageSource]:
    if kind is DocumentKind.PDF:
        pdf_page_count(file)  # typed errors for encrypted, empty and broken files, as the pipeline gives
        pages = []
        for content, resolution in pdf_page_resolutions(file, limits):
            scale = resolution.dpi / POINTS_PER_INCH
            finest = MAX_RENDER_DPI / POINTS_PER_INCH
            pages.append(
                PageSource(
                    width=content.width * scale,
                    height=content.height * scale,
                    capacity=(content.width * finest, content.height * finest),
                )
            )
        return pages
    info = probe_image(file, limits)
    if kind is DocumentKind.TIFF and info.frame_count > 1:
        return [PageSource(width=w, height=h) for w, h in _frame_sizes(file, info.frame_count)]
    # Other multi-frame images (GIF, animated WEBP) are one page: their first frame.
    # As a person sees it: an EXIF-rotated photo's stored size is transposed.
    width, height = info.upright_size
    return [PageSource(width=width, height=height)]


def _frame_sizes(file: Any, count: int) -> list[tuple[int, int]]:
    from PIL import Image

    file.seek(0)
    with Image.open(file) as image:
        sizes = []
        for frame in range(count):
            image.seek(frame)  # reads the frame's header, not its pixels
            sizes.append(image.size)
        return sizes


# --- estimating -----------------------------------------------------------------------------


def schema_leaf_count(schema: Any) -> int:
    if isinstance(schema, dict):
        return sum(schema_leaf_count(v) for v in schema.values())
    if isinstance(schema, list):
        return sum(schema_leaf_count(v) for v in schema)
    return 1


def output_range(page_image_tokens: int, options: TaskOptions, spec: ModelSpec) -> TokenRange:
    """The heuristic range of output tokens for one page (see the module docstring)."""
    task = options.effective_task
    if task is OcrTask.FORMULA_RECOGNITION:
        low, high = FORMULA_TOKENS
    elif task is OcrTask.KEY_INFORMATION_EXTRACTION and options.result_schema:
        fields = schema_leaf_count(options.result_schema)
        low, high = fields * TOKENS_PER_SCHEMA_FIELD[0], fields * TOKENS_PER_SCHEMA_FIELD[1]
    else:
        factor_low, factor_high = TASK_FACTORS[task]
        low = math.floor(page_image_tokens * PLAIN_TEXT_SHARE[0] * factor_low)
        high = math.ceil(page_image_tokens * PLAIN_TEXT_SHARE[1] * factor_high)
    high = min(high, spec.max_output_tokens)
    return TokenRange(low=max(1, min(low, high)), high=max(1, high))


def estimate_file(
    measured: MeasuredFile, options: TaskOptions, spec: ModelSpec, limits: PreparationLimits = DEFAULT_LIMITS
) -> FileEstimate:
    budget = budget_for(spec, options)
    text_tokens = prompt_tokens(prompt_for(options))
    sizes: list[tuple[int, int]] = []
    tokens: list[int] = []
    capacities: list[int] = []
    error_code, error_message = measured.error_code, measured.error_message
    if error_code is None:
        try:
            for page in measured.pages:
                canvas = render_target(page.width, page.height, budget, limits).canvas
                sizes.append(canvas)
                tokens.append(image_tokens(canvas[1], canvas[0], budget))
                if page.capacity is None:
                    capacities.append(tokens[-1])
                else:
                    full = render_target(*page.capacity, budget, limits).canvas
                    capacities.append(image_tokens(full[1], full[0], budget))
        except OcrPipelineError as error:
            error_code, error_message = error.code, error.message
            sizes, tokens, capacities = [], [], []
    output = sum((output_range(t, options, spec) for t in capacities), TokenRange(low=0, high=0))
    return FileEstimate(
        path=measured.path,
        kind=measured.kind,
        pages=len(tokens),
        sent_sizes=sizes,
        image_tokens=sum(tokens),
        text_input_tokens=text_tokens * len(tokens),
        input_tokens=sum(tokens) + text_tokens * len(tokens),
        output_tokens=output,
        error_code=error_code,
        error_message=error_message,
    )


def region_cost(
    prices: PriceTable, model: str, region: Region, input_tokens: int, output: TokenRange, *, batch: bool = False
) -> RegionCost:
    try:
        price = prices.price_for(model, region)
    except PriceNotFound:
        return RegionCost(
            region=region, priced=False, note=f"the price table of {prices.as_of} has no price for {model} in {region}"
        )
    unit = Decimal(prices.unit_tokens)

    def cost(output_tokens: int, price: UnitPrice = price) -> Decimal:
        return (
            Decimal(input_tokens) * price.input_per_million + Decimal(output_tokens) * price.output_per_million
        ) / unit

    batch_cost = None
    if batch:
        # PriceNotFound here is a lane the table has no discount for: refused, never priced as real time.
        batch_price = prices.price_for(model, region, batch=True)
        batch_cost = BatchCost(
            input_per_million=batch_price.input_per_million,
            output_per_million=batch_price.output_per_million,
            low=cost(output.low, batch_price),
            high=cost(output.high, batch_price),
        )
    return RegionCost(
        region=region,
        priced=True,
        currency=price.currency,
        input_per_million=price.input_per_million,
        output_per_million=price.output_per_million,
        price_table=price.price_table,
        low=cost(output.low),
        high=cost(output.high),
        batch=batch_cost,
    )


def estimate(
    paths: Sequence[Path],
    options: TaskOptions,
    models: Sequence[str],
    regions: Sequence[Region],
    *,
    prices: PriceTable | None = None,
    limits: PreparationLimits = DEFAULT_LIMITS,
    batch: bool = False,
) -> EstimateReport:
    prices = prices or default_price_table()
    specs = [model_spec(name) for name in models]  # unknown names fail before any file is read
    measured = [measure_file(upload.path, limits) for upload in collect_uploads(list(paths))]
    results: list[ModelEstimate] = []
    for spec in specs:
        files = [estimate_file(m, options, spec, limits) for m in measured]
        input_tokens = sum(f.input_tokens for f in files)
        output = sum((f.output_tokens for f in files), TokenRange(low=0, high=0))
        budget = budget_for(spec, options)
        results.append(
            ModelEstimate(
                model=spec.name,
                patch=spec.patch,
                max_output_tokens=spec.max_output_tokens,
                min_pixels=budget.min_pixels,
                max_pixels=budget.max_pixels,
                files=files,
                pages=sum(f.pages for f in files),
                image_tokens=sum(f.image_tokens for f in files),
                input_tokens=input_tokens,
                output_tokens=output,
                costs=[region_cost(prices, spec.name, region, input_tokens, output, batch=batch) for region in regions],
            )
        )
    task = options.effective_task
    return EstimateReport(
        task=task.value if task else None,
        mode="batch" if batch else "realtime",
        min_pixels=options.min_pixels,
        max_pixels=options.max_pixels,
        models=results,
    )


# --- printing -------------------------------------------------------------------------------


def _sizes_text(sizes: list[tuple[int, int]]) -> str:
    distinct = list(dict.fromkeys(sizes))
    text = ", ".join(f"{w}x{h}" for w, h in distinct[:2])
    return text + (", …" if len(distinct) > 2 else "")


def format_report(report: EstimateReport) -> str:
    lines: list[str] = []
    task = report.task or "free prompt"
    for model in report.models:
        lines.append(
            f"{model.model} ({model.patch} px patches, output ≤ {model.max_output_tokens:,}) · {task} · "
            f"pixels {model.min_pixels:,}–{model.max_pixels:,}"
        )
        width = max([len("total"), *(len(f.path) for f in model.files)])
        lines.append(
            f"  {'file':<{width}}  {'pages':>5}  {'image tok':>10}  {'input tok':>10}  {'output tok (guess)':>18}  sent as"
        )
        for f in model.files:
            if f.error_code:
                lines.append(f"  {f.path:<{width}}  error {f.error_code}: {f.error_message}")
                continue
            out = f"{f.output_tokens.low:,}–{f.output_tokens.high:,}"
            lines.append(
                f"  {f.path:<{width}}  {f.pages:>5}  {f.image_tokens:>10,}  {f.input_tokens:>10,}  {out:>18}  "
                f"{_sizes_text(f.sent_sizes)}"
            )
        out = f"{model.output_tokens.low:,}–{model.output_tokens.high:,}"
        lines.append(
            f"  {'total':<{width}}  {model.pages:>5}  {model.image_tokens:>10,}  {model.input_tokens:>10,}  {out:>18}"
        )
        for cost in model.costs:
            if not cost.priced:
                lines.append(f"  cost {cost.region.value:<4} unpriced: {cost.note}")
                continue
            assert cost.low is not None and cost.high is not None
            lines.append(
                f"  cost {cost.region.value:<4} {format_money(cost.low)} – {format_money(cost.high)} {cost.currency}"
                f"  ({format_money(cost.input_per_million or Decimal(0))} in / "
                f"{format_money(cost.output_per_million or Decimal(0))} out per million tokens, "
                f"price table {cost.price_table})"
            )
            if cost.batch is not None:
                lines.append(
                    f"  batch {cost.region.value:<3} {format_money(cost.batch.low)} – {format_money(cost.batch.high)} "
                    f"{cost.currency}  ({format_money(cost.batch.input_per_million)} in / "
                    f"{format_money(cost.batch.output_per_million)} out per million tokens, the Batch File API)"
                )
        lines.append("")
    lines.append(
        "Image tokens are exact (the vendor's formula on the sizes the pipeline sends); prompt tokens are close;"
        " output tokens are a guess from page size and task (see docs/cli.md)."
    )
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------


def command_estimate(args: argparse.Namespace) -> int:
    from ocr_pipeline.catalog import DEFAULT_MODEL, DEFAULT_REGION
    from ocr_pipeline.errors import InvalidRequest

    schema = load_schema(args.schema)
    task = OcrTask(args.task) if args.task else (OcrTask.KEY_INFORMATION_EXTRACTION if schema else None)
    options = TaskOptions.build(
        task=task,
        result_schema=schema,
        prompt=args.prompt,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
    )
    models = list(dict.fromkeys(args.model or [DEFAULT_MODEL]))
    regions = list(dict.fromkeys(Region(r) for r in (args.region or [DEFAULT_REGION.value])))
    limits = PreparationLimits(pdf_render_dpi=args.pdf_render_dpi)
    batch = args.mode == Lane.BATCH.value
    if batch:
        try:
            check_batch_lane(models, [region.value for region in regions])
        except BatchLaneUnsupported as error:
            return refused(error)
    try:
        report = estimate([Path(p) for p in args.paths], options, models, regions, limits=limits, batch=batch)
    except (FileNotFoundError, ValueError) as error:
        raise InvalidRequest(str(error)) from None
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), ensure_ascii=False))
    else:
        print(format_report(report))
    return 1 if report.failed else 0


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("estimate", help="pages, tokens and cost of files before sending them (no API call)")
    parser.add_argument("paths", nargs="+", help="files or folders (walked as `run` walks them)")
    parser.add_argument("--task", choices=[t.value for t in OcrTask], help="built-in task (default text_recognition)")
    parser.add_argument("--schema", help="result_schema for key_information_extraction: a JSON file or inline JSON")
    parser.add_argument("--prompt", help="a free prompt instead of a built-in task")
    parser.add_argument("--model", action="append", help="model to price (repeatable, to compare; default the default)")
    parser.add_argument(
        "--ocr-region",
        "--region",
        dest="region",
        action="append",
        choices=[r.value for r in Region],
        help="the DashScope region: intl, us or cn (repeatable; default intl; --region is its old name)",
    )
    parser.add_argument(
        "--min-pixels", type=int, default=None, help="pixel budget floor (default the model's: 3072, or 3136 at 28 px)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="pixel budget cap (default the model's: 8388608, or 6422528 at 28 px)",
    )
    parser.add_argument(
        "--pdf-render-dpi",
        type=float,
        default=DEFAULT_PDF_RENDER_DPI,
        help=f"the stack's PdfRenderDpi: dpi of a PDF page of text (default {DEFAULT_PDF_RENDER_DPI:g}; "
        "0 = to the pixel budget)",
    )
    add_mode_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=command_estimate)
