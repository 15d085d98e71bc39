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
  the bucket; moto answers 404 regardless (`missing_keys_as_aws`). An unsigned request gets 403 as on
  AWS, where moto fails with a 500.
* moto never reads an SNS topic's own policy. AWS refuses a request that an explicit Deny in it matches,
  whatever the caller's policies allow; so does this module (`resource_policy_denies`), for what such a
  Deny can say without the cloud: its actions, resources and principals, and conditions on
  `aws:PrincipalArn` (a role session's is its role's ARN) and `aws:SecureTransport` (a request is judged
  as the SDKs send it on AWS, over TLS: the local endpoint is plain HTTP). A Deny with any other
  condition key or operator, or with NotAction, NotResource or NotPrincipal, is not applied. SQS queue
  policies are not read: the template's only deny plain HTTP.

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
from moto.core.exceptions import AccessDeniedError
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
from moto.sts.models import sts_backends

from .clients import ADMIN_ACCESS_KEY_ID, ADMIN_SECRET_ACCESS_KEY

_moto_sqs_resource = SQSResponse._determine_resource

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

ADMIN_USER_NAME = "ocr-local-admin"
_ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
_CREDENTIAL_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


# --- switching enforcement on ---------------------------------------------------------------------------------


@contextlib.contextmanager
def iam_enforced() -> Iterator[None]:
    """Every request to the in-process moto server is authenticated and authorized while inside."""
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


def _authorize_dynamodb(self: Any, resource: str = "*") -> None:
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


def _authorize_batches_as_single(self: Any, resource: str = "*") -> None:
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


# --- an SNS topic's own policy --------------------------------------------------------------------------------


class _DeniedByResourcePolicy(AccessDeniedError):
    """AccessDenied (403) as IAM words a resource policy's refusal."""

    def __init__(self, caller: str, action: str, resource: str) -> None:
        message = (
            f"User: {caller} is not authorized to perform: {action} on resource: {resource} "
            "with an explicit deny in a resource-based policy"
        )
        super(AccessDeniedError, self).__init__("AccessDenied", message)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    expression = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(expression, value, re.IGNORECASE if ignore_case else 0) is not None


def _arn_like(pattern: str, arn: str) -> bool:
    # IAM compares an ARN's six colon-separated parts one by one, so a wildcard never spans a colon.
    patterns, parts = pattern.split(":", 5), arn.split(":", 5)
    return len(patterns) == len(parts) and all(_glob(p, v) for p, v in zip(patterns, parts, strict=True))


_CONDITION_OPERATORS: dict[str, Callable[[list[str], str], bool]] = {
    "ArnEquals": lambda expected, actual: any(_arn_like(e, actual) for e in expected),
    "ArnLike": lambda expected, actual: any(_arn_like(e, actual) for e in expected),
    "ArnNotEquals": lambda expected, actual: not any(_arn_like(e, actual) for e in expected),
    "ArnNotLike": lambda expected, actual: not any(_arn_like(e, actual) for e in expected),
    "StringEquals": lambda expected, actual: actual in expected,
    "StringNotEquals": lambda expected, actual: actual not in expected,
    "StringLike": lambda expected, actual: any(_glob(e, actual) for e in expected),
    "StringNotLike": lambda expected, actual: not any(_glob(e, actual) for e in expected),
    "Bool": lambda expected, actual: actual in (e.lower() for e in expected),
}


def _conditions_hold(condition: dict[str, Any], context: dict[str, str]) -> bool | None:
    """Whether every condition holds; None when one names an operator or key that is not evaluated here."""
    for operator, entries in condition.items():
        test = _CONDITION_OPERATORS.get(operator)
        if test is None or not isinstance(entries, dict):
            return None
        for key, expected in entries.items():
            actual = context.get(str(key).lower())
            if actual is None:
                return None
            if not test([str(e) for e in _listed(expected)], actual):
                return False
    return True


def _principal_matches(principal: Any, caller: tuple[str, str], account_id: str) -> bool:
    if principal == "*":
        return True
    named = _listed(principal.get("AWS", [])) if isinstance(principal, dict) else []
    # A role's ARN names its sessions too; an account (by id or root ARN) names everyone in it.
    return any(p in ("*", *caller, account_id, f"arn:aws:iam::{account_id}:root") for p in named)


