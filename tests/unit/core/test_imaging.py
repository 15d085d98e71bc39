"""imaging.prepare_image on well-formed input: formats, orientation, modes, transparency, geometry, encoding.

Every image is generated here with Pillow; nothing binary is checked in.
"""

from __future__ import annotations

import base64
import math
import random
import subprocess
import sys

import pytest
from ocr_pipeline.errors import (
    ImageAspectRatio,
    ImageEncodedTooLarge,
    ImageTooSmall,
    InvalidRequest,
)
from ocr_pipeline.imaging import (
    CoordinateMapping,
    PreparationLimits,
    PreparedImage,
    prepare_image,
    probe_image,
)
from ocr_pipeline.tokens import PixelBudget, smart_resize
from PIL import ExifTags, Image, ImageCms, ImageDraw

from tests.support.images import decode, encode, encode_heic

BUDGET = PixelBudget()
RED = (255, 0, 0)
WHITE = (255, 255, 255)


# --- helpers ------------------------------------------------------------------------


def rgb_at(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return image.convert("RGB").getpixel((x, y))  # type: ignore[return-value]


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def actions(prepared: PreparedImage) -> list[str]:
    return [step.action for step in prepared.steps]


def page_with_red_corner(width: int = 640, height: int = 480, mode: str = "RGB") -> Image.Image:
    """White page with a red 60x60 block in the stored top-left corner."""
    image = Image.new(mode, (width, height), WHITE)
    ImageDraw.Draw(image).rectangle((0, 0, 59, 59), fill=RED)
    return image


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def dark_box_centre(image: Image.Image) -> tuple[float, float]:
    """Centre of the bounding box of the dark pixels."""
    dark = image.convert("L").point(lambda v: 255 if v < 128 else 0)
    box = dark.getbbox()
    assert box is not None, "no dark pixels found"
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


# --- formats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("BMP", {}),
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("TIFF", {}),
        ("WEBP", {"lossless": True}),
        ("GIF", {}),
    ],
)
def test_each_accepted_format_becomes_a_png_of_the_smart_resize_size(fmt: str, options: dict[str, object]) -> None:
    # Given a 640x470 page with a red corner, in each format we accept
    data = encode(page_with_red_corner(640, 470), fmt, **options)

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then it is a PNG of exactly smart_resize's size, and the red corner survived
    assert prepared.source_format == fmt
    assert prepared.mime_type == "image/png"
    assert (prepared.height, prepared.width) == smart_resize(470, 640, BUDGET) == (480, 640)
    image = decode(prepared)
    assert image.format == "PNG"
    assert image.size == (640, 480)
    assert close_to(rgb_at(image, 20, 20), RED)
    assert close_to(rgb_at(image, 600, 400), WHITE)
    assert actions(prepared)[-1] == "reencode"


def test_a_multi_frame_tiff_gives_its_first_frame() -> None:
    # Given a three-page TIFF whose pages are red, green and blue
    pages = [Image.new("RGB", (320, 256), color) for color in (RED, (0, 255, 0), (0, 0, 255))]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the first page is used, and the choice is recorded
    assert rgb_at(decode(prepared), 10, 10) == RED
    assert "select_frame" in actions(prepared)


def test_an_animated_gif_gives_its_first_frame() -> None:
    # Given an animated GIF whose frames are red, then blue
    frames = [Image.new("RGB", (320, 256), RED), Image.new("RGB", (320, 256), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the first frame is used
    assert close_to(rgb_at(decode(prepared), 10, 10), RED, tolerance=10)
    assert "select_frame" in actions(prepared)


def test_a_later_frame_can_be_chosen_and_a_missing_one_is_a_request_error() -> None:
    # Given a three-page TIFF
    pages = [Image.new("RGB", (320, 256), color) for color in (RED, (0, 255, 0), (0, 0, 255))]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])

    # When the second page is asked for, Then it is the green one
    assert rgb_at(decode(prepare_image(data, BUDGET, frame=1)), 10, 10) == (0, 255, 0)
    # When a fourth page is asked for, Then the caller is told the request is wrong
    with pytest.raises(InvalidRequest):
        prepare_image(data, BUDGET, frame=3)


