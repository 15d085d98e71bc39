"""What the vendor documents about models and regions, as data the rest of the package reads."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from .errors import ConfigurationError


class Region(StrEnum):
    INTL = "intl"  # Singapore
    US = "us"  # Virginia
    CN = "cn"  # Beijing


class Endpoints(BaseModel):
    model_config = ConfigDict(frozen=True)

    native_base: str
    compatible_base: str


REGION_ENDPOINTS: dict[Region, Endpoints] = {
    Region.INTL: Endpoints(
        native_base="https://dashscope-intl.aliyuncs.com/api/v1",
        compatible_base="https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    ),
    Region.US: Endpoints(
        native_base="https://dashscope-us.aliyuncs.com/api/v1",
        compatible_base="https://dashscope-us.aliyuncs.com/compatible-mode/v1",
    ),
    Region.CN: Endpoints(
        native_base="https://dashscope.aliyuncs.com/api/v1",
        compatible_base="https://dashscope.aliyuncs.com/compatible-mode/v1",
    ),
}

NATIVE_PATH = "/services/aigc/multimodal-generation/generation"
COMPATIBLE_PATH = "/chat/completions"


def default_pixels(patch: int) -> tuple[int, int]:
    """The min_pixels and max_pixels a model of this patch size is sent when a job names none.

    32-px models: the vendor's documented defaults, 32*32*3 and 32*32*8192. 28-px models: 28*28*4 and
    28*28*8192, the values the vendor's SDK uses for that generation; the 32-px values would give such
    a model about 30 % more pixels (and image tokens) than it is meant to see.
    """
    if patch == 32:
        return 32 * 32 * 3, 32 * 32 * 8192
    return patch * patch * 4, patch * patch * 8192


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    # Side of the square of pixels that makes one image token.
    patch: int
    max_output_tokens: int
    supports_builtin_tasks: bool = True

    @property
    def default_min_pixels(self) -> int:
        return default_pixels(self.patch)[0]

    @property
    def default_max_pixels(self) -> int:
        return default_pixels(self.patch)[1]


_NEW = dict(patch=32, max_output_tokens=8192)
_OLD = dict(patch=28, max_output_tokens=4096)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # The stable name counts 32x32 px per token whatever snapshot a region maps it to.
        ModelSpec(name="qwen-vl-ocr", patch=32, max_output_tokens=4096),
        ModelSpec(name="qwen-vl-ocr-latest", **_NEW),
        ModelSpec(name="qwen-vl-ocr-2025-11-20", **_NEW),
        ModelSpec(name="qwen-vl-ocr-2025-08-28", **_OLD),
        ModelSpec(name="qwen-vl-ocr-2025-04-13", **_OLD),
        ModelSpec(name="qwen-vl-ocr-2024-10-28", supports_builtin_tasks=False, **_OLD),
    )
}

ALIASES: dict[str, str] = {
    "qwen-vl-ocr-1120": "qwen-vl-ocr-2025-11-20",
    "qwen-vl-ocr-0828": "qwen-vl-ocr-2025-08-28",
    "qwen-vl-ocr-0413": "qwen-vl-ocr-2025-04-13",
    "qwen-vl-ocr-1028": "qwen-vl-ocr-2024-10-28",
}

# The snapshots each region's model table lists (the vendor's page of 2026-02-04): Singapore and
# Virginia offer the stable name and 2025-11-20 only; Beijing offers every snapshot and -latest.
REGION_MODELS: dict[Region, frozenset[str]] = {
    Region.INTL: frozenset({"qwen-vl-ocr", "qwen-vl-ocr-2025-11-20"}),
    Region.US: frozenset({"qwen-vl-ocr", "qwen-vl-ocr-2025-11-20"}),
    Region.CN: frozenset(MODELS),
}

# The OCR models the vendor's Batch File API takes ("OpenAI-compatible – Batch (file input)"): Beijing only, on
# the compatible-mode base; Singapore's batch list has text models only. Half the real-time price.
BATCH_MODELS: dict[Region, frozenset[str]] = {
    Region.CN: frozenset({"qwen-vl-ocr", "qwen-vl-ocr-latest"}),
}

DEFAULT_MODEL = "qwen-vl-ocr-2025-11-20"
DEFAULT_REGION = Region.INTL

# The vendor's documented defaults of the image item, applied by the API when a request omits them:
# 3 and 8192 tokens' worth of 32x32 patches. We always send the model's own (default_pixels).
DEFAULT_MIN_PIXELS = 32 * 32 * 3
DEFAULT_MAX_PIXELS = 32 * 32 * 8192


def canonical_model_name(name: str) -> str:
    return ALIASES.get(name, name)


def model_spec(name: str, *, patch_if_unknown: int | None = None) -> ModelSpec:
    """Look a model up by name or alias.

    A self-hosted Qwen-VL behind the compatible endpoint has a name we cannot know;
    callers that accept such models pass `patch_if_unknown`.
    """
    canonical = canonical_model_name(name)
    spec = MODELS.get(canonical)
    if spec is not None:
        return spec
    if patch_if_unknown is not None:
        return ModelSpec(name=name, patch=patch_if_unknown, max_output_tokens=8192)
    known = ", ".join(sorted([*MODELS, *ALIASES]))
    raise ConfigurationError(f"unknown model {name!r}; known models: {known}", model=name)


def endpoints_for(region: Region | str) -> Endpoints:
    try:
        return REGION_ENDPOINTS[Region(region)]
    except ValueError as exc:
        raise ConfigurationError(f"unknown region {region!r}; use intl, us or cn", region=str(region)) from exc


def models_offered(region: Region | str) -> list[str]:
    """The names (aliases included) a region's table lists, for messages."""
    offered = REGION_MODELS[Region(region)]
    return sorted([*offered, *(alias for alias, name in ALIASES.items() if name in offered)])


def offered_model(name: str, region: Region | str) -> ModelSpec:
    """The spec of a model the region offers; ConfigurationError for a misspelt one or one it does not offer."""
    region = Region(region)
    spec = MODELS.get(canonical_model_name(name))
    if spec is None or spec.name not in REGION_MODELS[region]:
        why = (
            "is not a Qwen-OCR model the catalog knows" if spec is None else f"is not offered in region {region.value}"
        )
        raise ConfigurationError(
            f"model {name!r} {why}; region {region.value} offers {', '.join(models_offered(region))}",
            model=name,
            region=region.value,
        )
    return spec


def batch_offered(name: str, region: Region | str) -> bool:
    """Whether the vendor's Batch File API takes this model in this region."""
    return canonical_model_name(name) in BATCH_MODELS.get(Region(region), frozenset())


def batch_lanes() -> str:
    """Where the Batch File API is offered, for messages: "qwen-vl-ocr, qwen-vl-ocr-latest in cn"."""
    return "; ".join(f"{', '.join(sorted(models))} in {region.value}" for region, models in BATCH_MODELS.items())


class OcrDefaults(BaseModel):
    """The model and region a job gets when it names none, and whether a model it names must be listed."""

    model_config = ConfigDict(frozen=True)

    model: str = DEFAULT_MODEL
    region: Region = DEFAULT_REGION
    # False for a self-hosted server, whose model names only its operator knows, and where the operator
    # allows unlisted models: then a named model is sent as it is.
    catalog_checked: bool = True
