"""The OCR service adapter over HTTP (httpx; no vendor SDK): DashScope's native API, its
OpenAI-compatible mode, and any self-hosted OpenAI-compatible server (vLLM, SGLang)."""

from .client import QwenOcrClient, shared_http_client
from .settings import OcrServiceSettings, WireProtocol

__all__ = ["OcrServiceSettings", "QwenOcrClient", "WireProtocol", "shared_http_client"]
