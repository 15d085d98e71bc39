"""Proof that IAM enforcement is live: the project's template with one statement taken out of one function's
policy makes that function fail with AccessDenied, as its first deploy would.

(The unmodified template passes every other integration test with enforcement on.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ocr_devkit.run import RunOptions, local_pipeline

from tests.integration.stack.helpers import write_template_copy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
PUBLISH_STATEMENT = """\
            - Effect: Allow
              Action: [sns:Publish]
              Resource: !Ref NotificationTopic
"""


def template_without_publish_for_recognize(directory: Path) -> Path:
    """template.yaml with the sns:Publish statement removed from RecognizeFunction's policy alone."""
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    start = text.index("\n  RecognizeFunction:\n")
    end = text.index("\n  RequestFunction:\n")
    recognize = text[start:end]
    assert recognize.count(PUBLISH_STATEMENT) == 1, "the statement to remove is not in RecognizeFunction"
    text = text[:start] + recognize.replace(PUBLISH_STATEMENT, "") + text[end:]
    return write_template_copy(directory, text)


@pytest.mark.timeout(180)
def test_a_function_without_one_permission_fails_with_access_denied(tmp_path: Path) -> None:
    # Given the template, less the recognize function's permission to publish
    template = template_without_publish_for_recognize(tmp_path)
    options = RunOptions(paths=[], out_dir=tmp_path / "out", template=template, max_concurrency=2)
    with local_pipeline(options, log_dir=tmp_path / "logs") as pipeline:
        # When a page is recognized
        pipeline.upload("receipt.png", (ROOT / "samples/receipt.png").read_bytes(), content_type="image/png")
        # Then the recognize function fails when it publishes the page's usage event
        log = tmp_path / "logs" / "RecognizeFunction.log"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log.exists() and "AccessDenied" in log.read_text(encoding="utf-8"):
                break
            time.sleep(0.5)
        text = log.read_text(encoding="utf-8") if log.exists() else ""
        assert "SNS publish of usage.recorded failed: AccessDenied" in text
        # (a failed record is reported in batchItemFailures, not raised as a Lambda error)
        failures = [
            r
            for r in pipeline.stack.runner.invocations("RecognizeFunction")
            if not r.ok or (r.payload or {}).get("batchItemFailures")
        ]
        assert failures, "the recognize function never failed"
        # And the functions that keep their permission are unaffected
        assert all(r.ok for r in pipeline.stack.runner.invocations("UploadFunction"))
