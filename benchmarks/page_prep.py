"""Page preparation: our PDF pages and phone photos against the usual recipes, at the same pixel count.

Each side runs in a fresh process (probe.py) for its time per page and peak memory. The text the
emulator's OCR engine reads is compared on page 1 prepared both ways, and the PDF's time is split
into drawing (color check, then the page) and finishing (encoding), so that the figure says where the time goes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ocr_pipeline import pdf
from ocr_pipeline.imaging import DEFAULT_LIMITS, PreparedImage, prepare_image, prepare_rendered
from ocr_pipeline.pdf import prepare_pdf_page

from . import workloads
from .cold_start import function_variables
from .documents import phone_photo_jpeg, text_pdf
from .recognition import recognized_text

PDF_REPEATS = 24  # three turns of the 8 pages
JPEG_REPEATS = 7
MEMORY_REPEATS = 3
GOAL_PDF_MS = 50.0
GOAL_PDF_SPEEDUP = 4.0
ROOT = Path(__file__).resolve().parents[1]


def run_probe(name: str, repeats: int) -> dict[str, Any]:
    """Times with the functions' variables from template.yaml, as the recognize function prepares pages;
    peak memory from a second run with glibc's defaults.

    With the template's malloc thresholds, memory freed while the inputs were built stays with the
    process and the work reuses it, so the high-water mark would hardly rise: the second run, where
    freed memory goes back to the kernel, shows what the work itself needs at its peak.
    """
    probe = _probe(name, repeats, {**os.environ, **function_variables()})
    probe["median_ms"] = round(statistics.median(probe["times_ms"]), 1)
    defaults = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    probe["peak_added_kib"] = _probe(name, MEMORY_REPEATS, defaults)["peak_added_kib"]
    return probe


def _probe(name: str, repeats: int, environment: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.probe", name, str(repeats)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"probe {name} failed: {result.stderr.strip()[-1500:]}")
    probe: dict[str, Any] = json.loads(result.stdout)
    return probe


def baseline_available() -> str | None:
    """None when pdf2image and poppler's pdftoppm are both there, else why not."""
    try:
        import pdf2image  # noqa: F401
    except ImportError:
        return "pdf2image is not installed (it is in the `bench` extra)"
    if shutil.which("pdftoppm") is None:
        return "poppler-utils (pdftoppm) is not installed and could not be installed"
    return None


def pdf_breakdown(repeats: int = 9) -> dict[str, float]:
    """Median ms of drawing page 1 (color check, then the page) and of finishing it (encoding), as prepare_pdf_page does."""
    document = text_pdf(1)
    draw, finish = [], []
    with pdf._PDFIUM, pdf._document(document, forms=True) as (opened, _):
        page = opened[0]
        width, height = page.get_size()
        _, target = pdf.render_plan(page, workloads.DEFAULT_BUDGET, DEFAULT_LIMITS)
        for _ in range(repeats):
            started = time.perf_counter()
            drawn = pdf._draw(page, target.content, grey=pdf._looks_grey(page, target.content))
            draw.append(time.perf_counter() - started)
        page.close()
    for _ in range(repeats):
        copy = drawn.copy()
        started = time.perf_counter()
        prepared = prepare_rendered(copy, target, source_format="PDF", original_size=(width, height))
        finish.append(time.perf_counter() - started)
    return {
        "draw_ms": round(statistics.median(draw) * 1000, 1),
        "finish_ms": round(statistics.median(finish) * 1000, 1),
        "encoded_bytes": len(prepared.data),
        "mime_type": prepared.mime_type,
        "stored_as": prepared.steps[-1].detail,
    }


def measure(recognizer: Any, log: Any = print) -> dict[str, Any]:
    result: dict[str, Any] = {"goal_pdf_ms": GOAL_PDF_MS, "goal_pdf_speedup": GOAL_PDF_SPEEDUP}
    document = text_pdf(1)
    ours = prepare_pdf_page(document, 1, workloads.DEFAULT_BUDGET)
    result["pdf_page_size"] = [ours.width, ours.height]
    log(f"  PDF pages, ours: {PDF_REPEATS} pages in a fresh process")
    result["pdf"] = run_probe("pdf", PDF_REPEATS)
    result["pdf_breakdown"] = pdf_breakdown()
    missing = baseline_available()
    if missing is None:
        log(f"  PDF pages, pdf2image + Pillow PNG: {PDF_REPEATS} pages")
        result["pdf2image"] = run_probe("pdf2image", PDF_REPEATS)
        result["pdf_speedup"] = round(result["pdf2image"]["median_ms"] / result["pdf"]["median_ms"], 2)
        with tempfile.TemporaryDirectory(prefix="ocr-bench-") as folder:
            (Path(folder) / "page.pdf").write_bytes(document)
            baseline_png = workloads.pdf2image_png(Path(folder) / "page.pdf", 1, (ours.width, ours.height))
        log("  recognizing page 1 prepared both ways on the emulator")
        result["pdf_text"] = _same_text(recognizer, ours, baseline_png)
    else:
        result["pdf2image"] = {"unavailable": missing}
    photo = phone_photo_jpeg()
    prepared_photo = prepare_image(photo, workloads.DEFAULT_BUDGET)
    result["jpeg_size"] = [prepared_photo.width, prepared_photo.height]
    log(f"  12 MP phone JPEG, ours and naive: {JPEG_REPEATS} times each")
    result["jpeg"] = run_probe("jpeg", JPEG_REPEATS)
    result["jpeg_naive"] = run_probe("jpeg-naive", JPEG_REPEATS)
    result["jpeg_speedup"] = round(result["jpeg_naive"]["median_ms"] / result["jpeg"]["median_ms"], 2)
    naive = workloads.naive_png(photo, (prepared_photo.width, prepared_photo.height))
    result["jpeg_text"] = _same_text(recognizer, prepared_photo, naive)
    return result


def _same_text(recognizer: Any, ours: PreparedImage, baseline_png: bytes) -> dict[str, Any]:
    ours_text = recognized_text(recognizer, ours.data, ours.mime_type)
    baseline_text = recognized_text(recognizer, baseline_png, "image/png")
    return {
        # The engine's spaces between words shift between any two drawings of a small page (as in the PDF
        # resolution benchmark), so the characters are compared without them; exact equality beside it.
        "identical": _without_spaces(ours_text) == _without_spaces(baseline_text),
        "exactly": ours_text == baseline_text,
        "lines": len(ours_text.splitlines()),
        "characters": len(ours_text),
        "baseline_characters": len(baseline_text),
    }


def _without_spaces(text: str) -> str:
    return "".join(text.split())
