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
"""

from __future__ import annotations

import base64
import io
import math
import os
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import BinaryIO, Literal, TypeVar, cast

from isal import isal_zlib
from PIL import ExifTags, Image, ImageChops, ImageFile, ImageStat, TiffImagePlugin, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from .errors import (
    ImageAspectRatio,
    ImageEncodedTooLarge,
    ImageError,
    ImageTooManyPixels,
    ImageTooSmall,
    ImageUnreadable,
    ImageUnsupportedFormat,
    InputTooLarge,
    InvalidRequest,
    OcrPipelineError,
)
from .tokens import PixelBudget, smart_resize

MimeType = Literal["image/png", "image/jpeg"]
# A seekable binary file (BytesIO, an open file, a ranged storage reader): read(n) must return
# n bytes unless the file ends first, as buffered files do. It is read from offset 0 to its end.
ImageSource = bytes | BinaryIO
_Box = tuple[float, float, float, float]
_T = TypeVar("_T")

# Colour images keep Pillow's per-row filter choice, which pays off on photos, but not its zlib:
# Pillow writes the filtered rows stored (level 0) and ISA-L deflates them. On an 8.3 MP phone
# photo: 275 ms for 7.0 MB, against 648 ms for 6.3 MB at Pillow's level 3 (its default 6 takes
# 2.5x as long again). Should that be too big for the data URL, Pillow's level 3 gets its turn.
PNG_COMPRESS_LEVEL = 3
# Grey images (text pages, scans: most of what we send) are written unfiltered, which is what
# Pillow's per-row filter choice picks for nearly every row of them anyway, and deflated by ISA-L
# (isal), whose level 1 is several times faster than zlib at any level and no bigger. On this
# machine, 8.3 MP: a text page drawn from a PDF in 5 ms (493 KB) against zlib level 2's 30 ms
# (502 KB) and Pillow's filtered 88 ms; a noisy grey scan in 37 ms (5.5 MB) against zlib's 188 ms
# (5.8 MB). Smooth grey photographs grow unfiltered (+50 %), and one too big unfiltered still
# gets the filtered PNG (below) before any JPEG.
PNG_DEFLATE_LEVEL = 1
JPEG_FALLBACK_QUALITIES = (90, 85, 75, 60)

# A big downscale first reduces by an integer factor with a box filter, then finishes with
# Lanczos from at least 3x the target: indistinguishable from a full Lanczos, several times faster.
_REDUCING_GAP = 3.0

# libjpeg can decode at 1/2, 1/4 or 1/8 scale; no other format we accept has a lossless draft.
# (pi_heif's (pillow_heif's) draft swaps in an embedded thumbnail, which is more compressed: not for OCR.)
_DRAFTABLE_FORMATS = frozenset({"JPEG", "MPO"})

_LIGHT_CONTENT_THRESHOLD = 127.5
_DARK_BACKGROUND = 0
_LIGHT_BACKGROUND = 255

# The same table as ImageOps.exif_transpose, which we do not call: it copies the full image
# even when there is nothing to do, and we rotate after downscaling anyway.
_ORIENTATIONS: dict[int, tuple[Image.Transpose, str]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT, "mirrored left-right"),
    3: (Image.Transpose.ROTATE_180, "rotated 180°"),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, "mirrored top-bottom"),
    5: (Image.Transpose.TRANSPOSE, "transposed"),
    6: (Image.Transpose.ROTATE_270, "rotated 90° clockwise"),
    7: (Image.Transpose.TRANSVERSE, "transversed"),
    8: (Image.Transpose.ROTATE_90, "rotated 90° counter-clockwise"),
}
_ORIENTATIONS_SWAPPING_AXES = frozenset({5, 6, 7, 8})

# Major brands of HEIF/HEIC files, as pi_heif's (pillow_heif's) own opener accepts them. AVIF ("avif",
# "avis") shares the container but is not a format the vendor lists, so it is not here.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# --- public models ----------------------------------------------------------------


class PreparationStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    # One of: select_frame, draft, convert_mode, exif_ignored, resize, exif_transpose,
    # flatten_alpha, pad, reencode; for rendered pages also render and forms_ignored.
    action: str
    detail: str


class CoordinateMapping(BaseModel):
    """Maps coordinates in the prepared image back to the upright original.

    "Original" means the source image after its EXIF orientation is applied, i.e. as a
    person sees it, in its pixels; for a rendered page it is the page as displayed (after its
    /Rotate, within its crop box), in PDF points, so scales are pixels per point and the
    original sizes are fractional. Padding only ever extends the right or bottom edge, so no offset is
    needed; `scale_x`/`scale_y` are those of the image content (prepared/original). When the
    image was padded, `prepared_width / original_width` is larger than `scale_x`, and points
    inside the padding map to beyond the original edge.
    """

    model_config = ConfigDict(frozen=True)

    # int for images, float (points) for rendered pages; the union keeps an int an int in JSON.
    original_width: int | float
    original_height: int | float
    prepared_width: int
    prepared_height: int
    scale_x: float
    scale_y: float

    def to_original_point(self, x: float, y: float) -> tuple[float, float]:
        return x / self.scale_x, y / self.scale_y

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
        return _base64_length(len(self.data))


class PreparationLimits(BaseModel):
    """What we refuse, and how far we go to make an image acceptable."""

    model_config = ConfigDict(frozen=True)

    max_input_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    # Checked against the header before anything is decoded. Pillow's own hard limit
    # (2 x Image.MAX_IMAGE_PIXELS, about 179 MP) still applies above this.
    max_decoded_pixels: int = Field(default=100_000_000, gt=0)
    # The vendor limits the base64 string to 10 MB; we count the whole data URL against it.
    max_encoded_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_output_pixels: int = Field(default=15_680_000, gt=0)
    max_aspect_ratio: float = Field(default=200.0, ge=1.0)
    # The vendor wants both sides > 10 px.
    min_side: int = Field(default=11, ge=1)
    # Padding may at most multiply the short side by this; the bound keeps the search short.
    max_pad_factor: float = Field(default=2.0, ge=1.0, le=16.0)


DEFAULT_LIMITS = PreparationLimits()


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
        if self.orientation in _ORIENTATIONS_SWAPPING_AXES:
            return self.height, self.width
        return self.width, self.height


# --- public functions -------------------------------------------------------------


def probe_image(source: ImageSource, limits: PreparationLimits = DEFAULT_LIMITS) -> ImageInfo:
    """Read the header only. Raises the same errors as `prepare_image` for what a header can tell.

    Counting the frames of a multi-page TIFF or GIF walks their headers, not their pixel data.
    """
    data = _Input(source)
    _check_input_size(data.size, limits)
    source_format = _sniff_format(data.head())
    with _untrusted_pixels(source_format, data), _open(data, source_format) as image:
        _check_pixels(image.size, limits)
        return ImageInfo(
            format=image.format or source_format,
            width=image.width,
            height=image.height,
            # n_frames walks the frame headers (GIF, TIFF) without decoding pixel data.
            frame_count=getattr(image, "n_frames", 1),
            mode=image.mode,
            orientation=_header_orientation(image),
        )


def _header_orientation(image: Image.Image) -> int:
    if image.format == "TIFF":
        return 1  # Pillow reports a TIFF upright already
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in _ORIENTATIONS else 1


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
    data = _Input(source)
    _check_input_size(data.size, limits)
    source_format = _sniff_format(data.head())
    steps: list[PreparationStep] = []
    with _untrusted_pixels(source_format, data) as decoder_messages, _open(data, source_format) as opened:
        # Checked before a seek as well, because seeking in a GIF decodes the earlier frames.
        _check_pixels(opened.size, limits)
        _select_frame(opened, frame, steps)
        _check_pixels(opened.size, limits)
        plan = _plan_geometry(opened.width, opened.height, budget, limits)

        with _frame_alone(opened, data) as source_image:
            box = _draft(source_image, plan.content, steps)
            tiff_orientation = _tiff_orientation(source_image)
            source_image.load()
            orientation = _read_orientation(source_image, steps)
            if orientation == 1 and tiff_orientation in _ORIENTATIONS:
                # Pillow's TIFF reader reports the upright size and rotates while loading, then drops
                # the tag; the plan above was already made on the upright size, so only say so.
                description = _ORIENTATIONS[tiff_orientation][1]
                steps.append(
                    PreparationStep(
                        action="exif_transpose",
                        detail=f"TIFF orientation {tiff_orientation}: {description} by the decoder",
                    )
                )
            reported_format = source_image.format or source_format

            # From here on each step replaces `image` and closes the one before, so no more than
            # the decode, one conversion of it and the image being made are alive at any time.
            image: Image.Image = source_image
            image = _replace(image, _normalise_mode(image, steps))
            image = _replace(image, _resize(image, plan.content, box, steps))
            if orientation in _ORIENTATIONS:
                method, description = _ORIENTATIONS[orientation]
                image = _replace(image, image.transpose(method))
                steps.append(
                    PreparationStep(action="exif_transpose", detail=f"EXIF orientation {orientation}: {description}")
                )
            plan = plan.transposed() if orientation in _ORIENTATIONS_SWAPPING_AXES else plan
            encoded, mime_type, (width, height) = _finish(image, plan.canvas, limits, steps)

    upright_width, upright_height = plan.source
    return PreparedImage(
        data=encoded,
        mime_type=mime_type,
        width=width,
        height=height,
        source_format=reported_format,
        mapping=CoordinateMapping(
            original_width=upright_width,
            original_height=upright_height,
            prepared_width=width,
            prepared_height=height,
            scale_x=plan.content[0] / upright_width,
            scale_y=plan.content[1] / upright_height,
        ),
        steps=steps,
        decoder_warnings=decoder_messages,
    )


@dataclass(frozen=True)
class RenderTarget:
    """The size to draw a page at (`content`), and the canvas `prepare_rendered` pads it to.

    Both are (width, height) and equal unless the page is a strip beyond the aspect-ratio
    limit; `canvas` is its own smart_resize, so the model does not resize what we send.
    """

    content: tuple[int, int]
    canvas: tuple[int, int]


def render_target(width: float, height: float, budget: PixelBudget, limits: PreparationLimits) -> RenderTarget:
    """Where to draw a page that measures `width` x `height` pixels at the finest resolution worth drawing.

    The budget (capped at `limits.max_output_pixels`) usually binds before that resolution does.
    The geometry is that of a decoded image of that size, with the same errors for pages too
    small or too elongated.
    """
    if not (math.isfinite(width) and math.isfinite(height)):
        raise ImageTooSmall(f"the page measures {width}x{height} pixels", width=width, height=height)
    plan = _plan_geometry(round(width), round(height), budget, limits)
    return RenderTarget(content=plan.content, canvas=plan.canvas)


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

    The pixel mode is normalised (RGBX, a renderer's native layout, is read as it is), any
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
        image = _replace(image, _normalise_mode(image, recorded))
    encoded, mime_type, (width, height) = _finish(image, target.canvas, limits, recorded)
    return PreparedImage(
        data=encoded,
        mime_type=mime_type,
        width=width,
        height=height,
        source_format=source_format,
        mapping=CoordinateMapping(
            original_width=original_width,
            original_height=original_height,
            prepared_width=width,
            prepared_height=height,
            scale_x=target.content[0] / original_width,
            scale_y=target.content[1] / original_height,
        ),
        steps=recorded,
    )


# --- refusing early -----------------------------------------------------------------


class _StreamReader(io.RawIOBase):
    """A caller's binary file, read through so that a failure of the file itself stays recognisable.

    Decoders catch I/O errors and raise their own (Pillow's TIFF reader even turns one into a
    warning and a shorter tag list), and `_untrusted_pixels` turns whatever they raise into
    ImageUnreadable. A storage error fetching a range is no property of the image, so the first
    exception the file raises is kept here, to be raised as it was.
    """

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self.failure: Exception | None = None
        self.size: int = self._call(stream.seek, 0, io.SEEK_END)
        self._call(stream.seek, 0)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._call(self._stream.seek, offset, whence)

    def tell(self) -> int:
        return self._call(self._stream.tell)

    def read(self, size: int | None = -1) -> bytes:
        return self._call(self._stream.read, -1 if size is None else size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        chunk = self.read(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)

    def read_at(self, offset: int, size: int) -> bytes:
        self.seek(offset)
        return self.read(size)

    def _call(self, method: Callable[..., _T], *args: object) -> _T:
        try:
            return method(*args)
        except (ValueError, TypeError, OverflowError):
            # A decoder asked for the impossible (a seek to a garbage offset): the data's fault.
            raise
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
            raise


class _Input:
    """The caller's bytes, or their file read through a `_StreamReader`."""

    def __init__(self, source: ImageSource) -> None:
        self.stream: _StreamReader | None
        if isinstance(source, bytes | bytearray):
            self.file: BinaryIO = io.BytesIO(source)
            self.size = len(source)
            self.stream = None
        else:
            self.stream = _StreamReader(source)
            self.file = cast(BinaryIO, self.stream)
            self.size = self.stream.size

    @property
    def failure(self) -> Exception | None:
        return self.stream.failure if self.stream is not None else None

    def head(self, size: int = 16) -> bytes:
        self.file.seek(0)
        return self.file.read(size)


