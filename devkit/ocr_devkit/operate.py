"""Commands for working with a running stack: `up` (the local one, in the foreground), `submit` and `replay`.

`up` writes what it prints to `.ocr-pipeline/up.json` in the working directory while it runs, so that
`submit`, `replay` and `invoke` find the local stack without flags. The file also holds what `invoke`
needs to run a function exactly as the stack's runner does (`stack`: the template path, the parameters
and function environment it was started with, and every provisioned resource), which `up` does not print.
For a deployed stack, give `--stack NAME` (its outputs name the queues) or the URLs themselves.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ocr_pipeline.errors import ConfigurationError, InvalidRequest

from ocr_devkit.arguments import BACKENDS, add_template_argument, load_schema

STATE_FILE = Path(".ocr-pipeline") / "up.json"
FINAL_EVENTS = ["document.completed", "document.failed"]
EXIT_USAGE = 2
EXIT_TIMED_OUT = 4
SQS_BATCH = 10


# --- finding the stack ---------------------------------------------------------------------------------------


class StackTarget:
    """Where a stack's queues and topic are, and how to reach its endpoint."""

    def __init__(
        self, outputs: dict[str, str], endpoint_url: str | None, region: str | None, profile: str | None = None
    ) -> None:
        self.outputs = outputs
        self.endpoint_url = endpoint_url
        self.region = region
        self.profile = profile

    def client(self, service: str) -> Any:
        import boto3

        options: dict[str, Any] = {}
        if self.endpoint_url:
            # The local stack enforces IAM: user-side commands sign as its admin user.
            from ocr_devkit.stack.clients import ADMIN_ACCESS_KEY_ID, ADMIN_SECRET_ACCESS_KEY

            options = {
                "endpoint_url": self.endpoint_url,
                "aws_access_key_id": ADMIN_ACCESS_KEY_ID,
                "aws_secret_access_key": ADMIN_SECRET_ACCESS_KEY,
            }
        if self.profile and not self.endpoint_url:
            return boto3.Session(profile_name=self.profile).client(service, region_name=self.region)
        return boto3.client(service, region_name=self.region, **options)  # type: ignore[call-overload]

    def output(self, name: str) -> str:
        try:
            return self.outputs[name]
        except KeyError:
            raise ConfigurationError(
                f"the stack has no output {name!r}; it has {', '.join(sorted(self.outputs)) or 'none'}"
            ) from None

    def queue_url(self, name_or_url: str) -> str:
        """A queue URL, or a logical id such as RequestDeadLetterQueue (looked up in the outputs)."""
        if name_or_url.startswith(("http://", "https://")):
            return name_or_url
        return self.output(name_or_url.removesuffix("Url") + "Url")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", help="a deployed stack's name: its outputs name the queues and topic")
    parser.add_argument("--endpoint-url", help="an AWS endpoint (default: the running `ocr-pipeline up`)")
    parser.add_argument(
        "--aws-region",
        "--region",
        dest="aws_region",
        type=aws_region,
        help="AWS region of the stack (default: your AWS config)",
    )
    parser.add_argument("--profile", help="the AWS profile to sign with (default: your AWS config)")


def aws_region(value: str) -> str:
    """An AWS region name; a DashScope region here is a mix-up, said at once rather than as a DNS failure."""
    from ocr_pipeline.catalog import Region

    if value in {r.value for r in Region}:
        raise argparse.ArgumentTypeError(
            f"{value!r} is a DashScope region, not an AWS one: use --ocr-region {value} for the OCR region"
        )
    return value


def resolve_target(args: argparse.Namespace) -> StackTarget:
    if args.stack:
        target = StackTarget({}, args.endpoint_url, args.aws_region, args.profile)
        stacks = target.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"]
        target.outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return target
    if STATE_FILE.is_file():
        state = json.loads(STATE_FILE.read_text(encoding="utf-8"))
        outputs = {k: str(v) for k, v in state.get("outputs", {}).items()}
        return StackTarget(outputs, args.endpoint_url or state["endpoint_url"], args.aws_region or state["region"])
    if args.endpoint_url or getattr(args, "queue_url", None):
        return StackTarget({}, args.endpoint_url, args.aws_region)
    raise ConfigurationError(
        f"no stack to talk to: start `ocr-pipeline up` (it writes {STATE_FILE}), or pass --stack or queue URLs"
    )


