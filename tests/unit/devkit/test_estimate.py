"""`ocr-pipeline estimate`: image tokens equal the vendor's formula on what the pipeline really sends."""

from __future__ import annotations

import ctypes
import io
import json
import math
from decimal import Decimal
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from ocr_devkit.cli import main
from ocr_devkit.estimate import estimate
from ocr_pipeline.catalog import Region
from ocr_pipeline.imaging import PreparationLimits, prepare_image
from ocr_pipeline.pdf import prepare_pdf_page
from ocr_pipeline.tasks import OcrTask, TaskOptions
from ocr_pipeline.tokens import PixelBudget
from PIL import Image

A4_POINTS = (595, 842)


def documented_image_tokens(h: int, w: int, f: int, min_pixels: int = 3072, max_pixels: int = 8388608) -> int:
    """The estimate exactly as the vendor's documentation writes it (kept apart from tokens.py on purpose)."""
    h_bar, w_bar = round(h / f) * f, round(w / f) * f
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        h_bar, w_bar = math.floor(h / beta / f) * f, math.floor(w / beta / f) * f
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        h_bar, w_bar = math.ceil(h * beta / f) * f, math.ceil(w * beta / f) * f
    return h_bar * w_bar // (f * f) + 2


def png(path: Path, size: tuple[int, int]) -> Path:
    Image.new("L", size, 255).save(path, "PNG")
    return path


def a4_pdf(path: Path, pages: int = 1) -> Path:
    # Pillow writes each image as a page of width x 72 / resolution points: 595 x 842 pt at 72 dpi.
    frames = [Image.new("L", A4_POINTS, 255) for _ in range(pages)]
    frames[0].save(path, "PDF", resolution=72.0, save_all=True, append_images=frames[1:])
    return path


def test_a_1000x1000_png_costs_what_the_documented_formula_says(tmp_path):
    # Given a 1000x1000 PNG
    image = png(tmp_path / "square.png", (1000, 1000))
    # When estimated for a 32-px model and a 28-px model
    report = estimate([image], TaskOptions(), ["qwen-vl-ocr-2025-11-20", "qwen-vl-ocr-2025-08-28"], [Region.CN])
    new, old = report.models
    # Then the image tokens are the documented formula's: 31x31+2 and 36x36+2
    assert new.image_tokens == documented_image_tokens(1000, 1000, 32) == 963
    assert old.image_tokens == documented_image_tokens(1000, 1000, 28) == 1298
    assert new.files[0].sent_sizes == [(992, 992)] and old.files[0].sent_sizes == [(1008, 1008)]


def test_the_estimate_matches_what_prepare_image_produces(tmp_path):
    # Given images of awkward sizes, including a strip the pipeline pads
    sizes = [(1000, 1000), (1234, 567), (4000, 3000), (30, 7000)]
    paths = [png(tmp_path / f"{w}x{h}.png", (w, h)) for w, h in sizes]
    # When estimated
    (model,) = estimate(paths, TaskOptions(), ["qwen-vl-ocr-2025-11-20"], [Region.INTL]).models
    # Then each page's size is the size prepare_image really sends
    budget = PixelBudget(patch=32)
    for path, file in zip(paths, model.files, strict=True):
        prepared = prepare_image(path.read_bytes(), budget)
        assert file.sent_sizes == [(prepared.width, prepared.height)], path.name


