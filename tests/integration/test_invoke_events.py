"""`ocr-pipeline invoke` runs every sample in events/ against a running `up`, and each does what it says.

One `up` serves the module. It is started with `-t` on a copy of template.yaml (one extra output), so the
template option of `up`, and `invoke` following the template `up` ran, are checked on the way. Each
sample is invoked as a user would (a subprocess in `up`'s working directory), and its outcome is read
where a consumer would see it: the topic's events, the result bucket, the handler's response.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.up import TopicRecorder, admin_client, cli, running_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "events").glob("*.json"))


class Stack:
    def __init__(self, description: dict[str, Any], workdir: Path) -> None:
        self.description = description
        self.workdir = workdir
        self.topic = TopicRecorder(description)

    def invoke(self, function: str, sample: Path) -> tuple[int, Any, str]:
        done = cli(self.workdir, "invoke", function, str(sample))
        response = json.loads(done.stdout) if done.stdout.strip() else None
        return done.returncode, response, done.stderr

    def final_event(self, event_type: str, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        return self.topic.wait_for(lambda e: e["event_type"] == event_type and predicate(e))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    # Given: `up -t` on a copy of the template (its functions and layer linked in), which adds one output
    project = tmp_path_factory.mktemp("project")
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    assert "\nOutputs:\n" in text
    (project / "template.yaml").write_text(
        text.replace("\nOutputs:\n", "\nOutputs:\n  TemplateCopy:\n    Value: !Sub '${AWS::StackName}-copy'\n"),
        encoding="utf-8",
    )
    for folder in ("functions", "layers"):
        (project / folder).symlink_to(ROOT / folder, target_is_directory=True)
    workdir = tmp_path_factory.mktemp("up")
    with running_up(workdir, "-t", str(project / "template.yaml")) as description:
        yield Stack(description, workdir)


def function_for(sample: Path, description: dict[str, Any]) -> str:
    """Samples are named <function folder>_<shape>.json; the folder names the function's logical id."""
    folders = {Path(spec["code_dir"]).name: logical_id for logical_id, spec in description["functions"].items()}
    matches = [folder for folder in folders if sample.stem.startswith(folder + "_")]
    assert matches, f"{sample.name} names none of the function folders {sorted(folders)}"
    return folders[max(matches, key=len)]


def source_key(event: dict[str, Any]) -> str | None:
    return ((event.get("data") or {}).get("source") or {}).get("key")


def error_code(event: dict[str, Any]) -> str | None:
    return ((event.get("data") or {}).get("error") or {}).get("code")


# --- what each sample must have done --------------------------------------------------------------------------


def upload_s3_put(stack: Stack, response: Any) -> None:
    # The stack's own S3 notification of the seeded upload may get there first: then the document is a duplicate.
    (outcome,) = response["outcomes"]
    assert outcome["decision"] in ("enqueued", "duplicate"), outcome
    completed = stack.final_event("document.completed", lambda e: e["data"]["job_id"] == outcome["job_id"])
    assert source_key(completed) == "scans/invoice 2024-001.jpg"


def upload_s3_test_event(stack: Stack, response: Any) -> None:
    assert response == {"outcomes": []}


