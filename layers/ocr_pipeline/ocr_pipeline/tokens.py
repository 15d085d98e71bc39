"""The vendor's smart_resize rule and the image-token count that follows from it.

We resize images to exactly what this returns before sending them, so the model's
own resize is the identity and the returned coordinates are in our prepared image.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from .catalog import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, ModelSpec

# <|vision_bos|> and <|vision_eos|> cost one token each.
VISION_MARKER_TOKENS = 2


class PixelBudget(BaseModel):
    """How many pixels one image may become, in the model's patch size."""

    model_config = ConfigDict(frozen=True)

    patch: int = 32
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def for_model(cls, spec: ModelSpec, min_pixels: int | None = None, max_pixels: int | None = None) -> PixelBudget:
        """The budget a job's options give on `spec`: what they name, the model's defaults for the rest.

        A bound named alone wins over the default it contradicts (a floor above the default cap raises the cap).
        """
        low = spec.default_min_pixels if min_pixels is None else min_pixels
        high = spec.default_max_pixels if max_pixels is None else max_pixels
        if low > high:
            if max_pixels is None:
                high = low
            else:
                low = high
        return cls(patch=spec.patch, min_pixels=low, max_pixels=high)


def smart_resize(height: int, width: int, budget: PixelBudget) -> tuple[int, int]:
    """Return (h_bar, w_bar) exactly as the documented estimate computes them.

    Python's round() is banker's rounding; the vendor sample uses it too, so we keep it.
    The `max(patch, ...)` guards only matter for degenerate inputs where the documented
    formula would reach zero; for any image within the aspect limit they change nothing.
    """
    f = budget.patch
    h_bar = round(height / f) * f
    w_bar = round(width / f) * f
    if h_bar * w_bar > budget.max_pixels:
        beta = math.sqrt((height * width) / budget.max_pixels)
        h_bar = math.floor(height / beta / f) * f
        w_bar = math.floor(width / beta / f) * f
    elif h_bar * w_bar < budget.min_pixels:
        beta = math.sqrt(budget.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return max(f, h_bar), max(f, w_bar)


def image_tokens(height: int, width: int, budget: PixelBudget) -> int:
    h_bar, w_bar = smart_resize(height, width, budget)
    return (h_bar * w_bar) // (budget.patch * budget.patch) + VISION_MARKER_TOKENS
