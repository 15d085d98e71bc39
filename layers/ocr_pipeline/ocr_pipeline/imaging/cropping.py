"""A band of rows cut out of a prepared image, as an image of its own ready to send.

The band keeps the scale of the image it is cut from: its rows are those pixels, not resampled, and
its mapping says where it lies, so the model's coordinates in the band map back to the original.
"""

from __future__ import annotations

import io

from PIL import Image

from .encoding import encode
from .limits import PreparationLimits
from .preparation import PreparedImage
from .steps import PreparationStep


def crop_rows(image: PreparedImage, top: int, bottom: int, limits: PreparationLimits) -> PreparedImage:
    """Rows `top` (included) to `bottom` (excluded) of `image`, full width, encoded as any prepared image."""
    if not 0 <= top < bottom <= image.height:
        raise ValueError(f"rows {top}..{bottom} are not inside an image {image.height} rows high")
    steps = list(image.steps)
    # Our own encoding of an image already decoded once: nothing untrusted is read here.
    with Image.open(io.BytesIO(image.data)) as whole:
        band = whole.crop((0, top, image.width, bottom))
    steps.append(
        PreparationStep(action="crop", detail=f"rows {top}-{bottom} of {image.width}x{image.height}, same scale")
    )
    data, mime_type = encode(band, limits, steps)
    band.close()
    mapping = image.mapping.model_copy(
        update={"prepared_height": bottom - top, "offset_y": image.mapping.offset_y + top}
    )
    return image.model_copy(
        update={"data": data, "mime_type": mime_type, "height": bottom - top, "mapping": mapping, "steps": steps}
    )
