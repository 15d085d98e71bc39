"""imaging with file sources, pages drawn by a renderer, and the grey PNG encoder.

A file source must give exactly what the same bytes give, while reading only what the frame
needs, and a failure of the file itself must reach the caller as it was raised. Every file
is generated here; the TIFF layouts Pillow cannot write (tiles, big-endian, BigTIFF) are
written by hand.
"""

from __future__ import annotations

import io
import math
import random
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocr_pipeline.errors import (
    ImageError,
    ImageUnsupportedFormat,
    InputTooLarge,
    InvalidRequest,
)
from ocr_pipeline.imaging import (
    PreparationLimits,
    PreparationStep,
    PreparedImage,
    RenderTarget,
    prepare_image,
    prepare_rendered,
    probe_image,
    render_target,
)
from ocr_pipeline.tokens import PixelBudget, smart_resize
from PIL import Image, ImageChops, ImageDraw

from tests.support.images import decode, encode
from tests.support.streams import CountingFile, StorageUnavailable

BUDGET = PixelBudget()
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# --- helpers ------------------------------------------------------------------------


def marked_page(index: int, mode: str = "RGB", size: tuple[int, int] = (320, 256)) -> Image.Image:
    """A white page with a black block whose position tells the page apart."""
    page = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(page)
    draw.rectangle((20 + 80 * index, 30, 79 + 80 * index, 89), fill=(0, 0, 0))
    draw.text((30, 180), f"page {index}", fill=(0, 0, 0))
    return page.convert(mode)


def dark_box(image: Image.Image) -> tuple[int, int, int, int]:
    box = image.convert("L").point(lambda v: 255 if v < 128 else 0).getbbox()
    assert box is not None
    return box


def block_centre(prepared: PreparedImage) -> float:
    """Where a `marked_page` block is, in original x: dark pixels in the block's rows only."""
    image = decode(prepared)
    top = round(40 * prepared.mapping.scale_y)
    left, _, right, _ = dark_box(image.crop((0, top, image.width, top + 20)))
    return prepared.mapping.to_original_point((left + right) / 2, 0)[0]


def noise(width: int, height: int, seed: int, mode: str = "L") -> Image.Image:
    bands = len(mode)
    return Image.frombytes(mode, (width, height), random.Random(seed).randbytes(width * height * bands))


def handmade_tiff(
    frames: list[Image.Image],
    *,
    endian: str = "<",
    big: bool = False,
    tile: int | None = None,
    rows: int = 16,
    description: str | None = None,
    deflate: bool = True,
) -> bytes:
    """Greyscale TIFF (deflate-compressed by default) in layouts Pillow does not write: tiles, big-endian, BigTIFF."""
    pointer, field = ("Q", 8) if big else ("L", 4)
    head, count_format, offset_type = ("HHQ", "Q", 16) if big else ("HHL", "H", 4)

    def pack(fmt: str, *values: int) -> bytes:
        return struct.pack(endian + fmt, *values)

    out = bytearray(b"II" if endian == "<" else b"MM")
    out += pack("HHHQ", 43, 8, 0, 0) if big else pack("HL", 42, 0)
    next_pointer_at = 8 if big else 4
    for frame in frames:
        width, height = frame.size
        if tile:
            boxes = [(x, y, x + tile, y + tile) for y in range(0, height, tile) for x in range(0, width, tile)]
        else:
            boxes = [(0, y, width, min(height, y + rows)) for y in range(0, height, rows)]
        offsets, counts = [], []
        for box in boxes:
            pixels = frame.crop(box).tobytes()
            blob = zlib.compress(pixels) if deflate else pixels
            offsets.append(len(out))
            counts.append(len(blob))
            out += blob
        tags: list[tuple[int, int, list[int]]] = [(256, 3, [width]), (257, 3, [height]), (258, 3, [8])]
        tags += [(259, 3, [8 if deflate else 1]), (262, 3, [1]), (277, 3, [1])]
        if tile:
            tags += [(322, 3, [tile]), (323, 3, [tile]), (324, offset_type, offsets), (325, 4, counts)]
        else:
            tags += [(273, offset_type, offsets), (278, 3, [rows]), (279, 4, counts)]
        if description is not None:
            # Last, out of order on purpose: a reader has all it needs before it gets here.
            tags.append((270, 2, list(description.encode("ascii") + b"\x00")))
        entries = []
        for tag, field_type, values in tags:
            fmt = {2: "B", 3: "H", 4: "L", 16: "Q"}[field_type]
            value = pack(f"{len(values)}{fmt}", *values)
            if len(value) > field:
                out += b"\x00" * (len(out) % 2)
                at = len(out)
                out += value
                value = pack(pointer, at)
            entries.append(pack(head, tag, field_type, len(values)) + value.ljust(field, b"\x00"))
        out += b"\x00" * (len(out) % 2)
        directory_at = len(out)
        out[next_pointer_at : next_pointer_at + field] = pack(pointer, directory_at)
        out += pack(count_format, len(entries)) + b"".join(entries)
        next_pointer_at = len(out)
        out += pack(pointer, 0)
    return bytes(out)


