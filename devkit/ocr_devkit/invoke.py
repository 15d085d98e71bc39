"""`ocr-pipeline invoke FUNCTION EVENT.json`: `sam local invoke` without Docker, against the running `up`.

What it guarantees:
- **The runner's own invocation.** The function runs once, in a fresh worker process, built by the
  stack's `Runner` (same environment and credentials, handler, code and layer folders, timeout). No
  event source is polled: only this one event is delivered.
- **The running stack, not a copy.** The template is resolved with the stack name, region, parameters
  and endpoint `up` used, and with the resources `up` provisioned (read from its state file); nothing is
  created again.
- **Samples name resources by logical id.** Every string of the event is read as `Fn::Sub` would read it
  in the template: `${InputBucket}`, `${PageQueue.Arn}`, `${AWS::Region}`... become the running stack's
  values. A name the stack does not have is a bad command line (exit 2).
- **The sample does something real.** Its optional top-level `"$seed"` (stripped before invoking) lists
  files to upload first: `{"objects": [{"bucket", "key", "file"[, "content_type", "metadata"]}]}`, `file`
  relative to the sample. The event is then made to match what was uploaded (S3 records' size, eTag and
  versionId; a page message's source version, and its job recorded in the jobs table as the intake
  would; a request's source version). Seeding is the user's side: it uses the local endpoint's own
  credentials, never the function's. An upload is a real one: the running stack's S3 notification also
  delivers it, and the pipeline's idempotency makes it one document.

Exit codes: 0 the handler returned (its response is printed as JSON); 1 it raised or timed out (one
`error <type>: <message>` line); 2 bad command line or sample; 3 no `up` is running, or no such function.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from ocr_pipeline.errors import ConfigurationError, InvalidRequest

EXIT_OK = 0
EXIT_HANDLER_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_STACK = 3

SEED_KEY = "$seed"
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")

Lookup = Callable[[str, str], str]  # (name inside ${...}, where in the sample) -> value


class SampleError(InvalidRequest):
    """The event file cannot be used: not JSON, a placeholder the stack does not have, a missing seed file."""

    code = "invoke.bad_event"


class StackNotRunning(ConfigurationError):
    code = "invoke.no_stack"


class UnknownFunction(ConfigurationError):
    code = "invoke.unknown_function"


# --- placeholders --------------------------------------------------------------------------------------------


def substitute(value: Any, lookup: Lookup, where: str = "$") -> Any:
    """Every `${Name}` / `${Name.Attribute}` in the strings of `value` replaced by `lookup`; `${!x}` is a literal `${x}`."""
    if isinstance(value, dict):
        return {key: substitute(item, lookup, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, lookup, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            return lookup(name.strip(), where)

        return _SUB_VARIABLE.sub(replace, value)
    return value


def render_sample(sample: Any, lookup: Lookup) -> tuple[Any, dict[str, Any] | None]:
    """(the event with its placeholders filled in, its seed or None)."""
    seed = None
    if isinstance(sample, dict) and SEED_KEY in sample:
        sample = dict(sample)
        seed = sample.pop(SEED_KEY)
        if not isinstance(seed, dict):
            raise SampleError(f'"{SEED_KEY}" must be an object, not {type(seed).__name__}')
        seed = substitute(seed, lookup, SEED_KEY)
    return substitute(sample, lookup), seed


def stack_lookup(resolved: Any) -> Lookup:
    """Placeholders resolved as `Fn::Sub` resolves them in the template, with the provisioned values."""
    from ocr_devkit.stack.cfn import TemplateError

    def lookup(name: str, where: str) -> str:
        try:
            return str(resolved.resolve({"Fn::Sub": "${" + name + "}"}, path=where))
        except TemplateError:
            known = sorted(resolved.resources)
            raise SampleError(
                f"{where}: ${{{name}}} names no resource, attribute or parameter of the stack "
                f"(resources: {', '.join(known)}; pseudo parameters such as AWS::Region)"
            ) from None

    return lookup


# --- the running stack ---------------------------------------------------------------------------------------


def load_state(state_file: Path) -> dict[str, Any]:
    from ocr_devkit.operate import STATE_FILE

    if not state_file.is_file():
        raise StackNotRunning(f"no stack to invoke against: start `ocr-pipeline up` here (it writes {STATE_FILE})")
    state = dict(json.loads(state_file.read_text(encoding="utf-8")))
    if "stack" not in state:
        raise StackNotRunning(f"{state_file} was written by an older `up`: restart it")
    _check_answers(str(state["endpoint_url"]), state_file)
    return state


def _check_answers(endpoint_url: str, state_file: Path) -> None:
    try:
        urllib.request.urlopen(endpoint_url, timeout=3).close()
    except urllib.error.HTTPError:
        return  # an answer, if not a 200: the server is up
    except (urllib.error.URLError, OSError):
        raise StackNotRunning(
            f"the `up` recorded in {state_file} does not answer at {endpoint_url}: start `ocr-pipeline up` again"
        ) from None


def running_stack(state: dict[str, Any]) -> tuple[Any, Any]:
    """(ResolvedTemplate, StackResources) of the stack `up` runs, as its runner sees them."""
    from ocr_devkit.stack.cfn import resolve_template
    from ocr_devkit.stack.provision import StackResources

    stack = state["stack"]
    resolved = resolve_template(
        Path(stack["template"]),
        stack_name=state["stack_name"],
        region=state["region"],
        account_id=state["account_id"],
        parameters=stack["parameters"],
        endpoint_url=state["endpoint_url"],
    )
    resources = StackResources.from_dict(stack["resources"])
    resources.record_in(resolved)
    return resolved, resources


# --- seeding -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededObject:
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None
    content_type: str


class Seeder:
    """Uploads a sample's seed objects and makes the event name exactly what was uploaded."""

    def __init__(self, clients: Any, base_dir: Path, jobs_table: str | None, say: Callable[[str], None]) -> None:
        self.clients = clients
        self.base_dir = base_dir
        self.jobs_table = jobs_table
        self.say = say
        self.objects: dict[tuple[str, str], SeededObject] = {}

    def upload(self, seed: dict[str, Any]) -> None:
        from ocr_devkit.run import CONTENT_TYPES

        unknown = sorted(set(seed) - {"objects"})
        if unknown:
            raise SampleError(f'"{SEED_KEY}" has unknown keys {unknown}; it takes "objects"')
        s3 = self.clients.client("s3")
        for index, spec in enumerate(seed.get("objects") or []):
            where = f"{SEED_KEY}.objects[{index}]"
            if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) for k in ("bucket", "key", "file")):
                raise SampleError(f"{where}: needs string bucket, key and file")
            path = (self.base_dir / spec["file"]).resolve()
            if not path.is_file():
                raise SampleError(f"{where}: no such file {path}")
            content_type = spec.get("content_type") or CONTENT_TYPES.get(
                path.suffix.lower(), "application/octet-stream"
            )
            with path.open("rb") as body:
                put = s3.put_object(
                    Bucket=spec["bucket"],
                    Key=spec["key"],
                    Body=body,
                    ContentType=content_type,
                    Metadata=dict(spec.get("metadata") or {}),
                )
            seeded = SeededObject(
                bucket=spec["bucket"],
                key=spec["key"],
                size=path.stat().st_size,
                etag=str(put["ETag"]).strip('"'),
                version_id=put.get("VersionId"),
                content_type=content_type,
            )
            self.objects[(seeded.bucket, seeded.key)] = seeded
            version = f" (version {seeded.version_id})" if seeded.version_id else ""
            self.say(f"seeded s3://{seeded.bucket}/{seeded.key}{version} from {path}")

    def apply(self, event: Any) -> Any:
        """The event, with every reference to a seeded object (and every page message's job) made real."""
        if isinstance(event, dict) and isinstance(event.get("Records"), list):
            for record in event["Records"]:
                if not isinstance(record, dict):
                    continue
                if isinstance(record.get("s3"), dict):
                    self._s3_record(record)
                elif isinstance(record.get("body"), str):
                    self._sqs_record(record)
        return event

    def _s3_record(self, record: dict[str, Any]) -> None:
        s3 = record["s3"]
        obj = s3.get("object") or {}
        seeded = self.objects.get((str((s3.get("bucket") or {}).get("name")), unquote_plus(str(obj.get("key")))))
        if seeded is None:
            return
        obj["size"] = seeded.size
        obj["eTag"] = seeded.etag
        if seeded.version_id:
            obj["versionId"] = seeded.version_id
        else:
            obj.pop("versionId", None)

    def _sqs_record(self, record: dict[str, Any]) -> None:
        try:
            document = json.loads(record["body"])
        except json.JSONDecodeError:
            return  # a malformed body is a sample too
        if not isinstance(document, dict):
            return
        if document.get("message_type") == "page_work":
            body = self._page_work(document)
        elif isinstance(document.get("requestPayload"), dict):
            document["requestPayload"] = self.apply(document["requestPayload"])
            body = json.dumps(document)
        elif isinstance(document.get("source"), dict):
            self._request_source(document["source"])
            body = json.dumps(document)
        else:
            return
        if body != record["body"]:
            record["body"] = body
            if "md5OfBody" in record:
                record["md5OfBody"] = hashlib.md5(body.encode()).hexdigest()

    def _request_source(self, source: dict[str, Any]) -> None:
        seeded = self.objects.get((str(source.get("bucket")), str(source.get("key"))))
        if seeded is not None and "version_id" in source:
            source["version_id"] = seeded.version_id

    def _page_work(self, document: dict[str, Any]) -> str:
        """A page message exists only once the intake recorded its job: record it, for the seeded version."""
        from ocr_pipeline.adapters.aws import DynamoJobStore
        from ocr_pipeline.pipeline.model import PageWork, job_id_for

        try:
            work = PageWork.model_validate(document)
        except ValueError:
            return json.dumps(document)  # not valid page work: the handler's to refuse
        job = work.job
        if job is None:
            return json.dumps(document)  # names a job without describing it: nothing to seed
        seeded = self.objects.get((job.source.bucket, job.source.key))
        if seeded is not None:
            source = job.source.model_copy(update={"version_id": seeded.version_id, "etag": seeded.etag})
            # The job id the intake gives this object version: a new upload is a new job.
            job_id = job_id_for(source, job.options, job.model, job.region)
            job = job.model_copy(
                update={
                    "source": source,
                    "size_bytes": seeded.size,
                    "content_type": seeded.content_type,
                    "job_id": job_id,
                    "correlation_id": job_id if job.correlation_id == job.job_id else job.correlation_id,
                }
            )
        if self.jobs_table is None:
            raise SampleError("the event carries page work, but the function has no JOBS_TABLE to record its job in")
        jobs = DynamoJobStore(self.jobs_table, client=self.clients.client("dynamodb"))
        if jobs.create_job(job):
            jobs.mark_dispatched(job.job_id)
            self.say(f"seeded job {job.job_id} ({job.page_count} page(s)) in {self.jobs_table}")
        # What the intake sends once the job is recorded: the job by its id, not its spec.
        return PageWork(job_id=job.job_id, pages=work.pages).model_dump_json(exclude_none=True)


