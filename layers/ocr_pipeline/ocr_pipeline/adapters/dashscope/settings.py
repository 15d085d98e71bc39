"""How to reach the OCR service: one pydantic model, read from the environment once per cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ...catalog import (
    COMPATIBLE_PATH,
    DEFAULT_MODEL,
    DEFAULT_REGION,
    MODELS,
    NATIVE_PATH,
    ModelSpec,
    OcrDefaults,
    Region,
    canonical_model_name,
    endpoints_for,
    offered_model,
)
from ...errors import ConfigurationError
from ...ocr_service import ModelChoice, OcrTarget


class WireProtocol(StrEnum):
    """Which wire format to speak."""

    DASHSCOPE = "dashscope"  # the native API, with built-in OCR tasks
    OPENAI = "openai"  # the OpenAI-compatible API: DashScope's compatible mode, vLLM, SGLang...


class OcrServiceSettings(BaseModel):
    """How to reach the OCR service. Each field read from the environment names its variable there."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    protocol: WireProtocol = Field(
        default=WireProtocol.DASHSCOPE, validation_alias=AliasChoices("protocol", "OCR_PROTOCOL")
    )
    region: Region = Field(default=DEFAULT_REGION, validation_alias=AliasChoices("region", "OCR_REGION"))
    # Replaces the region's base URL: ".../api/v1" for native, ".../compatible-mode/v1" for compatible.
    base_url: str | None = Field(default=None, validation_alias=AliasChoices("base_url", "OCR_BASE_URL"))
    model: str = Field(default=DEFAULT_MODEL, validation_alias=AliasChoices("model", "OCR_MODEL"))
    # The Batch File API's base (".../compatible-mode/v1"); None: Beijing's compatible-mode base, the only
    # region where the vendor offers it for OCR models.
    batch_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("batch_base_url", "OCR_BATCH_BASE_URL")
    )
    api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("api_key", "DASHSCOPE_API_KEY"))
    api_key_secret_arn: str | None = Field(
        default=None, validation_alias=AliasChoices("api_key_secret_arn", "DASHSCOPE_API_KEY_SECRET_ARN")
    )
    # A self-hosted server may need no key at all.
    require_api_key: bool = True
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # A full page of dense text can take the model tens of seconds to write.
    read_timeout_s: float = Field(
        default=120.0, gt=0, validation_alias=AliasChoices("read_timeout_s", "OCR_READ_TIMEOUT_S")
    )
    max_attempts: int = Field(default=5, ge=1, validation_alias=AliasChoices("max_attempts", "OCR_MAX_ATTEMPTS"))
    # Sent as max_tokens. 0: the model's documented maximum output (ModelSpec.max_output_tokens). The vendor
    # raises an account's limit on request (up to 8,192 for the 4,096-token models); such an account sets it.
    max_output_tokens: int = Field(
        default=0, ge=0, validation_alias=AliasChoices("max_output_tokens", "OCR_MAX_OUTPUT_TOKENS")
    )
    backoff_base_s: float = Field(default=0.5, ge=0)
    # Ceiling of our own exponential backoff; a server's Retry-After is capped by the deadline instead.
    backoff_max_s: float = Field(default=20.0, ge=0)
    # The longest Retry-After honored by a call without a deadline (the CLI); longer waits give up.
    retry_after_max_s: float = Field(default=300.0, ge=0)
    # The whole stack's requests-per-second limit (0: none), shared by this many concurrent instances.
    stack_requests_per_second: float = Field(
        default=0.0, ge=0, validation_alias=AliasChoices("stack_requests_per_second", "OCR_RPS_LIMIT")
    )
    instances_sharing_the_limit: int = Field(
        default=1, ge=1, validation_alias=AliasChoices("instances_sharing_the_limit", "OCR_RPS_SHARES")
    )
    # Requests in flight from this process at once (OcrCallsPerInstance); 0: no bound (the CLI).
    calls_in_flight: int = Field(
        default=0, ge=0, validation_alias=AliasChoices("calls_in_flight", "OCR_CALLS_PER_INSTANCE")
    )
    # Pixels per token side for models we do not know (self-hosted Qwen-VL); Qwen3-VL uses 32.
    unknown_model_patch: int = Field(default=32, gt=0)
    # Send a model the region's table does not list (a snapshot newer than the catalog). Its patch
    # size must be given, since token counts and the pixel budget follow from it; its cost is null.
    allow_unlisted_model: bool = Field(
        default=False, validation_alias=AliasChoices("allow_unlisted_model", "OCR_ALLOW_UNLISTED_MODEL")
    )
    unlisted_model_patch: int | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("unlisted_model_patch", "OCR_UNLISTED_MODEL_PATCH")
    )

    @model_validator(mode="before")
    @classmethod
    def _self_hosted_needs_no_key(cls, data: Any) -> Any:
        # A self-hosted OpenAI-compatible server (vLLM, SGLang) usually runs without a key.
        if isinstance(data, dict) and not _given_any(data, "require_api_key"):
            protocol = _given_any(data, "protocol", "OCR_PROTOCOL")
            if str(protocol or "").lower() == WireProtocol.OPENAI.value and _given_any(
                data, "base_url", "OCR_BASE_URL"
            ):
                data = {**data, "require_api_key": False}
        return data

    @field_validator("unlisted_model_patch", mode="before")
    @classmethod
    def _zero_is_not_given(cls, value: Any) -> Any:
        # The template's parameters write "not given" as 0.
        return None if isinstance(value, str) and value.strip() in ("", "0") else value

    @field_validator("allow_unlisted_model", mode="before")
    @classmethod
    def _read_flag(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    def max_tokens_for(self, model: ModelSpec) -> int:
        """What a call to `model` sends as max_tokens: the configured limit, else the model's documented one."""
        return self.max_output_tokens or model.max_output_tokens

    @property
    def requests_per_second(self) -> float | None:
        """This process's share of the stack's requests-per-second limit; None: no limit."""
        if self.stack_requests_per_second <= 0:
            return None
        return self.stack_requests_per_second / self.instances_sharing_the_limit

    @model_validator(mode="after")
    def _base_url_shape(self) -> OcrServiceSettings:
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        if self.batch_base_url is not None and not self.batch_base_url.startswith(("http://", "https://")):
            raise ValueError("batch_base_url must be an http(s) URL")
        return self

    @model_validator(mode="after")
    def _model_offered(self) -> OcrServiceSettings:
        # ConfigurationError is not a ValueError, so it leaves pydantic as it is, code and all.
        self.model_choice()
        return self

    @property
    def self_hosted(self) -> bool:
        """An OpenAI-compatible server of the operator's own, whose model names only its operator knows."""
        return self.protocol is WireProtocol.OPENAI and self.base_url is not None

    def model_choice(self) -> ModelChoice:
        """The model to send and how it is sized, checked against the region's table.

        A model the region does not offer (or a misspelt one) is a ConfigurationError, unless
        `allow_unlisted_model` admits it with `unlisted_model_patch`. Checked at every start, including
        for settings copied with another model or region (`model_copy` does not validate).
        """
        if self.self_hosted:
            spec = MODELS.get(canonical_model_name(self.model))
            if spec is None:
                spec = ModelSpec(
                    name=self.model, patch=self.unlisted_model_patch or self.unknown_model_patch, max_output_tokens=8192
                )
            return ModelChoice(spec=spec)
        try:
            return ModelChoice(spec=offered_model(self.model, self.region))
        except ConfigurationError as refused:
            if not self.allow_unlisted_model:
                raise ConfigurationError(
                    f"{refused.message} (allow it with OCR_ALLOW_UNLISTED_MODEL=true and OCR_UNLISTED_MODEL_PATCH, "
                    "or --allow-unlisted-model --model-patch)",
                    **refused.details,
                ) from None
            return self._unlisted(refused)

    def _unlisted(self, refused: ConfigurationError) -> ModelChoice:
        known = MODELS.get(canonical_model_name(self.model))
        patch = self.unlisted_model_patch
        if patch is None:
            raise ConfigurationError(
                f"{refused.message}; an unlisted model needs its patch size, 28 or 32 "
                "(OCR_UNLISTED_MODEL_PATCH, or --model-patch)",
                **refused.details,
            )
        if known is not None and known.patch != patch:
            raise ConfigurationError(
                f"{known.name} counts {known.patch} px per token, not the {patch} given as its patch size",
                model=self.model,
            )
        spec = known or ModelSpec(name=self.model, patch=patch, max_output_tokens=8192)
        return ModelChoice(
            spec=spec,
            unlisted=True,
            warning=(
                f"model {self.model!r} is not listed for region {self.region.value}; sent as allowed "
                f"(allow_unlisted_model), sized at {patch} px per token, cost unknown (null)"
            ),
        )

    def target(self) -> OcrTarget:
        """The model, region and wire format this service's calls go to; raises ConfigurationError as model_choice."""
        return OcrTarget(choice=self.model_choice(), region=self.region, protocol=self.protocol.value)

    def defaults(self) -> OcrDefaults:
        """What the pipeline gives a job that names no model or region, and whether it checks a named one."""
        return OcrDefaults(
            model=self.model, region=self.region, catalog_checked=not self.self_hosted and not self.allow_unlisted_model
        )

    @property
    def endpoint(self) -> str:
        if self.base_url:
            base = self.base_url.rstrip("/")
        else:
            endpoints = endpoints_for(self.region)
            base = endpoints.native_base if self.protocol is WireProtocol.DASHSCOPE else endpoints.compatible_base
        return base + (NATIVE_PATH if self.protocol is WireProtocol.DASHSCOPE else COMPATIBLE_PATH)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> OcrServiceSettings:
        """Settings from an environment (OCR_* and DASHSCOPE_API_KEY; the process's when None), with explicit
        overrides winning. Raises ConfigurationError, never a ValidationError.

        Each field is read from the variable its alias names, an empty one counting as not given, by pydantic
        itself: pydantic-settings' import (with asyncio and dotenv) would add to every function's cold start."""
        given: dict[str, Any] = {name: value for name, value in overrides.items() if value is not None}
        source = os.environ if environ is None else environ
        try:
            return cls.model_validate({**{k: v for k, v in source.items() if v != ""}, **given})
        except ValidationError as exc:
            raise ConfigurationError.from_validation("OCR service settings", cls, exc) from None


def _given_any(data: Mapping[str, Any], *names: str) -> Any:
    return next((data[name] for name in names if data.get(name) not in (None, "")), None)
