"""The emulator, reached through the pipeline's own client, for reading prepared images and their usage."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ocr_devkit.emulator.server import EmulatorServer
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, QwenOcrClient
from ocr_pipeline.catalog import model_spec
from ocr_pipeline.ocr_service import OcrCall
from ocr_pipeline.tasks import TaskOptions
from ocr_pipeline.usage import Usage

BENCH_API_KEY = "bench-local-key"


@dataclass
class EmulatorReader:
    client: QwenOcrClient
    settings: OcrServiceSettings

    def read(self, data: bytes, mime_type: str, width: int, height: int) -> tuple[str, Usage]:
        call = OcrCall(
            image_url=f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}",
            options=TaskOptions(),
            model=model_spec(self.settings.model),
            image_width=width,
            image_height=height,
        )
        reply = self.client.recognize(call).reply
        return reply.result.text, reply.usage


@contextmanager
def emulator_reader() -> Iterator[EmulatorReader]:
    with EmulatorServer() as server:
        settings = OcrServiceSettings(base_url=server.native_base, api_key=BENCH_API_KEY)
        yield EmulatorReader(QwenOcrClient(settings), settings)


def recognized_text(reader: Any, data: bytes, mime_type: str) -> str:
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(data)) as image:
        width, height = image.size
    text, _ = reader.read(data, mime_type, width, height)
    return str(text)
