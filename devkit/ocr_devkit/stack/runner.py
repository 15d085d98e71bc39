"""The Lambda stand-in: runs every function of the template in its own worker processes, fed by its events.

Semantics kept from Lambda:

* **Execution environments.** Each function has its own pool of spawned worker processes with only its
  own environment variables (plus the runtime's and the local plumbing's). A worker imports the handler
  once (a cold start, timed) and then serves invocations one at a time. An invocation that outlives the
  function `Timeout` kills its worker; the next invocation starts a new one.
* **SQS event sources.** Batches of up to `BatchSize` records (gathered over `MaximumBatchingWindowInSeconds`),
  at most `ScalingConfig.MaximumConcurrency` batches in flight. With `ReportBatchItemFailures` only the
  records the handler lists are retried; an invalid response or an error fails the whole batch. Failed
  records are not deleted: they come back, and the queue's RedrivePolicy moves them to the DLQ.
* **S3 and SNS event sources** are asynchronous invocations: delivered through a hidden queue (see
  `provision.py`), retried `MaximumRetryAttempts` times (default 2), then sent to the function's
  OnFailure destination or DeadLetterQueue if it has one, and counted as dropped.

Local shortcuts (same semantics, faster clock):

* `retry_delay_s` (default 1 s): a failed SQS record's visibility is set to this many seconds (rounded up:
  ChangeMessageVisibility takes whole seconds) instead of waiting out the queue's VisibilityTimeout, and
  async retries wait this long instead of Lambda's 1–2 minutes. `None` keeps the real clock. A record whose
  visibility the function set itself keeps what the function set, as on AWS: a held lease's remaining
  time, or the functions' own retry backoff, whose base (`RETRY_BACKOFF_BASE_S`) the runner sets to this
  delay.
* `duplicate_rate`: a share of deliveries is invoked twice with the identical event, as at-least-once
  delivery can. The original invocation decides what is deleted; the duplicate only counts in the stats.
  Workers then count their successful AWS writes per invocation, and a duplicate that succeeded without
  writing anything counts as dropped (`duplicates_dropped`): the function recognised it as a repeat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import random
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

from ocr_pipeline.adapters.redelivery import BACKOFF_BASE_ENV

from .cfn import ResolvedTemplate
from .clients import ClientFactory
from .events import (
    dead_letter_attributes,
    destination_record,
    is_s3_test_event,
    normalise_s3_event,
    sns_event,
    sqs_event,
)
from .functions import Destination, FunctionSpec, S3EventSource, SnsEventSource, SqsEventSource, function_specs
from .provision import StackResources
from .roles import assume, function_roles
from .worker import WorkerConfig, serve

logger = logging.getLogger(__name__)

# Environment variables Lambda sets and a function cannot override.
RESERVED_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
# What a worker keeps from the runner's own environment (the rest stays out, as in Lambda).
_INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "SYSTEMROOT")


@dataclass(frozen=True)
class RunnerOptions:
    log_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)  # applied last, to every worker
    retry_delay_s: float | None = 1.0  # None: failed SQS records wait out the queue's VisibilityTimeout
    poll_wait_s: int = 1  # ReceiveMessage WaitTimeSeconds: also bounds how long stop() waits for pollers
    default_max_concurrency: int = 2  # per SQS event source without ScalingConfig.MaximumConcurrency
    async_concurrency: int = 2  # S3/SNS invocations in flight per event source
    concurrency_cap: int | None = None  # caps every source's concurrency (a laptop is not a Lambda fleet)
    duplicate_rate: float = 0.0
    # A share of invocations whose worker dies midway, right after one of its AWS calls (or after its
    # handler returned, before answering), as a Lambda environment can (out of memory, a host failure).
    kill_rate: float = 0.0
    seed: int | None = None
    init_timeout_s: float = 30.0  # a cold start (handler import) longer than this fails the invocation
    deliver_s3_test_events: bool = True  # hand S3's s3:TestEvent to the handler, as the hidden queue receives it
    history_size: int = 1000
    functions: tuple[str, ...] | None = None  # run only these logical ids (None: all)


@dataclass
class InvocationResult:
    request_id: str
    function: str
    ok: bool
    payload: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0
    cold_start: bool = False
    init_ms: float | None = None
    timed_out: bool = False
    worker_pid: int | None = None
    source: str = "invoke"
    attempt: int = 1
    duplicate: bool = False
    writes: int | None = None  # successful state-changing AWS calls, when the workers count them
    deferred: tuple[str, ...] = ()  # receipt handles whose visibility the function set itself
    event: Any = None

    def to_dict(self, *, include_event: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not include_event:
            data.pop("event")
        return data


@dataclass
class FunctionStats:
    invocations: int = 0
    failures: int = 0  # invocations that failed (an error, a timeout, a dead worker)
    records_failed: int = 0  # SQS records a handler reported in batchItemFailures (given back to retry)
    timeouts: int = 0
    retries: int = 0  # SQS records delivered again, async re-invocations
    duplicates: int = 0  # deliveries invoked twice on purpose (duplicate_rate)
    duplicates_dropped: int = 0  # of those, invocations that succeeded and changed nothing
    dropped_events: int = 0  # async events that failed every attempt
    cold_starts: int = 0
    cold_start_ms: list[float] = field(default_factory=list)
    workers_killed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cold_start_mean_ms"] = sum(self.cold_start_ms) / len(self.cold_start_ms) if self.cold_start_ms else None
        data["cold_start_max_ms"] = max(self.cold_start_ms) if self.cold_start_ms else None
        return data


class IdleTimeoutError(TimeoutError):
    """wait_until_idle gave up; the message says what was still busy."""


class UnknownFunctionError(KeyError):
    pass


# ---------------------------------------------------------------------------------------------------------------------
# Workers


@dataclass
class _CallOutcome:
    ok: bool
    payload: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0
    timed_out: bool = False
    worker_lost: bool = False  # the worker exited or was killed: do not reuse it
    writes: int | None = None
    deferred: tuple[str, ...] = ()


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a spawned worker without re-importing the runner's `__main__` in it.

    spawn normally runs the parent's main script (or `-m` module) again in the child, so that objects
    pickled from it resolve. A worker needs nothing from it (its target lives in `worker.py`), and a
    Lambda environment holds only the function's code: it should not pay for, or run, the CLI or a
    user's unguarded script. multiprocessing reads `__main__.__spec__`/`__file__` only while starting.
    """
    main = sys.modules.get("__main__")
    with _MAIN_LOCK:
        if main is None:
            yield
            return
        saved: dict[str, Any] = {
            name: main.__dict__[name] for name in ("__spec__", "__file__") if name in main.__dict__
        }
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class _Worker:
    def __init__(self, context: SpawnContext, config: WorkerConfig) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(target=serve, args=(child_end, config), name=f"lambda:{config.function_name}")
        self.started = time.perf_counter()
        with _main_module_hidden():
            self.process.start()
        child_end.close()
        self.conn = parent_end
        self.pid = self.process.pid

    def wait_ready(self, timeout_s: float) -> tuple[float, dict[str, Any] | None]:
        """(cold start ms: from spawning the process to the handler imported, init error or None)."""

        def elapsed_ms() -> float:
            return (time.perf_counter() - self.started) * 1000

        if not self.conn.poll(timeout_s):
            self.kill()
            return elapsed_ms(), {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"Init timed out after {timeout_s:.2f} s",
            }
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            return elapsed_ms(), {"errorType": "Runtime.ExitError", "errorMessage": self._exit_message()}
        if message[0] == "ready":
            return elapsed_ms(), None
        self.kill()
        return elapsed_ms(), message[1]

    def call(self, request_id: str, event_json: str, timeout_s: float) -> _CallOutcome:
        started = time.perf_counter()
        try:
            self.conn.send(("invoke", request_id, event_json))
            answered = self.conn.poll(timeout_s)
        except (BrokenPipeError, OSError):
            answered = True
        elapsed = (time.perf_counter() - started) * 1000
        if not answered:
            self.kill()
            message = f"{datetime.now(UTC).isoformat()} {request_id} Task timed out after {timeout_s:.2f} seconds"
            return _CallOutcome(
                ok=False,
                error={"errorType": "Sandbox.Timedout", "errorMessage": message},
                duration_ms=elapsed,
                timed_out=True,
                worker_lost=True,
            )
        try:
            _, _, ok, payload, duration_ms, _memory, writes, deferred = self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            error = {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"RequestId: {request_id} {self._exit_message()}",
            }
            return _CallOutcome(ok=False, error=error, duration_ms=elapsed, worker_lost=True)
        if ok:
            return _CallOutcome(
                ok=True, payload=json.loads(payload), duration_ms=duration_ms, writes=writes, deferred=tuple(deferred)
            )
        lost = payload.get("errorType") == "Runtime.ExitError"
        if lost:
            self.process.join(5)
        return _CallOutcome(
            ok=False, error=payload, duration_ms=duration_ms, worker_lost=lost, writes=writes, deferred=tuple(deferred)
        )

    def _exit_message(self) -> str:
        self.process.join(1)
        return f"Error: Runtime exited with exit code {self.process.exitcode}"

    def request_stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(("stop",))

    def stop(self, timeout_s: float = 2.0) -> None:
        self.request_stop()
        self.process.join(timeout_s)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        with contextlib.suppress(OSError):
            self.conn.close()


