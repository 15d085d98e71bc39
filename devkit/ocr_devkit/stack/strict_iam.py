"""IAM as AWS enforces it, inside the local moto server.

moto checks a request's signature and its caller's policies once `INITIAL_NO_AUTH_ACTION_COUNT` is 0,
but leaves gaps that would let a missing permission pass locally and fail on the first deploy:

* SNS, DynamoDB and Secrets Manager requests, and SQS's `GetQueueUrl`, are checked against the resource
  `*`, so a policy that names the topic, table, secret or queue (as every least-privilege policy does)
  never matches. Here each request is checked against the ARN it acts on.
* Batch operations are no IAM actions of their own. SQS's `SendMessageBatch` needs `sqs:SendMessage`
  (likewise for deleting and changing visibility), SNS's `PublishBatch` needs `sns:Publish`, and DynamoDB's
  `TransactWriteItems`, `TransactGetItems`, `BatchWriteItem` and `BatchGetItem` need the item-level action
  (`dynamodb:PutItem`, `dynamodb:ConditionCheckItem`, ...) on each table they touch. moto asks for the
  batch operation's own name, which no policy grants; here each is checked as AWS checks it.
* S3 answers `HeadObject`/`GetObject` on a missing key with 403 unless the caller may `s3:ListBucket` on
  the bucket; moto answers 404 regardless (`missing_keys_as_aws`).

The local stack's own set-up and the CLI's user-side commands sign with one admin user
(`ADMIN_ACCESS_KEY_ID`); every function signs with credentials from assuming its own role (`roles.py`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.dynamodb.responses import DynamoHandler
from moto.iam.access_control import (
    CreateAccessKeyFailure,
    IAMPolicy,
    IAMRequest,
    PermissionResult,
    create_access_key,
)
from moto.iam.models import iam_backends
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.sns.responses import SNSResponse
from moto.sqs.responses import SQSResponse

from .clients import ADMIN_ACCESS_KEY_ID, ADMIN_SECRET_ACCESS_KEY

_moto_sqs_resource = SQSResponse._determine_resource

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

ADMIN_USER_NAME = "ocr-local-admin"
_ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
_CREDENTIAL_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


# --- switching enforcement on ---------------------------------------------------------------------------------


@contextlib.contextmanager
def iam_enforced() -> Iterator[None]:
    """Every request to the in-process moto server is authenticated and authorised while inside."""
    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    _patch_resource_checks()
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = previous


@contextlib.contextmanager
def _unauthenticated() -> Iterator[None]:
    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = previous


def create_admin(iam: Any, account_id: str) -> None:
    """The admin user, with the fixed access key that `ClientFactory` signs with.

    Created with authentication paused (nobody could sign before it exists); its key is then given the
    fixed id and secret, so that other processes (`submit`, `invoke`) can sign without a state file.
    """
    with _unauthenticated():
        iam.create_user(UserName=ADMIN_USER_NAME)
        iam.put_user_policy(UserName=ADMIN_USER_NAME, PolicyName="everything", PolicyDocument=json.dumps(_ADMIN_POLICY))
        generated = iam.create_access_key(UserName=ADMIN_USER_NAME)["AccessKey"]["AccessKeyId"]
    backend = iam_backends[account_id]["aws"]
    key = backend.access_keys.pop(generated)
    key.access_key_id = ADMIN_ACCESS_KEY_ID
    key.secret_access_key = ADMIN_SECRET_ACCESS_KEY
    backend.access_keys[ADMIN_ACCESS_KEY_ID] = key


# --- which ARN a request acts on -------------------------------------------------------------------------------


def _json_body(response: Any) -> dict[str, Any]:
    try:
        body = json.loads(response.raw_body or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _arn(response: Any, service: str, resource: str) -> str:
    return f"arn:aws:{service}:{response.region}:{response.current_account}:{resource}"


def _dynamodb_checks(response: Any) -> list[tuple[str, str]]:
    """(IAM action, table ARN) pairs: one per table and item-level action, as IAM evaluates DynamoDB."""
    action = response._get_action()
    body = _json_body(response)

    def table(name: str, index: str | None = None) -> str:
        return _arn(response, "dynamodb", f"table/{name}" + (f"/index/{index}" if index else ""))

    if action == "TransactWriteItems":
        kinds = {
            "Put": "PutItem",
            "Update": "UpdateItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
        }
        return [
            (kinds[kind], table(operation["TableName"]))
            for item in body.get("TransactItems", [])
            for kind, operation in item.items()
            if kind in kinds
        ]
    if action == "TransactGetItems":
        return [("GetItem", table(item["Get"]["TableName"])) for item in body.get("TransactItems", [])]
    if action == "BatchWriteItem":
        return [
            ("PutItem" if "PutRequest" in request else "DeleteItem", table(name))
            for name, requests in body.get("RequestItems", {}).items()
            for request in requests
        ]
    if action == "BatchGetItem":
        return [("GetItem", table(name)) for name in body.get("RequestItems", {})]
    name = body.get("TableName")
    return [(action, table(name, body.get("IndexName")) if name else "*")]


def _authorise_dynamodb(self: Any, resource: str = "*") -> None:
    for action, arn in dict.fromkeys(_dynamodb_checks(self)):
        self._authenticate_and_authorize_action(_ActionRequest.for_action(action), arn)


class _ActionRequest(IAMRequest):
    """An IAMRequest for a named action rather than the request's own operation."""

    action_override = ""

    @classmethod
    def for_action(cls, action: str) -> type[IAMRequest]:
        return type(f"IAMRequest_{action}", (cls,), {"action_override": action})

    def __init__(self, **kwargs: Any) -> None:
        kwargs["action"] = self.action_override or kwargs["action"]
        super().__init__(**kwargs)


