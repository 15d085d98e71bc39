"""Sizes and coordinates: the smart_resize plan made from the header, then the reduced-scale JPEG decode,
the resize and the padding that reach it, and the mapping of the model's coordinates back to the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageStat
from pydantic import BaseModel, ConfigDict

from ..errors import ImageAspectRatio, ImageTooSmall
from ..tokens import PixelBudget, smart_resize
from .limits import PreparationLimits
from .steps import PreparationStep

# A region of an image as (left, upper, right, lower), in pixels that may be fractional.
Box = tuple[float, float, float, float]

# A big downscale first reduces by an integer factor with a box filter, then finishes with
# Lanczos from at least 3x the target: indistinguishable from a full Lanczos, several times faster.
_REDUCING_GAP = 3.0

# libjpeg can decode at 1/2, 1/4 or 1/8 scale; no other format we accept has a lossless draft.
# (pi_heif's (pillow_heif's) draft swaps in an embedded thumbnail, which is more compressed: not for OCR.)
_DRAFTABLE_FORMATS = frozenset({"JPEG", "MPO"})


class CoordinateMapping(BaseModel):
    """Maps coordinates in the prepared image back to the upright original.

    "Original" means the source image after its EXIF orientation is applied, i.e. as a
    person sees it, in its pixels; for a rendered page it is the page as displayed (after its
    /Rotate, within its crop box), in PDF points, so scales are pixels per point and the
    original sizes are fractional. Padding only ever extends the right or bottom edge, so no offset is
    needed; `scale_x`/`scale_y` are those of the image content (prepared/original). When the
    image was padded, `prepared_width / original_width` is larger than `scale_x`, and points
    inside the padding map to beyond the original edge.

    An image cut out of a prepared image (a half of a page read again, see truncation.py) keeps the
    scales of the whole and says where its top-left corner lies in the whole: `offset_x`/`offset_y`,
    in the whole's prepared pixels.
    """

    model_config = ConfigDict(frozen=True)

    # int for images, float (points) for rendered pages; the union keeps an int an int in JSON.
    original_width: int | float
    original_height: int | float
    prepared_width: int
    prepared_height: int
    scale_x: float
    scale_y: float
    offset_x: int = 0
    offset_y: int = 0

    def to_original_point(self, x: float, y: float) -> tuple[float, float]:
        return (x + self.offset_x) / self.scale_x, (y + self.offset_y) / self.scale_y

    def to_original_polygon(self, points: Sequence[float]) -> list[float]:
        """Map a flat [x1, y1, x2, y2, ...] list (the vendor's `location` has 8 numbers)."""
        if len(points) % 2:
            raise ValueError(f"a polygon needs an even number of coordinates, got {len(points)}")
        out: list[float] = []
        for i in range(0, len(points), 2):
            out.extend(self.to_original_point(points[i], points[i + 1]))
        return out

    def to_original_rotate_rect(self, rect: Sequence[float]) -> list[float]:
        """Map the vendor's `rotate_rect` [cx, cy, width, height, angle in degrees].

        The centre maps exactly. Under a non-uniform scale a rotated rectangle becomes a
        parallelogram, which this shape cannot express; we approximate it by the rectangle
        whose width and height are the mapped lengths of its two axes, and whose angle is that
        of the mapped width axis. Our prepared images keep the aspect ratio up to the rounding
        to whole patches, so scale_x and scale_y differ by a percent or two at most and the
        approximation error is of that order. The formulas hold whichever way the angle turns,
        and keep it within [-90, 90].
        """
        if len(rect) != 5:
            raise ValueError(f"a rotate_rect has 5 numbers [cx, cy, w, h, angle], got {len(rect)}")
        cx, cy, width, height, angle = rect
        ox, oy = self.to_original_point(cx, cy)
        theta = math.radians(angle)
        cos, sin = math.cos(theta), math.sin(theta)
        width_axis = (cos / self.scale_x, sin / self.scale_y)
        height_axis = (-sin / self.scale_x, cos / self.scale_y)
        return [
            ox,
            oy,
            width * math.hypot(*width_axis),
            height * math.hypot(*height_axis),
            math.degrees(math.atan2(width_axis[1], width_axis[0])),
        ]


def content_mapping(
    original: tuple[float, float], content: tuple[int, int], prepared: tuple[int, int]
) -> CoordinateMapping:
    """The mapping of an image whose `original` (upright) extent was drawn or resized to `content`
    pixels, then padded to `prepared`: the scales are those of the content, not of the padding."""
    original_width, original_height = original
    return CoordinateMapping(
        original_width=original_width,
        original_height=original_height,
        prepared_width=prepared[0],
        prepared_height=prepared[1],
        scale_x=content[0] / original_width,
        scale_y=content[1] / original_height,
    )


@dataclass(frozen=True)
class Plan:
    """Sizes as (width, height), in the orientation the decoder delivers until `transposed()`."""

    source: tuple[int, int]
    # What the decoded image is resized to; the padding then extends it to `canvas`.
    content: tuple[int, int]
    canvas: tuple[int, int]

    def transposed(self) -> Plan:
        return Plan(
            source=(self.source[1], self.source[0]),
            content=(self.content[1], self.content[0]),
            canvas=(self.canvas[1], self.canvas[0]),
        )


def plan_geometry(width: int, height: int, budget: PixelBudget, limits: PreparationLimits) -> Plan:
    """Decide the output size from the header alone, so impossible images cost no decoding.

    Precedence: an empty image is too small; then the aspect ratio, because nothing we do
    can fix a strip that padding cannot bring within the limit; then a side under the
    vendor's minimum (`min_side`, both sides > 10 px): such an image holds nothing worth
    reading, and upscaling it would only bill the tokens of an invented picture. A 1x5000
    strip is therefore an aspect-ratio error, a 5x5 image a too-small one. Images at or
    above `min_side` but under `min_pixels` are upscaled by smart_resize as the vendor
    would; the result is checked against `min_side` again for custom budgets.

    Padding goes on the short side and must make both the padded source and the
    smart_resize of it fit the ratio: rounding to whole patches can push a 200:1 image
    (80x16000 becomes 64x16000) past the limit, and the vendor checks what we send.
    The search is over whole pixels of padding and ends at the first size that fits.
    """
    if width < 1 or height < 1:
        raise ImageTooSmall(f"the image is {width}x{height}: it has no pixels", width=width, height=height)
    effective = _effective_budget(budget, limits)
    short, long = min(width, height), max(width, height)
    width_is_short = width <= height
    first = max(short, math.ceil(long / limits.max_aspect_ratio))
    last = math.floor(short * limits.max_pad_factor)
    for padded_short in range(first, last + 1):
        padded = (padded_short, long) if width_is_short else (long, padded_short)
        target_height, target_width = smart_resize(padded[1], padded[0], effective)
        if max(target_width, target_height) / min(target_width, target_height) <= limits.max_aspect_ratio:
            break
    else:
        raise ImageAspectRatio(
            f"the aspect ratio {long / short:.0f}:1 is over {limits.max_aspect_ratio:g}:1 and padding the short "
            f"side by up to {limits.max_pad_factor:g}x does not fix it",
            width=width,
            height=height,
            limit=limits.max_aspect_ratio,
        )
    if short < limits.min_side:
        raise ImageTooSmall(
            f"the image is {width}x{height}; both sides must be at least {limits.min_side} px",
            width=width,
            height=height,
        )
    if min(target_width, target_height) < limits.min_side:
        raise ImageTooSmall(
            f"the image would be {target_width}x{target_height}; both sides must be at least {limits.min_side} px",
            width=width,
            height=height,
        )
    if padded_short == short:
        content = (target_width, target_height)
    else:
        # The long side fills the canvas; the short side keeps the content's share of it.
        target_short = target_width if width_is_short else target_height
        content_short = max(1, round(target_short * short / padded_short))
        content = (content_short, target_height) if width_is_short else (target_width, content_short)
    return Plan(source=(width, height), content=content, canvas=(target_width, target_height))


def _effective_budget(budget: PixelBudget, limits: PreparationLimits) -> PixelBudget:
    if budget.max_pixels <= limits.max_output_pixels:
        return budget
    return budget.model_copy(update={"max_pixels": limits.max_output_pixels})


@dataclass(frozen=True)
class RenderTarget:
    """The size to draw a page at (`content`), and the canvas `prepare_rendered` pads it to.

    Both are (width, height) and equal unless the page is a strip beyond the aspect-ratio
    limit; `canvas` is its own smart_resize, so the model does not resize what we send.
    """

    content: tuple[int, int]
    canvas: tuple[int, int]
    # The budget bound that resized the page ("max_pixels" or "min_pixels", with its value in
    # pixels after `limits.max_output_pixels`), or None when the page is drawn at the size asked.
    bound: str | None = None
    bound_pixels: int | None = None


def render_target(width: float, height: float, budget: PixelBudget, limits: PreparationLimits) -> RenderTarget:
    """Where to draw a page that measures `width` x `height` pixels at the resolution chosen for it.

    The budget (capped at `limits.max_output_pixels`) caps it and sets its floor, as smart_resize
    does for an image. The geometry is that of a decoded image of that size, with the same errors
    for pages too small or too elongated.
    """
    if not (math.isfinite(width) and math.isfinite(height)):
        raise ImageTooSmall(f"the page measures {width}x{height} pixels", width=width, height=height)
    plan = plan_geometry(round(width), round(height), budget, limits)
    # smart_resize's own test of which branch it takes: the page in whole patches against the bounds.
    effective = _effective_budget(budget, limits)
    patch = effective.patch
    in_patches = round(round(width) / patch) * patch * round(round(height) / patch) * patch
    if in_patches > effective.max_pixels:
        return RenderTarget(plan.content, plan.canvas, bound="max_pixels", bound_pixels=effective.max_pixels)
    if in_patches < effective.min_pixels:
        return RenderTarget(plan.content, plan.canvas, bound="min_pixels", bound_pixels=effective.min_pixels)
    return RenderTarget(content=plan.content, canvas=plan.canvas)


def draft(image: ImageFile.ImageFile, content: tuple[int, int], steps: list[PreparationStep]) -> Box | None:
    """Let libjpeg decode big JPEGs at 1/2, 1/4 or 1/8 scale, never below the target size.

    Returns the box of the original extent in the reduced image (its last row and column may
    be partial), which the resize must use so the coordinate mapping stays exact.
    """
    if image.format not in _DRAFTABLE_FORMATS:
        return None
    before = image.size
    result = image.draft(None, content)
    if result is None or image.size == before:
        return None
    steps.append(
        PreparationStep(
            action="draft",
            detail=f"decoded the JPEG at reduced scale: {before[0]}x{before[1]} -> {image.width}x{image.height}",
        )
    )
    return result[1]


def resize(
    image: Image.Image,
    size: tuple[int, int],
    box: Box | None,
    steps: list[PreparationStep],
) -> Image.Image:
    if image.size == size and box is None:
        return image
    shrinking = size[0] < image.width or size[1] < image.height
    if shrinking:
        resized = image.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP)
    else:
        # Bicubic rings less than Lanczos around text edges when magnifying.
        resized = image.resize(size, Image.Resampling.BICUBIC, box=box)
    steps.append(
        PreparationStep(
            action="resize",
            detail=f"{image.width}x{image.height} -> {size[0]}x{size[1]} ({'Lanczos' if shrinking else 'bicubic'})",
        )
    )
    return resized


def pad(
    image: Image.Image, canvas: tuple[int, int], background: int | None, steps: list[PreparationStep]
) -> Image.Image:
    """Extend to the canvas at the right or bottom, so coordinates need no offset."""
    if image.size == canvas:
        return image
    pad_right = canvas[0] > image.width
    color = background if background is not None else _edge_color(image, right=pad_right)
    padded = Image.new(image.mode, canvas, color)
    padded.paste(image, (0, 0))
    side = "right" if pad_right else "bottom"
    steps.append(
        PreparationStep(
            action="pad",
            detail=f"{image.width}x{image.height} -> {canvas[0]}x{canvas[1]} at the {side} with {color} "
            "to bring the aspect ratio within the limit",
        )
    )
    return padded


def _edge_color(image: Image.Image, *, right: bool) -> int | tuple[int, ...]:
    # An opaque image is padded with the median of the edge it extends, so the padding reads
    # as more of the page margin rather than as a new edge the model might transcribe.
    w, h = image.size
    strip = image.crop((w - 1, 0, w, h) if right else (0, h - 1, w, h))
    median = [int(v) for v in ImageStat.Stat(strip).median]
    return median[0] if len(median) == 1 else tuple(median)
