"""An offline stand-in for Alibaba's DashScope Qwen-OCR service, for development and tests only.

It speaks the native and the OpenAI-compatible endpoints over loopback HTTP, answers every built-in
task from what a real CPU OCR engine (rapidocr-onnxruntime) reads in the image, and can be told to
throttle, fail, hang or garble its replies. It also serves the vendor's Batch File API (files and
batches in compatible mode), with scripted batch outcomes and error-file lines. Never part of the Lambda layer.
"""

from .batch_faults import BatchFaults, Outcome
from .batches import BatchService
from .engine import Line, OcrEngine, shared_engine
from .faults import FaultInjector, FaultKind
from .server import EmulatorServer

__all__ = [
    "BatchFaults",
    "BatchService",
    "EmulatorServer",
    "FaultInjector",
    "FaultKind",
    "Line",
    "OcrEngine",
    "Outcome",
    "shared_engine",
]
