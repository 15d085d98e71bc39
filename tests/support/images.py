"""Encoding test images and decoding what preparation produced."""

from __future__ import annotations

import io

from ocr_pipeline.imaging import PreparedImage
from PIL import Image, ImageDraw


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def encode_heic(image: Image.Image, **options: object) -> bytes:
    """A HEIC written by pillow_heif, whose opener stays unregistered: reading is the layer's own (pi_heif)."""
    import pillow_heif

    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, format="HEIF", **options)
    return buffer.getvalue()


def decode(prepared: PreparedImage) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    image.load()
    return image


def multipage_tiff(pages: int) -> bytes:
    """A TIFF whose frame N reads "page N"."""
    frames = []
    for number in range(1, pages + 1):
        frame = Image.new("L", (320, 200), 255)
        ImageDraw.Draw(frame).text((20, 80), f"page {number}", fill=0)
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()