# --- up ------------------------------------------------------------------------------------------------------


class _StopSignal:
    """Set by SIGINT/SIGTERM; the main thread polls it, so no exception is raised inside a lock's code."""

    def __init__(self) -> None:
        self.name: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.name = signal.Signals(signum).name


def up_description(local: Any, emulator: Any) -> dict[str, Any]:
    from ocr_devkit.stack.clients import ADMIN_ACCESS_KEY_ID, ADMIN_SECRET_ACCESS_KEY

    description = local.describe()
    description["credentials"] = {
        "aws_access_key_id": ADMIN_ACCESS_KEY_ID,
        "aws_secret_access_key": ADMIN_SECRET_ACCESS_KEY,
        "note": "the local stack's admin user; IAM is enforced, and functions sign with their own roles",
    }
    description["emulator"] = {"base_url": emulator.native_base} if emulator is not None else None
    description["state_file"] = str(STATE_FILE.resolve())
    return description


def up_state(local: Any, description: dict[str, Any]) -> dict[str, Any]:
    """The state file: what `up` printed, plus how to rebuild its stack without creating it again (`invoke`)."""
    return {
        **description,
        "stack": {
            "template": str(local.template_path.resolve()),
            "parameters": dict(local.parameters),
            "extra_env": dict(local.extra_env),
            "resources": local.resources.to_dict(),
        },
    }


def command_up(args: argparse.Namespace) -> int:
    from ocr_devkit.run import RunOptions, local_stack

    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="ocr-pipeline-up-"))
    options = RunOptions(
        paths=[],
        out_dir=log_dir,
        backend=args.backend,
        base_url=args.base_url,
        model=args.model,
        region=args.region,
        max_concurrency=args.max_concurrency,
        stack_port=args.port,
        template=args.template,
    )
    parameters = dict(_parameter(p) for p in args.param or [])
    # SIGTERM (a supervisor, `kill`) stops as cleanly as Ctrl-C: the stack's context managers unwind.
    stop = _StopSignal()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with local_stack(options, log_dir=log_dir, extra_parameters=parameters) as (local, emulator):
            description = up_description(local, emulator)
            STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
            STATE_FILE.write_text(json.dumps(up_state(local, description), indent=2, default=str), encoding="utf-8")
            try:
                print(json.dumps(description), flush=True)
                print(f"ocr-pipeline up: serving at {local.endpoint_url}; Ctrl-C to stop", file=sys.stderr, flush=True)
                while stop.name is None:
                    time.sleep(0.2)
            finally:
                STATE_FILE.unlink(missing_ok=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"ocr-pipeline up: stopped ({stop.name})", file=sys.stderr)
    return 0


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise InvalidRequest(f"--param takes NAME=VALUE, not {text!r}")
    return name, value


# --- submit --------------------------------------------------------------------------------------------------


def request_source(text: str) -> dict[str, Any]:
    """`s3://bucket/key[?versionId=…]` or an https URL, as the request's `source`."""
    if text.startswith("s3://"):
        parts = urlsplit(text)
        key = parts.path.lstrip("/")
        if not parts.netloc or not key:
            raise InvalidRequest(f"{text!r} is not s3://bucket/key")
        source: dict[str, Any] = {"bucket": parts.netloc, "key": key}
        version = parse_qs(parts.query).get("versionId")
        if version:
            source["version_id"] = version[0]
        return source
    if text.startswith("https://"):
        return {"url": text}
    raise InvalidRequest(
        f"{text!r} is neither s3://bucket/key nor an https URL (to recognize a local file, upload it or use `run`)"
    )


def build_request(args: argparse.Namespace) -> dict[str, Any]:

    request: dict[str, Any] = {"source": request_source(args.source)}
    optional = {
        "task": args.task,
        "schema": load_schema(args.schema),
        "prompt": args.prompt,
        "model": args.model,
        "region": args.region,
        "tenant": args.tenant,
        "correlation_id": args.correlation_id or str(uuid.uuid4()),
    }
    request.update({k: v for k, v in optional.items() if v is not None})
    # Checked here too, so a mistake is a command-line error instead of a document.failed reply.
    from ocr_pipeline.pipeline.request_intake import parse_request

    parse_request(json.dumps(request))
    return request


