"""The code's shape, checked: imports run down the floors, nothing imports in a circle, nothing grows too big.

The floors of the layer, top to bottom: the composition root (bootstrap), the adapters, the services
(pipeline/), and the core. The core and the services talk to ports and never to what implements them,
so neither imports an adapter, the root, nor a library that does I/O. Imports inside functions count:
hiding an import there does not change what depends on what.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "ocr_pipeline"
DEVKIT = ROOT / "devkit"
PACKAGES = {"ocr_pipeline": LAYER, "ocr_devkit": DEVKIT}

# Libraries that reach AWS or the network: only adapters (and the root) may import them.
IO_LIBRARIES = ("boto3", "botocore", "httpx", "aws_lambda_powertools")
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 200


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    base = PACKAGES[package]
    return {module_name(path, base): path for path in sorted((base / package).rglob("*.py"))}


def imported_names(path: Path, name: str) -> Iterator[str]:
    """Every module this one imports, anywhere in it, with relative imports made absolute."""
    is_package = path.name == "__init__.py"
    package_parts = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield base
            # `from . import x` and `from pkg import submodule` import a module, not only a name.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(package: str) -> dict[str, set[str]]:
    known = modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {target for target in imported_names(path, name) if target in known and target != name}
        graph[name] = targets
    return graph


def external_imports(package: str) -> dict[str, set[str]]:
    return {
        name: {target.split(".")[0] for target in imported_names(path, name)} for name, path in modules(package).items()
    }


def floor(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] == "bootstrap":
        return "root"
    if parts[1] == "adapters":
        return "adapters"
    if parts[1] == "pipeline":
        return "services"
    return "core"


def test_the_core_and_the_services_import_no_adapter_no_root_and_no_io_library():
    graph = import_graph("ocr_pipeline")
    libraries = external_imports("ocr_pipeline")
    wrong = []
    for name, targets in graph.items():
        if floor(name) not in ("core", "services"):
            continue
        wrong += [f"{name} -> {t}" for t in targets if floor(t) in ("adapters", "root")]
        wrong += [f"{name} -> {t}" for t in libraries[name] if t in IO_LIBRARIES]
        if floor(name) == "core":
            wrong += [f"{name} -> {t}" for t in targets if floor(t) == "services"]
    assert wrong == []


def test_adapters_never_import_the_composition_root():
    graph = import_graph("ocr_pipeline")
    assert [f"{n} -> {t}" for n, ts in graph.items() if floor(n) == "adapters" for t in ts if floor(t) == "root"] == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def without_package_reexports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exporting its modules is not a dependency of those modules on each other.

    An edge from a package to one of its own modules is dropped: importing `pkg.mod` runs `pkg` first,
    but `pkg` importing `mod` back to re-export it is the package's public face, not a circle of design.
    """
    return {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_imports_in_a_circle(package):
    assert find_cycle(without_package_reexports(import_graph(package))) is None


def test_the_cycle_finder_finds_a_circle():
    # The rule above cannot pass by a finder that never finds one.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_layer_is_a_god_module():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules("ocr_pipeline").items()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


def test_no_class_of_the_layer_is_over_the_size_limit():
    too_big = {}
    for name, path in modules("ocr_pipeline").items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_big[f"{name}.{node.name}"] = lines
    assert too_big == {}


def test_the_layer_ships_no_test_double():
    assert [name for name in modules("ocr_pipeline") if "memory" in name or "fake" in name] == []
