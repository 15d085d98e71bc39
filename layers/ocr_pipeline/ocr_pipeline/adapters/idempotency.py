"""Powertools Idempotency (DynamoDB) in front of each function's unit of work.

At-least-once delivery repeats S3 events and SQS messages. The services are already safe to repeat
(deterministic job ids, conditional writes, one transaction per page), so this guard is the cheap
front door: a repeat of work that finished returns the stored outcome without touching S3, the API
or the jobs table. A repeat of work still in progress waits a few seconds for a twin about to finish,
never longer: a twin that crashed holds the key until its own invocation's deadline, and waiting for
that would bill this invocation for minutes of sleep. It gives its message back instead
(WorkInProgress), to come back when the key is free at the latest; a message given back at once
would spend its receives and could reach the dead-letter queue with nothing wrong with it. Keys are
business identities, named by a JMESPath over the payload:
the object version for uploads, the job and its pages for page work, the message for requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from pydantic import BaseModel

from ..pipeline.port_errors import WorkInProgress
from .aws import aws_client

# Longer than any redelivery: SQS gives up after maxReceiveCount x visibility (5 x 30 min), Lambda's
# async retries within 6 h.
EXPIRES_AFTER_S = 24 * 3600
# Stop waiting for a repeat's twin this long before our own invocation ends, to report back in time.
WAIT_MARGIN_S = 15.0
# The longest a repeat waits for its twin: a live twin is usually finishing; a dead one holds the key
# until its deadline, which is not worth paying for.
SHORT_WAIT_S = 8.0


_CONFIGURING = threading.Lock()


@cache
def _persistence(table_name: str, guard: str, key: str) -> DynamoDBPersistenceLayer:
    # One layer per guard, not per table: Powertools configures a layer once (its key expression
    # included), so a second guard sharing it would silently hash the first guard's key.
    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=aws_client("dynamodb"))


class Once:
    def __init__(
        self,
        table_name: str | None,
        *,
        name: str,
        key: str,
        can_defer: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table_name = table_name
        self.name = name
        self.key = key
        # An SQS record can be given back to come later (redelivery.py); an S3 event cannot: Lambda
        # retries it 1 and 2 minutes later (seconds, locally), so there the wait happens here.
        self.can_defer = can_defer
        self._sleep = sleep
        self._clock = clock

    def run(self, payload: BaseModel, work: Callable[[], dict[str, Any] | None], context: Any = None) -> Any:
        """`work()` once per key of `payload`; its (JSON) result is stored and returned to repeats.

        Without a table (unit tests, a bare `sam local invoke`) the work simply runs.
        """
        if self.table_name is None:
            return work()
        config = IdempotencyConfig(
            event_key_jmespath=self.key, raise_on_no_idempotency_key=True, expires_after_seconds=EXPIRES_AFTER_S
        )
        if context is not None:
            # An in-progress record of a crashed invocation expires with that invocation's time.
            config.register_lambda_context(context)

        def guarded(payload: dict[str, Any]) -> dict[str, Any] | None:
            return work()

        persistence = _persistence(self.table_name, self.name, self.key)
        with _CONFIGURING:
            # Powertools marks a layer configured before it sets it up: a second record's thread must
            # not find it half done. Configured once, later calls return at once.
            persistence.configure(config, key_prefix=self.name)
        once = idempotent_function(
            guarded,
            data_keyword_argument="payload",
            persistence_store=persistence,
            config=config,
            key_prefix=self.name,
        )
        remaining_s = context.get_remaining_time_in_millis() / 1000 if context is not None else 0.0
        # The twin started before us with a timeout like ours: its key is free by our own deadline.
        key_free_by = self._clock() + remaining_s
        wait_until = key_free_by - WAIT_MARGIN_S
        if self.can_defer:
            wait_until = min(wait_until, self._clock() + SHORT_WAIT_S)
        pause = 0.5
        while True:
            try:
                return once(payload=payload.model_dump(mode="json"))
            except IdempotencyAlreadyInProgressError:
                # Its twin is running, or crashed and holds the key until its own invocation's end.
                if self._clock() + pause > wait_until:
                    raise WorkInProgress(
                        f"{self.name} work for this key is in progress in another invocation",
                        retry_after_s=max(key_free_by - self._clock(), 0.0),
                    ) from None
                self._sleep(pause)
                pause = min(pause * 2, 5.0)
