"""The Lambda layer stays small and runtime-only, and its pins match pyproject.toml."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import ocr_pipeline

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_LAYER = ("ocr_devkit", "rapidocr_onnxruntime", "onnxruntime", "cv2", "moto", "numpy", "pytest")


def _requirement_names(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.split("[")[0].lower()] = version
    return pins


def test_layer_requirements_are_pinned_as_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(project["dependencies"])
    layer = _requirement_names((ROOT / "layers/ocr_pipeline/requirements.txt").read_text().splitlines())
    assert layer, "the layer has no requirements"
    for name, version in layer.items():
        assert declared.get(name) == version, f"{name}=={version} in the layer but {declared.get(name)} in pyproject"
    # boto3 comes with the Lambda runtime; everything else the package needs must be in the layer
    assert set(declared) - set(layer) == {"boto3"}


def test_nothing_in_the_layer_imports_development_or_engine_packages():
    # Given every module of the layer package imported in a fresh interpreter
    modules = [m.name for m in pkgutil.walk_packages(ocr_pipeline.__path__, "ocr_pipeline.")]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(','.join(sorted(m for m in {FORBIDDEN_IN_LAYER!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    # Then none of the emulator, OCR engine, OpenCV, moto or numpy came along
    assert result.stdout.strip() == ""
    assert len(modules) > 15


def test_layer_requirements_carry_no_development_packages():
    text = (ROOT / "layers/ocr_pipeline/requirements.txt").read_text().lower()
    for name in ("moto", "rapidocr", "onnxruntime", "opencv", "pytest", "numpy"):
        assert name not in text
