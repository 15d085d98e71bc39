"""How to reach the OCR service: one pydantic model, read once per cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ...catalog import (
    COMPATIBLE_PATH,
    DEFAULT_MODEL,
    DEFAULT_REGION,
    MODELS,
    NATIVE_PATH,
    ModelSpec,
    Region,
    canonical_model_name,
    endpoints_for,
    offered_model,
)
from ...errors import ConfigurationError
from ...ocr_service import ModelChoice, OcrDefaults, OcrTarget


class WireProtocol(StrEnum):
    """Which wire format to speak."""

    DASHSCOPE = "dashscope"  # the native API, with built-in OCR tasks
    OPENAI = "openai"  # the OpenAI-compatible API: DashScope's compatible mode, vLLM, SGLang...


class OcrServiceSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    protocol: WireProtocol = WireProtocol.DASHSCOPE
    region: Region = DEFAULT_REGION
    # Replaces the region's base URL: ".../api/v1" for native, ".../compatible-mode/v1" for compatible.
    base_url: str | None = None
    model: str = DEFAULT_MODEL
    api_key: SecretStr | None = None
    api_key_secret_arn: str | None = None
    # A self-hosted server may need no key at all.
    require_api_key: bool = True
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # A full page of dense text can take the model tens of seconds to write.
    read_timeout_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = Field(default=0.5, ge=0)
    # Ceiling of our own exponential backoff; a server's Retry-After is capped by the deadline instead.
    backoff_max_s: float = Field(default=20.0, ge=0)
    # The longest Retry-After honoured by a call without a deadline (the CLI); longer waits give up.
    retry_after_max_s: float = Field(default=300.0, ge=0)
    # This process's share of the stack's requests-per-second limit; None: no limit.
    requests_per_second: float | None = Field(default=None, gt=0)
    # Pixels per token side for models we do not know (self-hosted Qwen-VL); Qwen3-VL uses 32.
    unknown_model_patch: int = Field(default=32, gt=0)
    # Send a model the region's table does not list (a snapshot newer than the catalog). Its patch
    # size must be given, since token counts and the pixel budget follow from it; its cost is null.
    allow_unlisted_model: bool = False
    unlisted_model_patch: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _base_url_shape(self) -> OcrServiceSettings:
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
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
        """Settings from the environment (OCR_* and DASHSCOPE_API_KEY), with explicit overrides winning."""
        env = os.environ if environ is None else environ
        fields: dict[str, object] = {
            "protocol": env.get("OCR_PROTOCOL"),
            "region": env.get("OCR_REGION"),
            "base_url": env.get("OCR_BASE_URL"),
            "model": env.get("OCR_MODEL"),
            "api_key": env.get("DASHSCOPE_API_KEY"),
            "api_key_secret_arn": env.get("DASHSCOPE_API_KEY_SECRET_ARN"),
            "read_timeout_s": env.get("OCR_READ_TIMEOUT_S"),
            "max_attempts": env.get("OCR_MAX_ATTEMPTS"),
            "requests_per_second": _share_of_limit(env.get("OCR_RPS_LIMIT"), env.get("OCR_RPS_SHARES")),
            "allow_unlisted_model": (env.get("OCR_ALLOW_UNLISTED_MODEL") or "").strip().lower() or None,
            "unlisted_model_patch": _given(env.get("OCR_UNLISTED_MODEL_PATCH")),
        }
        fields.update(overrides)
        if (
            "require_api_key" not in overrides
            and fields.get("protocol") == WireProtocol.OPENAI.value
            and fields.get("base_url")
        ):
            # A self-hosted OpenAI-compatible server (vLLM, SGLang) usually runs without a key.
            fields["require_api_key"] = False
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v not in (None, "")})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"invalid OCR service settings: {problems}") from None


def _given(value: str | None) -> str | None:
    """An optional number from the template, whose parameters write "not given" as 0."""
    value = (value or "").strip()
    return None if value in ("", "0") else value


def _share_of_limit(limit: str | None, shares: str | None) -> float | None:
    """OCR_RPS_LIMIT (the whole stack's) divided over OCR_RPS_SHARES instances; 0 or unset: unlimited."""
    try:
        total = float(limit) if limit else 0.0
        parts = max(1, int(shares)) if shares else 1
    except ValueError:
        raise ConfigurationError(f"OCR_RPS_LIMIT={limit!r} / OCR_RPS_SHARES={shares!r} are not numbers") from None
    return total / parts if total > 0 else None
