"""The finished image as the bytes the vendor accepts: PNG, or JPEG when PNG does not fit the data URL limit."""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Literal

from isal import isal_zlib
from PIL import Image

from ..errors import ImageEncodedTooLarge
from .limits import PreparationLimits
from .steps import PreparationStep

MimeType = Literal["image/png", "image/jpeg"]

# Color images keep Pillow's per-row filter choice, which pays off on photos, but not its zlib:
# Pillow writes the filtered rows stored (level 0) and ISA-L deflates them: well under half the time
# of Pillow's level 3 for a slightly bigger file (BENCHMARKS.md, page preparation). Should that be too
# big for the data URL, Pillow's level 3 gets its turn.
PNG_COMPRESS_LEVEL = 3
# Grey images (text pages, scans: most of what we send) are written unfiltered, which is what
# Pillow's per-row filter choice picks for nearly every row of them anyway, and deflated by ISA-L
# (isal), whose level 1 is several times faster than zlib at any level and no bigger, for text
# pages and noisy scans alike (BENCHMARKS.md, page preparation). Smooth grey photographs grow
# unfiltered, and one too big unfiltered still gets the filtered PNG (below) before any JPEG.
PNG_DEFLATE_LEVEL = 1
JPEG_FALLBACK_QUALITIES = (90, 85, 75, 60)


def encode(image: Image.Image, limits: PreparationLimits, steps: list[PreparationStep]) -> tuple[bytes, MimeType]:
    """PNG (lossless, as the vendor recommends), then JPEG at falling qualities if too large.

    A grey image is first written unfiltered (fast, and as small for documents). Then, for any
    image, the PNG with Pillow's row filters and ISA-L's deflate, then Pillow's own level 3, a
    little smaller and slower, before any JPEG. The output is always PNG or JPEG, so the vendor's
    rule that only those two are accepted between 4K and 8K holds whatever size smart_resize picks;
    its pixel count is already capped at max_output_pixels (15.68 MP).
    """
    # Metadata from the source (EXIF with GPS, ICC profiles no longer true after conversion,
    # a transparent color) would be written back by Pillow's encoders; the model needs none of it.
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


def base64_length(size: int) -> int:
    return 4 * math.ceil(size / 3)


def _data_url_length(size: int, mime_type: str) -> int:
    return len(f"data:{mime_type};base64,") + base64_length(size)
