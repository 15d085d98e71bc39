"""Shared test setup: Powertools in test mode, and loaders for sample events and function modules."""

from __future__ import annotations

import os

# Before any handler module is imported: no X-Ray daemon here, and metrics need a namespace.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "OcrPipelineTests")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "ocr-pipeline-tests")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