# --- the command ---------------------------------------------------------------------------------------------


def read_sample(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SampleError(f"{name} is not JSON: {error}") from None


def invoke(
    state: dict[str, Any],
    function: str,
    sample: Any,
    *,
    base_dir: Path,
    seed: bool = True,
    say: Callable[[str], None] = lambda line: None,
) -> tuple[Any, str]:
    """Run `function` once on `sample` against the stack of `state`: (InvocationResult, the function's log)."""
    from ocr_devkit.stack.clients import ClientFactory
    from ocr_devkit.stack.invocation import RunnerOptions, UnknownFunctionError
    from ocr_devkit.stack.runner import Runner

    resolved, resources = running_stack(state)
    event, seed_spec = render_sample(sample, stack_lookup(resolved))
    with tempfile.TemporaryDirectory(prefix="ocr-pipeline-invoke-") as logs:
        options = RunnerOptions(
            log_dir=Path(logs), extra_env=dict(state["stack"].get("extra_env") or {}), functions=(function,)
        )
        try:
            runner = Runner(resolved, resources, state["endpoint_url"], options)
        except UnknownFunctionError as error:
            raise UnknownFunction(str(error.args[0])) from None
        if function not in runner.functions:
            raise UnknownFunction(f"{function} is not run locally: {'; '.join(runner.warnings)}")
        # Not started: no event source is polled, only this invocation runs.
        try:
            if seed:
                clients = ClientFactory(state["endpoint_url"], state["region"])
                jobs_table = runner.functions[function].environment.get("JOBS_TABLE")
                seeder = Seeder(clients, base_dir, jobs_table, say)
                seeder.upload(seed_spec or {})
                event = seeder.apply(event)
            result = runner.invoke(function, event)
        finally:
            runner.stop()
        log_file = Path(logs) / f"{function}.log"
        log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.is_file() else ""
    return result, log


def command_invoke(args: argparse.Namespace) -> int:
    from ocr_devkit.operate import STATE_FILE

    def say(line: str) -> None:
        print(f"invoke: {line}", file=sys.stderr, flush=True)

    try:
        if args.event == "-":
            sample, base_dir = read_sample(sys.stdin.read(), "stdin"), Path.cwd()
        else:
            path = Path(args.event)
            if not path.is_file():
                raise SampleError(f"no such event file: {path}")
            sample, base_dir = read_sample(path.read_text(encoding="utf-8"), str(path)), path.resolve().parent
        state = load_state(Path(args.state_file) if args.state_file else STATE_FILE)
        result, log = invoke(state, args.function, sample, base_dir=base_dir, seed=not args.no_seed, say=say)
    except SampleError as error:
        print(f"error {error.code}: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    if log:  # START, the handler's own lines, END and REPORT, as `sam local invoke` shows them
        sys.stderr.write(log if log.endswith("\n") else log + "\n")
    if result.ok:
        print(json.dumps(result.payload, ensure_ascii=False))
        return EXIT_OK
    failure = result.error or {}
    print(json.dumps(failure, ensure_ascii=False))
    message = " ".join(str(failure.get("errorMessage", "")).split())
    print(f"error {failure.get('errorType', 'Error')}: {message}", file=sys.stderr)
    return EXIT_HANDLER_FAILED


def add_commands(commands: Any) -> None:
    invoke_ = commands.add_parser(
        "invoke",
        help="run one function once on a sample event, against the running `ocr-pipeline up` (sam local invoke)",
    )
    invoke_.add_argument("function", help="the function's logical id in the template, e.g. UploadFunction")
    invoke_.add_argument("event", help="the event: a JSON file (events/*.json), or - for stdin")
    invoke_.add_argument("--no-seed", action="store_true", help='invoke without uploading the sample\'s "$seed"')
    invoke_.add_argument("--state-file", help="the running `up`'s state file (default: .ocr-pipeline/up.json)")
    invoke_.set_defaults(handler=command_invoke)
