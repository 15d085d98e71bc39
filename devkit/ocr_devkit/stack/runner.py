"""The Lambda stand-in: runs every function of the template in its own worker processes, fed by its events.

Semantics kept from Lambda, each in its own module:

* **Execution environments** (`pool.py`): each function has its own pool of spawned worker processes with
  only its own environment variables (plus the runtime's and the local plumbing's), signing with its own
  role's credentials; a timeout kills the worker.
* **SQS event sources** (`sqs_poller.py`): batches, batching window, maximum concurrency, partial batch
  responses; failed records come back and the queue's RedrivePolicy moves them to the DLQ.
* **S3 and SNS event sources** (`async_invoke.py`): asynchronous invocations, retried, then sent to the
  OnFailure destination or DeadLetterQueue.
* **Schedule and ScheduleV2 events** (`schedules.py`): a timer per schedule, each tick an asynchronous
  invocation with the Scheduled Event payload, retried as above.

Local shortcuts (same semantics, faster clock):

* `retry_delay_s` (default 1 s): a failed SQS record's visibility is set to this many seconds (rounded up:
  ChangeMessageVisibility takes whole seconds) instead of waiting out the queue's VisibilityTimeout, and
  async retries wait this long instead of Lambda's 1–2 minutes. `None` keeps the real clock. A record whose
  visibility the function set itself keeps what the function set, as on AWS: a held lease's remaining
  time, or the functions' own retry backoff, whose base (`RETRY_BACKOFF_BASE_S`) the runner sets to this
  delay.
* `schedule_interval_s`: every schedule fires at this interval instead of its rate or cron.
* `duplicate_rate`: a share of deliveries is invoked twice with the identical event, as at-least-once
  delivery can. The original invocation decides what is deleted; the duplicate only counts in the stats.
  Workers then count their successful AWS writes per invocation, and a duplicate that succeeded without
  writing anything counts as dropped (`duplicates_dropped`): the function recognized it as a repeat.
"""

from __future__ import annotations

import functools
import multiprocessing
import sys
import threading
import time
from typing import Any

from .async_invoke import AsyncEventPoller, AsyncInvoker
from .cfn import FUNCTION_TYPES, ResolvedTemplate
from .clients import ClientFactory
from .functions import FunctionSpec, SqsEventSource, function_specs
from .invocation import (
    BilledUsage,
    FunctionStats,
    IdleTimeoutError,
    InvocationResult,
    Ledger,
    RunnerOptions,
    UnknownFunctionError,
)
from .polling import QueuePoller
from .pool import FunctionPool, worker_environment
from .provision import StackResources
from .roles import assume, function_roles
from .schedules import ScheduleEventSource, ScheduleTrigger, scheduled_event
from .sqs_poller import SqsPoller


