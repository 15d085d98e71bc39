"""Turn untrusted image bytes into exactly what Qwen-OCR accepts, and map its coordinates back.

Pure domain code: bytes or a seekable binary file in, a `PreparedImage` out. A file is read
only as far as the decoder asks, so one frame of a big multi-page TIFF behind a ranged
storage reader costs about what the frame costs. The order of the work matters:

1. refuse what we can from the length and the header alone (size, format, pixel count,
   aspect ratio), so hostile input costs no decoding;
2. decode, big JPEGs at a reduced DCT scale that is still at least the target size;
3. bring every pixel mode to L, LA, RGB or RGBA;
4. resize in the stored orientation, then apply the EXIF orientation, so the rotation
   touches the small image rather than the full decode;
5. flatten transparency, pad extreme strips, and encode as PNG (JPEG only as a size fallback).

Every step taken is recorded as a `PreparationStep`, so a user can see why the model got
the image it got. Pages a renderer draws (PDF) skip steps 2 to 4: `prepare_rendered` does
the rest for an image already drawn at `render_target`'s size.

The modules, each importing only those listed before it:

- `steps`, `limits`: what every step records, and what is refused;
- `orientation`: the EXIF orientation table, read from the header and applied;
- `modes`: pixel modes and transparency;
- `geometry`: the smart_resize plan, resizing and padding to it, and the coordinate mapping;
- `decoding`: early refusal, reading the caller's file, decoder failures and messages;
- `tiff`: one frame of a multi-page TIFF copied out on its own;
- `encoding`: PNG, with JPEG as the size fallback;
- `preparation`: the entry points and `PreparedImage`;
- `cropping`: a band of rows of a prepared image, at its scale, as an image of its own.
"""

from .cropping import crop_rows
from .decoding import MAX_DECODER_MESSAGES, ImageSource
from .encoding import JPEG_FALLBACK_QUALITIES, PNG_COMPRESS_LEVEL, PNG_DEFLATE_LEVEL, MimeType
from .geometry import CoordinateMapping, RenderTarget, render_target
from .limits import (
    DEFAULT_LIMITS,
    DEFAULT_PDF_RENDER_DPI,
    MAX_RENDER_DPI,
    PDF_RENDER_TO_BUDGET,
    PreparationLimits,
)
from .modes import is_grey
from .preparation import ImageInfo, PreparedImage, prepare_image, prepare_rendered, probe_image
from .steps import PreparationStep

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_PDF_RENDER_DPI",
    "JPEG_FALLBACK_QUALITIES",
    "MAX_DECODER_MESSAGES",
    "MAX_RENDER_DPI",
    "PDF_RENDER_TO_BUDGET",
    "PNG_COMPRESS_LEVEL",
    "PNG_DEFLATE_LEVEL",
    "CoordinateMapping",
    "ImageInfo",
    "ImageSource",
    "MimeType",
    "PreparationLimits",
    "PreparationStep",
    "PreparedImage",
    "RenderTarget",
    "crop_rows",
    "is_grey",
    "prepare_image",
    "prepare_rendered",
    "probe_image",
    "render_target",
]
