"""The Lambda layer stays small and runtime-only, and its pins match pyproject.toml."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import ocr_pipeline
from ocr_devkit.stack.cfn import load_template

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_LAYER = ("ocr_devkit", "rapidocr_onnxruntime", "onnxruntime", "cv2", "moto", "numpy", "pytest")
LOCK = ROOT / "layers/ocr_pipeline/requirements.txt"


def _lock_entries() -> list[str]:
    """The lock's requirements as pip reads them: continuation lines joined, comments dropped."""
    joined = LOCK.read_text().replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _requirement_names(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.split()[0].partition("==")
            pins[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version
    return pins


def test_layer_requirements_are_pinned_as_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(project["dependencies"])
    layer = _requirement_names(_lock_entries())
    assert layer, "the layer has no requirements"
    # the lock also holds their dependencies; each direct one is at pyproject's pin
    for name, version in declared.items():
        if name in layer:
            assert layer[name] == version, f"{name}=={layer[name]} in the layer but {version} in pyproject"
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


def test_every_package_of_the_layer_lock_is_pinned_and_hashed():
    # Given the lock's entries, as pip reads them
    entries = _lock_entries()
    names = [entry.split("==")[0] for entry in entries]
    # Then each is one exact pin followed only by sha256 hashes, which pip's --require-hashes needs
    for entry in entries:
        pin, *options = entry.split()
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*==[0-9][0-9A-Za-z.+!-]*", pin), f"{pin!r} is not an exact pin"
        assert options, f"{pin} has no hash"
        for option in options:
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", option), f"{pin}: {option!r} is not a sha256 hash"
    # and each package is locked once, the transitive ones too, none of them the runtime's SDK
    assert len(names) == len(set(names))
    assert {"pydantic-core", "typing-extensions", "anyio", "httpcore", "certifi"} <= set(names)
    assert not {"boto3", "botocore", "s3transfer"} & set(names)


def test_the_layer_is_built_and_locked_for_the_functions_architecture():
    # Given the functions' architecture in template.yaml, and the machine word wheel tags use for it
    template = load_template(ROOT / "template.yaml").body
    (architecture,) = template["Globals"]["Function"]["Architectures"]
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}[architecture]
    # Then the layer is declared for it, and built on it by SAM
    layer = template["Resources"]["SharedLayer"]
    assert layer["Properties"]["CompatibleArchitectures"] == [architecture]
    assert layer["Metadata"]["BuildArchitecture"] == architecture
    # and the layer's Makefile fetches wheels for it, whatever machine runs the build
    makefile = (ROOT / "layers/ocr_pipeline/Makefile").read_text()
    assert re.search(rf"^LAMBDA_MACHINE \?= {machine}$", makefile, re.MULTILINE)
    flags = re.search(r"^PIP_TARGET_FLAGS \?= (.*?[^\\])$", makefile, re.MULTILINE | re.DOTALL)
    assert flags and "--platform manylinux_2_28_$(LAMBDA_MACHINE)" in flags[1]
    # and the lock was resolved for it (its header says which platform `make lock` resolved)
    assert f"on {machine} manylinux" in LOCK.read_text().split("\n\n", 1)[0]