# --- file sources give what bytes give -----------------------------------------------

TIFF_VARIANTS = [
    ("tiff_lzw", "RGB"),
    ("tiff_adobe_deflate", "L"),
    ("packbits", "RGB"),
    ("group4", "1"),
    ("jpeg", "RGB"),
    ("tiff_deflate", "RGBA"),
    ("raw", "RGB"),
]


@pytest.mark.parametrize(("compression", "mode"), TIFF_VARIANTS, ids=[f"{c}-{m}" for c, m in TIFF_VARIANTS])
def test_the_third_frame_of_a_tiff_file_is_the_third_page(compression: str, mode: str) -> None:
    # Given a three-page TIFF whose pages carry their block at different places, as a file
    pages = [marked_page(index, mode) for index in range(3)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression=compression)

    # When frame 2 is prepared from the file and from the bytes
    from_file = prepare_image(io.BytesIO(data), BUDGET, frame=2)
    from_bytes = prepare_image(data, BUDGET, frame=2)

    # Then the file gives the third page, exactly as the bytes do
    assert from_file == from_bytes
    assert block_centre(from_file) == pytest.approx(20 + 80 * 2 + 30, abs=4)
    assert ("select_frame", "page 3 (frame index 2) of a TIFF") in [(s.action, s.detail) for s in from_file.steps]


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(marked_page(1), "PNG"),
        lambda: encode(marked_page(1).resize((3000, 2400)), "JPEG", quality=90),
        lambda: encode(marked_page(1, "P"), "GIF", save_all=True, append_images=[marked_page(2, "P")]),
        lambda: encode(marked_page(1), "WEBP", lossless=True),
        lambda: encode(marked_page(1), "BMP"),
        lambda: encode(marked_page(1), "TIFF", compression="tiff_lzw", tiffinfo={274: 6}),
        lambda: encode(marked_page(1, "I;16"), "TIFF", compression="tiff_adobe_deflate"),
    ],
    ids=["png", "jpeg-draft", "gif", "webp", "bmp", "tiff-orientation-6", "tiff-16-bit"],
)
def test_a_file_and_its_bytes_give_the_same_prepared_image(make: object) -> None:
    # Given an image as bytes
    data = make()  # type: ignore[operator]

    # When it is prepared from bytes, from a BytesIO and from an unbuffered file
    results = [prepare_image(source, BUDGET) for source in (data, io.BytesIO(data), CountingFile(data))]

    # Then all three are identical, data, mapping and steps alike
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize(
    ("endian", "big", "tile"),
    # (Pillow cannot read big-endian BigTIFF at all: it looks for 43 in the third byte.)
    [("<", False, 64), (">", False, None), (">", False, 64), ("<", True, None), ("<", True, 64)],
    ids=["tiled", "big-endian", "big-endian-tiled", "bigtiff", "bigtiff-tiled"],
)
def test_hand_written_tiff_layouts_read_from_a_file_give_the_right_frame(
    endian: str, big: bool, tile: int | None
) -> None:
    # Given a three-frame deflate TIFF in a layout Pillow does not write (frames of noise)
    frames = [noise(200, 150, seed) for seed in range(3)]
    data = handmade_tiff(frames, endian=endian, big=big, tile=tile)

    # When frame 1 is prepared from the file and from the bytes, with a budget that keeps its size
    from_file = prepare_image(CountingFile(data), BUDGET, frame=1)
    from_bytes = prepare_image(data, BUDGET, frame=1)

    # Then both are that frame's pixels, resized to smart_resize, and identical
    assert from_file == from_bytes
    expected = frames[1].resize((from_file.width, from_file.height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    assert ImageChops.difference(decode(from_file).convert("L"), expected).getbbox() is None


def test_probing_a_many_frame_tiff_file_reads_only_its_directories() -> None:
    # Given a 300-frame TIFF of incompressible frames (about 20 MB)
    frames = [noise(256, 256, seed) for seed in range(300)]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:], compression="tiff_adobe_deflate")
    source = CountingFile(data)

    # When it is probed through a file
    info = probe_image(source)

    # Then all frames are counted while under 1 % of the file is read
    assert info.frame_count == 300
    assert source.bytes_read < len(data) / 100


