"""SQS's SenderId as AWS reports it: the id of the IAM user or role (with its session) that sent the message.

moto stamps every message with one fixed SenderId, so a stack that decides who pays by its sender
(RequestTenants) would behave locally as if everyone were the same sender. Here the sender is read
from the request's signature, once moto has authorized it, and given to the message moto creates for
that request. moto's server serves each request on its own thread, so the sender travels in a
thread-local from the authorization to the message's construction.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from moto.iam.access_control import AssumedRoleAccessKey, IAMUserAccessKey, create_access_key
from moto.sqs import models as sqs_models
from moto.sqs.responses import SQSResponse

_ACCESS_KEY = re.compile(r"Credential=([^/]+)/")
_current = threading.local()
_installed = False


def sender_id(account_id: str, partition: str, headers: dict[str, str]) -> str | None:
    """`AIDA...` for an IAM user, `AROA...:session` for an assumed role; None when the signer is unknown."""
    match = _ACCESS_KEY.search(headers.get("Authorization", ""))
    if match is None:
        return None
    try:
        key = create_access_key(account_id, partition, match[1], headers)
        if isinstance(key, IAMUserAccessKey):
            return str(key.backend.get_user(key._owner_user_name).id)
        if isinstance(key, AssumedRoleAccessKey):
            return f"{key.backend.get_role(key._owner_role_name).id}:{key._session_name}"
    except Exception:
        return None
    return None


def install() -> None:
    """Wrap whatever authorizes SQS requests now (strict_iam's checks), and moto's Message (idempotent).

    Call it after strict_iam has set its checks: they replace the authorization method each time.
    """
    global _installed
    authorize = SQSResponse._authenticate_and_authorize_normal_action
    if not getattr(authorize, "remembers_sender", False):

        def authorize_and_remember_sender(self: Any, *args: Any, **kwargs: Any) -> None:
            _current.sender_id = None
            authorize(self, *args, **kwargs)
            headers = {str(k): str(v) for k, v in self.headers.items()}
            _current.sender_id = sender_id(self.current_account, self.partition, headers)

        authorize_and_remember_sender.remembers_sender = True  # type: ignore[attr-defined]
        SQSResponse._authenticate_and_authorize_normal_action = authorize_and_remember_sender  # type: ignore[method-assign]
    if _installed:
        return
    _installed = True
    message_init = sqs_models.Message.__init__

    def init_with_sender(self: Any, *args: Any, **kwargs: Any) -> None:
        message_init(self, *args, **kwargs)
        sender = getattr(_current, "sender_id", None)
        if sender:
            self.sender_id = sender

    sqs_models.Message.__init__ = init_with_sender  # type: ignore[method-assign]
