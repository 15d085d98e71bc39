"""Untrusted bytes up to the decoder: refused early from their length and header where possible, read
through so the caller's own file failures stay theirs, and decoded with every decoder failure made one
of our typed errors and every decoder message kept as data.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import BinaryIO, TypeVar, cast

from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import (
    ImageError,
    ImageTooManyPixels,
    ImageUnreadable,
    ImageUnsupportedFormat,
    InputTooLarge,
    InvalidRequest,
    OcrPipelineError,
)
from .limits import PreparationLimits
from .steps import PreparationStep

# A seekable binary file (BytesIO, an open file, a ranged storage reader): read(n) must return
# n bytes unless the file ends first, as buffered files do. It is read from offset 0 to its end.
ImageSource = bytes | BinaryIO
_T = TypeVar("_T")

# Major brands of HEIF/HEIC files, as pi_heif's (pillow_heif's) own opener accepts them. AVIF ("avif",
# "avis") shares the container but is not a format the vendor lists, so it is not here.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class StreamReader(io.RawIOBase):
    """A caller's binary file, read through so that a failure of the file itself stays recognizable.

    Decoders catch I/O errors and raise their own (Pillow's TIFF reader even turns one into a
    warning and a shorter tag list), and `untrusted_pixels` turns whatever they raise into
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


class ImageInput:
    """The caller's bytes, or their file read through a `StreamReader`."""

    def __init__(self, source: ImageSource) -> None:
        self.stream: StreamReader | None
        if isinstance(source, bytes | bytearray):
            self.file: BinaryIO = io.BytesIO(source)
            self.size = len(source)
            self.stream = None
        else:
            self.stream = StreamReader(source)
            self.file = cast(BinaryIO, self.stream)
            self.size = self.stream.size

    @property
    def failure(self) -> Exception | None:
        return self.stream.failure if self.stream is not None else None

    def head(self, size: int = 16) -> bytes:
        self.file.seek(0)
        return self.file.read(size)


def check_input_size(size: int, limits: PreparationLimits) -> None:
    if size > limits.max_input_bytes:
        raise InputTooLarge(
            f"input is {size} bytes, more than the {limits.max_input_bytes} we accept",
            size=size,
            limit=limits.max_input_bytes,
        )


def sniff_format(head: bytes) -> str:
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


def open_image(data: ImageInput, source_format: str) -> ImageFile.ImageFile:
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


def check_pixels(size: tuple[int, int], limits: PreparationLimits) -> None:
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
def untrusted_pixels(source_format: str, data: ImageInput) -> Iterator[list[str]]:
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


def select_frame(image: ImageFile.ImageFile, frame: int, steps: list[PreparationStep]) -> None:
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
