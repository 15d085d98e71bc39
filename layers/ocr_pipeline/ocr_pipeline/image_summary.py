"""What preparation did to an image, as a page's result reports it: the steps taken and the sizes.

Plain data, apart from the imaging stack that produces it (imaging/, Pillow), so that code which only
stores, reads or settles results (every function but the page worker) does not import Pillow.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PreparationStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    # One of: select_frame, draft, convert_mode, exif_ignored, resize, exif_transpose,
    # flatten_alpha, pad, reencode; for rendered pages also render and forms_ignored; for a half of a
    # page read again, crop.
    action: str
    detail: str


class ImageSummary(BaseModel):
    source_format: str
    original_width: int | float
    original_height: int | float
    prepared_width: int
    prepared_height: int
    prepared_bytes: int
    mime_type: str
    scale_x: float
    scale_y: float
    steps: list[PreparationStep]
