"""moto's threaded server, with DynamoDB's requests taken one at a time.

DynamoDB makes each request atomic: an ADD counts every increment, and a transaction is all or
nothing. moto's server runs requests on parallel threads without a lock, so two updates of one
item can lose one (read, add and write interleave), and a transaction that fails restores its whole
table from a copy taken before it began, undoing what other requests wrote meanwhile. The
pipeline's page counters rely on that atomicity, so DynamoDB's requests are serialized here. The
other services stay parallel: an SQS long poll would hold a global lock for seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from .cfn import MOTO_ACCOUNT_ID
from .metering import RequestMeter, metered

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def one_dynamodb_request_at_a_time(app: WsgiApp) -> WsgiApp:
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # DynamoDB's JSON protocol names the operation in X-Amz-Target (DynamoDB_20120810.UpdateItem).
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            # Drained inside the lock, so that no part of the request's work escapes it.
            return list(app(environ, start_response))

    return serve


class MotoDynamoItems:
    """The items of moto's DynamoDB tables in one account, as `metering` reads them to size a request."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id

    def _table(self, region: str, table: str) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        try:
            return dynamodb_backends[self.account_id][region].get_table(table)
        except Exception:  # an unknown table: the request fails on its own, and reads or writes nothing
            return None

    def item(self, region: str, table: str, key: Any) -> dict[str, Any] | None:
        from moto.dynamodb.models import dynamodb_backends

        if self._table(region, table) is None:
            return None
        try:
            found = dynamodb_backends[self.account_id][region].get_item(table, dict(key))
        except Exception:  # a malformed key: the request is refused and writes nothing
            return None
        return dict(found.to_json()["Attributes"]) if found is not None else None

    def key_names(self, region: str, table: str) -> tuple[str, ...]:
        found = self._table(region, table)
        if found is None:
            return ()
        return tuple(name for name in (found.hash_key_attr, found.range_key_attr) if name)


class AtomicDynamoMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose DynamoDB requests are atomic, whose S3 answers a missing key as S3 does
    (403 unless the caller may list the bucket: `strict_iam.missing_keys_as_aws`), and which counts every
    signed request in the units AWS bills it by (`meter`, see `metering.py`)."""

    def __init__(self, *args: Any, account_id: str = MOTO_ACCOUNT_ID, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.account_id = account_id
        self.meter = RequestMeter()

    def _server_entry(self) -> None:
        from .strict_iam import missing_keys_as_aws

        # The meter sits inside the DynamoDB lock: it reads an item's size before and after its request.
        app = one_dynamodb_request_at_a_time(
            metered(
                missing_keys_as_aws(DomainDispatcherApplication(create_backend_app), self.account_id),
                self.meter,
                MotoDynamoItems(self.account_id),
            )
        )
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()
