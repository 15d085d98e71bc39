"""Fixtures for the local-stack tests: the toy project on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from .toy import write_toy_project


@pytest.fixture(scope="session")
def toy_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_project(tmp_path_factory.mktemp("toy-project"))