_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "PublishBatch": "Publish",
}


def _authorise_batches_as_single(self: Any, resource: str = "*") -> None:
    action = self._get_action()
    request = _ActionRequest.for_action(_BATCH_ACTIONS[action]) if action in _BATCH_ACTIONS else IAMRequest
    self._authenticate_and_authorize_action(request, resource)


def _sns_resource(self: Any) -> str:
    for name in ("TopicArn", "TargetArn"):
        value = self._get_param(name)
        if value:
            return str(value)
    return "*"


def _sqs_resource(self: Any) -> str:
    # GetQueueUrl names its queue by QueueName, which moto does not read: it checked `*`, which no policy
    # scoped to the queue's ARN allows. AWS checks the queue's ARN.
    name = self._get_param("QueueName") if self._get_action() == "GetQueueUrl" else None
    if name:
        try:
            return str(self.sqs_backend.get_queue(name).queue_arn)
        except Exception:
            return "*"
    return str(_moto_sqs_resource(self))


def _secret_resource(self: Any) -> str:
    secret_id = _json_body(self).get("SecretId")
    if not secret_id:
        return "*"
    if str(secret_id).startswith("arn:"):
        return str(secret_id)
    try:
        return str(self.backend.describe_secret(secret_id).arn)
    except Exception:
        return "*"


def _patch_resource_checks() -> None:
    """Teach moto which resource each of these services' requests acts on (idempotent)."""
    SNSResponse._determine_resource = _sns_resource  # type: ignore[attr-defined]
    SNSResponse._authenticate_and_authorize_normal_action = _authorise_batches_as_single  # type: ignore[method-assign]
    SQSResponse._authenticate_and_authorize_normal_action = _authorise_batches_as_single  # type: ignore[method-assign]
    SQSResponse._determine_resource = _sqs_resource  # type: ignore[method-assign]
    SecretsManagerResponse._determine_resource = _secret_resource  # type: ignore[attr-defined]
    DynamoHandler._authenticate_and_authorize_normal_action = _authorise_dynamodb  # type: ignore[method-assign]


# --- S3's answer for a missing key ------------------------------------------------------------------------------


def caller_may(headers: dict[str, str], account_id: str, action: str, resource: str) -> bool:
    """Whether the signer of a request holds `action` on `resource` by its identity policies."""
    match = _CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
    if match is None:
        return False
    try:
        key = create_access_key(account_id=account_id, partition="aws", access_key_id=match[1], headers=headers)
    except CreateAccessKeyFailure:
        return False
    permitted = False
    for policy in key.collect_policies():
        result = IAMPolicy(policy).is_action_permitted(action, resource)
        if result == PermissionResult.DENIED:
            return False
        permitted = permitted or result == PermissionResult.PERMITTED
    return permitted


def _s3_object_read(environ: dict[str, Any]) -> tuple[str, str] | None:
    """(bucket, key) of a path-style GetObject/HeadObject, else None."""
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        return None
    match = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None or match[3] != "s3":
        return None
    bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
    if not bucket or not key:
        return None
    return bucket, unquote(key)


_ACCESS_DENIED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)


def missing_keys_as_aws(app: WsgiApp, account_id: str) -> WsgiApp:
    """A missing key answers 403 AccessDenied unless the caller may list the bucket, as S3 does."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = _s3_object_read(environ)
        if target is None or settings.INITIAL_NO_AUTH_ACTION_COUNT != 0:
            return app(environ, start_response)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            captured.update(status=status, headers=headers, exc_info=exc_info)
            return lambda _data: None

        response = app(environ, capture)
        if captured["status"].startswith("404"):
            # Only a 404 is read here: an object's body passes through untouched.
            body = b"".join(response)
            bucket, _ = target
            headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
            if b"NoSuchBucket" not in body and not caller_may(
                headers, account_id, "s3:ListBucket", f"arn:aws:s3:::{bucket}"
            ):
                denied = b"" if environ["REQUEST_METHOD"] == "HEAD" else _ACCESS_DENIED_XML
                start_response(
                    "403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(denied)))]
                )
                return [denied]
            response = [body]
        start_response(captured["status"], captured["headers"])
        return response

    return serve