def test_preparing_one_frame_of_a_big_tiff_file_reads_about_that_frame() -> None:
    # Given the same 300-frame TIFF
    frames = [noise(256, 256, seed) for seed in range(300)]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:], compression="tiff_adobe_deflate")
    source = CountingFile(data)

    # When frame 250 is prepared from the file
    prepared = prepare_image(source, BUDGET, frame=250)

    # Then it is that frame, and what was read is about one frame's data, not the 20 MB
    frame_bytes = len(data) / 300
    assert source.bytes_read < 2 * frame_bytes
    expected = frames[250].resize((prepared.width, prepared.height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    assert ImageChops.difference(decode(prepared).convert("L"), expected).getbbox() is None


def test_the_size_limit_applies_to_a_file_before_anything_is_read() -> None:
    # Given a 2000-byte file and a 1000-byte limit
    source = CountingFile(b"\x89PNG\r\n\x1a\n" + bytes(1992))

    # When it is prepared, Then it is refused by its length, without a byte read
    with pytest.raises(InputTooLarge) as caught:
        prepare_image(source, BUDGET, PreparationLimits(max_input_bytes=1000))
    assert caught.value.details["size"] == 2000
    assert source.bytes_read == 0


def test_a_file_in_a_foreign_format_is_unsupported() -> None:
    with pytest.raises(ImageUnsupportedFormat):
        probe_image(io.BytesIO(b"%PDF-1.7\n" + bytes(100)))


def test_a_missing_frame_of_a_file_is_an_invalid_request() -> None:
    data = encode(marked_page(0), "TIFF", save_all=True, append_images=[marked_page(1)], compression="tiff_lzw")
    with pytest.raises(InvalidRequest):
        prepare_image(io.BytesIO(data), BUDGET, frame=2)


# --- a failing file is not a broken image ---------------------------------------------


@pytest.mark.parametrize(
    "error",
    [StorageUnavailable("S3 said 503"), ConnectionResetError("connection reset by peer")],
    ids=["typed", "os-error"],
)
@pytest.mark.filterwarnings("ignore:connection reset")
def test_a_file_that_fails_while_its_pixels_are_read_raises_its_own_error(error: Exception) -> None:
    # Given a TIFF file whose storage fails once reading goes past its first 2 kB
    pages = [noise(256, 256, seed) for seed in range(2)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="tiff_adobe_deflate")
    source = CountingFile(data, failing=(2048, len(data)), error=error)

    # When a frame is prepared, Then the storage's own error escapes, not an image error
    with pytest.raises(type(error)) as caught:
        prepare_image(source, BUDGET, frame=1)
    assert caught.value is error


@pytest.mark.filterwarnings("ignore:connection reset")
def test_a_file_failure_that_the_decoder_turns_into_its_own_error_still_raises_the_file_error() -> None:
    # Given a two-frame TIFF whose storage fails inside the second frame's directory
    # (Pillow's TIFF reader turns the OSError into a warning, then misses the frame's height)
    pages = [noise(64, 64, seed) for seed in range(2)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="tiff_adobe_deflate")
    second_directory = Image.open(io.BytesIO(data))
    second_directory.seek(1)
    offset = second_directory.tag_v2.offset
    error = ConnectionResetError("connection reset by peer")
    source = CountingFile(data, failing=(offset + 20, len(data)), error=error)

    # When frame 1 is prepared, Then the connection error escapes, not ImageUnreadable
    with pytest.raises(ConnectionResetError) as caught:
        prepare_image(source, BUDGET, frame=1)
    assert caught.value is error


@pytest.mark.filterwarnings("ignore:connection reset")
def test_a_file_failure_that_the_decoder_swallows_still_fails_the_preparation() -> None:
    # Given an uncompressed TIFF (decoded by Pillow itself) whose last tag, a description Pillow
    # does not need, sits where storage fails: Pillow warns, keeps the tags it has, and decodes
    description = "scanned by a test " * 10
    data = handmade_tiff([noise(64, 64, 1)], description=description, deflate=False)
    start = data.index(description.encode("ascii"))
    error = ConnectionResetError("connection reset by peer")
    source = CountingFile(data, failing=(start, start + 1), error=error)

    # When it is prepared, Then the connection error escapes rather than a quietly partial result
    with pytest.raises(ConnectionResetError) as caught:
        prepare_image(source, BUDGET)
    assert caught.value is error


# --- hostile files ------------------------------------------------------------------------


def _tiff_samples() -> list[bytes]:
    frames = [noise(40, 32, seed, "RGB") for seed in range(2)]
    return [
        encode(frames[0], "TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw"),
        encode(frames[0], "TIFF", compression="jpeg"),
        encode(
            frames[0].convert("1"), "TIFF", save_all=True, append_images=[frames[1].convert("1")], compression="group4"
        ),
        handmade_tiff([noise(40, 32, 5), noise(40, 32, 6)], endian=">", tile=16),
        handmade_tiff([noise(40, 32, 5)], big=True, tile=16),
        handmade_tiff([noise(40, 32, 7)], rows=8),
    ]


TIFF_SAMPLES = _tiff_samples()
FUZZ_LIMITS = PreparationLimits(max_decoded_pixels=1_000_000)
FUZZ_BUDGET = PixelBudget(max_pixels=32 * 32 * 64)


@st.composite
def mutated_tiff(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(TIFF_SAMPLES)))
    position = st.integers(0, len(data) - 1)
    for index, value in draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=6)):
        data[index] = value
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.filterwarnings("error")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_tiff(), frame=st.integers(0, 1))
def test_a_mutated_tiff_file_prepares_or_raises_an_image_error(data: bytes, frame: int) -> None:
    # Given a mutated TIFF as a file, When a frame is probed and prepared,
    # Then nothing but an ImageError (or InvalidRequest for a missing frame) escapes
    for attempt in (
        lambda: probe_image(io.BytesIO(data), FUZZ_LIMITS),
        lambda: prepare_image(io.BytesIO(data), FUZZ_BUDGET, FUZZ_LIMITS, frame=frame),
    ):
        try:
            attempt()
        except (ImageError, InvalidRequest) as exc:
            assert exc.code.startswith(("image.", "input.", "request."))


