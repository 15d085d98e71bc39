"""The record of one thing preparation did to an image, so a user can see why the model got what it got.

Defined with the result's image summary (image_summary.py), which reports it without importing Pillow.
"""

from __future__ import annotations

from ..image_summary import PreparationStep

__all__ = ["PreparationStep"]
