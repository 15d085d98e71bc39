"""Pixel modes and transparency: every mode Pillow produces brought to L, LA, RGB or RGBA, alpha flattened."""

from __future__ import annotations

import io
import math
from functools import cache
from typing import cast

from PIL import Image, ImageChops, ImageStat

from ..errors import ImageUnreadable, ImageUnsupportedFormat
from .steps import PreparationStep

_LIGHT_CONTENT_THRESHOLD = 127.5
_DARK_BACKGROUND = 0
_LIGHT_BACKGROUND = 255


def normalize_mode(image: Image.Image, steps: list[PreparationStep]) -> Image.Image:
    """Bring any mode Pillow can produce to L, LA, RGB or RGBA (alpha only when some pixel uses it)."""
    original_mode = image.mode
    converted, note = _convert_to_working_mode(image)
    if converted.mode in ("LA", "RGBA") and _band_extrema(converted, -1)[0] == 255:
        # An alpha channel that makes no pixel transparent only costs: drop it before the resize.
        opaque = converted.convert(converted.mode[:-1])
        if converted is not image:
            converted.close()
        converted, note = opaque, "; ".join(filter(None, (note, "alpha is fully opaque")))
    if converted is not image:
        detail = f"{original_mode} -> {converted.mode}" + (f" ({note})" if note else "")
        steps.append(PreparationStep(action="convert_mode", detail=detail))
    return converted


def _convert_to_working_mode(image: Image.Image) -> tuple[Image.Image, str | None]:
    """Return the converted image (or `image` itself) and a note on how, for the step's detail."""
    mode = image.mode
    transparent = "transparency" in image.info
    if mode in ("L", "RGB"):
        return (image.convert(mode + "A"), "transparent color") if transparent else (image, None)
    if mode in ("LA", "RGBA"):
        return image, None
    if mode in ("La", "RGBa", "RGBX", "1", "YCbCr", "LAB", "HSV"):
        return image.convert({"La": "LA", "RGBa": "RGBA", "1": "L"}.get(mode, "RGB")), None
    if mode in ("P", "PA"):
        grey = _palette_is_grey(image)
        has_alpha = mode == "PA" or transparent or (image.palette is not None and image.palette.mode == "RGBA")
        target = ("LA" if has_alpha else "L") if grey else ("RGBA" if has_alpha else "RGB")
        return image.convert(target), "grey palette" if grey else None
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode == "I;16":
        # 16-bit transparency (a tRNS grey level) is rare enough that we ignore it.
        # point() on I;16 applies scale and offset and truncates; +0.5 makes it round.
        scaled = image.point(lambda v: v / 257 + 0.5)
        eight = scaled.convert("L")
        scaled.close()
        return eight, "over the full 16-bit range"
    if mode.startswith("I;16"):
        # Pillow converts I;16B/L/N to I;16 by clipping at 255, but to I faithfully.
        wide = image.convert("I")
        eight = wide.point(_sixteen_to_eight_bit(), "L")
        wide.close()
        return eight, "over the full 16-bit range"
    if mode == "I":
        return _int32_to_l(image)
    if mode == "F":
        return _float_to_l(image)
    raise ImageUnsupportedFormat(f"pixel mode {mode} is not supported", mode=mode)


def _palette_is_grey(image: Image.Image) -> bool:
    palette = image.getpalette("RGB") or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def _cmyk_to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """Pillow already undoes Adobe's inverted CMYK JPEGs; an embedded print profile, when it
    parses, gives the colors the author saw, else Pillow's plain formula is the fallback."""
    icc = image.info.get("icc_profile")
    if icc:
        from PIL import ImageCms

        try:
            source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                image, source_profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None
        if converted is not None:
            return converted, "through the embedded ICC profile"
        return image.convert("RGB"), "the embedded ICC profile is unusable"
    return image.convert("RGB"), None


def _band_extrema(image: Image.Image, band: int = 0) -> tuple[float, float]:
    extrema = image.getextrema()
    low, high = cast("tuple[float, float]", extrema if len(image.getbands()) == 1 else extrema[band])
    return low, high


@cache
def _sixteen_to_eight_bit() -> list[int]:
    """16-bit samples to 8 bits over the full 16-bit range (v / 257, rounded), not clipped at 255."""
    return [(v + 128) // 257 for v in range(65536)]


def _int32_to_l(image: Image.Image) -> tuple[Image.Image, str]:
    low, high = _band_extrema(image)
    if low >= 0 and high <= 65535:
        # Mostly 16-bit data in a 32-bit container (older PNG and TIFF readers give "I").
        return image.point(_sixteen_to_eight_bit(), "L"), "over the full 16-bit range"
    return _stretch_to_l(image, low, high), f"stretching {low:g}..{high:g}"


def _float_to_l(image: Image.Image) -> tuple[Image.Image, str]:
    low, high = _band_extrema(image)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ImageUnreadable("the floating-point image has NaN or infinite samples", mode="F")
    if low >= 0.0 and high <= 1.0:
        # The usual convention for float images is 0..1.
        scaled = image.point(lambda v: v * 255 + 0.5)
        eight = scaled.convert("L")
        scaled.close()
        return eight, "from 0..1"
    return _stretch_to_l(image, low, high), f"stretching {low:g}..{high:g}"


def _stretch_to_l(image: Image.Image, low: float, high: float) -> Image.Image:
    # Values beyond any known range: map the range present onto 0..255. A constant image
    # carries no text, so the grey it becomes does not matter.
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = image.point(lambda v: v * scale + (0.5 - low * scale))
    eight = scaled.convert("L")
    scaled.close()
    return eight


def flatten_alpha(image: Image.Image, steps: list[PreparationStep]) -> tuple[Image.Image, int]:
    """Composite onto the background that keeps the content visible.

    White text on a transparent background is common in exported graphics; flattening it
    onto white (the usual default) erases it. So we take the alpha-weighted mean luminance
    of what is visible: light content gets black, dark content gets white.
    """
    alpha = image.getchannel("A")
    luminance = image.convert("L")
    alpha_mean = ImageStat.Stat(alpha).mean[0]
    if alpha_mean > 0:
        weighted = ImageChops.multiply(luminance, alpha)
        mean_luminance: float | None = 255.0 * ImageStat.Stat(weighted).mean[0] / alpha_mean
        weighted.close()
    else:
        mean_luminance = None
    light = mean_luminance is not None and mean_luminance > _LIGHT_CONTENT_THRESHOLD
    level = _DARK_BACKGROUND if light else _LIGHT_BACKGROUND
    base_mode = image.mode[:-1]
    flattened = Image.new(base_mode, image.size, level if base_mode == "L" else (level,) * 3)
    flattened.paste(luminance if base_mode == "L" else image, (0, 0), alpha)
    alpha.close()
    luminance.close()
    if mean_luminance is None:
        detail = "nothing is visible; flattened onto white"
    else:
        tone, color = ("light", "black") if light else ("dark", "white")
        detail = f"{tone} content (alpha-weighted mean luminance {mean_luminance:.0f}) flattened onto {color}"
    steps.append(PreparationStep(action="flatten_alpha", detail=detail))
    return flattened, level


def is_grey(image: Image.Image) -> bool:
    """Whether every pixel of an RGB or RGBX image has equal red, green and blue."""
    # Checked on the prepared (small) image: an RGB file of a grey page costs 3x the bytes.
    red, green, blue = (image.getchannel(band) for band in "RGB")
    try:
        return (
            ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(green, blue).getbbox() is None
        )
    finally:
        for band in (red, green, blue):
            band.close()
