"""Powertools Metrics (CloudWatch EMF) from what the pipeline already says: its events and its OCR calls.

Metrics are derived at the two edges every unit of work crosses (publishing an event, calling the API),
so the domain core stays free of telemetry. Plain counts go into the invocation's metric set, flushed
by each handler's `@metrics.log_metrics`; metrics split by a dimension (error code, currency) are
written at once with `single_metric`, because EMF gives one dimension set per record.
"""

from __future__ import annotations

import threading
from decimal import Decimal

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from ..pipeline.events import EventEnvelope
from ..pipeline.ports import EventBus
from ..usage import BilledAttempt

# The names the dashboard in template.yaml plots; a test keeps the two in step.
DOCUMENTS_COMPLETED = "DocumentsCompleted"
DOCUMENTS_FAILED = "DocumentsFailed"
PAGES_RECOGNIZED = "PagesRecognized"
PAGES_FAILED = "PagesFailed"
INPUT_TOKENS = "InputTokens"
OUTPUT_TOKENS = "OutputTokens"
IMAGE_TOKENS = "ImageTokens"
COST = "Cost"
OCR_LATENCY = "OcrLatency"
OCR_CALLS = "OcrCalls"
OCR_RETRIES = "OcrRetries"
OCR_THROTTLED = "OcrThrottled"
OCR_CALL_FAILURES = "OcrCallFailures"
# Pages whose answer the model's output limit cut short.
PAGES_TRUNCATED = "PagesTruncated"
# Pages read again in two halves because their first answer was cut (TruncationPolicy split).
PAGES_SPLIT = "PagesSplit"
# Attempts the vendor billed whose reply could not be used, and their tokens: the operator's loss.
OCR_BILLED_IN_VAIN = "OcrAttemptsBilledInVain"
OCR_TOKENS_BILLED_IN_VAIN = "OcrTokensBilledInVain"
# The batch lane: pages put in batch files, batches opened (or waiting for the vendor to take them),
# batches still open and the age of the oldest (alarmed past the vendor's 24 h window), batches closed by
# the vendor's status, and what became of their pages.
BATCH_PAGES_SUBMITTED = "BatchPagesSubmitted"
BATCHES_OPENED = "BatchesOpened"
BATCHES_WAITING_TO_OPEN = "BatchesWaitingToOpen"
BATCHES_OPEN = "BatchesOpen"
OLDEST_OPEN_BATCH_AGE = "OldestOpenBatchAge"
BATCHES_CLOSED = "BatchesClosed"
BATCH_PAGES_SETTLED = "BatchPagesSettled"
BATCH_PAGES_SENT_AGAIN = "BatchPagesSentAgain"
BATCH_PAGES_SENT_REALTIME = "BatchPagesSentRealtime"
METRIC_NAMES = (
    DOCUMENTS_COMPLETED,
    DOCUMENTS_FAILED,
    PAGES_RECOGNIZED,
    PAGES_FAILED,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    IMAGE_TOKENS,
    COST,
    OCR_LATENCY,
    OCR_CALLS,
    OCR_RETRIES,
    OCR_THROTTLED,
    OCR_CALL_FAILURES,
    PAGES_TRUNCATED,
    PAGES_SPLIT,
    OCR_BILLED_IN_VAIN,
    OCR_TOKENS_BILLED_IN_VAIN,
    BATCH_PAGES_SUBMITTED,
    BATCHES_OPENED,
    BATCHES_WAITING_TO_OPEN,
    BATCHES_OPEN,
    OLDEST_OPEN_BATCH_AGE,
    BATCHES_CLOSED,
    BATCH_PAGES_SETTLED,
    BATCH_PAGES_SENT_AGAIN,
    BATCH_PAGES_SENT_REALTIME,
)


# Every Metrics() shares one set of metrics, and several threads add to it at once (records and
# calls in flight): Powertools' add_metric reads, then writes that set, so one thread at a time.
METRICS_LOCK = threading.Lock()


def add_metric(metrics: Metrics, *, name: str, unit: MetricUnit, value: float) -> None:
    with METRICS_LOCK:
        metrics.add_metric(name=name, unit=unit, value=value)


