"""The errors the ports raise: typed, each with a stable code, and retryable where another delivery can succeed."""

from __future__ import annotations

from typing import Any

from ..errors import OcrPipelineError


class SourceNotFound(OcrPipelineError):
    code = "source.not_found"


class SourceAccessDenied(OcrPipelineError):
    """The source exists or not, but this function may not read it: S3's 403. Permanent: a retry
    meets the same policy. (Without s3:ListBucket, S3 answers a missing key with 403 too.)"""

    code = "source.forbidden"


class StorageError(OcrPipelineError):
    code = "storage.error"
    retryable = True


class ClaimHeld(OcrPipelineError):
    """Another worker holds the claim to publish this page's bill or this document's ending.

    Retryable: the message comes back after the claim's lease, so a claimant that died is taken over
    instead of the message being deleted with the work undone.
    """

    code = "pipeline.claim_held"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        # When trying again can succeed: as the holder's lease runs out. A delivery that came back
        # sooner would only find the claim held again and spend one of the message's receives.
        self.retry_after_s = retry_after_s


class JobNotFound(OcrPipelineError):
    """A page queue message names a job with no record (expired, or deleted by hand): nothing to work for."""

    code = "pipeline.job_not_found"


class WorkInProgress(OcrPipelineError):
    """The same unit of work is running in another invocation (or died there and holds its key until its deadline)."""

    code = "pipeline.in_progress"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueSendError(OcrPipelineError):
    """Some entries of a batch were not accepted; `failed` lists their ids and reasons."""

    code = "queue.send_failed"
    retryable = True

    def __init__(self, message: str, failed: list[dict[str, Any]]) -> None:
        super().__init__(message, failed=failed)
        self.failed = failed


class BatchStateConflict(OcrPipelineError):
    """A batch record refused a step: it is not where the step starts from (another run moved it on, or
    closed it), or a batch of that key exists already.

    Retryable as a run is: the same call gives the same answer, but the next run reads the record as it
    stands now and goes on from there. The run that met it must not go on with this batch (a second
    upload must not become a second vendor batch)."""

    code = "batch.state_conflict"
    retryable = True
