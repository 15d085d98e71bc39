"""Bad input through the local stack, as a sender would produce it: each ends at once as document.failed with
its code, never retried and never left in a queue.

- a request nested deeper than the parser's recursion limit (it used to raise RecursionError, kill the
  handler on every delivery and end in LastResortQueue);
- a zero-byte upload (its ranged read used to fail as a retryable storage error and end as upload.failed);
- a 1x1 image (it used to be upscaled and billed).
"""

from __future__ import annotations

import io
import time

import pytest
from ocr_devkit.run import RunOptions, local_pipeline
from PIL import Image

pytestmark = pytest.mark.integration


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 255).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.timeout(240)
def test_hostile_requests_and_uploads_end_at_once_with_their_codes(tmp_path):
    with local_pipeline(RunOptions(paths=[], out_dir=tmp_path / "out"), log_dir=tmp_path / "logs") as pipeline:
        sqs = pipeline.stack.boto3_client("sqs")
        sent = sqs.send_message(
            QueueUrl=pipeline.stack.resources["RequestQueue"].physical_name, MessageBody="[" * 100_000
        )
        pipeline.upload("bad/empty.png", b"", content_type="image/png")
        pipeline.upload("bad/dot.png", png((1, 1)), content_type="image/png")

        final = pipeline.wait_for_documents({"bad/empty.png", "bad/dot.png"}, timeout_s=120)
        deadline = time.monotonic() + 60
        answered: list = []
        while not answered and time.monotonic() < deadline:
            pipeline.recorder.poll(wait_s=1)
            answered = [e for e in pipeline.recorder.envelopes if e.correlation_id == sent["MessageId"]]

        codes = {key: event.data["error"]["code"] for key, event in final.items()}
        assert codes == {"bad/empty.png": "document.empty", "bad/dot.png": "image.too_small"}
        assert [e.data["error"]["code"] for e in answered] == ["request.malformed"]
        # Nothing was billed, nothing retried, nothing left for a human
        assert [e for e in pipeline.recorder.envelopes if e.event_type == "usage.recorded"] == []
        runner = pipeline.stack.runner
        assert all(r.ok and not r.payload["batchItemFailures"] for r in runner.invocations("RequestFunction"))
        assert all(r.ok for r in runner.invocations("UploadFunction"))
        assert runner.invocations("DeadLetterFunction") == []
