"""Token accuracy: the image tokens we estimate for a prepared A4 page against the usage the service returns.

The estimate is `image_tokens` of the prepared size, at the default budget, which is what the
pipeline can know before it calls. The service here is the emulator; see the report for what that
does and does not prove.
"""

from __future__ import annotations

from typing import Any

from ocr_pipeline.catalog import model_spec
from ocr_pipeline.pdf import prepare_pdf_page
from ocr_pipeline.tokens import PixelBudget, image_tokens

from .documents import text_pdf
from .recognition import EmulatorReader


def measure(reader: EmulatorReader) -> dict[str, Any]:
    spec = model_spec(reader.settings.model)
    budget = PixelBudget(patch=spec.patch)
    prepared = prepare_pdf_page(text_pdf(1), 1, budget)
    estimate = image_tokens(prepared.height, prepared.width, budget)
    _, usage = reader.read(prepared.data, prepared.mime_type, prepared.width, prepared.height)
    return {
        "model": spec.name,
        "prepared_size": [prepared.width, prepared.height],
        "estimated_image_tokens": estimate,
        "returned_image_tokens": usage.image_tokens,
        "returned_input_tokens": usage.input_tokens,
        "image_tokens_source": usage.image_tokens_source,
        "met": estimate == usage.image_tokens and usage.image_tokens_source == "api",
    }
