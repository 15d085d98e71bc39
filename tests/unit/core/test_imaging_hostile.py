"""imaging on hostile input: truncated, corrupt, mislabelled, oversized and bomb images.

The contract under test: for any bytes, prepare_image and probe_image either succeed or
raise an ImageError subclass with a stable code, and bombs are refused before any pixel
memory is allocated. Every input is generated here.
"""

from __future__ import annotations

import random
import struct
import tracemalloc
import warnings
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocr_pipeline.errors import ImageError, ImageTooManyPixels, ImageUnreadable, ImageUnsupportedFormat, InputTooLarge
from ocr_pipeline.imaging import PreparationLimits, prepare_image, probe_image
from ocr_pipeline.tokens import PixelBudget
from PIL import ExifTags, Image, ImageFile

from tests.support.images import encode, encode_heic

BUDGET = PixelBudget()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR is rewritten to announce another size, with a valid CRC."""
    png = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def gif_claiming(width: int, height: int) -> bytes:
    """A real 1x1 GIF whose logical screen is rewritten (16-bit fields, so at most 65535)."""
    gif = bytearray(encode(Image.new("L", (1, 1)), "GIF"))
    gif[6:10] = struct.pack("<HH", width, height)
    return bytes(gif)


def bmp_claiming(width: int, height: int) -> bytes:
    bmp = bytearray(encode(Image.new("RGB", (1, 1)), "BMP"))
    bmp[18:26] = struct.pack("<ii", width, height)
    return bytes(bmp)


# --- broken and foreign data ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"])
def test_a_file_cut_in_half_is_unreadable(fmt: str) -> None:
    # Given a noisy 200x200 image whose second half is missing
    whole = encode(noise(200, 200).convert("P") if fmt == "GIF" else noise(200, 200), fmt)
    truncated = whole[: len(whole) // 2]

    # When it is prepared, Then it is unreadable, not silently half-decoded
    with pytest.raises(ImageUnreadable) as caught:
        prepare_image(truncated, BUDGET)
    assert caught.value.code == "image.unreadable"
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_a_file_with_a_valid_signature_but_a_broken_header_is_unreadable() -> None:
    # Given the first 20 bytes of a PNG: the signature and half an IHDR
    data = encode(Image.new("L", (64, 64)), "PNG")[:20]

    # When it is prepared, Then it is a broken PNG, not an unknown format
    with pytest.raises(ImageUnreadable) as caught:
        prepare_image(data, BUDGET)
    assert "PNG" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"Hello, this is certainly not an image.\n" * 3,
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
        b"",
        # An AVIF: the HEIF container, but not a format the vendor lists.
        b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
        # Formats Pillow reads but we do not accept.
        b"P5\n4 4\n255\n" + bytes(16),
    ],
    ids=["text", "pdf", "empty", "avif", "pgm"],
)
def test_data_that_is_not_an_accepted_format_is_unsupported(data: bytes) -> None:
    # Given bytes that are no format we accept, When prepared and probed, Then both say so
    with pytest.raises(ImageUnsupportedFormat) as caught:
        prepare_image(data, BUDGET)
    assert caught.value.code == "image.unsupported_format"
    with pytest.raises(ImageUnsupportedFormat):
        probe_image(data)


def test_an_input_over_the_byte_limit_is_refused_before_anything_else() -> None:
    # Given 2000 bytes of garbage and a 1000-byte limit
    data = b"x" * 2000

    # When it is prepared, Then the size is the reason, before the format is even looked at
    with pytest.raises(InputTooLarge) as caught:
        prepare_image(data, BUDGET, PreparationLimits(max_input_bytes=1000))
    assert caught.value.code == "input.too_large"
    assert caught.value.details == {"size": 2000, "limit": 1000}


# --- decompression bombs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [png_claiming(100_000, 100_000), gif_claiming(65535, 65535), bmp_claiming(100_000, 100_000)],
    ids=["png-100000x100000", "gif-65535x65535", "bmp-100000x100000"],
)
def test_a_decompression_bomb_is_refused_without_allocating(data: bytes) -> None:
    # Given a file of a few dozen bytes whose header announces billions of pixels
    assert len(data) < 200
    Image.core.reset_stats()
    tracemalloc.start()
    tracemalloc.reset_peak()

    # When it is prepared
    try:
        with pytest.raises(ImageTooManyPixels) as caught:
            prepare_image(data, BUDGET)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then it is refused with a stable code, Python allocated almost nothing, and Pillow
    # created no image memory at all (its C allocations are invisible to tracemalloc)
    assert caught.value.code == "image.too_many_pixels"
    assert peak < 2 * 1024 * 1024
    assert Image.core.get_stats()["new_count"] == 0


def test_a_header_over_our_limit_but_under_pillows_is_refused_by_our_check_even_with_warnings_as_errors() -> None:
    # Given a PNG announcing 12000x9000 = 108 MP: over our 100 MP, where Pillow only warns
    data = png_claiming(12_000, 9_000)
    Image.core.reset_stats()

    # When it is prepared in a process that turns warnings into errors
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooManyPixels) as caught:
            prepare_image(data, BUDGET)

    # Then our own check refused it (Pillow's DecompressionBombWarning did not escape) from the header
    assert "12000x9000" in caught.value.message
    assert caught.value.details["limit"] == 100_000_000
    assert Image.core.get_stats()["new_count"] == 0


def test_the_pixel_limit_is_configurable_and_also_applies_to_probing() -> None:
    # Given an honest 100x100 PNG and a 5000-pixel limit
    data = encode(Image.new("L", (100, 100)), "PNG")
    limits = PreparationLimits(max_decoded_pixels=5000)

    # When it is prepared or probed, Then both refuse it
    with pytest.raises(ImageTooManyPixels):
        prepare_image(data, BUDGET, limits)
    with pytest.raises(ImageTooManyPixels):
        probe_image(data, limits)


def test_probe_refuses_a_bomb_from_the_header() -> None:
    with pytest.raises(ImageTooManyPixels):
        probe_image(png_claiming(100_000, 100_000))


# --- fuzzing ----------------------------------------------------------------------------


def _samples() -> list[bytes]:
    """Small valid files in every accepted format, with the features decoders branch on."""
    picture = noise(48, 40, seed=1)
    frames = [noise(48, 40, seed=2).convert("P"), noise(48, 40, seed=3).convert("P")]
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((48, 40)))
    samples = [
        encode(picture, "PNG"),
        encode(rgba, "PNG", exif=exif),
        encode(Image.new("I;16", (48, 40), 30000), "PNG"),
        encode(picture, "JPEG", quality=80, exif=exif),
        encode(picture, "JPEG", quality=80, progressive=True),
        encode(Image.new("CMYK", (48, 40), (10, 200, 30, 5)), "JPEG"),
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=0),
        encode(picture, "TIFF", save_all=True, append_images=[noise(30, 20, seed=4)]),
        encode(rgba, "TIFF"),
        encode(picture, "TIFF", compression="tiff_deflate"),
        encode(picture, "BMP"),
        encode(frames[0], "BMP"),
        encode(picture, "WEBP", quality=70),
        encode(rgba, "WEBP", lossless=True),
        encode_heic(picture, quality=50),
    ]
    return samples


SAMPLES = _samples()
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP"]
# A small decode limit keeps mutated headers from making the fuzzer allocate large images.
FUZZ_LIMITS = PreparationLimits(max_decoded_pixels=1_000_000)
FUZZ_BUDGET = PixelBudget(max_pixels=32 * 32 * 64)


@st.composite
def mutated_sample(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    # Half the edits land in the first 64 bytes, where the headers that decoders trust live.
    position = st.one_of(st.integers(0, min(63, len(data) - 1)), st.integers(0, len(data) - 1))
    for index, value in draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=8)):
        data[index] = value
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


hostile_bytes = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGICS), st.binary(max_size=512)),
    mutated_sample(),
)


@pytest.mark.filterwarnings("error")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile_bytes)
def test_any_bytes_either_prepare_or_raise_an_image_error(data: bytes) -> None:
    # Given arbitrary, prefixed or mutated image bytes, in a process where warnings are errors
    # When they are probed and prepared, Then nothing but an ImageError escapes
    for attempt in (lambda: probe_image(data, FUZZ_LIMITS), lambda: prepare_image(data, FUZZ_BUDGET, FUZZ_LIMITS)):
        try:
            attempt()
        except ImageError as exc:
            assert exc.code.startswith(("image.", "input."))
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
