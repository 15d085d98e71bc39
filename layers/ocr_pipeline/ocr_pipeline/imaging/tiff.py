"""One frame of a multi-page TIFF copied out on its own, so decoding it reads only what it needs.

Pillow hands a compressed TIFF frame to libtiff together with the whole file; from a ranged
storage reader that is a read of every page for one. The frame's directory and its strips or
tiles, written into a one-frame TIFF, decode to the same pixels.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image, ImageFile, TiffImagePlugin

from .decoding import ImageInput, StreamReader


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


def frame_alone(image: ImageFile.ImageFile, data: ImageInput) -> ImageFile.ImageFile:
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


def _tiff_frame_bytes(image: TiffImagePlugin.TiffImageFile, reader: StreamReader) -> bytes | None:
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


def _read_tiff_directory(reader: StreamReader, offset: int, layout: _TiffLayout) -> list[_TiffEntry] | None:
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
