"""What `sam build` makes of template.yaml is what Lambda would run: the layer's Makefile output, checked.

`make test` runs `sam build --build-dir .aws-sam/build` with Python 3.12 just before pytest (the
build takes a while, so there is one per run); these tests read that build. A build older than the
template, the functions or the layer is not this checkout's, so they skip rather than check it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from ocr_devkit.stack.cfn import load_template

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".aws-sam" / "build"
LAYER_SITE = BUILD / "SharedLayer" / "python"
# The bytecode tag of the Lambda runtime's interpreter (python3.12, template.yaml's Globals).
BYTECODE_TAG = "cpython-312"
# The ELF header's e_machine of the native code each Lambda architecture runs (the ELF spec's EM_ values),
# and the machine word a wheel's platform tag ends with.
ELF_MACHINES = {"arm64": 183, "x86_64": 62}
WHEEL_MACHINES = {"arm64": "aarch64", "x86_64": "x86_64"}
# Engine, emulator, test and SDK packages: none is ever shipped (boto3 is the runtime's).
NOT_IN_LAYER = (
    "ocr_devkit",
    "rapidocr",
    "rapidocr_onnxruntime",
    "onnxruntime",
    "cv2",
    "opencv_python",
    "moto",
    "pytest",
    "numpy",
    "boto3",
    "botocore",
)


def _sources() -> Iterator[Path]:
    yield ROOT / "template.yaml"
    for top in (ROOT / "functions", ROOT / "layers"):
        for path in top.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file (a little-endian half-word at offset 18), or None for another kind of file."""
    with path.open("rb") as file:
        header = file.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "big" if header[5] == 2 else "little")


def _template_architecture() -> str:
    (architecture,) = load_template(ROOT / "template.yaml").body["Globals"]["Function"]["Architectures"]
    return str(architecture)


@pytest.fixture(scope="module")
def build() -> Path:
    built_template = BUILD / "template.yaml"
    if not built_template.is_file():
        pytest.skip("no sam build in .aws-sam/build: `make test` makes one when the venv is Python 3.12")
    built_at = built_template.stat().st_mtime
    newer = [p for p in _sources() if p.stat().st_mtime > built_at]
    if newer:
        pytest.skip(f".aws-sam/build is older than {newer[0].relative_to(ROOT)}: `make test` builds again")
    return BUILD


def test_every_function_is_built_with_its_handler(build: Path):
    # Given the template's functions
    resources = load_template(ROOT / "template.yaml").body["Resources"]
    functions = {
        name: resource["Properties"]
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert len(functions) >= 4
    for name, properties in functions.items():
        # Then each has its own folder in the build, holding the module its handler names
        module = properties["Handler"].rsplit(".", 1)[0]
        built = build / name / f"{module}.py"
        assert built.is_file(), f"{name}: no {module}.py in the build"
        # copied from its own folder, not another function's
        assert built.read_bytes() == (ROOT / properties["CodeUri"] / f"{module}.py").read_bytes()


def test_the_layer_ships_ocr_pipeline_with_its_bytecode_for_the_runtime(build: Path):
    # Given the package's modules in the layer
    package = LAYER_SITE / "ocr_pipeline"
    modules = [p for p in package.rglob("*.py") if "__pycache__" not in p.parts]
    assert len(modules) > 15
    for module in modules:
        # Then every module has its bytecode, compiled by the runtime's Python
        compiled = module.parent / "__pycache__" / f"{module.stem}.{BYTECODE_TAG}.pyc"
        assert compiled.is_file(), f"no {compiled.relative_to(LAYER_SITE)}"
        # as an unchecked hash-based .pyc (PEP 552 flags 0b01): valid whatever timestamps the zip keeps
        flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{compiled.relative_to(LAYER_SITE)} has flags {flags:#b}"
    # and the package's data files came along
    assert list((package / "schemas").glob("*.json"))


def test_the_layer_holds_the_runtime_requirements_at_their_pins(build: Path):
    # Given the distributions installed in the layer
    installed = {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(LAYER_SITE)])}
    requirements = {}
    # (the lock continues each pin's line with its hashes)
    for line in (ROOT / "layers/ocr_pipeline/requirements.txt").read_text().replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.split()[0].partition("==")
            requirements[_canonical(name)] = version
    assert requirements
    # Then every requirement of the layer is there, at its pinned version
    for name, version in requirements.items():
        assert installed.get(name) == version, f"{name}: {installed.get(name)} in the layer, {version} required"


def test_the_layer_holds_no_engine_local_or_development_package(build: Path):
    # Given what the layer's site directory holds: modules, packages, extensions and distributions
    top_level = {_canonical(p.name.split(".")[0].split("-")[0]) for p in LAYER_SITE.iterdir()}
    distributions = {_canonical(d.metadata["Name"]) for d in metadata.distributions(path=[str(LAYER_SITE)])}
    # Then none of the engine, local-stack, test or SDK packages is there
    for name in NOT_IN_LAYER:
        assert _canonical(name) not in top_level | distributions, f"{name} is in the layer"
    assert not [name for name in distributions if name.startswith(("rapidocr", "opencv", "onnxruntime", "pytest"))]


def test_the_layer_ships_no_test_double(build: Path):
    # Given the package's modules as built into the layer
    package = LAYER_SITE / "ocr_pipeline"
    names = [p.relative_to(package).as_posix() for p in package.rglob("*.py")]
    assert "bootstrap.py" in names
    # Then none is an in-memory fake or test helper (they live in tests/support)
    assert [name for name in names if any(word in name for word in ("memory", "fake", "stub", "test"))] == []


def test_the_layers_native_code_is_built_for_the_functions_architecture(build: Path):
    # Given the functions' architecture, which the layer must declare and be built for
    architecture = _template_architecture()
    layer = load_template(ROOT / "template.yaml").body["Resources"]["SharedLayer"]
    assert layer["Properties"]["CompatibleArchitectures"] == [architecture]
    assert layer["Metadata"]["BuildArchitecture"] == architecture
    # and every ELF file the layer ships (extension modules and the libraries bundled with them)
    machines = {
        path.relative_to(LAYER_SITE).as_posix(): _elf_machine(path)
        for path in LAYER_SITE.rglob("*")
        if path.is_file() and not path.is_symlink() and ".so" in path.name
    }
    native = {name: machine for name, machine in machines.items() if machine is not None}
    # (Pillow, PDFium, pydantic-core, libheif and ISA-L at least)
    assert len(native) >= 10, sorted(machines)
    # Then each one is machine code for that architecture, whatever machine ran the build
    wrong = {name: machine for name, machine in native.items() if machine != ELF_MACHINES[architecture]}
    assert wrong == {}, f"not {architecture}: {wrong}"
    # and every wheel installed is either pure Python or tagged for that architecture
    tags = [
        line.split(":", 1)[1].strip()
        for wheel in LAYER_SITE.glob("*.dist-info/WHEEL")
        for line in wheel.read_text().splitlines()
        if line.startswith("Tag:")
    ]
    assert tags
    platform_tags = [tag for tag in tags if not tag.endswith("-any")]
    assert platform_tags
    assert [tag for tag in platform_tags if not tag.endswith("_" + WHEEL_MACHINES[architecture])] == []