def test_an_a4_pdf_page_is_counted_at_the_size_it_is_rendered(tmp_path):
    # Given a two-page A4 PDF whose pages are 72-dpi images (Pillow writes one image per page)
    pdf = a4_pdf(tmp_path / "a4.pdf", pages=2)
    # When estimated
    (model,) = estimate([pdf], TaskOptions(), ["qwen-vl-ocr-2025-11-20"], [Region.INTL]).models
    (file,) = model.files
    # Then both pages are counted, at the size prepare_pdf_page renders, and at the formula's tokens:
    # each page is a scan, drawn at its own 72 dpi, one pixel per point
    rendered = prepare_pdf_page(pdf.read_bytes(), 1, PixelBudget(patch=32))
    assert file.pages == 2 and file.sent_sizes == [(rendered.width, rendered.height)] * 2
    assert file.image_tokens == 2 * documented_image_tokens(842, 595, 32) == 2 * (608 * 832 // 1024 + 2)


def test_with_pdf_render_dpi_0_an_a4_page_is_counted_at_the_budget(tmp_path):
    # Given the same PDF, When estimated with PdfRenderDpi = 0 (every page drawn to the budget, as before)
    pdf = a4_pdf(tmp_path / "a4.pdf", pages=2)
    limits = PreparationLimits(pdf_render_dpi=0)
    (model,) = estimate([pdf], TaskOptions(), ["qwen-vl-ocr-2025-11-20"], [Region.INTL], limits=limits).models
    (file,) = model.files
    # Then it is the size prepare_pdf_page draws with the same setting:
    # A4 at the 600 dpi the renderer starts from is 4958x7017 px; the budget brings it to 2432x3424.
    rendered = prepare_pdf_page(pdf.read_bytes(), 1, PixelBudget(patch=32), limits)
    assert file.sent_sizes == [(rendered.width, rendered.height)] * 2
    per_page = documented_image_tokens(round(842 * 600 / 72), round(595 * 600 / 72), 32)
    assert file.image_tokens == 2 * per_page == 2 * (2432 * 3424 // 1024 + 2)


def test_vector_and_scanned_pages_are_each_counted_as_they_are_drawn(tmp_path):
    # Given a PDF whose first page is text and whose second is a 100-dpi scan
    document = pdfium.PdfDocument.new()
    text_page = document.new_page(595.0, 842.0)
    text = pdfium_c.FPDFPageObj_NewTextObj(document.raw, b"Helvetica", ctypes.c_float(10.0))
    wide = ctypes.create_string_buffer("Total due 1,234.56\x00".encode("utf-16-le"))
    pdfium_c.FPDFText_SetText(text, ctypes.cast(wide, pdfium_c.FPDF_WIDESTRING))
    pdfium_c.FPDFPage_InsertObject(text_page.raw, text)
    text_page.gen_content()
    scan_page = document.new_page(595.0, 842.0)
    scan = pdfium.PdfImage.new(document)
    scan.set_bitmap(pdfium.PdfBitmap.from_pil(Image.new("L", (round(595 / 72 * 100), round(842 / 72 * 100)), 200)))
    scan.set_matrix(pdfium.PdfMatrix().scale(595.0, 842.0))
    scan_page.insert_obj(scan)
    scan_page.gen_content()
    path = tmp_path / "mixed.pdf"
    document.save(path)
    # When estimated
    (model,) = estimate([path], TaskOptions(), ["qwen-vl-ocr-2025-11-20"], [Region.INTL]).models
    # Then each page is the size the pipeline draws it at: PdfRenderDpi for text, 100 dpi for the scan
    budget = PixelBudget(patch=32)
    drawn = [prepare_pdf_page(path.read_bytes(), page, budget) for page in (1, 2)]
    assert model.files[0].sent_sizes == [(page.width, page.height) for page in drawn]
    assert drawn[0].width != drawn[1].width


def test_cost_is_input_and_output_at_the_table_prices_and_unpriced_pairs_say_so(tmp_path):
    image = png(tmp_path / "square.png", (1000, 1000))
    (model,) = estimate([image], TaskOptions(), ["qwen-vl-ocr-2025-11-20"], [Region.INTL]).models
    intl = model.costs[0]
    assert intl.priced and intl.low is not None and intl.high is not None
    expected_low = (
        Decimal(model.input_tokens) * Decimal("0.07") + Decimal(model.output_tokens.low) * Decimal("0.16")
    ) / 1_000_000
    assert intl.low == expected_low and intl.high > intl.low
    (old,) = estimate([image], TaskOptions(), ["qwen-vl-ocr-2025-08-28"], [Region.INTL]).models
    assert not old.costs[0].priced and old.costs[0].low is None


def test_output_ranges_follow_the_task_and_stop_at_the_model_limit(tmp_path):
    image = png(tmp_path / "big.png", (3000, 3000))
    plain = estimate([image], TaskOptions(), ["qwen-vl-ocr"], [Region.INTL]).models[0]
    boxes = estimate([image], TaskOptions(task=OcrTask.ADVANCED_RECOGNITION), ["qwen-vl-ocr"], [Region.INTL]).models[0]
    schema = TaskOptions(task=OcrTask.KEY_INFORMATION_EXTRACTION, result_schema={"a": "", "b": {"c": "", "d": ""}})
    fields = estimate([image], schema, ["qwen-vl-ocr"], [Region.INTL]).models[0]
    assert boxes.output_tokens.low > plain.output_tokens.low
    assert boxes.output_tokens.high == 4096  # qwen-vl-ocr writes at most 4,096 tokens
    assert (fields.output_tokens.low, fields.output_tokens.high) == (3 * 3, 3 * 40)


def test_the_command_walks_folders_and_prints_json_per_model(tmp_path, capsys):
    # Given a folder with an image, a PDF, a hidden file and an unreadable "image"
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    png(folder / "a.png", (1000, 1000))
    a4_pdf(folder / "sub" / "b.pdf")
    png(folder / ".hidden.png", (50, 50))
    (folder / "broken.png").write_bytes(b"not an image at all")
    # When estimated for two models
    code = main(["estimate", str(folder), "--model", "qwen-vl-ocr-2025-11-20", "--model", "qwen-vl-ocr", "--json"])
    report = json.loads(capsys.readouterr().out)
    # Then every visible file is listed for each model, the broken one with its error, and the run exits 1
    assert code == 1
    assert [m["model"] for m in report["models"]] == ["qwen-vl-ocr-2025-11-20", "qwen-vl-ocr"]
    files = report["models"][0]["files"]
    assert [Path(f["path"]).name for f in files] == ["a.png", "broken.png", "b.pdf"]
    assert files[1]["error_code"] == "image.unsupported_format"
    assert report["models"][0]["image_tokens"] == 963 + files[2]["image_tokens"]
    assert report["models"][0]["costs"][0]["low"] is not None


def test_the_text_report_names_unpriced_models(tmp_path, capsys):
    png(tmp_path / "a.png", (640, 480))
    code = main(["estimate", str(tmp_path / "a.png"), "--model", "qwen-vl-ocr-latest", "--region", "intl"])
    out = capsys.readouterr().out
    assert code == 0 and "unpriced" in out and "qwen-vl-ocr-latest" in out


def test_an_unknown_model_is_a_configuration_error(tmp_path, capsys):
    png(tmp_path / "a.png", (64, 64))
    assert main(["estimate", str(tmp_path / "a.png"), "--model", "gpt-ocr"]) == 3


def test_each_frame_of_a_multipage_tiff_is_a_page_with_its_own_size(tmp_path):
    sizes = [(800, 600), (1200, 1600), (500, 500)]
    images = [Image.new("L", size, 255) for size in sizes]
    buffer = io.BytesIO()
    images[0].save(buffer, "TIFF", save_all=True, append_images=images[1:])
    path = tmp_path / "fax.tiff"
    path.write_bytes(buffer.getvalue())
    (model,) = estimate([path], TaskOptions(), ["qwen-vl-ocr-2025-11-20"], [Region.INTL]).models
    assert model.pages == 3
    assert model.image_tokens == sum(documented_image_tokens(h, w, 32) for w, h in sizes)


def test_an_exif_rotated_photo_is_measured_upright_as_it_is_sent(tmp_path):
    # Given a photo stored 1200x400 whose EXIF says "rotate 90°" (orientation 6): upright it is 400x1200
    stored = Image.new("RGB", (1200, 400), "white")
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, "JPEG", exif=exif)
    # When estimated / Then its size is the upright one, the one prepare_image sends
    (model,) = estimate([path], TaskOptions(), ["qwen-vl-ocr-2025-11-20"], [Region.INTL]).models
    prepared = prepare_image(path.read_bytes(), PixelBudget(patch=32))
    assert prepared.height > prepared.width
    assert model.files[0].sent_sizes == [(prepared.width, prepared.height)]


def test_a_pdf_page_sent_coarser_is_guessed_to_hold_as_much_text(tmp_path):
    # Given an A4 PDF page, estimated as drawn by default (its 72-dpi scan) and drawn to the budget
    pdf = a4_pdf(tmp_path / "a4.pdf")
    options, models, regions = TaskOptions(), ["qwen-vl-ocr-2025-11-20"], [Region.INTL]
    (ours,) = estimate([pdf], options, models, regions).models
    (before,) = estimate([pdf], options, models, regions, limits=PreparationLimits(pdf_render_dpi=0)).models
    # Then fewer image tokens are sent, but the output guess is that of the whole page
    assert ours.image_tokens < before.image_tokens
    assert ours.output_tokens == before.output_tokens


def test_mode_batch_puts_the_batch_price_next_to_the_real_time_one(tmp_path):
    # Given a page and a model the Batch File API takes in cn
    image = png(tmp_path / "square.png", (1000, 1000))

    # When it is estimated for the batch lane
    (model,) = estimate([image], TaskOptions(), ["qwen-vl-ocr"], [Region.CN], batch=True).models

    # Then the real-time price is the table's, and the batch price is the same tokens at half of it
    (cn,) = model.costs
    assert cn.batch is not None and cn.low is not None and cn.high is not None
    assert (cn.input_per_million, cn.output_per_million) == (Decimal("0.717"), Decimal("0.717"))
    assert (cn.batch.input_per_million, cn.batch.output_per_million) == (Decimal("0.3585"), Decimal("0.3585"))
    expected_low = (Decimal(model.input_tokens) + Decimal(model.output_tokens.low)) * Decimal("0.3585") / 1_000_000
    assert cn.batch.low == expected_low
    assert (cn.batch.low * 2, cn.batch.high * 2) == (cn.low, cn.high)


def test_without_mode_batch_no_batch_price_is_shown(tmp_path):
    image = png(tmp_path / "square.png", (1000, 1000))
    (model,) = estimate([image], TaskOptions(), ["qwen-vl-ocr"], [Region.CN]).models
    assert model.costs[0].batch is None


def test_the_command_prints_both_prices_for_a_lane_that_has_batch(tmp_path, capsys):
    png(tmp_path / "a.png", (1000, 1000))
    argv = ["estimate", str(tmp_path / "a.png"), "--model", "qwen-vl-ocr", "--ocr-region", "cn", "--mode", "batch"]

    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "batch"
    (cost,) = report["models"][0]["costs"]
    assert Decimal(cost["batch"]["low"]) * 2 == Decimal(cost["low"])

    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "cost cn" in text and "batch cn" in text and "0.3585 in / 0.3585 out" in text


def test_mode_batch_where_the_lane_is_not_offered_is_refused_without_a_price(tmp_path, capsys):
    png(tmp_path / "a.png", (1000, 1000))
    for argv in (
        ["--model", "qwen-vl-ocr", "--ocr-region", "intl"],  # the lane is Beijing's only
        ["--model", "qwen-vl-ocr-2025-11-20", "--ocr-region", "cn"],  # a snapshot the lane does not take
        ["--model", "qwen-vl-ocr", "--ocr-region", "cn", "--ocr-region", "us"],  # one pair of two
        [],  # the defaults: qwen-vl-ocr-2025-11-20 in intl
    ):
        code = main(["estimate", str(tmp_path / "a.png"), "--mode", "batch", "--json", *argv])

        captured = capsys.readouterr()
        assert code == 3
        assert captured.out == ""
        assert captured.err.startswith("error request.batch_unsupported: the batch lane is offered for qwen-vl-ocr")
