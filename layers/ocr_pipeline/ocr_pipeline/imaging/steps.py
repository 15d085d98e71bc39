"""The record of one thing preparation did to an image, so a user can see why the model got what it got."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PreparationStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    # One of: select_frame, draft, convert_mode, exif_ignored, resize, exif_transpose,
    # flatten_alpha, pad, reencode; for rendered pages also render and forms_ignored; for a half of a
    # page read again, crop.
    action: str
    detail: str