class _FunctionPool:
    """The execution environments of one function: warm workers are reused, a new one is a cold start."""

    def __init__(self, runner: Runner, spec: FunctionSpec) -> None:
        self.runner = runner
        self.spec = spec
        self.log_path = runner.options.log_dir / f"{spec.logical_id}.log"
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        reserved = spec.reserved_concurrency
        self._reserved = threading.BoundedSemaphore(reserved) if reserved else None

    def config(self) -> WorkerConfig:
        spec = self.spec
        return WorkerConfig(
            function_name=spec.function_name,
            function_arn=spec.arn,
            handler_module=spec.module,
            handler_attribute=spec.attribute,
            sys_path=(str(spec.code_dir), *(str(d) for d in spec.layer_dirs)),
            environment=self.runner.environment_for(spec),
            log_path=str(self.log_path),
            memory_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
            parent_pid=os.getpid(),
            count_writes=self.runner.options.duplicate_rate > 0,
            kill_rate=self.runner.options.kill_rate,
            kill_seed=self.runner.options.seed,
        )

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._all if w.pid is not None and w.process.is_alive()]

    @contextlib.contextmanager
    def _concurrency(self) -> Iterator[None]:
        if self._reserved is None:
            yield
            return
        with self._reserved:
            yield

    def invoke(self, event: Any, *, source: str, attempt: int = 1, duplicate: bool = False) -> InvocationResult:
        request_id = str(uuid.uuid4())
        event_json = json.dumps(event)
        fault_killed = False
        with self._concurrency():
            worker, init_ms, init_error = self._checkout()
            cold = init_ms is not None
            if worker is None:
                outcome = _CallOutcome(ok=False, error=init_error, worker_lost=True)
            else:
                outcome = worker.call(request_id, event_json, self.spec.timeout_s)
                fault_killed = outcome.worker_lost and not outcome.timed_out
                self._checkin(worker, lost=outcome.worker_lost)
        if outcome.timed_out:
            self._append_log(f"{outcome.error['errorMessage'] if outcome.error else ''}\n")
        result = InvocationResult(
            request_id=request_id,
            function=self.spec.logical_id,
            ok=outcome.ok,
            payload=outcome.payload,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            cold_start=cold,
            init_ms=init_ms,
            timed_out=outcome.timed_out,
            worker_pid=worker.pid if worker else None,
            source=source,
            attempt=attempt,
            duplicate=duplicate,
            writes=outcome.writes,
            deferred=outcome.deferred,
            event=event,
        )
        self.runner._record(result, killed=outcome.timed_out or fault_killed)
        return result

    def _checkout(self) -> tuple[_Worker | None, float | None, dict[str, Any] | None]:
        with self._lock:
            if self._closed:
                return None, None, {"errorType": "Runner.Stopped", "errorMessage": "the runner is stopping"}
            if self._idle:
                return self._idle.pop(), None, None
            worker = _Worker(self.runner.mp_context, self.config())
            self._all.add(worker)
        init_ms, error = worker.wait_ready(self.runner.options.init_timeout_s)
        if error is not None:
            with self._lock:
                self._all.discard(worker)
            return None, init_ms, error
        return worker, init_ms, None

    def _checkin(self, worker: _Worker, *, lost: bool) -> None:
        with self._lock:
            if lost or self._closed:
                self._all.discard(worker)
                discard = True
            else:
                self._idle.append(worker)
                discard = False
        if discard:
            worker.kill()

    def _append_log(self, text: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "a", encoding="utf-8") as log:
            log.write(text)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, busy = list(self._idle), [w for w in self._all if w not in self._idle]
            self._idle.clear()
            self._all.clear()
        for worker in busy:
            worker.kill()
        for worker in idle:
            worker.request_stop()
        for worker in idle:
            worker.stop()


