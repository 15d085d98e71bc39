"""The local stack: moto in server mode plus a Lambda runner, both derived from template.yaml.

    cfn.py        load a CloudFormation/SAM template, resolve intrinsics, parameters, conditions, Globals
    functions.py  each function's handler, folders, limits, environment and event sources
    provision.py  create the resources in moto, in dependency order
    runner.py     run each function in its own worker processes, fed by its SQS/S3/SNS event sources:
      pool.py          each function's worker processes
      sqs_poller.py    SQS event source mappings
      async_invoke.py  S3/SNS events as asynchronous invocations, with retries and destinations
      schedules.py     Schedule/ScheduleV2 events: a timer per schedule, each tick an async invocation
      invocation.py    the runner's options and its record of what ran
    worker.py     the worker process (standard library only)
    metering.py   every signed request counted in AWS's billing units (dynamodb_units.py: DynamoDB's)
    local.py      LocalStack: all of the above as one context manager

Import from the modules themselves: a worker process imports `ocr_devkit.stack.worker`, and should not
pay for boto3, PyYAML and moto on its cold start, so this package imports nothing.
"""
