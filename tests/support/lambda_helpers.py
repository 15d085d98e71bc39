"""Load sample events from events/ and function modules from functions/, as SAM would."""

from __future__ import annotations

import importlib.util
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


# What a sample's ${LogicalId} placeholders stand for in unit tests (`ocr-pipeline invoke` fills in the
# running stack's names); anything else becomes an example name derived from the placeholder.
EXAMPLE_NAMES = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "ocr-pipeline",
    "InputBucket": "ocr-input-example",
    "ResultBucket": "ocr-results-example",
}


def example_name(name: str, where: str = "") -> str:
    if name in EXAMPLE_NAMES:
        return EXAMPLE_NAMES[name]
    logical_id, _, attribute = name.partition(".")
    if attribute == "Arn":
        return f"arn:aws:example:us-east-1:123456789012:ocr-pipeline-{logical_id}"
    return f"ocr-pipeline-{logical_id}"


def load_event(name: str) -> dict:
    """A sample from events/, its placeholders filled with example names and its "$seed" (invoke's) left out."""
    from ocr_devkit.invoke import render_sample

    sample = json.loads((ROOT / "events" / f"{name}.json").read_text(encoding="utf-8"))
    event, _seed = render_sample(sample, example_name)
    return event


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py under a unique module name (every function's module is `app`)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"function_{name}_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class FakeLambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
