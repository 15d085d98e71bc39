"""The entry points: an image (or one frame of it) prepared from untrusted bytes, a page a renderer
drew finished the same way, and the header read on its own.

Every image ends the same way, whichever way it came in: `_finish` flattens, pads, stores grey as
L and encodes it, and `_prepared_image` is the one place a `PreparedImage` and its mapping are made.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ..tokens import PixelBudget
from .decoding import (
    ImageInput,
    ImageSource,
    check_input_size,
    check_pixels,
    open_image,
    select_frame,
    sniff_format,
    untrusted_pixels,
)
from .encoding import MimeType, base64_length, encode
from .geometry import CoordinateMapping, RenderTarget, content_mapping, draft, pad, plan_geometry, resize
from .limits import DEFAULT_LIMITS, PreparationLimits
from .modes import flatten_alpha, is_grey, normalize_mode
from .orientation import (
    ORIENTATIONS_SWAPPING_AXES,
    header_orientation,
    note_decoder_rotation,
    read_orientation,
    tiff_orientation,
    turn_upright,
)
from .steps import PreparationStep
from .tiff import frame_alone


class PreparedImage(BaseModel):
    model_config = ConfigDict(frozen=True)

    data: bytes = Field(repr=False)
    mime_type: MimeType
    width: int
    height: int
    source_format: str
    mapping: CoordinateMapping
    steps: list[PreparationStep]
    # What the decoder reported while decoding an image it still decoded (libtiff's "Bad code word"
    # errors, Pillow's warnings): its pixels may be partly missing, and the result must say so.
    decoder_warnings: list[str] = Field(default_factory=list)

    @property
    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def base64_length(self) -> int:
        """Length of the base64 payload alone, without the `data:...;base64,` prefix."""
        return base64_length(len(self.data))


class ImageInfo(BaseModel):
    """What the header says, before any decoding.

    `width`/`height` are as the decoder reports them: as stored, before the EXIF orientation, except
    for TIFF, which Pillow reports upright. Token counts do not depend on it, since smart_resize is
    symmetric in height and width; what a person sees is `upright_size`.
    """

    model_config = ConfigDict(frozen=True)

    format: str
    width: int
    height: int
    frame_count: int
    mode: str
    # The EXIF orientation the header carries (1 when none, or when it sits after the pixel data).
    orientation: int = 1

    @property
    def upright_size(self) -> tuple[int, int]:
        if self.orientation in ORIENTATIONS_SWAPPING_AXES:
            return self.height, self.width
        return self.width, self.height


def probe_image(source: ImageSource, limits: PreparationLimits = DEFAULT_LIMITS) -> ImageInfo:
    """Read the header only. Raises the same errors as `prepare_image` for what a header can tell.

    Counting the frames of a multi-page TIFF or GIF walks their headers, not their pixel data.
    """
    data = ImageInput(source)
    check_input_size(data.size, limits)
    source_format = sniff_format(data.head())
    with untrusted_pixels(source_format, data), open_image(data, source_format) as image:
        check_pixels(image.size, limits)
        return ImageInfo(
            format=image.format or source_format,
            width=image.width,
            height=image.height,
            # n_frames walks the frame headers (GIF, TIFF) without decoding pixel data.
            frame_count=getattr(image, "n_frames", 1),
            mode=image.mode,
            orientation=header_orientation(image),
        )


def prepare_image(
    source: ImageSource,
    budget: PixelBudget,
    limits: PreparationLimits = DEFAULT_LIMITS,
    *,
    frame: int = 0,
) -> PreparedImage:
    """Prepare one image (one frame of a multi-frame TIFF/GIF/WEBP, the first by default).

    The result is exactly `smart_resize` of the (padded) upright image, so the model's own
    resize is a no-op and the coordinates it returns are in our prepared image.

    A failure of a file source itself (a storage error fetching a range) is raised as the file
    raised it, never disguised as an unreadable image, so a caller can tell a retry from a bad file.
    """
    data = ImageInput(source)
    check_input_size(data.size, limits)
    source_format = sniff_format(data.head())
    steps: list[PreparationStep] = []
    with untrusted_pixels(source_format, data) as decoder_messages, open_image(data, source_format) as opened:
        # Checked before a seek as well, because seeking in a GIF decodes the earlier frames.
        check_pixels(opened.size, limits)
        select_frame(opened, frame, steps)
        check_pixels(opened.size, limits)
        plan = plan_geometry(opened.width, opened.height, budget, limits)

        with frame_alone(opened, data) as source_image:
            box = draft(source_image, plan.content, steps)
            # Read before load(), which drops the tag once the decoder has applied it.
            tiff_tag = tiff_orientation(source_image)
            source_image.load()
            orientation = read_orientation(source_image, steps)
            note_decoder_rotation(orientation, tiff_tag, steps)
            reported_format = source_image.format or source_format

            # From here on each step replaces `image` and closes the one before, so no more than
            # the decode, one conversion of it and the image being made are alive at any time.
            image: Image.Image = source_image
            image = _replace(image, normalize_mode(image, steps))
            image = _replace(image, resize(image, plan.content, box, steps))
            image = _replace(image, turn_upright(image, orientation, steps))
            plan = plan.transposed() if orientation in ORIENTATIONS_SWAPPING_AXES else plan
            encoded = _finish(image, plan.canvas, limits, steps)

    # Made only now: the decoder's messages are collected when `untrusted_pixels` ends.
    return _prepared_image(
        encoded,
        source_format=reported_format,
        original_size=plan.source,
        content=plan.content,
        steps=steps,
        decoder_warnings=decoder_messages,
    )


def prepare_rendered(
    image: Image.Image,
    target: RenderTarget,
    limits: PreparationLimits = DEFAULT_LIMITS,
    *,
    source_format: str,
    original_size: tuple[float, float],
    steps: Sequence[PreparationStep] = (),
) -> PreparedImage:
    """Finish a page a renderer drew at `target.content`: the tail of `prepare_image`.

    The pixel mode is normalized (RGBX, a renderer's native layout, is read as it is), any
    transparency flattened, the page padded to `target.canvas` if it is a strip, stored as L if
    every pixel is grey, and encoded like any image. `original_size` is the page in its source's
    units (PDF points), which the mapping's scales convert from. `steps` are what the caller did
    before (the render) and come first in the result. The image is consumed: it is closed here.
    """
    if image.size != target.content:
        raise ValueError(f"the image is {image.width}x{image.height}, not the target's {target.content}")
    original_width, original_height = original_size
    if not (original_width > 0 and original_height > 0 and math.isfinite(original_width * original_height)):
        raise ValueError(f"the original size must be positive and finite, got {original_size}")
    recorded = list(steps)
    if image.mode != "RGBX":
        image = _replace(image, normalize_mode(image, recorded))
    encoded = _finish(image, target.canvas, limits, recorded)
    return _prepared_image(
        encoded,
        source_format=source_format,
        original_size=original_size,
        content=target.content,
        steps=recorded,
    )


@dataclass(frozen=True)
class _Encoded:
    data: bytes
    mime_type: MimeType
    # (width, height) as sent, padding included.
    size: tuple[int, int]


def _finish(
    image: Image.Image, canvas: tuple[int, int], limits: PreparationLimits, steps: list[PreparationStep]
) -> _Encoded:
    """Flatten, pad, store grey as L, encode, close: how every image ends, decoded or rendered."""
    background: int | None = None
    if image.mode in ("LA", "RGBA"):
        flattened, background = flatten_alpha(image, steps)
        image = _replace(image, flattened)
    image = _replace(image, pad(image, canvas, background, steps))
    if image.mode in ("RGB", "RGBX"):
        if is_grey(image):
            image = _replace(image, image.convert("L"))
            steps.append(PreparationStep(action="convert_mode", detail="RGB -> L: every pixel is grey"))
        elif image.mode == "RGBX":
            image = _replace(image, image.convert("RGB"))
    data, mime_type = encode(image, limits, steps)
    size = image.size
    image.close()
    return _Encoded(data=data, mime_type=mime_type, size=size)


def _prepared_image(
    encoded: _Encoded,
    *,
    source_format: str,
    original_size: tuple[float, float],
    content: tuple[int, int],
    steps: list[PreparationStep],
    decoder_warnings: Sequence[str] = (),
) -> PreparedImage:
    """`original_size` is the upright source in its own units; `content` what it was drawn or resized to."""
    width, height = encoded.size
    return PreparedImage(
        data=encoded.data,
        mime_type=encoded.mime_type,
        width=width,
        height=height,
        source_format=source_format,
        mapping=content_mapping(original_size, content, encoded.size),
        steps=steps,
        decoder_warnings=list(decoder_warnings),
    )


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """Close `old` as soon as `new` supersedes it, to keep memory to a couple of full-size copies."""
    if new is not old:
        old.close()
    return new