def _check_input_size(size: int, limits: PreparationLimits) -> None:
    if size > limits.max_input_bytes:
        raise InputTooLarge(
            f"input is {size} bytes, more than the {limits.max_input_bytes} we accept",
            size=size,
            limit=limits.max_input_bytes,
        )


def _sniff_format(head: bytes) -> str:
    """Name the format from its magic bytes, before Pillow sees anything.

    Knowing the format up front lets Pillow try only that one decoder, and separates "not a
    format we accept" (unsupported) from "claims to be PNG but is broken" (unreadable).
    """
    head = head[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(_TIFF_MAGIC):
        return "TIFF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF"
    raise ImageUnsupportedFormat(
        "not an image format we accept (BMP, JPEG, PNG, TIFF, WEBP, GIF, HEIF/HEIC)",
        magic=head[:12].hex(),
    )


def _open(data: _Input, source_format: str) -> ImageFile.ImageFile:
    if source_format == "HEIF":
        _register_heif_opener()
    return Image.open(data.file, formats=[source_format])


@cache
def _register_heif_opener() -> None:
    # Imported here so the layer does not load libheif for the common formats. pi_heif is
    # pillow_heif's decoding-only build: the same reader, without 23 MB of encoders in the layer.
    try:
        import pi_heif
    except ImportError as exc:
        raise ImageUnsupportedFormat("HEIF/HEIC support (pi-heif) is not installed") from exc
    pi_heif.register_heif_opener()


def _check_pixels(size: tuple[int, int], limits: PreparationLimits) -> None:
    pixels = size[0] * size[1]
    if pixels > limits.max_decoded_pixels:
        raise ImageTooManyPixels(
            f"the header announces {size[0]}x{size[1]} = {pixels} pixels, more than the "
            f"{limits.max_decoded_pixels} we decode",
            width=size[0],
            height=size[1],
            limit=limits.max_decoded_pixels,
        )


@contextmanager
def _untrusted_pixels(source_format: str, data: _Input) -> Iterator[list[str]]:
    """Turn whatever decoding hostile bytes raises into one of our typed errors, and what decoders say
    into data: the block gets a list that holds, once it ends, every warning and error message the
    decoders reported (Python warnings, and what libtiff writes to stderr), none of it printed.

    Decoders fed crafted data raise OSError, SyntaxError, ValueError, struct.error, EOFError,
    IndexError, RuntimeError (libheif), MemoryError and more, from the header parse, the
    pixel decode, or later steps working on the decoded values. The caller must only ever
    see an ImageError (or an InvalidRequest for a bad frame index), so everything else
    becomes ImageUnreadable with its type kept in the details and in the exception chain.
    The one exception is a failure of the caller's file itself, raised as the file raised it.
    """
    messages: list[str] = []
    try:
        with _decoder_messages(messages):
            yield messages
    except Exception as exc:
        if data.failure is not None and data.failure is not exc:
            # The file failed and a decoder raised an error of its own about it.
            raise data.failure from None
        if isinstance(exc, OcrPipelineError) or exc is data.failure:
            raise
        raise _decoding_error(exc, source_format, messages) from exc
    if data.failure is not None:
        # A decoder swallowed the file's failure and carried on with what it had read.
        raise data.failure


# Decoder messages kept per image: a crafted file can make libtiff write thousands of lines.
MAX_DECODER_MESSAGES = 10
_MAX_CAPTURED_BYTES = 64 * 1024
# fd 2 and the warnings filters belong to the whole process: one capture at a time.
_CAPTURE_LOCK = threading.Lock()


@contextmanager
def _decoder_messages(messages: list[str]) -> Iterator[None]:
    """Collect what decoders report while the block runs, instead of letting it reach stderr.

    libtiff writes its errors ("Fax4Decode: Bad code word at line 68") with fprintf to stderr, below
    Python, so fd 2 itself is pointed at a scratch file for the block's duration; Pillow's own
    warnings are recorded by `warnings.catch_warnings`. Anything else the process writes to fd 2
    meanwhile (another thread) lands in the same list: Lambda runs one invocation per process, and
    the page worker's other threads log to stdout.
    """
    with _CAPTURE_LOCK, _scratch_file() as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Our own pixel limit is the one that applies; Pillow warns from about 89 MP.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            written = sink.read(_MAX_CAPTURED_BYTES).decode("utf-8", "replace")
            lines = [str(w.message) for w in caught] + written.splitlines()
            messages.extend(_distinct(lines))


def _scratch_file() -> BinaryIO:
    if hasattr(os, "memfd_create"):
        # In memory, no /tmp write: a Linux file descriptor that vanishes when closed.
        return os.fdopen(os.memfd_create("decoder-messages"), "w+b")
    return tempfile.TemporaryFile()


def _distinct(lines: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for line in lines:
        line = " ".join(line.split())
        if line:
            seen.setdefault(line, None)
    distinct = list(seen)
    if len(distinct) > MAX_DECODER_MESSAGES:
        more = len(distinct) - MAX_DECODER_MESSAGES
        distinct = [*distinct[:MAX_DECODER_MESSAGES], f"… and {more} more decoder message(s)"]
    return distinct


def _decoding_error(exc: Exception, source_format: str, messages: Sequence[str] = ()) -> ImageError:
    error = _decoding_error_of(exc, source_format)
    if messages:
        # One line for the user, with what the decoder said first; the rest in the details.
        error.message = f"{error.message} (decoder: {messages[0]})"
        error.details["decoder_messages"] = list(messages)
    return error


def _decoding_error_of(exc: Exception, source_format: str) -> ImageError:
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return ImageTooManyPixels(f"Pillow refused the image as a decompression bomb: {exc}")
    if isinstance(exc, UnidentifiedImageError):
        # The magic bytes matched, so this is a broken file of a format we accept.
        return ImageUnreadable(
            f"the data starts like {source_format} but its header cannot be parsed",
            format=source_format,
            cause=type(exc).__name__,
        )
    if isinstance(exc, MemoryError):
        return ImageTooManyPixels(f"not enough memory to decode this {source_format} image")
    return ImageUnreadable(
        f"cannot decode this {source_format} image: {exc}",
        format=source_format,
        cause=type(exc).__name__,
    )


def _select_frame(image: ImageFile.ImageFile, frame: int, steps: list[PreparationStep]) -> None:
    if frame < 0:
        raise InvalidRequest(f"frame must be >= 0, got {frame}", frame=frame)
    if frame > 0:
        try:
            image.seek(frame)
        except EOFError as exc:
            raise InvalidRequest(f"the image has no frame {frame}", frame=frame) from exc
        # Pages are counted from 1 everywhere a user reads them; the index is Pillow's, from 0.
        steps.append(
            PreparationStep(action="select_frame", detail=f"page {frame + 1} (frame index {frame}) of a {image.format}")
        )
    elif getattr(image, "is_animated", False):
        steps.append(PreparationStep(action="select_frame", detail=f"first frame of a multi-frame {image.format}"))


# --- one TIFF frame out of a file -----------------------------------------------------


@dataclass(frozen=True)
class _TiffLayout:
    """Classic TIFF or BigTIFF, in either byte order: the sizes its directories are written in."""

    endian: str
    big: bool

    @property
    def pointer(self) -> str:
        return "Q" if self.big else "L"

    @property
    def field_size(self) -> int:
        # The value field of a directory entry, which holds a value that fits or else its offset.
        return 8 if self.big else 4

    @property
    def entry_head(self) -> str:
        return "HHQ" if self.big else "HHL"

    @property
    def entry_count(self) -> str:
        return "Q" if self.big else "H"

    def pack(self, fmt: str, *values: int) -> bytes:
        return struct.pack(self.endian + fmt, *values)

    def unpack(self, fmt: str, data: bytes) -> tuple[int, ...]:
        return struct.unpack(self.endian + fmt, data)

    def size(self, fmt: str) -> int:
        return struct.calcsize(self.endian + fmt)

    def header(self) -> bytes:
        order = b"II" if self.endian == "<" else b"MM"
        if self.big:
            return order + self.pack("HHHQ", 43, 8, 0, 16)
        return order + self.pack("HL", 42, 8)


@dataclass(frozen=True)
class _TiffEntry:
    tag: int
    type: int
    count: int
    # The value's bytes in the file's byte order, read from wherever the file kept them.
    value: bytes


# Bytes per value of each field type: BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE, UNDEFINED, SSHORT,
# SLONG, SRATIONAL, FLOAT, DOUBLE, IFD, LONG8, SLONG8, IFD8.
_TIFF_TYPE_SIZES = {
    1: 1,
    2: 1,
    3: 2,
    4: 4,
    5: 8,
    6: 1,
    7: 1,
    8: 2,
    9: 4,
    10: 8,
    11: 4,
    12: 8,
    13: 4,
    16: 8,
    17: 8,
    18: 8,
}
# The types a strip or tile offset or byte count may have: SHORT, LONG, LONG8.
_TIFF_INTEGER_FORMATS = {3: "H", 4: "L", 16: "Q"}
_TIFF_LONG, _TIFF_LONG8 = 4, 16
_TIFF_IFD_TYPES = frozenset({13, 18})
_TIFF_COMPRESSION, _TIFF_UNCOMPRESSED, _TIFF_OLD_JPEG = 259, 1, 6
_TIFF_STRIPS = (273, 279)  # StripOffsets, StripByteCounts
_TIFF_TILES = (324, 325)  # TileOffsets, TileByteCounts
# Pointers to what the frame's pixels do not need: sub-images, the EXIF, GPS and interoperability
# directories, free space. The copy leaves them out rather than point them at nothing.
_TIFF_POINTERS_LEFT_OUT = frozenset({288, 289, 330, 34665, 34853, 40965})
# Far more tags than any writer uses; a directory claiming more is left to Pillow's own limits.
_TIFF_MAX_ENTRIES = 4096


def _frame_alone(image: ImageFile.ImageFile, data: _Input) -> ImageFile.ImageFile:
    """The frame to decode: the selected frame of `image`, copied out on its own when that saves reading.

    Pillow hands a compressed TIFF frame to libtiff together with the *whole* file (a `read()` of
    all of it from a file), whichever frame it is. From a file source we instead copy the frame's
    directory and its strips or tiles into a one-frame TIFF, which libtiff decodes to the same
    pixels. Anything unusual (uncompressed or old-style JPEG data, missing byte counts, data
    beyond the end of the file) leaves the frame to Pillow as it is, and so does a bytes source,
    which is in memory already.
    """
    if data.stream is None or not isinstance(image, TiffImagePlugin.TiffImageFile):
        return image
    alone = _tiff_frame_bytes(image, data.stream)
    if alone is None:
        return image
    isolated = Image.open(io.BytesIO(alone), formats=["TIFF"])
    if isolated.size != image.size or isolated.mode != image.mode:
        # Not the frame Pillow described: trust Pillow.
        isolated.close()
        return image
    return isolated


def _tiff_frame_bytes(image: TiffImagePlugin.TiffImageFile, reader: _StreamReader) -> bytes | None:
    """A one-frame TIFF holding the current frame of `image`, or None to leave the frame to Pillow."""
    if image.tag_v2.get(_TIFF_COMPRESSION, _TIFF_UNCOMPRESSED) in (_TIFF_UNCOMPRESSED, _TIFF_OLD_JPEG):
        # Pillow reads uncompressed strips itself, only this frame's; old-style JPEG keeps its
        # data behind offsets of its own.
        return None
    header = reader.read_at(0, 4)
    layout = _TiffLayout(endian="<" if header[:2] == b"II" else ">", big=header[2:4] in (b"+\x00", b"\x00+"))
    entries = _read_tiff_directory(reader, image.tag_v2.offset, layout)
    if entries is None:
        return None
    by_tag = {entry.tag: entry for entry in entries}
    offsets_tag, counts_tag = _TIFF_TILES if _TIFF_TILES[0] in by_tag else _TIFF_STRIPS
    if offsets_tag not in by_tag or counts_tag not in by_tag:
        return None
    offsets = _tiff_integers(by_tag[offsets_tag], layout)
    counts = _tiff_integers(by_tag[counts_tag], layout)
    if offsets is None or counts is None or len(offsets) != len(counts) or sum(counts) > reader.size:
        return None
    chunks: list[bytes] = []
    for offset, count in zip(offsets, counts, strict=True):
        chunk = reader.read_at(offset, count)
        if len(chunk) != count:
            # Truncated: libtiff, reading the file itself, says so in its own words.
            return None
        chunks.append(chunk)
    return _write_tiff_frame(entries, offsets_tag, chunks, layout)


def _read_tiff_directory(reader: _StreamReader, offset: int, layout: _TiffLayout) -> list[_TiffEntry] | None:
    """The entries of the directory at `offset`, values read wherever they are, first of each tag only."""
    count_size = layout.size(layout.entry_count)
    head_size = layout.size(layout.entry_head)
    entry_size = head_size + layout.field_size
    raw_count = reader.read_at(offset, count_size)
    if len(raw_count) != count_size:
        return None
    (count,) = layout.unpack(layout.entry_count, raw_count)
    if count > _TIFF_MAX_ENTRIES:
        return None
    table = reader.read_at(offset + count_size, count * entry_size)
    if len(table) != count * entry_size:
        return None
    entries: list[_TiffEntry] = []
    seen: set[int] = set()
    # Values stored out of line may not add up to more than the file: no amplification by overlap.
    remaining = reader.size
    for start in range(0, len(table), entry_size):
        tag, field_type, value_count = layout.unpack(layout.entry_head, table[start : start + head_size])
        field = table[start + head_size : start + entry_size]
        unit = _TIFF_TYPE_SIZES.get(field_type)
        if tag in seen or tag in _TIFF_POINTERS_LEFT_OUT or field_type in _TIFF_IFD_TYPES or unit is None:
            continue
        seen.add(tag)
        size = unit * value_count
        if size <= layout.field_size:
            value = field[:size]
        else:
            remaining -= size
            if remaining < 0:
                return None
            (where,) = layout.unpack(layout.pointer, field)
            value = reader.read_at(where, size)
            if len(value) != size:
                return None
        entries.append(_TiffEntry(tag=tag, type=field_type, count=value_count, value=value))
    return entries


def _tiff_integers(entry: _TiffEntry, layout: _TiffLayout) -> tuple[int, ...] | None:
    fmt = _TIFF_INTEGER_FORMATS.get(entry.type)
    if fmt is None or len(entry.value) != entry.count * layout.size(fmt):
        return None
    return layout.unpack(f"{entry.count}{fmt}", entry.value)


def _write_tiff_frame(
    entries: list[_TiffEntry], offsets_tag: int, chunks: list[bytes], layout: _TiffLayout
) -> bytes | None:
    """Header, one directory, the values that do not fit in it, then the strips or tiles."""
    offset_type = _TIFF_LONG8 if layout.big else _TIFF_LONG
    offset_format = layout.pointer
    directory = sorted(entries, key=lambda entry: entry.tag)
    header = layout.header()
    position = (
        len(header)
        + layout.size(layout.entry_count)
        + len(directory) * (layout.size(layout.entry_head) + layout.field_size)
        + layout.size(layout.pointer)
    )
    # Lay out the out-of-line values (each on a word boundary, as the specification asks), then the data.
    placed: list[tuple[_TiffEntry, int | None]] = []
    for entry in directory:
        size = len(chunks) * layout.size(offset_format) if entry.tag == offsets_tag else len(entry.value)
        if size <= layout.field_size:
            placed.append((entry, None))
        else:
            position += position % 2
            placed.append((entry, position))
            position += size
    position += position % 2
    chunk_offsets = []
    for chunk in chunks:
        chunk_offsets.append(position)
        position += len(chunk)
    if not layout.big and position >= 2**32:
        return None
    offsets_value = layout.pack(f"{len(chunks)}{offset_format}", *chunk_offsets)

    parts = [header, layout.pack(layout.entry_count, len(placed))]
    for entry, where in placed:
        is_offsets = entry.tag == offsets_tag
        value = offsets_value if is_offsets else entry.value
        field = layout.pack(layout.pointer, where) if where is not None else value.ljust(layout.field_size, b"\x00")
        parts.append(layout.pack(layout.entry_head, entry.tag, offset_type if is_offsets else entry.type, entry.count))
        parts.append(field)
    parts.append(layout.pack(layout.pointer, 0))  # no next directory
    written = sum(map(len, parts))
    for entry, where in placed:
        if where is not None:
            parts.append(bytes(where - written))
            parts.append(offsets_value if entry.tag == offsets_tag else entry.value)
            written = where + len(parts[-1])
    if chunks:
        parts.append(bytes(chunk_offsets[0] - written))
    parts.extend(chunks)
    return b"".join(parts)


# --- geometry ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Sizes as (width, height), in the orientation the decoder delivers until `transposed()`."""

    source: tuple[int, int]
    # What the decoded image is resized to; the padding then extends it to `canvas`.
    content: tuple[int, int]
    canvas: tuple[int, int]

    def transposed(self) -> _Plan:
        return _Plan(
            source=(self.source[1], self.source[0]),
            content=(self.content[1], self.content[0]),
            canvas=(self.canvas[1], self.canvas[0]),
        )


def _plan_geometry(width: int, height: int, budget: PixelBudget, limits: PreparationLimits) -> _Plan:
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
    return _Plan(source=(width, height), content=content, canvas=(target_width, target_height))


def _effective_budget(budget: PixelBudget, limits: PreparationLimits) -> PixelBudget:
    if budget.max_pixels <= limits.max_output_pixels:
        return budget
    return budget.model_copy(update={"max_pixels": limits.max_output_pixels})


def _draft(image: ImageFile.ImageFile, content: tuple[int, int], steps: list[PreparationStep]) -> _Box | None:
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


def _tiff_orientation(image: Image.Image) -> object:
    tags = getattr(image, "tag_v2", None)
    return tags.get(ExifTags.Base.Orientation) if tags is not None else None


def _read_orientation(image: Image.Image, steps: list[PreparationStep]) -> int:
    # Called after load(): PNG keeps its eXIf chunk after the pixel data.
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:
        # The pixels are already decoded; broken metadata should not cost the user the page.
        steps.append(PreparationStep(action="exif_ignored", detail=f"unreadable EXIF ({type(exc).__name__})"))
        return 1
    return value if isinstance(value, int) and value in _ORIENTATIONS else 1


def _resize(
    image: Image.Image,
    size: tuple[int, int],
    box: _Box | None,
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


def _pad(
    image: Image.Image, canvas: tuple[int, int], background: int | None, steps: list[PreparationStep]
) -> Image.Image:
    """Extend to the canvas at the right or bottom, so coordinates need no offset."""
    if image.size == canvas:
        return image
    pad_right = canvas[0] > image.width
    colour = background if background is not None else _edge_colour(image, right=pad_right)
    padded = Image.new(image.mode, canvas, colour)
    padded.paste(image, (0, 0))
    side = "right" if pad_right else "bottom"
    steps.append(
        PreparationStep(
            action="pad",
            detail=f"{image.width}x{image.height} -> {canvas[0]}x{canvas[1]} at the {side} with {colour} "
            "to bring the aspect ratio within the limit",
        )
    )
    return padded


def _edge_colour(image: Image.Image, *, right: bool) -> int | tuple[int, ...]:
    # An opaque image is padded with the median of the edge it extends, so the padding reads
    # as more of the page margin rather than as a new edge the model might transcribe.
    w, h = image.size
    strip = image.crop((w - 1, 0, w, h) if right else (0, h - 1, w, h))
    median = [int(v) for v in ImageStat.Stat(strip).median]
    return median[0] if len(median) == 1 else tuple(median)


# --- pixel modes and transparency -----------------------------------------------------


def _normalise_mode(image: Image.Image, steps: list[PreparationStep]) -> Image.Image:
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
        return (image.convert(mode + "A"), "transparent colour") if transparent else (image, None)
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
    parses, gives the colours the author saw, else Pillow's plain formula is the fallback."""
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


def _flatten_alpha(image: Image.Image, steps: list[PreparationStep]) -> tuple[Image.Image, int]:
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
        tone, colour = ("light", "black") if light else ("dark", "white")
        detail = f"{tone} content (alpha-weighted mean luminance {mean_luminance:.0f}) flattened onto {colour}"
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


# --- finishing and encoding -----------------------------------------------------------


def _finish(
    image: Image.Image, canvas: tuple[int, int], limits: PreparationLimits, steps: list[PreparationStep]
) -> tuple[bytes, MimeType, tuple[int, int]]:
    """Flatten, pad, store grey as L, encode, close: how every image ends, decoded or rendered."""
    background: int | None = None
    if image.mode in ("LA", "RGBA"):
        flattened, background = _flatten_alpha(image, steps)
        image = _replace(image, flattened)
    image = _replace(image, _pad(image, canvas, background, steps))
    if image.mode in ("RGB", "RGBX"):
        if is_grey(image):
            image = _replace(image, image.convert("L"))
            steps.append(PreparationStep(action="convert_mode", detail="RGB -> L: every pixel is grey"))
        elif image.mode == "RGBX":
            image = _replace(image, image.convert("RGB"))
    encoded, mime_type = _encode(image, limits, steps)
    size = image.size
    image.close()
    return encoded, mime_type, size


def _encode(image: Image.Image, limits: PreparationLimits, steps: list[PreparationStep]) -> tuple[bytes, MimeType]:
    """PNG (lossless, as the vendor recommends), then JPEG at falling qualities if too large.

    A grey image is first written unfiltered (fast, and as small for documents). Then, for any
    image, the PNG with Pillow's row filters and ISA-L's deflate, then Pillow's own level 3, a
    little smaller and slower, before any JPEG. The output is always PNG or JPEG, so the vendor's
    rule that only those two are accepted between 4K and 8K holds whatever size smart_resize picks;
    its pixel count is already capped at max_output_pixels (15.68 MP).
    """
    # Metadata from the source (EXIF with GPS, ICC profiles no longer true after conversion,
    # a transparent colour) would be written back by Pillow's encoders; the model needs none of it.
    image.info = {}
    pngs: list[tuple[str, str, Callable[[], bytes]]] = []
    if image.mode == "L":
        pngs.append(
            (
                f"PNG, unfiltered, ISA-L deflate level {PNG_DEFLATE_LEVEL}",
                "unfiltered PNG",
                lambda: _png_unfiltered(image),
            )
        )
    pngs.append(
        (
            f"PNG, filtered, ISA-L deflate level {PNG_DEFLATE_LEVEL}",
            "filtered PNG",
            lambda: _png_filtered(image),
        )
    )
    pngs.append(
        (
            f"PNG, compress_level {PNG_COMPRESS_LEVEL}",
            "PNG",
            lambda: _save(image, "PNG", compress_level=PNG_COMPRESS_LEVEL),
        )
    )
    lengths: list[int] = []
    for label, name, make in pngs:
        png = make()
        length = _data_url_length(len(png), "image/png")
        if length <= limits.max_encoded_bytes:
            steps.append(PreparationStep(action="reencode", detail=f"{label}, {len(png)} bytes"))
            return png, "image/png"
        lengths.append(length)
        steps.append(
            PreparationStep(
                action="reencode",
                detail=f"{name} of {len(png)} bytes is a {length}-character data URL, over {limits.max_encoded_bytes}",
            )
        )
    for quality in JPEG_FALLBACK_QUALITIES:
        jpeg = _save(image, "JPEG", quality=quality)
        length = _data_url_length(len(jpeg), "image/jpeg")
        lengths.append(length)
        if length <= limits.max_encoded_bytes:
            steps.append(PreparationStep(action="reencode", detail=f"JPEG quality {quality}, {len(jpeg)} bytes"))
            return jpeg, "image/jpeg"
        steps.append(
            PreparationStep(
                action="reencode",
                detail=f"JPEG quality {quality} is a {length}-character data URL, over {limits.max_encoded_bytes}",
            )
        )
    smallest = min(lengths)
    raise ImageEncodedTooLarge(
        f"even JPEG quality {JPEG_FALLBACK_QUALITIES[-1]} gives a {smallest}-character data URL, "
        f"over the {limits.max_encoded_bytes} limit",
        smallest=smallest,
        limit=limits.max_encoded_bytes,
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_unfiltered(image: Image.Image) -> bytes:
    """An 8-bit greyscale PNG whose rows all use filter type 0 (None)."""
    width, height = image.size
    # Pillow's raw encoder zero-fills each row up to the stride. Read as one stream, that zero
    # is the next row's filter type; one more zero in front gives exactly PNG's scanlines.
    rows = image.tobytes("raw", "L", width + 1)
    compressor = isal_zlib.compressobj(PNG_DEFLATE_LEVEL)
    idat = compressor.compress(b"\x00") + compressor.compress(memoryview(rows)[:-1]) + compressor.flush()
    # 8-bit greyscale, deflate, adaptive filtering (the only method), no interlace.
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"".join((_PNG_SIGNATURE, _png_chunk(b"IHDR", header), _png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")))


def _png_filtered(image: Image.Image) -> bytes:
    """Pillow's PNG, filtered row by row as Pillow chooses, with its image data deflated by ISA-L."""
    stored = _save(image, "PNG", compress_level=0)
    # Views, not copies: the stored PNG is 3-4 bytes a pixel.
    chunks = list(_png_chunks(memoryview(stored)))
    inflater = zlib.decompressobj()
    # Level 0 is deflate's stored blocks: inflating them is a copy.
    rows = b"".join(inflater.decompress(body) for kind, body in chunks if kind == b"IDAT")
    idat = isal_zlib.compress(rows, PNG_DEFLATE_LEVEL)
    del rows
    parts = [_PNG_SIGNATURE]
    idat_written = False
    for kind, body in chunks:
        if kind != b"IDAT":
            parts.append(_png_chunk(kind, bytes(body)))
        elif not idat_written:  # the first of Pillow's IDAT chunks takes the place of them all
            parts.append(_png_chunk(b"IDAT", idat))
            idat_written = True
    return b"".join(parts)


def _png_chunks(png: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    position = len(_PNG_SIGNATURE)
    while position < len(png):
        (length,) = struct.unpack_from(">I", png, position)
        yield bytes(png[position + 4 : position + 8]), png[position + 8 : position + 8 + length]
        position += 12 + length


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _save(image: Image.Image, format: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def _base64_length(size: int) -> int:
    return 4 * math.ceil(size / 3)


def _data_url_length(size: int, mime_type: str) -> int:
    return len(f"data:{mime_type};base64,") + _base64_length(size)


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """Close `old` as soon as `new` supersedes it, to keep memory to a couple of full-size copies."""
    if new is not old:
        old.close()
    return new
