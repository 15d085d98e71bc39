"""EXIF orientation: what a header says, and turning the (already small) image upright."""

from __future__ import annotations

from PIL import ExifTags, Image

from .steps import PreparationStep

# The same table as ImageOps.exif_transpose, which we do not call: it copies the full image
# even when there is nothing to do, and we rotate after downscaling anyway.
ORIENTATIONS: dict[int, tuple[Image.Transpose, str]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT, "mirrored left-right"),
    3: (Image.Transpose.ROTATE_180, "rotated 180°"),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, "mirrored top-bottom"),
    5: (Image.Transpose.TRANSPOSE, "transposed"),
    6: (Image.Transpose.ROTATE_270, "rotated 90° clockwise"),
    7: (Image.Transpose.TRANSVERSE, "transversed"),
    8: (Image.Transpose.ROTATE_90, "rotated 90° counter-clockwise"),
}
ORIENTATIONS_SWAPPING_AXES = frozenset({5, 6, 7, 8})


def header_orientation(image: Image.Image) -> int:
    if image.format == "TIFF":
        return 1  # Pillow reports a TIFF upright already
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in ORIENTATIONS else 1


def tiff_orientation(image: Image.Image) -> object:
    tags = getattr(image, "tag_v2", None)
    return tags.get(ExifTags.Base.Orientation) if tags is not None else None


def read_orientation(image: Image.Image, steps: list[PreparationStep]) -> int:
    # Called after load(): PNG keeps its eXIf chunk after the pixel data.
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:
        # The pixels are already decoded; broken metadata should not cost the user the page.
        steps.append(PreparationStep(action="exif_ignored", detail=f"unreadable EXIF ({type(exc).__name__})"))
        return 1
    return value if isinstance(value, int) and value in ORIENTATIONS else 1


def note_decoder_rotation(orientation: int, tiff_tag: object, steps: list[PreparationStep]) -> None:
    """Record a TIFF orientation that the decoder, not we, applied.

    Pillow's TIFF reader reports the upright size and rotates while loading, then drops the tag;
    the plan was already made on the upright size, so there is nothing to do but say so.
    """
    if orientation == 1 and tiff_tag in ORIENTATIONS:
        description = ORIENTATIONS[tiff_tag][1]
        steps.append(
            PreparationStep(
                action="exif_transpose",
                detail=f"TIFF orientation {tiff_tag}: {description} by the decoder",
            )
        )


def turn_upright(image: Image.Image, orientation: int, steps: list[PreparationStep]) -> Image.Image:
    """`image` as EXIF `orientation` says a person sees it (the same image when nothing is to do)."""
    if orientation not in ORIENTATIONS:
        return image
    method, description = ORIENTATIONS[orientation]
    upright = image.transpose(method)
    steps.append(PreparationStep(action="exif_transpose", detail=f"EXIF orientation {orientation}: {description}"))
    return upright
