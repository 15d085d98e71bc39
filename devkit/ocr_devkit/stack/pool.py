"""Each function's execution environments: spawned worker processes, reused while warm.

A worker imports the handler once (a cold start, timed) and then serves invocations one at a time. An
invocation that outlives the function `Timeout` kills its worker; the next invocation starts a new one.
Workers get only their function's environment (`worker_environment`), as a Lambda environment does.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.context import SpawnContext
from typing import Any

from ocr_pipeline.adapters.redelivery import BACKOFF_BASE_ENV

from .functions import FunctionSpec
from .invocation import InvocationResult, Ledger, RunnerOptions
from .worker import WorkerConfig, serve

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


def worker_environment(
    spec: FunctionSpec,
    *,
    region: str,
    endpoint_url: str,
    credentials: Mapping[str, str],
    options: RunnerOptions,
) -> dict[str, str]:
    """A worker's whole environment: runtime defaults < the function's variables < Lambda's reserved ones
    (its role's credentials among them) < the local plumbing (endpoint) < the caller's `extra_env`."""
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
        **credentials,
    }
    local = {"AWS_ENDPOINT_URL": endpoint_url}
    if options.retry_delay_s is not None:
        # The faster clock, as the functions keep it: their retry backoff starts at the runner's delay.
        local[BACKOFF_BASE_ENV] = f"{options.retry_delay_s:g}"
    return {**inherited, **defaults, **own, **reserved, **local, **dict(options.extra_env)}


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


class WorkerProcess:
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


class FunctionPool:
    """The execution environments of one function: warm workers are reused, a new one is a cold start."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        environment: Callable[[], dict[str, str]],
        options: RunnerOptions,
        ledger: Ledger,
        mp_context: SpawnContext,
    ) -> None:
        self.spec = spec
        self.options = options
        self.ledger = ledger
        self.mp_context = mp_context
        # Called for each new worker: Lambda gives every execution environment its own log stream.
        self._environment = environment
        self.log_path = options.log_dir / f"{spec.logical_id}.log"
        self._idle: list[WorkerProcess] = []
        self._all: set[WorkerProcess] = set()
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
            environment=self._environment(),
            log_path=str(self.log_path),
            memory_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
            parent_pid=os.getpid(),
            count_writes=self.options.duplicate_rate > 0,
            kill_rate=self.options.kill_rate,
            kill_seed=self.options.seed,
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
        self.ledger.record(result, killed=outcome.timed_out or fault_killed)
        return result

    def _checkout(self) -> tuple[WorkerProcess | None, float | None, dict[str, Any] | None]:
        with self._lock:
            if self._closed:
                return None, None, {"errorType": "Runner.Stopped", "errorMessage": "the runner is stopping"}
            if self._idle:
                return self._idle.pop(), None, None
            worker = WorkerProcess(self.mp_context, self.config())
            self._all.add(worker)
        init_ms, error = worker.wait_ready(self.options.init_timeout_s)
        if error is not None:
            with self._lock:
                self._all.discard(worker)
            return None, init_ms, error
        return worker, init_ms, None

    def _checkin(self, worker: WorkerProcess, *, lost: bool) -> None:
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
