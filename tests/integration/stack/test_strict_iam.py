"""IAM on the local stack is as strict as AWS: each function signs as its own role, and S3 answers a missing
key the way it answers that role (403 without s3:ListBucket, 404 with it).

Runs the project's own template.yaml, with the emulator, the way a user drives it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from ocr_devkit.run import LocalPipeline, RunOptions, local_pipeline

from tests.integration.stack.helpers import signed_as

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPipeline]:
    options = RunOptions(paths=[], out_dir=tmp_path_factory.mktemp("out"), max_concurrency=2)
    with local_pipeline(options, log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


def status_of(call: Any) -> int:
    try:
        call()
    except ClientError as error:
        return int(error.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def test_each_function_signs_as_its_own_role(pipeline: LocalPipeline) -> None:
    # Given the credentials the runner hands each function
    sts = {name: signed_as(pipeline, name, "sts") for name in pipeline.stack.runner.functions}
    # Then each is a session of that function's own role
    roles = {name: client.get_caller_identity()["Arn"].split("/")[1] for name, client in sts.items()}
    assert len(set(roles.values())) == len(roles)
    assert all(f"{name}Role" in role for name, role in roles.items())


def test_a_function_may_do_only_what_its_policy_grants(pipeline: LocalPipeline) -> None:
    # Given the upload function's credentials
    s3 = signed_as(pipeline, "UploadFunction", "s3")
    dynamodb = signed_as(pipeline, "UploadFunction", "dynamodb")
    job = {"pk": {"S": "no-such-job"}, "sk": {"S": "JOB"}}
    # Then it may read the jobs table, which its policy names, but not delete from it
    assert status_of(lambda: dynamodb.get_item(TableName=pipeline.jobs_table, Key=job)) == 200
    assert status_of(lambda: dynamodb.delete_item(TableName=pipeline.jobs_table, Key=job)) in (400, 403)
    # But it may not write results, which only the page and dead-letter functions do
    assert status_of(lambda: s3.put_object(Bucket=pipeline.result_bucket, Key="jobs/x.json", Body=b"{}")) == 403
    # Nor may the dead-letter function, which publishes events, read the API key's secret
    secrets = signed_as(pipeline, "DeadLetterFunction", "secretsmanager")
    assert status_of(lambda: secrets.get_secret_value(SecretId="ocr-pipeline/dashscope-api-key")) in (400, 403)


def test_a_missing_key_is_403_without_list_bucket_and_404_with_it(pipeline: LocalPipeline) -> None:
    # Given a key that does not exist in the result bucket
    missing = {"Bucket": pipeline.result_bucket, "Key": "sources/never-written.png"}
    # When the request function, which may read sources/ but not list the bucket, looks at it: 403
    request_s3 = signed_as(pipeline, "RequestFunction", "s3")
    assert status_of(lambda: request_s3.head_object(**missing)) == 403
    assert status_of(lambda: request_s3.get_object(**missing)) == 403
    # When the page function, which may list it, does: 404
    recognize_s3 = signed_as(pipeline, "RecognizeFunction", "s3")
    assert status_of(lambda: recognize_s3.head_object(**missing)) == 404
    assert status_of(lambda: recognize_s3.get_object(**missing)) == 404
    # And on the input bucket, which every reader may now list, a missing key is a 404 for each of them
    gone = {"Bucket": pipeline.input_bucket, "Key": "never-uploaded.png"}
    for function in ("UploadFunction", "RecognizeFunction", "RequestFunction", "DeadLetterFunction"):
        assert status_of(lambda f=function: signed_as(pipeline, f, "s3").head_object(**gone)) == 404, function


def wait_for_final(pipeline: LocalPipeline, correlation_id: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for envelope in pipeline.recorder.envelopes:
            if envelope.correlation_id == correlation_id and envelope.event_type.startswith("document."):
                return envelope
        pipeline.recorder.poll(wait_s=1)
    raise AssertionError(f"no document.completed or document.failed for {correlation_id} within {timeout_s:.0f} s")


def test_a_request_for_a_missing_key_fails_at_once_as_not_found(pipeline: LocalPipeline) -> None:
    # Given a request naming a key that does not exist
    key = "requests/mistyped-name.png"
    request = {"source": {"bucket": pipeline.input_bucket, "key": key}, "correlation_id": "mistyped-1"}
    sqs = pipeline.stack.boto3_client("sqs")
    # When it is sent to the request queue
    sqs.send_message(QueueUrl=pipeline.stack.resources["RequestQueue"].url, MessageBody=json.dumps(request))
    # Then it is answered document.failed, source.not_found, without a round of retries
    event = wait_for_final(pipeline, "mistyped-1")
    assert event.event_type == "document.failed"
    assert event.data["error"]["code"] == "source.not_found"
    assert pipeline.stack.runner.stats()["RequestFunction"].retries == 0


def test_an_upload_deleted_before_it_is_processed_fails_as_not_found(pipeline: LocalPipeline) -> None:
    # Given an upload whose version is deleted for good before the function gets to it
    key = "uploads/deleted-at-once.png"
    s3 = pipeline.s3
    body = (ROOT / "samples/receipt.png").read_bytes()
    version = s3.put_object(Bucket=pipeline.input_bucket, Key=key, Body=body)
    s3.delete_object(Bucket=pipeline.input_bucket, Key=key, VersionId=version["VersionId"])
    # Then the document still ends, failed with source.not_found
    final = pipeline.wait_for_documents({key}, timeout_s=30)
    assert key in final, "the deleted upload never ended"
    event = final[key]
    assert event.event_type == "document.failed"
    assert event.data["error"]["code"] == "source.not_found"


def test_an_unsigned_request_is_refused_as_aws_refuses_it(pipeline: LocalPipeline) -> None:
    import urllib.error
    import urllib.request

    # Given requests that carry no signature (a bare GET is S3's ListBuckets, the other an object read)
    for url in (pipeline.stack.endpoint_url, f"{pipeline.stack.endpoint_url}/{pipeline.result_bucket}/x.json"):
        # Then each is refused with 403 AccessDenied, not answered (nor a 500 from inside the server)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5).close()
        assert refused.value.code == 403
        assert b"AccessDenied" in refused.value.read()