def _count_by(name: str, dimension: str, value: str, amount: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    with single_metric(name=name, unit=unit, value=amount) as metric:
        metric.add_dimension(name=dimension, value=value)


class MeteredEventBus:
    """An EventBus that also counts documents, pages, tokens, cost and failures by code."""

    def __init__(self, inner: EventBus, metrics: Metrics | None = None) -> None:
        self.inner = inner
        self.metrics = metrics or Metrics()

    def publish(self, envelope: EventEnvelope) -> None:
        self.inner.publish(envelope)
        data = envelope.data
        if envelope.event_type == "usage.recorded":
            add_metric(self.metrics, name=PAGES_RECOGNIZED, unit=MetricUnit.Count, value=1)
            add_metric(self.metrics, name=INPUT_TOKENS, unit=MetricUnit.Count, value=data["input_tokens"])
            add_metric(self.metrics, name=OUTPUT_TOKENS, unit=MetricUnit.Count, value=data["output_tokens"])
            add_metric(self.metrics, name=IMAGE_TOKENS, unit=MetricUnit.Count, value=data["image_tokens"])
            if data.get("cost") is not None and data.get("currency"):
                _count_by(COST, "Currency", data["currency"], float(Decimal(data["cost"])), MetricUnit.NoUnit)
        elif envelope.event_type == "document.completed":
            add_metric(self.metrics, name=DOCUMENTS_COMPLETED, unit=MetricUnit.Count, value=1)
            if data.get("pages_failed"):
                add_metric(self.metrics, name=PAGES_FAILED, unit=MetricUnit.Count, value=len(data["pages_failed"]))
            if data.get("pages_truncated"):
                add_metric(
                    self.metrics, name=PAGES_TRUNCATED, unit=MetricUnit.Count, value=len(data["pages_truncated"])
                )
            if data.get("pages_split"):
                add_metric(self.metrics, name=PAGES_SPLIT, unit=MetricUnit.Count, value=len(data["pages_split"]))
        elif envelope.event_type == "document.failed":
            _count_by(DOCUMENTS_FAILED, "ErrorCode", data["error"]["code"])


class MetricsCallObserver:
    """Told by the OCR client about each call: latency, retries (throttles apart) and failures by code."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()

    def call_succeeded(self, latency_ms: float, attempts: int) -> None:
        add_metric(self.metrics, name=OCR_CALLS, unit=MetricUnit.Count, value=1)
        add_metric(self.metrics, name=OCR_LATENCY, unit=MetricUnit.Milliseconds, value=latency_ms)

    def retrying(self, code: str) -> None:
        if code == "ocr.throttled":
            add_metric(self.metrics, name=OCR_THROTTLED, unit=MetricUnit.Count, value=1)
        _count_by(OCR_RETRIES, "ErrorCode", code)

    def call_failed(self, code: str) -> None:
        _count_by(OCR_CALL_FAILURES, "ErrorCode", code)

    def attempt_billed_in_vain(self, attempt: BilledAttempt) -> None:
        add_metric(self.metrics, name=OCR_BILLED_IN_VAIN, unit=MetricUnit.Count, value=1)
        tokens = attempt.input_tokens + attempt.output_tokens
        add_metric(self.metrics, name=OCR_TOKENS_BILLED_IN_VAIN, unit=MetricUnit.Count, value=tokens)


def emit_batch_submission(metrics: Metrics, pages_submitted: int, opened: int, waiting: int) -> None:
    add_metric(metrics, name=BATCH_PAGES_SUBMITTED, unit=MetricUnit.Count, value=pages_submitted)
    add_metric(metrics, name=BATCHES_OPENED, unit=MetricUnit.Count, value=opened)
    add_metric(metrics, name=BATCHES_WAITING_TO_OPEN, unit=MetricUnit.Count, value=waiting)


def emit_batch_collection(
    metrics: Metrics,
    *,
    open_batches: int,
    oldest_s: float,
    closed: dict[str, int],
    settled: int,
    sent_again: int,
    sent_realtime: int,
) -> None:
    # Gauges every run, so the alarm on the oldest open batch sees a value while nothing else happens.
    add_metric(metrics, name=BATCHES_OPEN, unit=MetricUnit.Count, value=open_batches)
    add_metric(metrics, name=OLDEST_OPEN_BATCH_AGE, unit=MetricUnit.Seconds, value=oldest_s)
    add_metric(metrics, name=BATCH_PAGES_SETTLED, unit=MetricUnit.Count, value=settled)
    add_metric(metrics, name=BATCH_PAGES_SENT_AGAIN, unit=MetricUnit.Count, value=sent_again)
    add_metric(metrics, name=BATCH_PAGES_SENT_REALTIME, unit=MetricUnit.Count, value=sent_realtime)
    for status, count in closed.items():
        _count_by(BATCHES_CLOSED, "status", status, count)