def runnable_functions(
    resolved: ResolvedTemplate, options: RunnerOptions, warnings: list[str]
) -> dict[str, FunctionSpec]:
    """The functions the runner runs (`options.functions`, else all it can), saying in `warnings` what it
    leaves out or runs differently."""
    all_specs = function_specs(resolved)
    specs = dict(all_specs)
    if options.functions is not None:
        unknown = sorted(set(options.functions) - set(specs))
        if unknown:
            raise UnknownFunctionError(f"no runnable functions named {unknown}; known: {sorted(specs)}")
        specs = {k: v for k, v in specs.items() if k in options.functions}
    for logical_id, spec in list(specs.items()):
        if spec.reserved_concurrency == 0:
            warnings.append(f"{logical_id}: ReservedConcurrentExecutions is 0 (always throttled); not run")
            del specs[logical_id]
    for resource in resolved.of_type(*FUNCTION_TYPES):
        if resource.logical_id not in all_specs:
            warnings.append(f"{resource.logical_id}: not a local Python function folder; not run")
    local_runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for spec in specs.values():
        if spec.runtime != local_runtime:
            warnings.append(f"{spec.logical_id}: declares {spec.runtime}, runs on the local {local_runtime}")
        warnings.extend(f"{spec.logical_id}: {note}" for note in spec.notes)
        warnings.extend(f"{spec.logical_id}: event {event} skipped" for event in spec.skipped_events)
    return specs


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
        self.warnings: list[str] = []
        self.functions = runnable_functions(resolved, options, self.warnings)
        clients = ClientFactory(endpoint_url, self.region)
        self.sqs = clients.client("sqs")
        # Each function signs with its own role's credentials, as Lambda gives them: IAM is enforced.
        sts = clients.client("sts")
        self._credentials = {
            function: assume(sts, role.arn(resolved.account_id), self.functions[function].function_name)
            for function, role in function_roles(resolved, list(self.functions)).items()
        }
        # Lambda polls a function's queues and sends its OnFailure records with the function's own role
        # (hence the SQS poller's managed policy and SAM's destination policy), and so does the runner.
        role_clients: dict[str, dict[str, Any]] = {}
        for function, credentials in self._credentials.items():
            factory = ClientFactory(endpoint_url, self.region, credentials)
            role_clients[function] = {"sqs": factory.client("sqs"), "sns": factory.client("sns")}
        self._ledger = Ledger(list(self.functions), options)
        self._stopping = threading.Event()
        self._started = False
        mp_context = multiprocessing.get_context("spawn")
        self._pools = {
            logical_id: FunctionPool(
                spec,
                environment=functools.partial(self.environment_for, spec),
                options=options,
                ledger=self._ledger,
                mp_context=mp_context,
            )
            for logical_id, spec in self.functions.items()
        }
        invoker = AsyncInvoker(
            ledger=self._ledger,
            options=options,
            stopping=self._stopping,
            role_clients=role_clients,
            queue_url=self._queue_url,
        )
        self._pollers = self._build_pollers(role_clients, invoker)
        self._triggers = self._build_triggers(invoker)

    # -- set-up ---------------------------------------------------------------------------------------------------

    def _queue_url(self, arn: str) -> str:
        url = self.resources.queue_url_for_arn(arn)
        if url is not None:
            return url
        *_, account, name = arn.split(":")
        return f"{self.endpoint_url.rstrip('/')}/{account}/{name}"

    def _build_pollers(self, role_clients: dict[str, dict[str, Any]], invoker: AsyncInvoker) -> list[QueuePoller]:
        pollers: list[QueuePoller] = []
        for spec in self.functions.values():
            for event in spec.events:
                label = f"{spec.logical_id}.{event.name}"
                common: dict[str, Any] = {
                    "label": label,
                    "event": event,
                    "pool": self._pools[spec.logical_id],
                    "region": self.region,
                    "ledger": self._ledger,
                    "options": self.options,
                    "stopping": self._stopping,
                }
                if isinstance(event, ScheduleEventSource):
                    continue  # a timer, not a queue (`_build_triggers`)
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
                    pollers.append(
                        SqsPoller(
                            queue_url=self._queue_url(event.queue_arn),
                            queue_arn=event.queue_arn,
                            concurrency=concurrency,
                            sqs=role_clients[spec.logical_id]["sqs"],  # Lambda polls with the function's role
                            admin_sqs=self.sqs,
                            **common,
                        )
                    )
                else:
                    queue = self.resources[event.queue_logical_id]
                    assert queue.url is not None and queue.arn is not None
                    pollers.append(
                        AsyncEventPoller(
                            queue_url=queue.url,
                            queue_arn=queue.arn,
                            concurrency=self.options.async_concurrency,
                            sqs=self.sqs,  # the hidden queue is the local stand-in for Lambda's own
                            invoker=invoker,
                            account_id=self.resources.account_id,
                            subscription_arn=str(queue.attributes.get("SubscriptionArn", "")),
                            **common,
                        )
                    )
        return pollers

    def _build_triggers(self, invoker: AsyncInvoker) -> list[ScheduleTrigger]:
        triggers: list[ScheduleTrigger] = []
        for spec in self.functions.values():
            for event in spec.events:
                if not isinstance(event, ScheduleEventSource):
                    continue
                label = f"{spec.logical_id}.{event.name}"
                if not event.enabled:
                    self.warnings.append(f"{label}: the schedule is disabled; it never fires")
                    continue
                pool = self._pools[spec.logical_id]

                def fire(payload: Any, pool: FunctionPool = pool, label: str = label) -> None:
                    # EventBridge invokes asynchronously: Lambda's async queue retries a failed tick.
                    invoker.run(pool, payload, label, time.monotonic())

                def payload(due: Any, event: ScheduleEventSource = event) -> Any:
                    return scheduled_event(
                        event, account_id=self.resources.account_id, region=self.region, fired_at=due
                    )

                triggers.append(
                    ScheduleTrigger(
                        label=label,
                        event=event,
                        fire=fire,
                        payload=payload,
                        ledger=self._ledger,
                        stopping=self._stopping,
                        concurrency=self.options.async_concurrency,
                        interval_s=self.options.schedule_interval_s,
                    )
                )
        return triggers

    def environment_for(self, spec: FunctionSpec) -> dict[str, str]:
        """The whole environment a new worker of `spec` gets (see `pool.worker_environment`)."""
        return worker_environment(
            spec,
            region=self.region,
            endpoint_url=self.endpoint_url,
            credentials=self._credentials[spec.logical_id],
            options=self.options,
        )

    # -- life cycle -----------------------------------------------------------------------------------------------

    def start(self) -> Runner:
        if self._started:
            return self
        self.options.log_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        for poller in self._pollers:
            poller.start()
        for trigger in self._triggers:
            trigger.start()
        return self

    def stop(self) -> None:
        """Stop polling and the timers, kill every worker, wait for the threads. Idempotent."""
        self._stopping.set()
        for poller in self._pollers:
            poller.join()
        for trigger in self._triggers:
            trigger.join()
        for pool in self._pools.values():
            pool.close()
        for poller in self._pollers:
            poller.shutdown()
        for trigger in self._triggers:
            trigger.shutdown()

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- invoking -------------------------------------------------------------------------------------------------

    def _pool(self, function: str) -> FunctionPool:
        if function in self._pools:
            return self._pools[function]
        for pool in self._pools.values():
            if function in (pool.spec.function_name, pool.spec.arn):
                return pool
        raise UnknownFunctionError(f"no function {function!r}; known: {sorted(self._pools)}")

    def invoke(self, function: str, event: Any) -> InvocationResult:
        """A synchronous (RequestResponse) invocation, by logical id, function name or ARN."""
        pool = self._pool(function)
        with self._ledger.in_flight():
            return pool.invoke(event, source="invoke")

    # -- observing ------------------------------------------------------------------------------------------------

    def access_keys(self) -> dict[str, str]:
        """Each function's access key id: its workers and its SQS pollers sign with it."""
        return {function: credentials["AWS_ACCESS_KEY_ID"] for function, credentials in self._credentials.items()}

    def billing(self) -> dict[str, BilledUsage]:
        """Invocations and billed milliseconds per function since the stack started (see `BilledUsage`)."""
        return self._ledger.billing()

    def busy(self) -> dict[str, int]:
        """What is still pending: invocations in flight and messages per event-source queue."""
        pending = {"in_flight": self._ledger.in_flight_count}
        for poller in self._pollers:
            pending[poller.label] = poller.depth(self.sqs)
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
        return self._ledger.stats()

    def stats_dict(self) -> dict[str, dict[str, Any]]:
        return {name: stats.to_dict() for name, stats in self.stats().items()}

    def invocations(self, function: str | None = None) -> list[InvocationResult]:
        history = self._ledger.history()
        if function is None:
            return history
        logical_id = self._pool(function).spec.logical_id
        return [result for result in history if result.function == logical_id]

    def failed_events(self) -> list[dict[str, Any]]:
        """Async events (S3, SNS) that failed every attempt."""
        return self._ledger.failed_events()

    def worker_pids(self) -> dict[str, list[int]]:
        return {name: pool.pids() for name, pool in self._pools.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "log_dir": str(self.options.log_dir),
            "functions": {name: spec.describe() for name, spec in self.functions.items()},
            "event_sources": [poller.describe() for poller in self._pollers]
            + [trigger.describe() for trigger in self._triggers],
            "warnings": list(self.warnings),
        }
