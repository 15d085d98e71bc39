"""One Lambda execution environment: a spawned process that imports one handler and serves invocations.

This module runs inside the worker and imports only the standard library, so a cold start costs what
the handler's own imports cost. The parent (`runner.py`) talks to it over a pipe:

    parent → worker   ("invoke", request_id, event_json) | ("stop",)
    worker → parent   ("ready", init_ms) | ("init_error", error, init_ms)
                      ("result", request_id, ok, payload_json | error, duration_ms, max_memory_mb, writes,
                       deferred)

`writes` is the number of AWS calls of the invocation that changed something (a put, an update, a
publish, a send...) and succeeded, when the runner asked for it (`count_writes`), else None: it tells
a repeated delivery that the function rightly ignored from one that did the work again.

`deferred` lists the receipt handles whose visibility the function set itself (ChangeMessageVisibility):
the runner's faster retry clock leaves those records alone, so they come back when the function said.

The parent enforces the function timeout: it kills a worker that does not answer in time.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import re
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

# Devkit-only switches read from the worker's environment (nothing in the layer reads them): a regex of
# S3 keys after whose PutObject the worker dies, and the marker file that makes it happen only once.
CRASH_AFTER_PUT = "OCR_DEVKIT_CRASH_AFTER_PUT"
CRASH_MARKER = "OCR_DEVKIT_CRASH_MARKER"
# AWS operations that change state, by the start of their name (PutObject, TransactWriteItems, Publish...).
WRITE_OPERATIONS = ("Put", "Update", "Delete", "TransactWrite", "BatchWrite", "Publish", "Send", "Create", "Copy")


@dataclass(frozen=True)
class WorkerConfig:
    function_name: str
    function_arn: str
    handler_module: str
    handler_attribute: str
    sys_path: tuple[str, ...]  # code folder first, then layer folders (Lambda's /var/task, /opt/python)
    environment: dict[str, str]  # the whole environment of the worker; nothing leaks in from the parent
    log_path: str
    memory_mb: int
    timeout_s: int
    parent_pid: int
    count_writes: bool = False
    kill_rate: float = 0.0  # share of invocations that die midway (see _Killer)
    kill_seed: int | None = None


class LambdaContext:
    """The context object Lambda passes to a handler."""

    function_version = "$LATEST"
    identity = None
    client_context = None
    tenant_id = None

    def __init__(self, config: WorkerConfig, request_id: str, deadline: float) -> None:
        self.function_name = config.function_name
        self.invoked_function_arn = config.function_arn
        self.memory_limit_in_mb = config.memory_mb
        self.aws_request_id = request_id
        self.log_group_name = config.environment.get("AWS_LAMBDA_LOG_GROUP_NAME", f"/aws/lambda/{config.function_name}")
        self.log_stream_name = config.environment.get("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


def error_payload(exc: BaseException, request_id: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
    }
    if request_id is not None:
        payload["requestId"] = request_id
    return payload


def vm_hwm_kb(status: str) -> int | None:
    """The `VmHWM:` line of a /proc/<pid>/status text (the process's peak resident set), in kB."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "VmHWM":
            fields = value.split()
            if fields and fields[0].isdigit() and fields[1:2] in ([], ["kB"]):
                return int(fields[0])
    return None


def _max_memory_mb() -> int:
    """The environment's peak so far, as Lambda's "Max Memory Used" is.

    Not ru_maxrss on Linux: exec keeps the high-water mark of the process image it replaces, so a
    worker spawned by a big runner reported the runner's peak (707 MB for a real 78-187 MB).
    VmHWM belongs to this process image alone.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            kb = vm_hwm_kb(status.read())
    except OSError:
        kb = None
    if kb is None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, kB elsewhere
    return math.ceil(kb / 1024)


def _redirect_output(log_path: str) -> None:
    # O_APPEND: every worker of the function writes to the same file without overwriting the others.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose runner died (kill -9, crash) must not live on."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _log_error(error: dict[str, Any]) -> None:
    trace = "".join(error.get("stackTrace") or [])
    print(
        f"[ERROR] {error['errorType']}: {error['errorMessage']}\nTraceback (most recent call last):\n{trace}",
        file=sys.stderr,
    )


def _on_every_new_client(register: Callable[[Any], None]) -> None:
    """Call `register(client)` for every botocore client created from now on in this process."""
    import botocore.session

    create_client = botocore.session.Session.create_client

    def create_and_register(session: Any, *args: Any, **kwargs: Any) -> Any:
        client = create_client(session, *args, **kwargs)
        register(client)
        return client

    botocore.session.Session.create_client = create_and_register  # type: ignore[method-assign]


class _WriteCounter:
    """Counts successful state-changing AWS calls."""

    def __init__(self) -> None:
        self.writes = 0

    def register(self, client: Any) -> None:
        client.meta.events.register("after-call", self._after_call)

    def _after_call(self, http_response: Any, model: Any, **_: Any) -> None:
        if model.name.startswith(WRITE_OPERATIONS) and http_response.status_code < 300:
            self.writes += 1

    def take(self) -> int:
        writes, self.writes = self.writes, 0
        return writes


class _VisibilityChanges:
    """Receipt handles whose visibility the handler changed itself during the current invocation."""

    def __init__(self) -> None:
        self.handles: list[str] = []

    def register(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.sqs.ChangeMessageVisibility", self._single)
        client.meta.events.register("before-parameter-build.sqs.ChangeMessageVisibilityBatch", self._batch)

    def _single(self, params: dict[str, Any], **_: Any) -> None:
        self.handles.append(params.get("ReceiptHandle", ""))

    def _batch(self, params: dict[str, Any], **_: Any) -> None:
        self.handles.extend(entry.get("ReceiptHandle", "") for entry in params.get("Entries", []))

    def take(self) -> list[str]:
        handles, self.handles = self.handles, []
        return handles


class _Killer:
    """Kills the worker in a share of invocations, as a Lambda environment can die: right after the k-th
    successful AWS call of the invocation (k drawn from 1..8), or, with fewer calls, after the handler
    returned and before its answer. Whatever the handler wrote by then stays written; the rest is lost."""

    def __init__(self, rate: float, seed: int | None) -> None:
        self.rate = rate
        # Each worker its own stream: seeded runs repeat, and workers do not all die at the same step.
        self.random = random.Random(None if seed is None else f"{seed}-{os.getpid()}")
        self.calls_left: int | None = None

    def register(self, client: Any) -> None:
        client.meta.events.register("after-call", self._after_call)

    def start_invocation(self) -> None:
        self.calls_left = self.random.randint(1, 8) if self.random.random() < self.rate else None

    def _after_call(self, http_response: Any, model: Any, **_: Any) -> None:
        if self.calls_left is None or http_response.status_code >= 300:
            return
        self.calls_left -= 1
        if self.calls_left <= 0:
            self.die(f"after {model.name}")

    def end_invocation(self) -> None:
        if self.calls_left is not None:
            self.die("after the handler returned, before answering")

    @staticmethod
    def die(where: str) -> None:
        print(f"[devkit] kill-rate: the worker dies {where}", flush=True)
        os._exit(137)


class _CrashAfterPut:
    """Kills the worker the moment an S3 PutObject of a key matching `pattern` has succeeded.

    For crash-safety tests: the process dies as a Lambda environment can, between two steps of the
    handler. Only the worker that creates `marker` first crashes, so it happens once per run.
    """

    def __init__(self, pattern: str, marker: str) -> None:
        self.pattern = re.compile(pattern)
        self.marker = marker

    def register(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.s3.PutObject", self._remember_key)
        client.meta.events.register("after-call.s3.PutObject", self._after_put)

    @staticmethod
    def _remember_key(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["devkit_put_key"] = params.get("Key")

    def _after_put(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        key = context.get("devkit_put_key")
        if http_response.status_code >= 300 or not key or not self.pattern.search(key):
            return
        try:
            os.close(os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return
        print(f"[devkit] {CRASH_AFTER_PUT}: the worker dies after storing s3 key {key}", flush=True)
        os._exit(137)


def serve(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of the worker process."""
    # Ctrl-C reaches the whole process group; the runner decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(config.parent_pid)
    _redirect_output(config.log_path)
    os.environ.clear()
    os.environ.update(config.environment)
    time.tzset()
    sys.path[:] = [*config.sys_path, *(p for p in sys.path if p not in config.sys_path)]
    os.chdir(config.sys_path[0])  # Lambda's working directory is the code folder (/var/task)

    started = time.perf_counter()
    init_error: dict[str, Any] | None = None
    counter: _WriteCounter | None = None
    visibility_changes = _VisibilityChanges()
    try:
        _on_every_new_client(visibility_changes.register)
        # Before the handler's import, so that a client it builds at import time is hooked too.
        if config.count_writes:
            counter = _WriteCounter()
            _on_every_new_client(counter.register)
        killer = _Killer(config.kill_rate, config.kill_seed) if config.kill_rate > 0 else None
        if killer is not None:
            _on_every_new_client(killer.register)
        if config.environment.get(CRASH_AFTER_PUT) and config.environment.get(CRASH_MARKER):
            crash = _CrashAfterPut(config.environment[CRASH_AFTER_PUT], config.environment[CRASH_MARKER])
            _on_every_new_client(crash.register)
        module = importlib.import_module(config.handler_module)
        handler = getattr(module, config.handler_attribute)
    except ImportError as exc:
        init_error = error_payload(exc, error_type="Runtime.ImportModuleError")
        init_error["errorMessage"] = f"Unable to import module '{config.handler_module}': {exc}"
    except AttributeError as exc:
        init_error = error_payload(exc, error_type="Runtime.HandlerNotFound")
        init_error["errorMessage"] = f"Handler '{config.handler_attribute}' missing on module '{config.handler_module}'"
    except BaseException as exc:
        init_error = error_payload(exc)
    init_ms = (time.perf_counter() - started) * 1000
    if init_error is not None:
        _log_error(init_error)
        conn.send(("init_error", init_error, init_ms))
        return
    conn.send(("ready", init_ms))

    first = True
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "invoke":
            return
        _, request_id, event_json = message
        deadline = time.monotonic() + config.timeout_s
        print(f"START RequestId: {request_id} Version: $LATEST")
        started = time.perf_counter()
        exiting = False
        if counter is not None:
            counter.take()
        visibility_changes.take()
        if killer is not None:
            killer.start_invocation()
        try:
            result = handler(json.loads(event_json), LambdaContext(config, request_id, deadline))
            try:
                reply: tuple[bool, Any] = (True, json.dumps(result))
            except (TypeError, ValueError) as exc:
                reply = (False, error_payload(exc, request_id, "Runtime.MarshalError"))
                reply[1]["errorMessage"] = f"Unable to marshal response: {exc}"
        except SystemExit as exc:
            reply = (False, error_payload(exc, request_id, "Runtime.ExitError"))
            exiting = True
        except BaseException as exc:
            reply = (False, error_payload(exc, request_id))
        if killer is not None:
            killer.end_invocation()
        duration_ms = (time.perf_counter() - started) * 1000
        if not reply[0]:
            _log_error(reply[1])
        memory = _max_memory_mb()
        init = f"\tInit Duration: {init_ms:.2f} ms" if first else ""
        print(f"END RequestId: {request_id}")
        print(
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: {math.ceil(duration_ms)} ms"
            f"\tMemory Size: {config.memory_mb} MB\tMax Memory Used: {memory} MB{init}"
        )
        first = False
        writes = counter.take() if counter is not None else None
        try:
            conn.send(
                ("result", request_id, reply[0], reply[1], duration_ms, memory, writes, visibility_changes.take())
            )
        except (BrokenPipeError, OSError):
            return
        if exiting:
            return