# ---------------------------------------------------------------------------------------------------------------------
# Event sources


@dataclass
class _Source:
    label: str
    function: str
    kind: str  # "SQS" | "S3" | "SNS"
    queue_url: str
    queue_arn: str
    concurrency: int
    spec: SqsEventSource | S3EventSource | SnsEventSource
    sqs: Any = None  # receives and deletes: the function's role for an SQS event source, as Lambda polls
    slots: threading.Semaphore = field(init=False)
    executor: ThreadPoolExecutor = field(init=False)
    thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.slots = threading.Semaphore(self.concurrency)
        self.executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"ocr-stack-{self.label}")


class Runner:
    """Runs the functions of a resolved, provisioned template against the moto server at `endpoint_url`."""

    def __init__(
        self,
        resolved: ResolvedTemplate,
        resources: StackResources,
        endpoint_url: str,
        options: RunnerOptions,
    ) -> None:
        self.resolved = resolved
        self.resources = resources
        self.endpoint_url = endpoint_url
        self.options = options
        self.region = resolved.region
        self.mp_context = multiprocessing.get_context("spawn")
        self.warnings: list[str] = []
        all_specs = function_specs(resolved)
        specs = all_specs
        if options.functions is not None:
            unknown = sorted(set(options.functions) - set(specs))
            if unknown:
                raise UnknownFunctionError(f"no runnable functions named {unknown}; known: {sorted(specs)}")
            specs = {k: v for k, v in specs.items() if k in options.functions}
        for logical_id, spec in list(specs.items()):
            if spec.reserved_concurrency == 0:
                self.warnings.append(f"{logical_id}: ReservedConcurrentExecutions is 0 (always throttled); not run")
                del specs[logical_id]
        self.functions: dict[str, FunctionSpec] = specs
        for resource in resolved.of_type("AWS::Serverless::Function", "AWS::Lambda::Function"):
            if resource.logical_id not in all_specs:
                self.warnings.append(f"{resource.logical_id}: not a local Python function folder; not run")
        local_runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
        for spec in specs.values():
            if spec.runtime != local_runtime:
                self.warnings.append(f"{spec.logical_id}: declares {spec.runtime}, runs on the local {local_runtime}")
            self.warnings.extend(f"{spec.logical_id}: {note}" for note in spec.notes)
            self.warnings.extend(f"{spec.logical_id}: event {event} skipped" for event in spec.skipped_events)
        clients = ClientFactory(endpoint_url, self.region)
        self.sqs = clients.client("sqs")
        # Each function signs with its own role's credentials, as Lambda gives them: IAM is enforced.
        sts = clients.client("sts")
        self._credentials = {
            function: assume(sts, role.arn(resolved.account_id), specs[function].function_name)
            for function, role in function_roles(resolved, list(specs)).items()
        }
        # Lambda polls a function's queues and sends its OnFailure records with the function's own role
        # (hence the SQS poller's managed policy and SAM's destination policy), and so does the runner.
        role_clients = {
            function: ClientFactory(endpoint_url, self.region, credentials)
            for function, credentials in self._credentials.items()
        }
        self._role_sqs = {function: factory.client("sqs") for function, factory in role_clients.items()}
        self._role_sns = {function: factory.client("sns") for function, factory in role_clients.items()}
        self._lock = threading.Lock()
        self._stats: dict[str, FunctionStats] = {logical_id: FunctionStats() for logical_id in specs}
        self._history: deque[InvocationResult] = deque(maxlen=options.history_size)
        self._failed_events: deque[dict[str, Any]] = deque(maxlen=options.history_size)
        self._random = random.Random(options.seed)
        self._duplicate_rate = options.duplicate_rate
        self._in_flight = 0
        self._stopping = threading.Event()
        self._started = False
        self._pools = {logical_id: _FunctionPool(self, spec) for logical_id, spec in specs.items()}
        self._sources = self._build_sources()
        self._async_executor = ThreadPoolExecutor(
            max_workers=options.async_concurrency, thread_name_prefix="ocr-stack-async"
        )

    # -- set-up ---------------------------------------------------------------------------------------------------

    def _queue_url(self, arn: str) -> str:
        url = self.resources.queue_url_for_arn(arn)
        if url is not None:
            return url
        *_, account, name = arn.split(":")
        return f"{self.endpoint_url.rstrip('/')}/{account}/{name}"

    def _build_sources(self) -> list[_Source]:
        sources: list[_Source] = []
        for spec in self.functions.values():
            for event in spec.events:
                label = f"{spec.logical_id}.{event.name}"
                if isinstance(event, SqsEventSource):
                    if not event.enabled:
                        self.warnings.append(f"{label}: Enabled is false; not polled")
                        continue
                    if event.has_filter_criteria:
                        self.warnings.append(
                            f"{label}: FilterCriteria is not applied locally; every record is delivered"
                        )
                    if self.resources.queue_url_for_arn(event.queue_arn) is None:
                        self.warnings.append(f"{label}: queue {event.queue_arn} is not part of the stack")
                    concurrency = event.maximum_concurrency or self.options.default_max_concurrency
                    if self.options.concurrency_cap is not None:
                        concurrency = max(1, min(concurrency, self.options.concurrency_cap))
                    sources.append(
                        _Source(
                            label,
                            spec.logical_id,
                            "SQS",
                            self._queue_url(event.queue_arn),
                            event.queue_arn,
                            concurrency,
                            event,
                            sqs=self._role_sqs[spec.logical_id],
                        )
                    )
                else:
                    queue = self.resources[event.queue_logical_id]
                    assert queue.url is not None and queue.arn is not None
                    sources.append(
                        _Source(
                            label,
                            spec.logical_id,
                            event.kind,
                            queue.url,
                            queue.arn,
                            self.options.async_concurrency,
                            event,
                            sqs=self.sqs,  # the hidden queue is the local stand-in for Lambda's own
                        )
                    )
        return sources

    def environment_for(self, spec: FunctionSpec) -> dict[str, str]:
        """A worker's whole environment: runtime defaults < the function's variables < Lambda's reserved ones
        (its role's credentials among them) < the local plumbing (endpoint) < the caller's `extra_env`."""
        region = self.region
        inherited = {key: os.environ[key] for key in _INHERITED_VARIABLES if key in os.environ}
        defaults = {
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "AWS_XRAY_SDK_ENABLED": "false",
            "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
        }
        own = {key: value for key, value in spec.environment.items() if key not in RESERVED_VARIABLES}
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        reserved = {
            "_HANDLER": spec.handler,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(spec.timeout_s),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{today}/[$LATEST]{uuid.uuid4().hex}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "LAMBDA_RUNTIME_DIR": sys.prefix,
            **self._credentials[spec.logical_id],
        }
        local = {"AWS_ENDPOINT_URL": self.endpoint_url}
        if self.options.retry_delay_s is not None:
            # The faster clock, as the functions keep it: their retry backoff starts at the runner's delay.
            local[BACKOFF_BASE_ENV] = f"{self.options.retry_delay_s:g}"
        return {**inherited, **defaults, **own, **reserved, **local, **dict(self.options.extra_env)}

    # -- life cycle -----------------------------------------------------------------------------------------------

    def start(self) -> Runner:
        if self._started:
            return self
        self.options.log_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        for source in self._sources:
            target = self._poll_sqs if source.kind == "SQS" else self._poll_async
            source.thread = threading.Thread(
                target=target, args=(source,), name=f"ocr-stack-poll-{source.label}", daemon=True
            )
            source.thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, kill every worker, wait for the threads. Idempotent."""
        self._stopping.set()
        for source in self._sources:
            if source.thread is not None:
                source.thread.join(self.options.poll_wait_s + 5)
        for pool in self._pools.values():
            pool.close()
        for source in self._sources:
            source.executor.shutdown(wait=True, cancel_futures=True)
        self._async_executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- invoking -------------------------------------------------------------------------------------------------

    def _pool(self, function: str) -> _FunctionPool:
        if function in self._pools:
            return self._pools[function]
        for pool in self._pools.values():
            if function in (pool.spec.function_name, pool.spec.arn):
                return pool
        raise UnknownFunctionError(f"no function {function!r}; known: {sorted(self._pools)}")

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def invoke(self, function: str, event: Any) -> InvocationResult:
        """A synchronous (RequestResponse) invocation, by logical id, function name or ARN."""
        pool = self._pool(function)
        with self._busy():
            return pool.invoke(event, source="invoke")

    def invoke_async(self, function: str, event: Any) -> None:
        """An asynchronous (Event) invocation: retried, then sent to the failure destination if any."""
        pool = self._pool(function)
        with self._lock:
            self._in_flight += 1

        def done() -> None:
            with self._lock:
                self._in_flight -= 1

        def run() -> None:
            try:
                self._run_async(pool, event, "invoke-async", time.monotonic())
            finally:
                done()

        try:
            self._async_executor.submit(run)
        except RuntimeError:  # the runner is stopping
            done()
            raise

    def _record(self, result: InvocationResult, *, killed: bool) -> None:
        with self._lock:
            stats = self._stats[result.function]
            stats.invocations += 1
            stats.failures += 0 if result.ok else 1
            stats.timeouts += 1 if result.timed_out else 0
            stats.workers_killed += 1 if killed else 0
            stats.duplicates += 1 if result.duplicate else 0
            if result.cold_start and result.init_ms is not None:
                stats.cold_starts += 1
                stats.cold_start_ms.append(result.init_ms)
            self._history.append(result)

    def _count(self, function: str, **increments: int) -> None:
        with self._lock:
            stats = self._stats[function]
            for name, value in increments.items():
                setattr(stats, name, getattr(stats, name) + value)

    def _should_duplicate(self) -> bool:
        with self._lock:
            return self._duplicate_rate > 0 and self._random.random() < self._duplicate_rate

    def set_faults(self, *, duplicate_rate: float | None = None, seed: int | None = None) -> None:
        with self._lock:
            if duplicate_rate is not None:
                self._duplicate_rate = duplicate_rate
            if seed is not None:
                self._random = random.Random(seed)

    # -- SQS ------------------------------------------------------------------------------------------------------

    def _receive(self, source: _Source, max_messages: int, wait_s: int) -> list[dict[str, Any]]:
        response = source.sqs.receive_message(
            QueueUrl=source.queue_url,
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages") or [])

    def _poll_sqs(self, source: _Source) -> None:
        spec = source.spec
        assert isinstance(spec, SqsEventSource)
        while not self._stopping.is_set():
            if not source.slots.acquire(timeout=0.2):
                continue
            dispatched = False
            try:
                messages = self._receive(source, spec.batch_size, self.options.poll_wait_s)
                window_ends = time.monotonic() + spec.batching_window_s
                while messages and len(messages) < spec.batch_size and not self._stopping.is_set():
                    remaining = window_ends - time.monotonic()
                    if remaining <= 0:
                        break
                    messages += self._receive(source, spec.batch_size - len(messages), min(1, math.ceil(remaining)))
                if messages and not self._stopping.is_set():
                    with self._lock:
                        self._in_flight += 1
                    source.executor.submit(self._run_sqs_batch, source, messages)
                    dispatched = True
            except Exception:
                if not self._stopping.is_set():
                    logger.exception("polling %s failed", source.label)
                    self._stopping.wait(1.0)
            finally:
                if not dispatched:
                    source.slots.release()

    def _run_sqs_batch(self, source: _Source, messages: list[dict[str, Any]]) -> None:
        spec = source.spec
        assert isinstance(spec, SqsEventSource)
        pool = self._pools[source.function]
        try:
            event = sqs_event(messages, source.queue_arn, self.region)
            redelivered = sum(
                1 for r in event["Records"] if int(r["attributes"].get("ApproximateReceiveCount", "1")) > 1
            )
            if redelivered:
                self._count(source.function, retries=redelivered)
            result = pool.invoke(event, source=source.label)
            failed = self._failed_message_ids(result, event, spec.report_batch_item_failures)
            if result.ok and failed:
                self._count(source.function, records_failed=len(failed))
            if self._should_duplicate():
                repeat = pool.invoke(event, source=source.label, duplicate=True)
                repeat_failed = self._failed_message_ids(repeat, event, spec.report_batch_item_failures)
                if repeat.writes == 0 and not repeat_failed:
                    self._count(source.function, duplicates_dropped=1)
            if not self._stopping.is_set():
                self._settle(source, messages, failed, set(result.deferred))
        except Exception:
            logger.exception("delivering a batch to %s failed", source.label)
        finally:
            source.slots.release()
            with self._lock:
                self._in_flight -= 1

    @staticmethod
    def _failed_message_ids(result: InvocationResult, event: dict[str, Any], report_item_failures: bool) -> set[str]:
        """Lambda's rules for which records of a batch failed."""
        every = {record["messageId"] for record in event["Records"]}
        if not result.ok:
            return every
        if not report_item_failures:
            return set()
        response = result.payload
        if response is None:
            return set()
        if not isinstance(response, dict):
            return every  # not a valid batch response: the whole batch failed
        failures = response.get("batchItemFailures")
        if failures is None:
            return set()
        if not isinstance(failures, list):
            return every
        failed: set[str] = set()
        for item in failures:
            identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not isinstance(identifier, str) or identifier not in every:
                return every  # a null, empty or unknown itemIdentifier fails the batch
            failed.add(identifier)
        return failed

    def _settle(
        self, source: _Source, messages: list[dict[str, Any]], failed: set[str], deferred: Set[str] = frozenset()
    ) -> None:
        done = [m for m in messages if m["MessageId"] not in failed]
        # A record the function gave back with its own visibility comes back when the function said (a lease
        # running out): the faster clock would only bring it back to find the lease still held.
        retry = [m for m in messages if m["MessageId"] in failed and m["ReceiptHandle"] not in deferred]
        for chunk in _chunks(done, 10):
            source.sqs.delete_message_batch(
                QueueUrl=source.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        delay = self.options.retry_delay_s
        if retry and delay is not None:
            # The faster local clock is the runner's own shortcut, not Lambda's: it signs as the admin.
            for chunk in _chunks(retry, 10):
                self.sqs.change_message_visibility_batch(
                    QueueUrl=source.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": math.ceil(delay)}
                        for i, m in enumerate(chunk)
                    ],
                )

    # -- S3, SNS and direct asynchronous invocations --------------------------------------------------------------

    def _poll_async(self, source: _Source) -> None:
        while not self._stopping.is_set():
            if not source.slots.acquire(timeout=0.2):
                continue
            dispatched = False
            try:
                messages = self._receive(source, 1, self.options.poll_wait_s)
                if messages and not self._stopping.is_set():
                    with self._lock:
                        self._in_flight += 1
                    source.executor.submit(self._run_async_message, source, messages[0])
                    dispatched = True
            except Exception:
                if not self._stopping.is_set():
                    logger.exception("polling %s failed", source.label)
                    self._stopping.wait(1.0)
            finally:
                if not dispatched:
                    source.slots.release()

    def _async_event(self, source: _Source, body: str) -> Any:
        """The event Lambda would get for one hidden-queue message, or None to drop it."""
        document = json.loads(body)
        if isinstance(source.spec, S3EventSource):
            if is_s3_test_event(document):
                return document if self.options.deliver_s3_test_events else None
            return normalise_s3_event(document, self.resources.account_id)
        assert isinstance(source.spec, SnsEventSource)
        subscription = self.resources[source.spec.queue_logical_id].attributes.get("SubscriptionArn", "")
        return sns_event(document, str(subscription))

    def _run_async_message(self, source: _Source, message: dict[str, Any]) -> None:
        try:
            event = self._async_event(source, message["Body"])
            if event is not None:
                sent = int(message.get("Attributes", {}).get("SentTimestamp", time.time() * 1000)) / 1000
                enqueued = time.monotonic() - max(0.0, time.time() - sent)
                self._run_async(self._pools[source.function], event, source.label, enqueued)
            if not self._stopping.is_set():
                source.sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
        except Exception:
            logger.exception("delivering an event to %s failed", source.label)
        finally:
            source.slots.release()
            with self._lock:
                self._in_flight -= 1

    def _run_async(self, pool: _FunctionPool, event: Any, label: str, enqueued: float) -> None:
        config = pool.spec.async_config
        attempts = 0
        while True:
            attempts += 1
            result = pool.invoke(event, source=label, attempt=attempts)
            if result.ok or attempts > config.maximum_retry_attempts or self._stopping.is_set():
                break
            if time.monotonic() - enqueued > config.maximum_event_age_s:
                break
            self._count(pool.spec.logical_id, retries=1)
            # Lambda waits about a minute, then two, between async attempts.
            delay = self.options.retry_delay_s if self.options.retry_delay_s is not None else 60.0 * attempts
            if self._stopping.wait(delay):
                return
        if self._should_duplicate():
            repeat = pool.invoke(event, source=label, duplicate=True)
            if repeat.ok and repeat.writes == 0:
                self._count(pool.spec.logical_id, duplicates_dropped=1)
        if self._stopping.is_set():
            return
        if result.ok:
            if config.on_success is not None:
                self._send_record(config.on_success, pool.spec, event, result, "Success", attempts)
            return
        self._count(pool.spec.logical_id, dropped_events=1)
        with self._lock:
            self._failed_events.append({"function": pool.spec.logical_id, "event": event, "error": result.error})
        if config.on_failure is not None:
            self._send_record(config.on_failure, pool.spec, event, result, "RetriesExhausted", attempts)
        if config.dead_letter is not None:
            self._send(
                config.dead_letter,
                json.dumps(event),
                dead_letter_attributes(result.request_id, result.error),
                pool.spec,
            )

    def _send_record(
        self,
        destination: Destination,
        spec: FunctionSpec,
        event: Any,
        result: InvocationResult,
        condition: str,
        attempts: int,
    ) -> None:
        record = destination_record(
            event=event,
            request_id=result.request_id,
            function_arn=spec.arn,
            condition=condition,
            attempts=attempts,
            response=result.payload,
            error=result.error,
        )
        self._send(destination, json.dumps(record), {}, spec)

    def _send(self, destination: Destination, body: str, attributes: dict[str, Any], spec: FunctionSpec) -> None:
        if destination.type == "SQS":
            self._role_sqs[spec.logical_id].send_message(
                QueueUrl=self._queue_url(destination.arn), MessageBody=body, MessageAttributes=attributes
            )
        elif destination.type == "SNS":
            self._role_sns[spec.logical_id].publish(
                TopicArn=destination.arn, Message=body, MessageAttributes=attributes
            )
        else:
            logger.warning("%s: %s destinations are not supported locally", spec.logical_id, destination.type)

    # -- observing ------------------------------------------------------------------------------------------------

    def _queue_depth(self, source: _Source) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=source.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    def busy(self) -> dict[str, int]:
        """What is still pending: invocations in flight and messages per event-source queue."""
        with self._lock:
            pending = {"in_flight": self._in_flight}
        for source in self._sources:
            pending[source.label] = self._queue_depth(source)
        return pending

    def wait_until_idle(self, timeout: float = 30.0, *, poll_s: float = 0.05) -> None:
        """Return once every event-source queue is empty and nothing is in flight (twice in a row)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while True:
            pending = self.busy()
            quiet = quiet + 1 if not any(pending.values()) else 0
            if quiet >= 2:
                return
            if time.monotonic() > deadline:
                raise IdleTimeoutError(f"the stack was still busy after {timeout:.1f} s: {pending}")
            time.sleep(poll_s)

    def stats(self) -> dict[str, FunctionStats]:
        with self._lock:
            return {
                name: replace(stats, cold_start_ms=list(stats.cold_start_ms)) for name, stats in self._stats.items()
            }

    def stats_dict(self) -> dict[str, dict[str, Any]]:
        return {name: stats.to_dict() for name, stats in self.stats().items()}

    def invocations(self, function: str | None = None) -> list[InvocationResult]:
        with self._lock:
            history = list(self._history)
        if function is None:
            return history
        logical_id = self._pool(function).spec.logical_id
        return [result for result in history if result.function == logical_id]

    def failed_events(self) -> list[dict[str, Any]]:
        """Async events that failed every attempt (S3, SNS, invoke_async)."""
        with self._lock:
            return list(self._failed_events)

    def worker_pids(self) -> dict[str, list[int]]:
        return {name: pool.pids() for name, pool in self._pools.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "log_dir": str(self.options.log_dir),
            "functions": {name: spec.describe() for name, spec in self.functions.items()},
            "event_sources": [
                {"label": s.label, "type": s.kind, "queue_url": s.queue_url, "concurrency": s.concurrency}
                for s in self._sources
            ],
            "warnings": list(self.warnings),
        }


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