# --- pages drawn by a renderer -----------------------------------------------------


def rgbx(image: Image.Image) -> Image.Image:
    """What a renderer hands over: RGB in four bytes per pixel."""
    return image.convert("RGBX")


def test_a_grey_rendered_page_is_sent_as_grey_with_a_mapping_in_points() -> None:
    # Given an A4 page (in points) drawn in RGBX at the budget's size, black block at 100 pt
    width_pt, height_pt = 595.276, 841.89
    target = render_target(width_pt * 600 / 72, height_pt * 600 / 72, BUDGET, PreparationLimits())
    sx, sy = target.content[0] / width_pt, target.content[1] / height_pt
    page = Image.new("RGB", target.content, WHITE)
    ImageDraw.Draw(page).rectangle((100 * sx, 100 * sy, 200 * sx - 1, 150 * sy - 1), fill=(0, 0, 0))
    render = PreparationStep(action="render", detail="drawn")

    # When it is finished
    prepared = prepare_rendered(
        rgbx(page), target, source_format="PDF", original_size=(width_pt, height_pt), steps=[render]
    )

    # Then it is a grey PNG of exactly the target, near the budget, and the block maps back to points
    assert (prepared.height, prepared.width) == smart_resize(7016, 4961, BUDGET)
    assert prepared.width * prepared.height > 0.98 * BUDGET.max_pixels
    assert decode(prepared).mode == "L"
    assert [s.action for s in prepared.steps] == ["render", "convert_mode", "reencode"]
    assert prepared.mapping.original_width == width_pt
    left, top, right, bottom = dark_box(decode(prepared))
    assert prepared.mapping.to_original_point(left, top) == (pytest.approx(100, abs=0.5), pytest.approx(100, abs=0.5))
    assert prepared.mapping.to_original_point(right, bottom) == (
        pytest.approx(200, abs=0.5),
        pytest.approx(150, abs=0.5),
    )


