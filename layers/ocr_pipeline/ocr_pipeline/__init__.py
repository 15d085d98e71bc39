"""ocr-pipeline: the shared runtime library every Lambda function imports through the layer.

Domain modules (imaging, tasks, tokens, results, pricing) do no I/O. Adapters that
talk to AWS or HTTP live under `ocr_pipeline.adapters` and `ocr_pipeline.client`.
"""

__version__ = "0.1.0"
