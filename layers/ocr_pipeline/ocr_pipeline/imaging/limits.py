"""What preparation refuses, and how far it goes to make an image acceptable to the vendor."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Pillow-free, so that settings can name them without importing the imaging stack (cold start).
from ..render_dpi import DEFAULT_PDF_RENDER_DPI as DEFAULT_PDF_RENDER_DPI
from ..render_dpi import MAX_RENDER_DPI as MAX_RENDER_DPI
from ..render_dpi import PDF_RENDER_TO_BUDGET as PDF_RENDER_TO_BUDGET


class PreparationLimits(BaseModel):
    """What we refuse, and how far we go to make an image acceptable."""

    model_config = ConfigDict(frozen=True)

    max_input_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    # Checked against the header before anything is decoded. Pillow's own hard limit
    # (2 x Image.MAX_IMAGE_PIXELS, about 179 MP) still applies above this.
    max_decoded_pixels: int = Field(default=100_000_000, gt=0)
    # The vendor limits the base64 string to 10 MB; we count the whole data URL against it.
    max_encoded_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_output_pixels: int = Field(default=15_680_000, gt=0)
    max_aspect_ratio: float = Field(default=200.0, ge=1.0)
    # The vendor wants both sides > 10 px.
    min_side: int = Field(default=11, ge=1)
    # Padding may at most multiply the short side by this; the bound keeps the search short.
    max_pad_factor: float = Field(default=2.0, ge=1.0, le=16.0)
    # Dots per inch of a PDF page of text and drawings; a scanned page is drawn at its scan's own
    # resolution (pdf_resolution.py). PDF_RENDER_TO_BUDGET draws every page to the budget.
    pdf_render_dpi: float = Field(default=DEFAULT_PDF_RENDER_DPI, ge=0, le=MAX_RENDER_DPI)


DEFAULT_LIMITS = PreparationLimits()