def recognize_sqs_page(stack: Stack, response: Any) -> None:
    assert response == {"batchItemFailures": []}

    def the_sample_job(e: dict[str, Any]) -> bool:
        return source_key(e) == "scans/invoice 2024-001.jpg" and e["data"].get("task") == "key_information_extraction"

    usage = stack.final_event("usage.recorded", the_sample_job)
    assert usage["data"]["page"] == 1 and usage["data"]["image_tokens"] > 0
    completed = stack.final_event("document.completed", the_sample_job)
    assert completed["data"]["job_id"] == usage["data"]["job_id"]
    bucket, key = completed["data"]["result_uri"].removeprefix("s3://").split("/", 1)
    assert bucket == stack.description["outputs"]["ResultBucketName"]
    result = json.loads(admin_client(stack.description, "s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert [page["page"] for page in result["pages"]] == [1]


def requests_sqs_batch(stack: Stack, response: Any) -> None:
    # The bad request is answered, not retried; the good one is admitted and recognized by the running stack.
    assert response == {"batchItemFailures": []}
    sample = json.loads((ROOT / "events" / "requests_sqs_batch.json").read_text(encoding="utf-8"))
    malformed_id = sample["Records"][1]["messageId"]
    completed = stack.final_event("document.completed", lambda e: e["correlation_id"] == "order-4711")
    # (no RequestTenants mapping: billed by the stack's TenantRule, static:default)
    assert completed["data"]["tenant"] == "default" and source_key(completed) == "incoming/receipt.png"
    refused = stack.final_event("document.failed", lambda e: e["correlation_id"] == malformed_id)
    assert error_code(refused) == "request.malformed"


def dead_letters_sqs_page(stack: Stack, response: Any) -> None:
    assert response == {"batchItemFailures": []}
    failed = stack.final_event(
        "document.failed",
        lambda e: source_key(e) == "dead-letters/receipt.png" and e["data"].get("task") == "advanced_recognition",
    )
    assert error_code(failed) == "page.retries_exhausted"


def dead_letters_sqs_request(stack: Stack, response: Any) -> None:
    assert response == {"batchItemFailures": []}
    failed = stack.final_event("document.failed", lambda e: e["correlation_id"] == "order-4712")
    assert error_code(failed) == "request.retries_exhausted" and failed["data"]["tenant"] == "default"


def dead_letters_sqs_upload_failure(stack: Stack, response: Any) -> None:
    # Seeding the sample uploaded its object, and the running stack admitted and recognized it: a failure
    # record for that upload now refers to the admitted job, whose pages went out, and ends nothing twice.
    assert response == {"batchItemFailures": []}
    completed = stack.final_event("document.completed", lambda e: source_key(e) == "failed/receipt.png")
    time.sleep(2)
    stack.topic.poll()
    endings = [
        e
        for e in stack.topic.events
        if e["event_type"] in ("document.completed", "document.failed") and source_key(e) == "failed/receipt.png"
    ]
    assert [e["event_id"] for e in endings] == [completed["event_id"]]


def batch_submit_schedule(stack: Stack, response: Any) -> None:
    # A tick with nothing in the batch queue (the stack's lane is idle): the run ends at once, opening nothing.
    assert response["pages_submitted"] == 0 and response["batches_staged"] == 0
    assert response["batches_waiting"] == 0


def batch_collect_schedule(stack: Stack, response: Any) -> None:
    assert response["batches_open"] == 0 and response["batches_closed"] == {}


OUTCOMES: dict[str, Callable[[Stack, Any], None]] = {
    check.__name__: check
    for check in (
        upload_s3_put,
        upload_s3_test_event,
        recognize_sqs_page,
        requests_sqs_batch,
        dead_letters_sqs_page,
        dead_letters_sqs_request,
        dead_letters_sqs_upload_failure,
        batch_submit_schedule,
        batch_collect_schedule,
    )
}


def test_up_ran_the_template_it_was_given(stack):
    assert stack.description["outputs"]["TemplateCopy"] == f"{stack.description['stack_name']}-copy"


@pytest.mark.parametrize("sample", SAMPLES, ids=[sample.stem for sample in SAMPLES])
def test_every_sample_does_what_it_says(stack, sample):
    # Given: a sample from events/, and what it must have done
    assert sample.stem in OUTCOMES, f"events/{sample.name} is new: say in OUTCOMES what invoking it must do"
    function = function_for(sample, stack.description)

    # When: it is invoked against the running stack
    exit_code, response, stderr = stack.invoke(function, sample)

    # Then: the handler returned, and its outcome is where a consumer would see it
    assert exit_code == 0, stderr
    OUTCOMES[sample.stem](stack, response)


def test_invoke_says_what_is_wrong_with_its_command_line(stack, tmp_path):
    sample = ROOT / "events" / "upload_s3_test_event.json"
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"Bucket": "${NoSuchBucket}"}), encoding="utf-8")

    no_function = cli(stack.workdir, "invoke", "NoSuchFunction", str(sample))
    no_name = cli(stack.workdir, "invoke", "UploadFunction", str(unknown))
    no_stack = cli(tmp_path, "invoke", "UploadFunction", str(sample))
    raised = cli(stack.workdir, "invoke", "RecognizeFunction", str(sample))

    assert no_function.returncode == 3 and "NoSuchFunction" in no_function.stderr
    assert no_name.returncode == 2 and "${NoSuchBucket}" in no_name.stderr
    assert no_stack.returncode == 3 and "ocr-pipeline up" in no_stack.stderr
    # An S3 test event is no SQS batch: the recognize handler raises, and the error is one line.
    assert raised.returncode == 1
    assert raised.stderr.strip().splitlines()[-1].startswith("error UnexpectedBatchTypeError: ")
    assert json.loads(raised.stdout)["errorType"] == "UnexpectedBatchTypeError"


def test_a_sample_without_its_seed_file_is_refused_before_anything_runs(stack, tmp_path):
    sample = json.loads((ROOT / "events" / "upload_s3_put.json").read_text(encoding="utf-8"))
    sample["$seed"]["objects"][0]["file"] = "missing.jpg"
    path = tmp_path / "upload_missing_seed.json"
    path.write_text(json.dumps(sample), encoding="utf-8")

    done = cli(stack.workdir, "invoke", "UploadFunction", str(path))

    assert done.returncode == 2 and "missing.jpg" in done.stderr and "START RequestId" not in done.stderr
