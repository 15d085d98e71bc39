"""What decoders report is data, not noise.

libtiff writes its errors straight to stderr ("Fax4Decode: Bad code word at line 68"), and Pillow
warns through Python's warnings. Neither reaches the terminal: a decode that fails is refused with
its code and the decoder's first words in one line; a decode that completes despite errors (a fax
with bad code words, its lower part blank) completes with the messages in the page's `warnings`.
"""

from __future__ import annotations

import io
import json
import os
import sys

import pytest
from ocr_pipeline.errors import ImageUnreadable
from ocr_pipeline.imaging import MAX_DECODER_MESSAGES, prepare_image, probe_image
from ocr_pipeline.imaging.decoding import _decoder_messages
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.tokens import PixelBudget
from PIL import Image, ImageDraw

from tests.support.fakes import INPUT, RESULTS, FakeOcrService, Pipeline

BUDGET = PixelBudget()


def fax(lines: int = 18) -> bytes:
    image = Image.new("1", (800, 600), 1)
    draw = ImageDraw.Draw(image)
    for index in range(lines):
        draw.text((20, 20 + 30 * index), f"Hello fax line {index} the quick brown fox", fill=0)
    buffer = io.BytesIO()
    image.save(buffer, "TIFF", compression="group4")
    return buffer.getvalue()


def damaged_fax() -> bytes:
    """A G4 fax whose coded strip is damaged: libtiff reports bad code words and decodes the top only."""
    data = bytearray(fax())
    for offset in range(200, 800, 7):
        data[offset] ^= 0x5A
    return bytes(data)


def broken_lzw() -> bytes:
    """An LZW TIFF damaged so that libtiff gives up: Pillow raises after libtiff wrote its error."""
    image = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(image)
    for y in range(10, 790, 20):
        draw.text((10, y), f"line {y} lorem ipsum", fill=0)
    buffer = io.BytesIO()
    image.save(buffer, "TIFF", compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    for offset in range(300, len(data) - 400, 97):
        data[offset] ^= 0xFF
    return bytes(data)


def jpeg_with_truncated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker"
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buffer, "JPEG", exif=exif.tobytes()[:-12])
    return buffer.getvalue()


def test_a_fax_with_bad_code_words_completes_with_the_decoders_messages_and_prints_nothing(capfd):
    # When a fax whose strip has bad code words is prepared
    prepared = prepare_image(damaged_fax(), BUDGET)
    # Then it is prepared, with libtiff's messages kept, and nothing written to stderr
    assert any("Bad code word" in message for message in prepared.decoder_warnings)
    assert capfd.readouterr().err == ""


def test_a_clean_image_has_no_decoder_warnings(capfd):
    assert prepare_image(fax(), BUDGET).decoder_warnings == []
    assert capfd.readouterr().err == ""


def test_a_decode_that_fails_is_one_typed_error_with_the_decoders_words_and_nothing_printed(capfd):
    with pytest.raises(ImageUnreadable) as caught:
        prepare_image(broken_lzw(), BUDGET)
    assert "\n" not in caught.value.message
    assert "Using code not yet in table" in caught.value.message
    assert caught.value.details["decoder_messages"]
    assert capfd.readouterr().err == ""


def test_pillows_python_warnings_are_captured_too(capfd):
    prepared = prepare_image(jpeg_with_truncated_exif(), BUDGET)
    assert "Truncated File Read" in prepared.decoder_warnings
    assert capfd.readouterr().err == ""


def test_probing_a_header_prints_nothing_either(capfd):
    probe_image(damaged_fax())
    assert capfd.readouterr().err == ""


def test_a_flood_of_messages_is_kept_short():
    messages: list[str] = []
    with _decoder_messages(messages):
        for line in range(300):
            os.write(2, f"TIFFReadDirectory: Warning, unknown field with tag {line}\n".encode())
    assert len(messages) == MAX_DECODER_MESSAGES + 1
    assert messages[-1] == f"… and {300 - MAX_DECODER_MESSAGES} more decoder message(s)"


def test_what_other_code_writes_to_stderr_afterwards_is_printed_again(capfd):
    messages: list[str] = []
    with _decoder_messages(messages):
        pass
    print("after", file=sys.stderr)
    assert capfd.readouterr().err == "after\n"


def test_a_damaged_fax_page_completes_with_warnings_in_its_result(capfd):
    # Given a damaged fax uploaded to the pipeline
    p = Pipeline(ocr=FakeOcrService("Hello fax line 0"))
    p.store.put(INPUT, "fax.tif", damaged_fax(), content_type="image/tiff")
    job_id = p.upload.accept(UploadedObject(bucket=INPUT, key="fax.tif")).job_id
    # When its page is worked
    p.drain()
    # Then the page completed, billed, and its result says the image was damaged
    document = json.loads(p.store.get_text(RESULTS, f"results/fax.tif/{job_id}.json"))
    (page,) = document["pages"]
    assert page["status"] == "done"
    assert any(w.startswith("image: ") and "Bad code word" in w for w in page["warnings"])
    assert len(p.bus.of_type("usage.recorded")) == 1
    assert capfd.readouterr().err == ""
