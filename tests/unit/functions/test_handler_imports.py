"""Each handler imports only what it uses: what its cold start loads is checked in a fresh interpreter.

Lambda imports a handler once per cold start; every module it drags in is paid for by every instance
of that function. These tests name what a function does not use and must not import at module level
(BENCHMARKS.md measures what the rest costs against the libraries each handler cannot avoid).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.lambda_helpers import ROOT

# The page worker's: the OCR client and its HTTP library, the imaging stack, PDFium.
PAGE_WORK_ONLY = ("httpx", "PIL", "pypdfium2", "ocr_pipeline.imaging", "ocr_pipeline.adapters.dashscope")
# Settings are read by pydantic alone; pydantic-settings would bring asyncio and dotenv to every function.
NO_FUNCTION = ("pydantic_settings",)
NOT_IMPORTED = {
    "upload": PAGE_WORK_ONLY + NO_FUNCTION,
    "requests": PAGE_WORK_ONLY + NO_FUNCTION,
    "dead_letters": PAGE_WORK_ONLY + NO_FUNCTION,
    # The request schema is the request and dead-letter functions'.
    "recognize": ("ocr_pipeline.pipeline.request_intake", *NO_FUNCTION),
}


def modules_loaded_by(function: str) -> set[str]:
    """sys.modules after importing functions/<function>/app.py as Lambda does (its folder first on the path)."""
    script = "import json, sys\nimport app\nprint(json.dumps(sorted(sys.modules)))\n"
    path = os.pathsep.join([str(ROOT / "functions" / function), str(ROOT / "layers" / "ocr_pipeline")])
    environment = {**os.environ, "PYTHONPATH": path, "POWERTOOLS_SERVICE_NAME": "ocr-pipeline"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment, timeout=120
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function", sorted(NOT_IMPORTED))
def test_a_handler_does_not_import_what_its_function_does_not_use(function: str) -> None:
    # Given a fresh interpreter, When the handler module is imported
    loaded = modules_loaded_by(function)

    # Then it was the handler, with the composition root it builds its service from
    assert {"app", "ocr_pipeline.bootstrap", "aws_lambda_powertools"} <= loaded
    # And none of what its function does not use came with it
    assert sorted(name for name in NOT_IMPORTED[function] if name in loaded) == []


def test_the_page_worker_loads_what_the_others_are_spared() -> None:
    # The check above would pass on a probe that imports nothing: the page worker does load the imaging stack.
    loaded = modules_loaded_by("recognize")
    assert {"PIL", "ocr_pipeline.imaging", "ocr_pipeline.pipeline.page_recognition"} <= loaded
