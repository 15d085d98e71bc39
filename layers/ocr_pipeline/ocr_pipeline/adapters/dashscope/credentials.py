"""Where the API key comes from: the environment locally, Secrets Manager in the cloud.

The secret is fetched on first use, not at import, and cached for warm invocations.
It is never logged and never put in an error message.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol

from ...errors import ConfigurationError
from .settings import OcrServiceSettings

SECRET_CACHE_SECONDS = 300
# Keys we accept inside a JSON secret, so users can store {"api_key": "..."} or a plain string.
_SECRET_FIELDS = ("api_key", "DASHSCOPE_API_KEY", "apiKey")


class ApiKeyProvider(Protocol):
    def api_key(self) -> str | None: ...


class StaticApiKey:
    def __init__(self, key: str | None) -> None:
        self._key = key

    def api_key(self) -> str | None:
        return self._key


class SecretsManagerApiKey:
    """Reads the key from a Secrets Manager secret through Powertools' cached parameters provider."""

    def __init__(self, secret_arn: str, *, provider: Any | None = None, max_age: int = SECRET_CACHE_SECONDS) -> None:
        self._arn = secret_arn
        self._provider = provider
        self._max_age = max_age
        self._lock = threading.Lock()

    def _secrets(self) -> Any:
        with self._lock:
            if self._provider is None:
                from aws_lambda_powertools.utilities.parameters import SecretsProvider

                self._provider = SecretsProvider()
            return self._provider

    def api_key(self) -> str | None:
        try:
            raw = self._secrets().get(self._arn, max_age=self._max_age)
        except Exception as exc:  # Powertools wraps every SDK failure in GetParameterError
            raise ConfigurationError(
                f"cannot read the API key secret {self._arn}: {type(exc).__name__}", secret_arn=self._arn
            ) from None
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        return extract_key(str(raw), source=self._arn)


def extract_key(secret_text: str, *, source: str) -> str:
    text = secret_text.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigurationError(f"the secret {source} looks like JSON but does not parse") from None
        for field in _SECRET_FIELDS:
            if isinstance(document.get(field), str) and document[field]:
                return str(document[field])
        raise ConfigurationError(f"the secret {source} has none of the fields {', '.join(_SECRET_FIELDS)}")
    if not text:
        raise ConfigurationError(f"the secret {source} is empty")
    return text


def api_key_provider_for(settings: OcrServiceSettings) -> ApiKeyProvider:
    if settings.api_key is not None:
        return StaticApiKey(settings.api_key.get_secret_value())
    if settings.api_key_secret_arn:
        return SecretsManagerApiKey(settings.api_key_secret_arn)
    return StaticApiKey(None)
