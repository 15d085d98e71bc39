"""The local stack: moto in server mode plus a Lambda runner, both derived from template.yaml.

    cfn.py        load a CloudFormation/SAM template, resolve intrinsics, parameters, conditions, Globals
    functions.py  each function's handler, folders, limits, environment and event sources
    provision.py  create the resources in moto, in dependency order
    runner.py     run each function in its own worker processes, fed by its SQS/S3/SNS event sources:
      pool.py          each function's worker processes
      sqs_poller.py    SQS event source mappings
      async_invoke.py  S3/SNS events as asynchronous invocations, with retries and destinations
      invocation.py    the runner's options and its record of what ran
    worker.py     the worker process (standard library only)
    local.py      LocalStack: all of the above as one context manager

Names are imported lazily: a worker process imports `ocr_devkit.stack.worker`, and should not pay for
boto3, PyYAML and moto on its cold start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cfn import ResolvedTemplate, Template, TemplateError, load_template, resolve_template
    from .invocation import FunctionStats, IdleTimeoutError, InvocationResult, RunnerOptions
    from .local import LocalStack, LocalStackError
    from .provision import ProvisionedResource, StackResources, provision
    from .runner import Runner

_EXPORTS = {
    "Template": "cfn",
    "ResolvedTemplate": "cfn",
    "TemplateError": "cfn",
    "load_template": "cfn",
    "resolve_template": "cfn",
    "LocalStack": "local",
    "LocalStackError": "local",
    "ProvisionedResource": "provision",
    "StackResources": "provision",
    "provision": "provision",
    "FunctionStats": "invocation",
    "IdleTimeoutError": "invocation",
    "InvocationResult": "invocation",
    "Runner": "runner",
    "RunnerOptions": "invocation",
}

__all__ = [
    "FunctionStats",
    "IdleTimeoutError",
    "InvocationResult",
    "LocalStack",
    "LocalStackError",
    "ProvisionedResource",
    "ResolvedTemplate",
    "Runner",
    "RunnerOptions",
    "StackResources",
    "Template",
    "TemplateError",
    "load_template",
    "provision",
    "resolve_template",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
