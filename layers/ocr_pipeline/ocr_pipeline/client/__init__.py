"""The Qwen-OCR service adapter (httpx; no vendor SDK)."""

from .http import CallOutcome, QwenOcrClient, shared_http_client
from .settings import OcrServiceSettings, Protocol
from .wire import OcrCall, WireReply

__all__ = [
    "CallOutcome",
    "OcrCall",
    "OcrServiceSettings",
    "Protocol",
    "QwenOcrClient",
    "WireReply",
    "shared_http_client",
]