@contextmanager
def reply_queue(target: StackTarget, topic_arn: str, correlation_id: str) -> Iterator[str]:
    """A temporary queue that receives the final event for one correlation id (SNS filter policy)."""
    sqs, sns = target.client("sqs"), target.client("sns")
    name = f"ocr-pipeline-reply-{uuid.uuid4().hex[:12]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    subscription = None
    try:
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
        filter_policy = {"correlation_id": [correlation_id], "event_type": FINAL_EVENTS}
        subscription = sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"FilterPolicy": json.dumps(filter_policy), "RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        yield queue_url
    finally:
        if subscription:
            sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=queue_url)


def wait_for_reply(target: StackTarget, queue_url: str, timeout_s: float) -> dict[str, Any] | None:
    sqs = target.client("sqs")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        wait = max(1, min(10, int(deadline - time.monotonic())))
        for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=wait).get("Messages", []):
            return dict(json.loads(message["Body"]))
    return None


def command_submit(args: argparse.Namespace) -> int:
    request = build_request(args)
    target = resolve_target(args)
    queue_url = args.queue_url or target.output("RequestQueueUrl")
    sqs = target.client("sqs")
    reply: dict[str, Any] | None = None
    if args.wait:
        topic_arn = args.topic_arn or target.output("NotificationTopicArn")
        with reply_queue(target, topic_arn, request["correlation_id"]) as replies:
            sent = sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(request))
            reply = wait_for_reply(target, replies, args.timeout)
    else:
        sent = sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(request))
    summary: dict[str, Any] = {
        "message_id": sent["MessageId"],
        "correlation_id": request["correlation_id"],
        "queue_url": queue_url,
    }
    if args.wait:
        summary["reply"] = reply
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(f"sent {sent['MessageId']} (correlation id {request['correlation_id']})")
        if args.wait:
            print(json.dumps(reply, indent=2, ensure_ascii=False) if reply else "no reply before the timeout")
    if not args.wait:
        return 0
    if reply is None:
        print(f"error local.timeout: no reply within {args.timeout:.0f} s", file=sys.stderr)
        return EXIT_TIMED_OUT
    return 0 if reply.get("event_type") == "document.completed" else 1


# --- replay --------------------------------------------------------------------------------------------------


def source_queue_of(sqs: Any, dead_letter_url: str) -> str:
    sources = sqs.list_dead_letter_source_queues(QueueUrl=dead_letter_url).get("queueUrls", [])
    if len(sources) != 1:
        listed = ", ".join(sources) or "none"
        raise InvalidRequest(f"{dead_letter_url} is the dead-letter queue of {listed}; say which with --to")
    return str(sources[0])


