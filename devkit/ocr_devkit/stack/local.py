"""`LocalStack`: the whole pipeline on one machine, derived from template.yaml.

    with LocalStack("template.yaml", parameters={"Stage": "dev"}) as stack:
        s3 = stack.boto3_client("s3")
        s3.put_object(Bucket=stack.resources["InputBucket"].physical_name, Key="a.png", Body=data)
        stack.wait_until_idle()

It starts moto's server on a free local port, resolves and provisions the template, and runs every
function with its event sources (`runner.py`). Leaving the block (normally, on error or on Ctrl-C) stops
the runner, kills the workers, resets moto's state and stops the server.

moto keeps its state per process, so only one LocalStack can run at a time in a process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .cfn import MOTO_ACCOUNT_ID, ResolvedTemplate, resolve_template
from .clients import ADMIN_ACCESS_KEY_ID, ClientFactory
from .invocation import RunnerOptions
from .metering import ADMIN_CALLER, RequestMeter
from .provision import StackResources, provision
from .runner import Runner

logger = logging.getLogger(__name__)

DEFAULT_STACK_NAME = "ocr-pipeline-local"


class LocalStackError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _wait_until_answers(endpoint_url: str, timeout_s: float) -> None:
    """POST /moto-api/reset: proves the server answers and starts it from an empty state."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST", data=b"")
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise LocalStackError(f"moto server at {endpoint_url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.05)


class LocalStack:
    _active: LocalStack | None = None
    _active_lock = threading.Lock()

    def __init__(
        self,
        template: Path | str = "template.yaml",
        *,
        stack_name: str = DEFAULT_STACK_NAME,
        region: str = "us-east-1",
        parameters: Mapping[str, Any] | None = None,
        log_dir: Path | str | None = None,
        extra_env: Mapping[str, str] | None = None,
        run_functions: bool = True,
        functions: tuple[str, ...] | None = None,
        retry_delay_s: float | None = 1.0,
        duplicate_rate: float = 0.0,
        seed: int | None = None,
        runner_options: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        before_provision: Callable[[ClientFactory], Mapping[str, Any]] | None = None,
    ) -> None:
        self.template_path = Path(template)
        self.stack_name = stack_name
        self.region = region
        self.parameters = dict(parameters or {})
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.extra_env = dict(extra_env or {})
        self.run_functions = run_functions
        self.host = host
        self.port = port
        # Runs against the started, empty moto server and returns more parameter values: for what a
        # deployment expects to exist before the stack, such as a secret whose ARN is a parameter.
        self.before_provision = before_provision
        self._runner_settings: dict[str, Any] = {
            "functions": functions,
            "retry_delay_s": retry_delay_s,
            "duplicate_rate": duplicate_rate,
            "seed": seed,
            **dict(runner_options or {}),
        }
        self._server: Any = None
        self._iam_enforcement: contextlib.ExitStack | None = None
        self._resolved: ResolvedTemplate | None = None
        self._resources: StackResources | None = None
        self._runner: Runner | None = None
        self._clients: ClientFactory | None = None
        self._helper_queues = 0
        self._started = False

    # -- life cycle -----------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self) -> LocalStack:
        if self._started:
            return self
        with LocalStack._active_lock:
            if LocalStack._active is not None:
                raise LocalStackError(
                    "another LocalStack is running in this process (moto keeps one state per process)"
                )
            LocalStack._active = self
        self._started = True
        atexit.register(self.close)
        try:
            self._start_server()
            if self.before_provision is not None:
                assert self._clients is not None
                self.parameters.update(self.before_provision(self._clients))
            self._resolved = resolve_template(
                self.template_path,
                stack_name=self.stack_name,
                region=self.region,
                parameters=self.parameters,
                endpoint_url=self.endpoint_url,
            )
            self._resources = provision(self._resolved, self.endpoint_url)
            if self.log_dir is None:
                self.log_dir = Path(tempfile.mkdtemp(prefix=f"{self.stack_name}-logs-"))
            if self.run_functions:
                options = RunnerOptions(log_dir=self.log_dir, extra_env=self.extra_env, **self._runner_settings)
                self._runner = Runner(self._resolved, self._resources, self.endpoint_url, options)
                for function, access_key_id in self._runner.access_keys().items():
                    self.meter.name_caller(access_key_id, function)
                self._runner.start()
        except BaseException:
            self.close()
            raise
        return self

    def _start_server(self) -> None:
        from . import sqs_sender
        from .moto_server import AtomicDynamoMotoServer
        from .strict_iam import create_admin, iam_enforced

        werkzeug_logger = logging.getLogger("werkzeug")
        if werkzeug_logger.level == logging.NOTSET:
            werkzeug_logger.setLevel(logging.WARNING)  # one line per request otherwise
        # The AWS managed policies SAM attaches (AWSLambdaBasicExecutionRole, the SQS poller's, ...) must
        # exist for a role to be created with them; moto loads its copy of them when this is set.
        os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
        self.port = self.port or free_port(self.host)
        self._server = AtomicDynamoMotoServer(
            ip_address=self.host, port=self.port, verbose=False, account_id=MOTO_ACCOUNT_ID
        )
        self._server.start()
        self._server.meter.name_caller(ADMIN_ACCESS_KEY_ID, ADMIN_CALLER)
        self._clients = ClientFactory(self.endpoint_url, self.region)
        _wait_until_answers(self.endpoint_url, timeout_s=10)
        self._iam_enforcement = contextlib.ExitStack()
        self._iam_enforcement.enter_context(iam_enforced())
        # SenderId as AWS reports it (requests are billed by their sender): after IAM's checks are in place.
        sqs_sender.install()
        create_admin(self._clients.client("iam"), MOTO_ACCOUNT_ID)

    def close(self) -> None:
        """Stop the runner and its workers, then moto. Safe to call twice, and after a failed start."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.close)
        try:
            if self._runner is not None:
                self._runner.stop()
        finally:
            if self._server is not None:
                with contextlib.suppress(Exception):
                    # moto's state outlives the server thread; leave none behind for the next stack.
                    request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST", data=b"")
                    urllib.request.urlopen(request, timeout=2).close()
                self._server.stop()
                self._server = None
            if self._iam_enforcement is not None:
                self._iam_enforcement.close()
                self._iam_enforcement = None
            with LocalStack._active_lock:
                if LocalStack._active is self:
                    LocalStack._active = None

    # -- accessors ------------------------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise LocalStackError("the stack is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def resources(self) -> StackResources:
        if self._resources is None:
            raise LocalStackError("the stack is not started")
        return self._resources

    @property
    def template(self) -> ResolvedTemplate:
        if self._resolved is None:
            raise LocalStackError("the stack is not started")
        return self._resolved

    @property
    def meter(self) -> RequestMeter:
        """Every signed request the endpoint served, by caller (a function's logical id, or the admin's)."""
        if self._server is None:
            raise LocalStackError("the stack is not started")
        meter: RequestMeter = self._server.meter
        return meter

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            raise LocalStackError("the runner is not running (run_functions=False or not started)")
        return self._runner

    def boto3_client(self, service: str, **kwargs: Any) -> Any:
        if self._clients is None:
            raise LocalStackError("the stack is not started")
        return self._clients.client(service, **kwargs)

    def wait_until_idle(self, timeout: float = 30.0) -> None:
        if self._runner is not None:
            self._runner.wait_until_idle(timeout)

    def subscribe_queue_to_topic(
        self, topic: str, filter_policy: Mapping[str, Any] | None = None, raw: bool = False
    ) -> str:
        """A new queue subscribed to `topic` (logical id or ARN): for event recorders and tests. Returns its URL."""
        topic_arn = topic if topic.startswith("arn:") else str(self.resources[topic].arn)
        self._helper_queues += 1
        name = f"{self.stack_name}-recorder-{self._helper_queues}"[:80]
        sqs = self.boto3_client("sqs")
        url = str(sqs.create_queue(QueueName=name)["QueueUrl"])
        queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"RawMessageDelivery": "true" if raw else "false"}
        if filter_policy is not None:
            attributes["FilterPolicy"] = json.dumps(dict(filter_policy))
        self.boto3_client("sns").subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=attributes
        )
        return url

    def describe(self) -> dict[str, Any]:
        resources = self.resources

        def entries(*types: str, with_url: bool = False) -> dict[str, dict[str, Any]]:
            described: dict[str, dict[str, Any]] = {}
            for resource in resources.of_type(*types):
                entry: dict[str, Any] = {"name": resource.physical_name, "arn": resource.arn}
                if with_url:
                    entry["url"] = resource.url
                    entry["local_only"] = resource.local_only
                described[resource.logical_id] = entry
            return described

        description: dict[str, Any] = {
            "stack_name": self.stack_name,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "account_id": resources.account_id,
            "log_dir": str(self.log_dir) if self.log_dir else None,
            "buckets": entries("AWS::S3::Bucket"),
            "queues": entries("AWS::SQS::Queue", with_url=True),
            "topics": entries("AWS::SNS::Topic"),
            "tables": entries("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"),
            "secrets": entries("AWS::SecretsManager::Secret"),
            "parameters": entries("AWS::SSM::Parameter"),
            "outputs": self.template.outputs(),
            "skipped": dict(resources.skipped),
            "warnings": list(resources.warnings),
        }
        if self._runner is not None:
            runner = self._runner.describe()
            description["functions"] = runner["functions"]
            description["event_sources"] = runner["event_sources"]
            description["warnings"] += runner["warnings"]
        return description