def test_heic_is_decoded_through_pi_heif() -> None:
    # Given a HEIC written by pillow_heif
    pytest.importorskip("pillow_heif")
    try:
        data = encode_heic(page_with_red_corner(640, 480), quality=90)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        pytest.skip(f"this libheif cannot encode HEIF: {exc}")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then it is read as HEIF and keeps its content
    assert prepared.source_format == "HEIF"
    assert (prepared.width, prepared.height) == (640, 480)
    assert close_to(rgb_at(decode(prepared), 20, 20), RED)


def test_probe_reads_the_header_without_decoding() -> None:
    # Given a three-frame GIF
    frames = [Image.new("RGB", (300, 200), color) for color in (RED, (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    Image.core.reset_stats()

    # When it is probed
    info = probe_image(data)

    # Then the header facts are reported and no image memory was allocated
    assert (info.format, info.width, info.height, info.frame_count, info.mode) == ("GIF", 300, 200, 3, "P")
    assert Image.core.get_stats()["new_count"] == 0


# --- orientation --------------------------------------------------------------------


def _with_orientation(fmt: str, orientation: int) -> bytes:
    page = page_with_red_corner(300, 200)
    if fmt == "TIFF":
        return encode(page, "TIFF", tiffinfo={ExifTags.Base.Orientation: orientation})
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(page, fmt, exif=exif, quality=95)


@pytest.mark.parametrize(
    ("fmt", "orientation", "red_corner"),
    [
        # 6: the camera was turned clockwise; the stored top-left shows at the top-right.
        ("JPEG", 6, "top-right"),
        # 8: turned the other way; the stored top-left shows at the bottom-left.
        ("JPEG", 8, "bottom-left"),
        ("PNG", 6, "top-right"),
        ("TIFF", 8, "bottom-left"),
    ],
)
def test_exif_orientation_makes_the_output_upright(fmt: str, orientation: int, red_corner: str) -> None:
    # Given a 300x200 stored image, red in its stored top-left, tagged with an orientation
    data = _with_orientation(fmt, orientation)

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the output is upright (portrait) and the red block is where a viewer sees it
    assert (prepared.mapping.original_width, prepared.mapping.original_height) == (200, 300)
    assert (prepared.width, prepared.height) == (192, 288)
    image = decode(prepared)
    corners = {"top-left": (10, 10), "top-right": (181, 10), "bottom-left": (10, 277), "bottom-right": (181, 277)}
    for name, (x, y) in corners.items():
        expected = RED if name == red_corner else WHITE
        assert close_to(rgb_at(image, x, y), expected), name
    assert "exif_transpose" in actions(prepared)


# --- pixel modes --------------------------------------------------------------------


def test_cmyk_becomes_rgb_with_the_right_colors() -> None:
    # Given a CMYK JPEG: magenta+yellow (red) on the left, cyan on the right
    image = Image.new("CMYK", (128, 64), (0, 255, 255, 0))
    image.paste((255, 0, 0, 0), (64, 0, 128, 64))
    data = encode(image, "JPEG", quality=95)

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then it is RGB with red where the ink was red and cyan where it was cyan
    out = decode(prepared)
    assert out.mode == "RGB"
    assert close_to(rgb_at(out, 10, 32), RED)
    assert close_to(rgb_at(out, 118, 32), (0, 255, 255))
    assert any(step.detail.startswith("CMYK -> RGB") for step in prepared.steps)


def test_cmyk_with_a_broken_icc_profile_falls_back_to_the_plain_conversion() -> None:
    # Given a red CMYK JPEG whose embedded ICC profile is garbage
    data = encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG", quality=95, icc_profile=b"not a profile")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the color is still right and the fallback is recorded
    assert close_to(rgb_at(decode(prepared), 32, 32), RED)
    assert any("ICC profile is unusable" in step.detail for step in prepared.steps)


def test_a_palette_image_with_a_transparent_black_index_is_flattened_onto_white() -> None:
    # Given a palette PNG whose background index is black *and* transparent, with a red block
    image = Image.new("P", (100, 100), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    ImageDraw.Draw(image).rectangle((40, 40, 59, 59), fill=1)
    data = encode(image, "PNG", transparency=0)

    # When it is prepared
    out = decode(prepare_image(data, BUDGET))

    # Then the transparent area is white (not the palette's black) and the block is red
    assert out.mode == "RGB"
    assert rgb_at(out, 5, 5) == WHITE
    assert close_to(rgb_at(out, 50, 50), RED, tolerance=5)


def test_a_grey_palette_with_transparency_stays_grey() -> None:
    # Given a GIF with a grey palette: transparent index 0, dark grey text block at index 1
    image = Image.new("P", (96, 96), 0)
    image.putpalette([255, 255, 255, 40, 40, 40])
    ImageDraw.Draw(image).rectangle((30, 30, 65, 65), fill=1)
    data = encode(image, "GIF", transparency=0)

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the output is single-channel, dark content on white
    out = decode(prepared)
    assert out.mode == "L"
    assert out.getpixel((5, 5)) == 255
    assert out.getpixel((48, 48)) == 40


def test_a_one_bit_image_becomes_black_and_white_grey() -> None:
    # Given a 1-bit TIFF, white with a black block
    image = Image.new("1", (64, 64), 1)
    ImageDraw.Draw(image).rectangle((0, 0, 31, 63), fill=0)
    data = encode(image, "TIFF")

    # When it is prepared
    out = decode(prepare_image(data, BUDGET))

    # Then it is L with exactly black and white
    assert out.mode == "L"
    assert out.getpixel((10, 10)) == 0
    assert out.getpixel((50, 10)) == 255


@pytest.mark.parametrize(
    ("mode", "value", "fmt"),
    [
        ("I;16", 40000, "PNG"),
        ("I;16", 40000, "TIFF"),
        ("I;16B", 40000, "TIFF"),
        ("I", 40000, "TIFF"),
        ("F", 0.61, "TIFF"),
    ],
)
def test_high_bit_depth_grey_is_scaled_over_its_full_range(mode: str, value: float, fmt: str) -> None:
    # Given a 64x64 grey image at 40000/65535 (or 0.61 of a float range), no resize needed
    data = encode(Image.new(mode, (64, 64), value), fmt)

    # When it is prepared
    out = decode(prepare_image(data, BUDGET))

    # Then it is 8-bit grey at 40000/257 = 155.6 -> 156, not clipped to 255
    assert out.mode == "L"
    assert out.getpixel((10, 10)) == 156


def test_a_32_bit_image_beyond_16_bits_is_stretched_over_its_values() -> None:
    # Given a 32-bit grey TIFF running from 0 on the left to 1,000,000 on the right
    image = Image.new("I", (64, 64), 0)
    image.paste(1_000_000, (32, 0, 64, 64))
    data = encode(image, "TIFF")

    # When it is prepared
    out = decode(prepare_image(data, BUDGET))

    # Then the lowest value is black and the highest white
    assert out.getpixel((5, 5)) == 0
    assert out.getpixel((60, 5)) == 255


def test_a_grey_image_stays_grey() -> None:
    # Given an L PNG
    data = encode(Image.new("L", (64, 64), 100), "PNG")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the output is still L, with the same value, and no conversion was needed
    out = decode(prepared)
    assert (out.mode, out.getpixel((5, 5))) == ("L", 100)
    assert "convert_mode" not in actions(prepared)


def test_an_rgb_file_of_a_grey_page_is_sent_as_grey() -> None:
    # Given an RGB PNG whose every pixel is grey
    data = encode(Image.new("RGB", (64, 64), (90, 90, 90)), "PNG")

    # When it is prepared
    out = decode(prepare_image(data, BUDGET))

    # Then it is sent as L
    assert (out.mode, out.getpixel((5, 5))) == ("L", 90)


# --- transparency -------------------------------------------------------------------


def _text_on_transparent(color: tuple[int, int, int], hidden: tuple[int, int, int]) -> bytes:
    # The transparent pixels carry `hidden` as their color, as exporters often leave them.
    image = Image.new("RGBA", (200, 100), (*hidden, 0))
    ImageDraw.Draw(image).rectangle((50, 30, 149, 69), fill=(*color, 255))
    return encode(image, "PNG")


def test_white_text_on_transparent_gets_a_dark_background() -> None:
    # Given white content on transparent pixels that are themselves white
    data = _text_on_transparent(WHITE, hidden=WHITE)

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the background is black and the content stays white
    out = decode(prepared)
    assert out.getpixel((5, 5)) == 0
    assert out.getpixel((100, 50)) == 255
    flatten = next(step for step in prepared.steps if step.action == "flatten_alpha")
    assert "light content" in flatten.detail and "black" in flatten.detail


def test_black_text_on_transparent_gets_a_white_background() -> None:
    # Given black content on transparent pixels that are themselves black
    data = _text_on_transparent((0, 0, 0), hidden=(0, 0, 0))

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the background is white and the content stays black
    out = decode(prepared)
    assert out.getpixel((5, 5)) == 255
    assert out.getpixel((100, 50)) == 0
    flatten = next(step for step in prepared.steps if step.action == "flatten_alpha")
    assert "dark content" in flatten.detail and "white" in flatten.detail


def test_an_alpha_channel_that_is_fully_opaque_is_dropped_without_flattening() -> None:
    # Given an RGBA PNG with no transparent pixel
    data = encode(Image.new("RGBA", (64, 64), (10, 200, 30, 255)), "PNG")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then it is plain RGB and nothing was composited
    assert decode(prepared).mode == "RGB"
    assert "flatten_alpha" not in actions(prepared)


# --- geometry -----------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(640, 480), (1000, 617), (37, 2900), (3001, 1999), (123, 45)])
def test_output_size_is_exactly_smart_resize_in_whole_patches(width: int, height: int) -> None:
    # Given a page of an arbitrary size
    data = encode(Image.new("L", (width, height), 200), "PNG")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then its size is smart_resize's, a multiple of the patch, so the model's resize is a no-op
    assert (prepared.height, prepared.width) == smart_resize(height, width, BUDGET)
    assert prepared.width % 32 == 0 and prepared.height % 32 == 0
    assert smart_resize(prepared.height, prepared.width, BUDGET) == (prepared.height, prepared.width)
    assert decode(prepared).size == (prepared.width, prepared.height)


def test_a_point_in_the_prepared_image_maps_back_to_the_original() -> None:
    # Given a 1000x600 page with a dark 20x20 square centred at (700, 150)
    page = Image.new("L", (1000, 600), 255)
    ImageDraw.Draw(page).rectangle((690, 140, 709, 159), fill=0)

    # When it is prepared (to 992x608, so both scales differ from 1)
    prepared = prepare_image(encode(page, "PNG"), BUDGET)

    # Then the square's centre in the prepared image maps back to (700, 150)
    assert (prepared.width, prepared.height) == (992, 608)
    x, y = prepared.mapping.to_original_point(*dark_box_centre(decode(prepared)))
    assert x == pytest.approx(700, abs=1.0)
    assert y == pytest.approx(150, abs=1.0)


def test_a_big_image_is_downscaled_within_max_pixels() -> None:
    # Given a 6000x5000 page (30 MP)
    page = Image.new("L", (6000, 5000), 255)
    ImageDraw.Draw(page).rectangle((1000, 1000, 1999, 1999), fill=0)

    # When it is prepared with the default budget
    prepared = prepare_image(encode(page, "PNG", compress_level=1), BUDGET)

    # Then it fits max_pixels, has smart_resize's size, and a Lanczos downscale is recorded
    assert prepared.width * prepared.height <= BUDGET.max_pixels
    assert (prepared.height, prepared.width) == smart_resize(5000, 6000, BUDGET)
    assert any(step.action == "resize" and "Lanczos" in step.detail for step in prepared.steps)
    x, y = prepared.mapping.to_original_point(*dark_box_centre(decode(prepared)))
    assert (x, y) == (pytest.approx(1500, abs=3), pytest.approx(1500, abs=3))


def test_a_budget_above_the_vendor_limit_is_capped_at_max_output_pixels() -> None:
    # Given a 30 MP page and a budget allowing 20 MP
    generous = PixelBudget(max_pixels=32 * 32 * 20000)
    data = encode(Image.new("L", (6000, 5000), 255), "PNG", compress_level=1)

    # When it is prepared
    prepared = prepare_image(data, generous)

    # Then the vendor's 15.68 MP wins, with the size smart_resize gives for that cap
    assert prepared.width * prepared.height <= 15_680_000
    capped = generous.model_copy(update={"max_pixels": 15_680_000})
    assert (prepared.height, prepared.width) == smart_resize(5000, 6000, capped)


def test_a_big_jpeg_is_decoded_at_reduced_scale_and_still_maps_exactly() -> None:
    # Given a 4000x3000 JPEG with a dark square centred at (3100, 1100), and a small budget
    page = Image.new("RGB", (4000, 3000), WHITE)
    ImageDraw.Draw(page).rectangle((3000, 1000, 3199, 1199), fill=(0, 0, 0))
    small = PixelBudget(max_pixels=32 * 32 * 300)

    # When it is prepared
    prepared = prepare_image(encode(page, "JPEG", quality=90), small)

    # Then libjpeg decoded it at 1/4 scale (still above the target), the size is exact,
    # and the square maps back to where it was
    assert any(step.action == "draft" and "1000x750" in step.detail for step in prepared.steps)
    assert (prepared.height, prepared.width) == smart_resize(3000, 4000, small)
    x, y = prepared.mapping.to_original_point(*dark_box_centre(decode(prepared)))
    assert (x, y) == (pytest.approx(3100, abs=8), pytest.approx(1100, abs=8))


def test_a_reduced_scale_decode_and_a_rotation_together_map_to_the_upright_original() -> None:
    # Given the same JPEG stored sideways with EXIF orientation 6
    page = Image.new("RGB", (4000, 3000), WHITE)
    ImageDraw.Draw(page).rectangle((3000, 1000, 3199, 1199), fill=(0, 0, 0))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    small = PixelBudget(max_pixels=32 * 32 * 300)

    # When it is prepared
    prepared = prepare_image(encode(page, "JPEG", quality=90, exif=exif), small)

    # Then the upright original is 3000x4000, where a clockwise turn puts the square's
    # centre at (3000 - 1100, 3100)
    assert (prepared.mapping.original_width, prepared.mapping.original_height) == (3000, 4000)
    assert {"draft", "exif_transpose"} <= set(actions(prepared))
    x, y = prepared.mapping.to_original_point(*dark_box_centre(decode(prepared)))
    assert (x, y) == (pytest.approx(1900, abs=8), pytest.approx(3100, abs=8))


def test_a_small_image_is_upscaled_by_smart_resize() -> None:
    # Given a 12x12 image: over the vendor's 10 px, but far under min_pixels
    data = encode(Image.new("L", (12, 12), 0), "PNG")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then smart_resize's min_pixels upscale makes it 64x64, which the vendor accepts
    assert (prepared.width, prepared.height) == (64, 64) == smart_resize(12, 12, BUDGET)
    assert any(step.action == "resize" and "bicubic" in step.detail for step in prepared.steps)


@pytest.mark.parametrize("size", [(1, 1), (5, 5), (10, 300), (300, 10)])
def test_an_image_with_a_side_under_the_vendor_minimum_is_refused_not_upscaled(size: tuple[int, int]) -> None:
    # Given an image with a side of 10 px or less, which the vendor refuses and which holds nothing to read
    data = encode(Image.new("L", size, 0), "PNG")
    Image.core.reset_stats()

    # When it is prepared, Then it is too small, from the header alone: nothing is upscaled or billed
    with pytest.raises(ImageTooSmall) as caught:
        prepare_image(data, BUDGET)
    assert caught.value.code == "image.too_small"
    assert Image.core.get_stats()["new_count"] == 0


def test_an_image_of_exactly_the_vendor_minimum_is_accepted() -> None:
    # Given an 11x11 image: both sides just over the vendor's 10 px
    data = encode(Image.new("L", (11, 11), 0), "PNG")

    # When it is prepared, Then it is upscaled like any small image
    assert (prepare_image(data, BUDGET).width, prepare_image(data, BUDGET).height) == smart_resize(11, 11, BUDGET)


def test_a_side_still_under_the_minimum_after_resizing_is_too_small() -> None:
    # Given a 12x12 image and a custom budget that shrinks it to 8x8 (4 px patches, at most 64 pixels)
    data = encode(Image.new("L", (12, 12), 0), "PNG")
    tiny_patches = PixelBudget(patch=4, min_pixels=16, max_pixels=64)

    # When it is prepared, Then the 8x8 result is refused
    with pytest.raises(ImageTooSmall) as caught:
        prepare_image(data, tiny_patches)
    assert caught.value.code == "image.too_small" and "would be 8x8" in caught.value.message


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1)])
def test_a_strip_beyond_the_aspect_limit_even_after_padding_is_refused_before_decoding(size: tuple[int, int]) -> None:
    # Given a 1x5000 strip: 5000:1, and at most 2500:1 after doubling the short side.
    # It is also under 10 px wide, but the aspect ratio takes precedence (nothing can fix it).
    data = encode(Image.new("L", size, 0), "PNG")
    Image.core.reset_stats()

    # When it is prepared, Then it is an aspect-ratio error, raised from the header alone
    with pytest.raises(ImageAspectRatio) as caught:
        prepare_image(data, BUDGET)
    assert caught.value.code == "image.aspect_ratio"
    assert Image.core.get_stats()["new_count"] == 0


def test_a_tall_strip_slightly_over_the_limit_is_padded_on_the_right() -> None:
    # Given a 50x10500 strip (210:1), grey 200
    data = encode(Image.new("L", (50, 10500), 200), "PNG")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then it was padded to 53 px wide (198:1), then resized: the content is 60 px of a
    # 64 px canvas, the padding has the edge's color, and coordinates need no offset
    assert (prepared.width, prepared.height) == (64, 10496)
    assert "pad" in actions(prepared)
    out = decode(prepared)
    assert out.getpixel((62, 5000)) == 200
    assert prepared.mapping.scale_x == pytest.approx(60 / 50)
    assert prepared.mapping.to_original_point(60, 10496) == (pytest.approx(50), pytest.approx(10500))


def test_a_wide_strip_is_padded_at_the_bottom() -> None:
    # Given a 10500x50 strip
    data = encode(Image.new("L", (10500, 50), 30), "PNG")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then the padding is at the bottom
    assert (prepared.width, prepared.height) == (10496, 64)
    assert any(step.action == "pad" and "bottom" in step.detail for step in prepared.steps)
    assert decode(prepared).getpixel((5000, 63)) == 30


def test_a_strip_at_exactly_the_limit_is_padded_when_rounding_would_exceed_it() -> None:
    # Given an 80x16000 strip: exactly 200:1, but smart_resize alone gives 64x16000 (250:1)
    assert smart_resize(16000, 80, BUDGET) == (16000, 64)
    data = encode(Image.new("L", (80, 16000), 255), "PNG")

    # When it is prepared
    prepared = prepare_image(data, BUDGET)

    # Then one pixel of padding makes it round to 96 wide, within the limit
    assert (prepared.width, prepared.height) == (96, 16000)
    assert prepared.height / prepared.width <= 200
    assert "pad" in actions(prepared)


# --- coordinate mapping ---------------------------------------------------------------


def _mapping(scale_x: float, scale_y: float) -> CoordinateMapping:
    return CoordinateMapping(
        original_width=1000,
        original_height=1000,
        prepared_width=round(1000 * scale_x),
        prepared_height=round(1000 * scale_y),
        scale_x=scale_x,
        scale_y=scale_y,
    )


def test_a_polygon_maps_back_point_by_point() -> None:
    # Given a mapping that halved the width and quartered the height
    mapping = _mapping(0.5, 0.25)

    # When the vendor's 8-number location is mapped back
    polygon = mapping.to_original_polygon([10, 10, 20, 10, 20, 5, 10, 5])

    # Then every x doubles and every y quadruples
    assert polygon == [20, 40, 40, 40, 40, 20, 20, 20]
    with pytest.raises(ValueError):
        mapping.to_original_polygon([1, 2, 3])


def test_a_rotate_rect_under_a_uniform_scale_keeps_its_angle() -> None:
    # Given a uniform scale of 0.5
    mapping = _mapping(0.5, 0.5)

    # When a rectangle at 30 degrees is mapped back
    cx, cy, w, h, angle = mapping.to_original_rotate_rect([100, 50, 40, 10, 30])

    # Then its centre and sides double and the angle is unchanged
    assert (cx, cy, w, h) == (200, 100, 80, 20)
    assert angle == pytest.approx(30)


def test_a_rotate_rect_under_a_non_uniform_scale_maps_its_axes() -> None:
    # Given a scale of 0.5 across and 0.25 down
    mapping = _mapping(0.5, 0.25)

    # When an axis-aligned rectangle and one at -90 degrees are mapped back
    flat = mapping.to_original_rotate_rect([10, 10, 40, 10, 0])
    upright = mapping.to_original_rotate_rect([10, 10, 40, 10, -90])
    diagonal = mapping.to_original_rotate_rect([0, 0, 10, 10, 45])

    # Then each axis takes the scale along its own direction, and the angle follows the skew
    assert flat == pytest.approx([20, 40, 80, 40, 0])
    assert upright == pytest.approx([20, 40, 160, 20, -90])
    # At 45 degrees the width axis maps to (cos45 / 0.5, sin45 / 0.25) = (sqrt2, 2 sqrt2).
    assert diagonal[2] == pytest.approx(10 * math.hypot(2 / math.sqrt(2), 4 / math.sqrt(2)))
    assert diagonal[4] == pytest.approx(math.degrees(math.atan2(4, 2)))


# --- encoding -----------------------------------------------------------------------


def test_the_data_url_carries_the_encoded_bytes() -> None:
    # Given a prepared PNG
    prepared = prepare_image(encode(Image.new("L", (64, 64), 7), "PNG"), BUDGET)

    # When its data URL is built
    prefix, payload = prepared.data_url.split(",", 1)

    # Then it is a base64 PNG of exactly the data, of the announced length
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(payload) == prepared.data
    assert prepared.base64_length() == len(payload)


def test_an_image_too_large_as_png_falls_back_to_jpeg_at_falling_qualities() -> None:
    # Given 256x256 of noise: about 262k characters as PNG, 79k/67k/53k as JPEG 90/85/75
    data = encode(noise(256, 256), "PNG")

    # When it is prepared with a 60,000-character limit
    prepared = prepare_image(data, BUDGET, PreparationLimits(max_encoded_bytes=60_000))

    # Then it is the JPEG at quality 75, each failed attempt recorded, within the limit
    assert prepared.mime_type == "image/jpeg"
    assert len(prepared.data_url) <= 60_000
    details = [step.detail for step in prepared.steps if step.action == "reencode"]
    assert details[0].startswith("filtered PNG of")
    assert details[1].startswith("PNG of")
    assert details[2].startswith("JPEG quality 90 is")
    assert details[3].startswith("JPEG quality 85 is")
    assert details[4].startswith("JPEG quality 75,")
    assert decode(prepared).format == "JPEG"


def test_an_image_that_fits_no_encoding_is_refused() -> None:
    # Given 256x256 of noise, about 42k characters even as JPEG quality 60
    data = encode(noise(256, 256), "PNG")

    # When it is prepared with a 30,000-character limit, Then it is refused with a stable code
    with pytest.raises(ImageEncodedTooLarge) as caught:
        prepare_image(data, BUDGET, PreparationLimits(max_encoded_bytes=30_000))
    assert caught.value.code == "image.encoded_too_large"


def test_source_metadata_is_not_sent() -> None:
    # Given a JPEG carrying EXIF with a camera make, and an ICC profile
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGB", (64, 64), (1, 2, 200)), "JPEG", exif=exif, icc_profile=icc)

    # When it is prepared (at its own size, so the source image itself is encoded)
    prepared = prepare_image(data, BUDGET)

    # Then none of it reaches the output
    assert "resize" not in actions(prepared)
    assert b"SecretCam" not in prepared.data
    out = decode(prepared)
    assert not out.getexif()
    assert "icc_profile" not in out.info


# --- the layer's footprint ------------------------------------------------------------


def test_preparing_common_formats_loads_neither_libheif_nor_numpy() -> None:
    # Given a fresh interpreter, When a PNG is prepared
    script = (
        "import io, sys\n"
        "from PIL import Image\n"
        "from ocr_pipeline.imaging import prepare_image\n"
        "from ocr_pipeline.tokens import PixelBudget\n"
        "buffer = io.BytesIO(); Image.new('RGB', (64, 64)).save(buffer, 'PNG')\n"
        "prepare_image(buffer.getvalue(), PixelBudget())\n"
        "print(sorted(m for m in ('pi_heif', 'pillow_heif', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    # Then neither heavy module was imported
    assert result.stdout.strip() == "[]"
