"""boto3 clients pointed at the local moto server, with the fake credentials moto accepts."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"
FAKE_SESSION_TOKEN = "testing"

_CONFIG = Config(max_pool_connections=50, retries={"max_attempts": 4, "mode": "standard"})


class ClientFactory:
    """Builds clients from one boto3 session; create clients up front, then share them between threads."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._session = boto3.session.Session(
            aws_access_key_id=FAKE_ACCESS_KEY_ID,
            aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
            region_name=region,
        )

    def client(self, service: str, **kwargs: Any) -> Any:
        options: dict[str, Any] = {"endpoint_url": self.endpoint_url, "config": _CONFIG, **kwargs}
        return self._session.client(service, **options)  # type: ignore[call-overload]
