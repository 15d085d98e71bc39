"""`ocr-pipeline draw`: boxes and labels land where the words are, on images and PDF pages."""

from __future__ import annotations

import json

import pypdfium2 as pdfium
import pytest
from ocr_devkit.cli import main
from ocr_devkit.overlay import find_cjk_font, pages_with_words
from PIL import Image, ImageChops, ImageDraw


def word(text: str, x0: float, y0: float, x1: float, y1: float) -> dict:
    return {
        "text": text,
        "location": [x0, y0, x1, y0, x1, y1, x0, y1],
        "rotate_rect": [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0],
    }


def recognize_output(words: list[dict], width: float, height: float, source_format: str = "PNG", scale=1.0) -> dict:
    """The shape `ocr-pipeline recognize --json` prints (only the fields draw reads, plus a few)."""
    return {
        "text": "\n".join(w["text"] for w in words),
        "words": words,
        "task": "advanced_recognition",
        "image": {
            "source_format": source_format,
            "original_width": width,
            "original_height": height,
            "scale_x": scale,
            "scale_y": scale,
        },
    }


def inside(box: dict, scale: float = 1.0) -> list[tuple[int, int]]:
    """A grid of points well inside a word's box (away from the outline and the label)."""
    x0, y0, x1, y1 = (
        v * scale for v in (box["location"][0], box["location"][1], box["location"][4], box["location"][5])
    )
    return [
        (round(x0 + (x1 - x0) * fx), round(y0 + (y1 - y0) * fy)) for fx in (0.3, 0.5, 0.7) for fy in (0.4, 0.5, 0.6)
    ]


def test_pixels_inside_every_box_change_and_far_pixels_do_not(tmp_path, capsys):
    # Given a photo-like original and a recognize --json result with two words on it
    original = Image.new("RGB", (600, 400), (250, 250, 250))
    ImageDraw.Draw(original).text((60, 120), "TOTAL 12.80", fill="black")
    original.save(tmp_path / "page.png")
    words = [word("TOTAL", 50, 110, 200, 150), word("12.80", 300, 250, 450, 300)]
    (tmp_path / "result.json").write_text(json.dumps(recognize_output(words, 600, 400)))
    # When drawn
    code = main(
        ["draw", str(tmp_path / "result.json"), "--image", str(tmp_path / "page.png"), "-o", str(tmp_path / "o.png")]
    )
    drawn = Image.open(tmp_path / "o.png").convert("RGB")
    # Then the picture has the original's size, every point inside a box differs, a far corner does not
    assert code == 0 and drawn.size == original.size
    for w in words:
        assert all(drawn.getpixel(p) != original.getpixel(p) for p in inside(w)), w["text"]
    assert drawn.getpixel((590, 10)) == original.getpixel((590, 10))


def test_a_pdf_page_is_rendered_in_the_points_space_of_the_words(tmp_path):
    # Given a two-page PDF (595 x 842 pt) and a run result with a word on page 2, in points
    pages = [Image.new("L", (595, 842), 255) for _ in range(2)]
    pages[0].save(tmp_path / "doc.pdf", "PDF", resolution=72.0, save_all=True, append_images=pages[1:])
    box = word("第二页 标题", 100, 200, 400, 240)
    result = {
        "pages": [
            {"page": 1, "status": "done", "words": None, "image": None},
            {"page": 2, "status": "done", "words": [box], "image": {"source_format": "PDF", "scale_x": 2.0}},
        ]
    }
    (tmp_path / "doc.json").write_text(json.dumps(result), encoding="utf-8")
    # When drawn without naming the page
    main(["draw", str(tmp_path / "doc.json"), "--image", str(tmp_path / "doc.pdf"), "-o", str(tmp_path / "p.png")])
    drawn = Image.open(tmp_path / "p.png").convert("RGB")
    # Then page 2 is drawn at 2 px per point, and the box lands at twice its points
    document = pdfium.PdfDocument(str(tmp_path / "doc.pdf"))
    plain = document[1].render(scale=2.0).to_pil().convert("RGB")
    document.close()
    assert drawn.size == plain.size == (1190, 1684)
    assert all(drawn.getpixel(p) != plain.getpixel(p) for p in inside(box, 2.0))
    assert drawn.getpixel((50, 1600)) == plain.getpixel((50, 1600))


def test_without_the_original_the_boxes_go_on_a_blank_page_of_its_size(tmp_path, capsys):
    words = [word("hello", 10, 10, 90, 40)]
    (tmp_path / "r.json").write_text(json.dumps(recognize_output(words, 120, 80)))
    assert main(["draw", str(tmp_path / "r.json"), "-o", str(tmp_path / "o.png")]) == 0
    assert Image.open(tmp_path / "o.png").size == (120, 80)
    assert "blank page" in capsys.readouterr().err


def test_a_result_without_boxes_is_refused_with_a_reason(tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps({"text": "x", "words": None}))
    assert main(["draw", str(tmp_path / "r.json"), "-o", str(tmp_path / "o.png")]) == 1
    assert "advanced_recognition" in capsys.readouterr().err


def test_run_results_list_only_pages_with_boxes():
    result = {"pages": [{"page": 1, "words": []}, {"page": 2, "words": [word("a", 0, 0, 10, 10)], "image": {}}]}
    assert [p.page for p in pages_with_words(result)] == [2]


def test_the_label_font_has_cjk_glyphs():
    # Given the font draw picks (the `local` extra brings Noto Sans CJK)
    choice = find_cjk_font()
    if choice.path is None:
        pytest.fail(choice.warning or "no CJK font")
    font = choice.at(32)

    def glyph(char: str) -> Image.Image:
        tile = Image.new("L", (48, 48), 0)
        ImageDraw.Draw(tile).text((4, 4), char, font=font, fill=255)
        return tile

    # When two different ideographs are drawn / Then they differ (a missing glyph draws the same box twice)
    assert ImageChops.difference(glyph("中"), glyph("文")).getbbox() is not None
    assert glyph("中").getbbox() is not None


def test_a_page_beyond_the_result_says_how_many_pages_there_are(tmp_path, capsys):
    result = {"pages": [{"page": n, "words": [word("a", 0, 0, 10, 10)], "image": {}} for n in (1, 2, 3)]}
    (tmp_path / "r.json").write_text(json.dumps(result))
    assert main(["draw", str(tmp_path / "r.json"), "-o", str(tmp_path / "o.png"), "--page", "9"]) == 1
    assert "the result has 3 page(s); there is no page 9" in capsys.readouterr().err


def test_recognize_on_a_folder_points_to_run(tmp_path, capsys):
    assert main(["recognize", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is a folder" in err and "ocr-pipeline run" in err