def resource_policy_denies(
    policy: dict[str, Any], action: str, resource: str, caller: tuple[str, str], account_id: str
) -> bool:
    """Whether an explicit Deny of a resource's own policy refuses `action` on `resource` to `caller`.

    `caller` is (aws:PrincipalArn, the ARN the request is signed as): a role and its session, or a user twice.
    """
    context = {"aws:principalarn": caller[0], "aws:securetransport": "true"}
    for statement in _listed(policy.get("Statement") or []):
        if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
            continue
        if {"NotAction", "NotResource", "NotPrincipal"} & set(statement):
            continue
        if not any(_glob(str(a), action, ignore_case=True) for a in _listed(statement.get("Action", []))):
            continue
        if not any(_glob(str(r), resource) for r in _listed(statement.get("Resource", "*"))):
            continue
        if not _principal_matches(statement.get("Principal"), caller, account_id):
            continue
        if _conditions_hold(statement.get("Condition") or {}, context):
            return True
    return False


def _caller(response: Any) -> tuple[str, str] | None:
    """(aws:PrincipalArn, the ARN the request is signed as) of a request's signer; None if unknown."""
    match = _CREDENTIAL_SCOPE.search(response.headers.get("Authorization", ""))
    if match is None:
        return None
    account_id = response.current_account
    session = sts_backends[account_id]["aws"].get_assumed_role_from_access_key(match[1])
    if session is not None:
        return str(session.role_arn), str(session.arn)
    try:
        key = create_access_key(
            account_id=account_id, partition="aws", access_key_id=match[1], headers=response.headers
        )
    except CreateAccessKeyFailure:
        return None
    return str(key.arn), str(key.arn)


def _authorize_sns(self: Any, resource: str = "*") -> None:
    """The caller's own policies, then the Deny statements of the topic's policy."""
    enforced = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
    _authorize_batches_as_single(self, resource)
    topic = self.backend.topics.get(resource)
    if not enforced or topic is None or not topic.policy:
        return
    caller = _caller(self)
    if caller is None:
        return
    action = self._get_action()
    iam_action = f"sns:{_BATCH_ACTIONS.get(action, action)}"
    if resource_policy_denies(json.loads(topic.policy), iam_action, resource, caller, self.current_account):
        raise _DeniedByResourcePolicy(caller[1], iam_action, resource)


def _patch_resource_checks() -> None:
    """Teach moto which resource each of these services' requests acts on (idempotent)."""
    SNSResponse._determine_resource = _sns_resource  # type: ignore[attr-defined]
    SNSResponse._authenticate_and_authorize_normal_action = _authorize_sns  # type: ignore[method-assign]
    SQSResponse._authenticate_and_authorize_normal_action = _authorize_batches_as_single  # type: ignore[method-assign]
    SQSResponse._determine_resource = _sqs_resource  # type: ignore[method-assign]
    SecretsManagerResponse._determine_resource = _secret_resource  # type: ignore[attr-defined]
    DynamoHandler._authenticate_and_authorize_normal_action = _authorize_dynamodb  # type: ignore[method-assign]


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


def _unsigned(environ: dict[str, Any]) -> bool:
    """A request with neither a signature header nor a presigned URL's, outside moto's own API."""
    if environ.get("PATH_INFO", "").startswith("/moto-api"):
        return False
    query = environ.get("QUERY_STRING", "")
    return not environ.get("HTTP_AUTHORIZATION") and "Signature=" not in query


def missing_keys_as_aws(app: WsgiApp, account_id: str) -> WsgiApp:
    """A missing key answers 403 AccessDenied unless the caller may list the bucket, as S3 does; an
    unsigned request answers 403 too (moto fails on it with a 500 and a traceback)."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if settings.INITIAL_NO_AUTH_ACTION_COUNT == 0 and _unsigned(environ):
            start_response(
                "403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(_ACCESS_DENIED_XML)))]
            )
            return [_ACCESS_DENIED_XML]
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