def test_a_color_rendered_page_stays_color() -> None:
    # Given a rendered page with a red mark
    target = RenderTarget(content=(640, 480), canvas=(640, 480))
    page = Image.new("RGB", (640, 480), WHITE)
    ImageDraw.Draw(page).rectangle((10, 10, 60, 60), fill=RED)

    # When it is finished, Then it is an RGB PNG with the red mark
    prepared = prepare_rendered(rgbx(page), target, source_format="PDF", original_size=(320.0, 240.0))
    image = decode(prepared)
    assert image.mode == "RGB"
    assert image.getpixel((30, 30)) == RED
    assert prepared.mapping.scale_x == prepared.mapping.scale_y == 2.0


def test_a_rendered_strip_is_padded_to_the_target_canvas() -> None:
    # Given a 200:1 page, which rounding to whole patches would take past the limit
    target = render_target(80, 16000, BUDGET, PreparationLimits())
    assert target.canvas != target.content
    page = Image.new("RGB", target.content, (200, 200, 200))

    # When it is finished
    prepared = prepare_rendered(page, target, source_format="PDF", original_size=(20.0, 4000.0))

    # Then it is the padded canvas, within the aspect limit, and the padding is recorded
    assert (prepared.width, prepared.height) == target.canvas
    assert prepared.height / prepared.width <= 200 < target.content[1] / target.content[0] * 1.3
    assert "pad" in [s.action for s in prepared.steps]


def test_a_rendered_image_not_at_its_target_size_is_a_programming_error() -> None:
    target = RenderTarget(content=(640, 480), canvas=(640, 480))
    with pytest.raises(ValueError, match="target"):
        prepare_rendered(Image.new("RGB", (641, 480)), target, source_format="PDF", original_size=(1.0, 1.0))


# --- the grey PNG encoder --------------------------------------------------------------


def test_a_grey_image_is_written_unfiltered_and_decodes_to_the_same_pixels() -> None:
    # Given grey noise with a width that is not a multiple of anything
    image = noise(333, 77, seed=9)

    # When it is finished at its own size
    target = RenderTarget(content=image.size, canvas=image.size)
    prepared = prepare_rendered(image.copy(), target, source_format="test", original_size=(333.0, 77.0))

    # Then the unfiltered PNG decodes to exactly the pixels
    assert prepared.steps[-1].detail.startswith("PNG, unfiltered")
    assert ImageChops.difference(decode(prepared), image).getbbox() is None


def test_a_color_image_is_a_filtered_png_that_decodes_to_exactly_its_pixels() -> None:
    # Given a color picture with smooth areas and noise, of an odd size
    ramp = Image.linear_gradient("L").resize((333, 77))
    image = Image.merge(
        "RGB", (ramp, Image.effect_noise((333, 77), 40), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )
    target = RenderTarget(content=image.size, canvas=image.size)

    # When it is finished
    prepared = prepare_rendered(image.copy(), target, source_format="test", original_size=(333.0, 77.0))

    # Then it is the filtered PNG, lossless
    assert prepared.steps[-1].detail.startswith("PNG, filtered, ISA-L deflate")
    assert ImageChops.difference(decode(prepared), image).getbbox() is None


def test_a_smooth_grey_image_too_big_unfiltered_gets_the_filtered_png_before_jpeg() -> None:
    # Given a diagonal grey ramp, which only PNG's row filters compress well
    ramp = Image.linear_gradient("L").resize((1024, 768)).point(lambda v: v // 2)
    gradient = ImageChops.add(ramp, ramp.transpose(Image.Transpose.ROTATE_90).resize((1024, 768)))
    target = RenderTarget(content=gradient.size, canvas=gradient.size)
    unfiltered = prepare_rendered(gradient.copy(), target, source_format="test", original_size=(1.0, 1.0))
    filtered = encode(gradient, "PNG", compress_level=3)
    unfiltered_url = len(unfiltered.data_url)
    filtered_url = len("data:image/png;base64,") + 4 * math.ceil(len(filtered) / 3)
    assert filtered_url < unfiltered_url / 2

    # When the encoded limit lies between the two
    limits = PreparationLimits(max_encoded_bytes=(filtered_url + unfiltered_url) // 2)
    prepared = prepare_rendered(gradient.copy(), target, limits, source_format="test", original_size=(1.0, 1.0))

    # Then the filtered PNG is sent, lossless, after the unfiltered one was recorded as too large
    details = [s.detail for s in prepared.steps if s.action == "reencode"]
    assert details[0].startswith("unfiltered PNG of")
    assert details[1].startswith("PNG, filtered")
    assert prepared.mime_type == "image/png"
    assert ImageChops.difference(decode(prepared), gradient).getbbox() is None
