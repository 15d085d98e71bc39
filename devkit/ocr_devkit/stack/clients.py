"""boto3 clients pointed at the local moto server, signed by its admin user (see `strict_iam.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

# The local stack's admin user: its own set-up and the CLI's user-side commands sign with this key.
# Functions never do: each signs with credentials from assuming its own role.
ADMIN_ACCESS_KEY_ID = "AKIAOCRPIPELINELOCAL"
ADMIN_SECRET_ACCESS_KEY = "ocr-pipeline-local-stack-admin-secret-key"

_CONFIG = Config(max_pool_connections=50, retries={"max_attempts": 4, "mode": "standard"})


class ClientFactory:
    """Builds clients from one boto3 session; create clients up front, then share them between threads."""

    def __init__(self, endpoint_url: str, region: str, credentials: Mapping[str, str] | None = None) -> None:
        """Signed as the admin user, or with `credentials` (AWS_ACCESS_KEY_ID, ... as Lambda sets them)."""
        self.endpoint_url = endpoint_url
        self.region = region
        credentials = credentials or {
            "AWS_ACCESS_KEY_ID": ADMIN_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET_ACCESS_KEY,
        }
        self._session = boto3.session.Session(
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
            region_name=region,
        )

    def client(self, service: str, **kwargs: Any) -> Any:
        options: dict[str, Any] = {"endpoint_url": self.endpoint_url, "config": _CONFIG, **kwargs}
        return self._session.client(service, **options)  # type: ignore[call-overload]
