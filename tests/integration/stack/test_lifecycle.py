"""Starting and stopping the local stack: fault injection, and nothing left behind on exit or Ctrl-C."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
from ocr_devkit.stack.local import LocalStack, LocalStackError

from .helpers import published, stack_threads, wait_for

pytestmark = pytest.mark.integration


def assert_nothing_left(pids: list[int]) -> None:
    assert multiprocessing.active_children() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert stack_threads() == []


def test_duplicate_rate_delivers_everything_twice_and_exit_leaves_nothing(toy_template: Path, tmp_path: Path) -> None:
    # Given a stack that delivers every S3 and SQS event twice
    with LocalStack(toy_template, stack_name="dups", log_dir=tmp_path, duplicate_rate=1.0, seed=7) as stack:
        recorder = stack.subscribe_queue_to_topic("Events", raw=True)

        # When one file is uploaded
        stack.boto3_client("s3").put_object(Bucket="dups-inbox", Key="incoming/once.txt", Body=b"x")
        stack.wait_until_idle(30)

        # Then Ingest got the identical S3 event twice, and so forwarded two messages
        ingest = [r for r in stack.runner.invocations("Ingest") if "Records" in r.event]
        assert [r.duplicate for r in ingest] == [False, True]
        assert ingest[0].event == ingest[1].event
        # And every Worker batch was delivered twice too: 2 messages x 2 deliveries reach the topic
        messages = published(stack.boto3_client("sqs"), recorder)
        assert [json.loads(m["body"])["key"] for m in messages] == ["incoming/once.txt"] * 4
        stats = stack.runner.stats()
        assert stats["Ingest"].duplicates >= 1 and stats["Worker"].duplicates >= 1
        assert stats["Worker"].failures == 0
        pids = [pid for pids in stack.runner.worker_pids().values() for pid in pids]
        assert pids

        # And a second stack cannot start while this one runs (moto has one state per process)
        with pytest.raises(LocalStackError):
            LocalStack(toy_template, stack_name="other").start()

    # Then leaving the block stopped every worker, poller and the moto server
    assert_nothing_left(pids)


def test_ctrl_c_in_the_middle_of_an_invocation_shuts_everything_down(toy_template: Path, tmp_path: Path) -> None:
    # Given a stack with an invocation in flight
    with pytest.raises(KeyboardInterrupt), LocalStack(toy_template, stack_name="ctrlc", log_dir=tmp_path) as stack:
        assert stack.runner.invoke("Worker", {"Records": []}).payload == {"batchItemFailures": []}
        stack.boto3_client("sqs").send_message(QueueUrl=stack.resources["WorkQueue"].url, MessageBody="sleep-forever")
        wait_for(lambda: stack.runner.busy()["in_flight"] > 0)
        pids = [pid for pids in stack.runner.worker_pids().values() for pid in pids]

        # When the user presses Ctrl-C
        raise KeyboardInterrupt

    # Then the busy worker was killed and nothing of the stack is left
    assert_nothing_left(pids)
    # And a new stack can start in the same process
    with LocalStack(toy_template, stack_name="again", log_dir=tmp_path, run_functions=False) as again:
        assert again.resources["Inbox"].physical_name == "again-inbox"
