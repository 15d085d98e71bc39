"""The OCR service adapter over HTTP (httpx; no vendor SDK): DashScope's native API, its
OpenAI-compatible mode, and any self-hosted OpenAI-compatible server (vLLM, SGLang); and the
compatible mode's Batch File API.

The names below are loaded on first use (PEP 562): a function that reads only the settings
(every function checks the configured model at its start) does not import httpx and the clients.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batch_client import DashScopeBatchClient
    from .client import QwenOcrClient, shared_http_client
    from .settings import OcrServiceSettings, WireProtocol

__all__ = ["DashScopeBatchClient", "OcrServiceSettings", "QwenOcrClient", "WireProtocol", "shared_http_client"]

_HOMES = {
    "DashScopeBatchClient": ".batch_client",
    "OcrServiceSettings": ".settings",
    "QwenOcrClient": ".client",
    "WireProtocol": ".settings",
    "shared_http_client": ".client",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name], __name__), name)
