"""ocr-pipeline: the shared runtime library every Lambda function imports through the layer.

Three floors, and imports only run down them:
- the core (imaging, tasks, tokens, results, pricing, recognition, the OCR port in ocr_service) and the
  services in `pipeline/` do no I/O of their own: they talk to ports;
- `adapters/` implement those ports on AWS (boto3, Powertools) and on the OCR service (httpx);
- `bootstrap` is the composition root that builds each function's service on the adapters.
"""

__version__ = "0.1.0"