def replay(sqs: Any, from_url: str, to_url: str, *, limit: int | None, dry_run: bool) -> int:
    """Move messages (body and attributes) from one queue to another; returns how many were moved.

    Each message is deleted only after the target accepted it, so a crash can repeat a message but
    never lose one; the pipeline's idempotency makes a repeat harmless.
    """
    moved = 0
    while limit is None or moved < limit:
        wanted = SQS_BATCH if limit is None else min(SQS_BATCH, limit - moved)
        messages = sqs.receive_message(
            QueueUrl=from_url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return moved
        if dry_run:
            # Seen, not moved: make them visible again at once for the real replay.
            sqs.change_message_visibility_batch(
                QueueUrl=from_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(messages)
                ],
            )
            return len(messages)
        entries = [{"Id": str(i), "MessageBody": m["Body"], **_attributes(m)} for i, m in enumerate(messages)]
        response = sqs.send_message_batch(QueueUrl=to_url, Entries=entries)
        accepted = {entry["Id"] for entry in response.get("Successful", [])}
        done = [m for i, m in enumerate(messages) if str(i) in accepted]
        if done:
            sqs.delete_message_batch(
                QueueUrl=from_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        moved += len(done)
        if len(done) < len(messages):
            failed = response.get("Failed", [])
            raise InvalidRequest(f"{len(failed)} messages were refused by {to_url}: {failed[:3]}")
    return moved


def _attributes(message: dict[str, Any]) -> dict[str, Any]:
    attributes = message.get("MessageAttributes")
    return {"MessageAttributes": attributes} if attributes else {}


def command_replay(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    sqs = target.client("sqs")
    from_url = target.queue_url(args.queue)
    try:
        to_url = target.queue_url(args.to) if args.to else source_queue_of(sqs, from_url)
    except InvalidRequest as error:
        print(f"error {error.code}: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    moved = replay(sqs, from_url, to_url, limit=args.max, dry_run=args.dry_run)
    verb = "would move" if args.dry_run else "moved"
    if args.json:
        print(json.dumps({"from": from_url, "to": to_url, "dry_run": args.dry_run, "messages": moved}))
    else:
        print(f"{verb} {moved} message{'s' if moved != 1 else ''} from {from_url} to {to_url}")
    return 0


# --- command line --------------------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    from ocr_pipeline.catalog import Region
    from ocr_pipeline.tasks import OcrTask

    up = commands.add_parser("up", help="run the local stack in the foreground and print its endpoints as JSON")
    add_template_argument(up)
    up.add_argument("--backend", choices=BACKENDS, default="emulator", help="where OCR calls go (default: emulator)")
    up.add_argument("--base-url", help="replace the region's base URL (…/api/v1 or …/compatible-mode/v1)")
    up.add_argument("--model", help="the stack's default model")
    up.add_argument(
        "--ocr-region",
        "--region",
        dest="region",
        choices=[r.value for r in Region],
        help="the stack's DashScope region: intl, us or cn (--region is its old name)",
    )
    up.add_argument("--port", type=int, default=None, help="port of the local AWS endpoint (default: a free one)")
    up.add_argument("--param", action="append", metavar="NAME=VALUE", help="a template parameter (repeatable)")
    up.add_argument(
        "--max-concurrency", type=int, default=2, help="OcrMaxConcurrency (OCR calls in flight) for the local stack (2)"
    )
    up.add_argument("--log-dir", help="folder for the functions' logs (default: a new temporary folder)")
    up.add_argument("--json", action="store_true", help="accepted for symmetry: up always prints one JSON object")
    up.set_defaults(handler=command_up)

    submit = commands.add_parser("submit", help="send an OCR request to a stack's request queue")
    submit.add_argument("source", help="s3://bucket/key[?versionId=…] or an https URL")
    submit.add_argument("--task", choices=[t.value for t in OcrTask])
    submit.add_argument("--schema", help="result_schema: a JSON file or inline JSON")
    submit.add_argument("--prompt", help="a free prompt instead of a built-in task")
    submit.add_argument("--model", help="model override")
    submit.add_argument("--ocr-region", dest="region", choices=[r.value for r in Region], help="OCR region override")
    submit.add_argument("--tenant", help="who is billed")
    submit.add_argument("--correlation-id", help="echoed in the reply (default: a new UUID)")
    submit.add_argument("--queue-url", help="the request queue (default: from the stack)")
    submit.add_argument("--topic-arn", help="the notification topic, for --wait (default: from the stack)")
    submit.add_argument("--wait", action="store_true", help="wait for document.completed / document.failed")
    submit.add_argument("--timeout", type=float, default=300.0, help="seconds to wait with --wait (300)")
    submit.add_argument("--json", action="store_true", help="print one JSON object")
    add_target_arguments(submit)
    submit.set_defaults(handler=command_submit)

    replay_ = commands.add_parser("replay", help="move messages from a dead-letter queue back to be processed")
    replay_.add_argument("queue", help="the dead-letter queue: a URL or a logical id (e.g. RequestDeadLetterQueue)")
    replay_.add_argument("--to", help="target queue URL or logical id (default: the queue it is the DLQ of)")
    replay_.add_argument("--max", type=int, default=None, help="move at most this many messages")
    replay_.add_argument("--dry-run", action="store_true", help="count a first batch without moving it")
    replay_.add_argument("--json", action="store_true", help="print one JSON object")
    add_target_arguments(replay_)
    replay_.set_defaults(handler=command_replay)
