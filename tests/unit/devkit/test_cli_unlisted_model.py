"""The command line refuses a model its region does not offer before anything starts, and admits one
with --allow-unlisted-model and its --model-patch."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocr_devkit.cli import main
from ocr_devkit.run import RunOptions, ocr_backend
from PIL import Image


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "page.png"
    Image.new("L", (200, 100), 255).save(path)
    return path


@pytest.mark.parametrize("command", ["recognize", "run"])
def test_a_model_the_region_does_not_offer_exits_3_before_anything_starts(command, page, tmp_path, capsys):
    extra = ["--out", str(tmp_path / "out")] if command == "run" else []
    code = main([command, str(page), "--model", "qwen-vl-ocr-latest", "--ocr-region", "intl", *extra])
    assert code == 3
    err = capsys.readouterr().err
    assert "config.invalid" in err and "--allow-unlisted-model" in err
    assert not (tmp_path / "out").exists()


def test_allowing_an_unlisted_model_without_its_patch_size_exits_3(page, capsys):
    code = main(["recognize", str(page), "--model", "qwen-vl-ocr-2026-03-01", "--allow-unlisted-model"])
    assert code == 3
    assert "patch size" in capsys.readouterr().err


def test_run_passes_the_unlisted_model_to_the_stacks_parameters(tmp_path):
    options = RunOptions(
        paths=[tmp_path],
        out_dir=tmp_path / "out",
        backend="dashscope",
        model="qwen-vl-ocr-2026-03-01",
        allow_unlisted_model=True,
        unlisted_model_patch=32,
    )
    with ocr_backend(options) as (parameters, _key, _server):
        assert parameters["AllowUnlistedModel"] == "true"
        assert parameters["UnlistedModelPatch"] == "32"
        assert parameters["DefaultModel"] == "qwen-vl-ocr-2026-03-01"
