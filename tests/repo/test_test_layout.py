"""The tests mirror the code: tests/unit by the layer's floors and devkit, tests/integration all marked.

`make unit` runs what is not marked integration and `make integration` what is; a slow test that lost its
marker would run with the fast ones, and a test file dropped at the top of tests/unit says nothing of
what it covers.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
UNIT_FOLDERS = {"core", "pipeline", "adapters", "functions", "devkit"}


def marks_module_integration(path: Path) -> bool:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            return "integration" in ast.unparse(node.value)
    return False


def test_every_integration_test_module_is_marked_integration():
    modules = sorted((TESTS / "integration").rglob("test_*.py"))
    assert modules
    assert [str(p.relative_to(TESTS)) for p in modules if not marks_module_integration(p)] == []


def test_no_unit_test_module_is_marked_integration():
    modules = sorted((TESTS / "unit").rglob("test_*.py"))
    assert [str(p.relative_to(TESTS)) for p in modules if marks_module_integration(p)] == []


def test_unit_tests_sit_in_the_folder_of_what_they_cover():
    assert not list((TESTS / "unit").glob("test_*.py"))
    folders = {p.name for p in (TESTS / "unit").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == UNIT_FOLDERS


def test_every_test_file_the_docs_name_exists():
    # The README's guarantees table and the docs point at the tests that show them; a moved test must
    # take its references along.
    import re

    root = TESTS.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    named = {path for page in pages for path in re.findall(r"tests/[\w/]+\.py", page.read_text(encoding="utf-8"))}
    assert named
    assert sorted(path for path in named if not (root / path).is_file()) == []
