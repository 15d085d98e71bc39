"""Typed errors with stable codes.

Every failure a user can see (in a CLI line, a `document.failed` event or a log)
carries a `code` that never changes between releases, so that consumers can
switch on it. `retryable` tells the caller whether trying again can help.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import AliasChoices, BaseModel, ValidationError

if TYPE_CHECKING:
    from .usage import Usage


class OcrPipelineError(Exception):
    """Base of every error this package raises on purpose."""

    code: ClassVar[str] = "internal.error"
    retryable: ClassVar[bool] = False
    # Set on a retryable error that knows when another try can succeed (a lease running out): its
    # message should come back then, not at once (a wasted receive) nor after the full visibility timeout.
    retry_after_s: float | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **({"details": self.details} if self.details else {})}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- configuration and requests -------------------------------------------------


class ConfigurationError(OcrPipelineError):
    code = "config.invalid"

    @classmethod
    def from_validation(cls, what: str, model: type[BaseModel], error: ValidationError) -> ConfigurationError:
        """One line naming each field that was refused, and the environment variable it is read from."""
        variables = {
            choice: name
            for name, field in model.model_fields.items()
            if isinstance(field.validation_alias, AliasChoices)
            for choice in field.validation_alias.choices
            if isinstance(choice, str) and choice != name
        }

        def place(loc: tuple[int | str, ...]) -> str:
            head = str(loc[0]) if loc else ""
            named = f"{variables[head]} ({head})" if head in variables else head
            return ".".join([named, *map(str, loc[1:])])

        problems = "; ".join(f"{place(e['loc'])}: {e['msg']}" for e in error.errors())
        return cls(f"invalid {what}: {problems}")


class InvalidRequest(OcrPipelineError):
    """The caller asked for something that cannot be sent (bad task options, schema too deep...)."""

    code = "request.invalid"


class MalformedRequest(InvalidRequest):
    """A request message that is not a JSON object at all."""

    code = "request.malformed"


class TenantNotAllowed(InvalidRequest):
    """The sender named who pays (a request's `tenant`, an object's `ocr-tenant`) where the operator's rules
    do not let it: tenants come from the stack's configuration, not from whoever sends the work."""

    code = "request.tenant_not_allowed"


class SourceForbidden(InvalidRequest):
    """A request named a source it may not use: a bucket or host not allowed, or a private address."""

    code = "request.source_forbidden"


# --- sources fetched by URL ----------------------------------------------------------------


class SourceFetchFailed(OcrPipelineError):
    """The URL answered with something other than the document (4xx, a redirect, the wrong size)."""

    code = "source.fetch_failed"


class SourceUnavailable(OcrPipelineError):
    """The URL's server or the network failed in a way that may pass: worth another delivery."""

    code = "source.unavailable"
    retryable = True


# --- images -------------------------------------------------------------------


class ImageError(OcrPipelineError):
    """The input image cannot be turned into something the model accepts. Never retryable."""

    code = "image.invalid"


class ImageUnsupportedFormat(ImageError):
    code = "image.unsupported_format"


class ImageUnreadable(ImageError):
    """Truncated, corrupt or otherwise undecodable data in a known format."""

    code = "image.unreadable"


class ImageTooManyPixels(ImageError):
    """Refused before decoding: the header announces more pixels than we are willing to allocate."""

    code = "image.too_many_pixels"


class ImageTooSmall(ImageError):
    code = "image.too_small"


class ImageAspectRatio(ImageError):
    code = "image.aspect_ratio"


class ImageEncodedTooLarge(ImageError):
    code = "image.encoded_too_large"


class InputTooLarge(ImageError):
    """The raw input is bigger than we accept, refused before it is read into memory."""

    code = "input.too_large"


# --- the OCR service ------------------------------------------------------------


class OcrServiceError(OcrPipelineError):
    code = "ocr.error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        vendor_code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, **details)
        self.status_code = status_code
        self.vendor_code = vendor_code
        self.request_id = request_id
        # The server's Retry-After, in seconds: a throttle or an overloaded server saying when to come back.
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for name in ("status_code", "vendor_code", "request_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


class OcrInvalidParameter(OcrServiceError):
    """400 InvalidParameter: the request itself is wrong; sending it again gives the same answer."""

    code = "ocr.invalid_parameter"


class OcrContentRejected(OcrServiceError):
    """400 DataInspectionFailed, InvalidParameter.DataInspection and kin: the vendor's content moderation
    refused the input (or the model's output). The same input is refused again."""

    code = "ocr.data_inspection_failed"


class OcrAccountError(OcrServiceError):
    """400 Arrearage and similar: the account cannot be billed. Needs a human, not a retry."""

    code = "ocr.account_error"


class OcrUnauthorized(OcrServiceError):
    """401: wrong or missing API key (often: a key from another region)."""

    code = "ocr.unauthorized"


class OcrAccessDenied(OcrServiceError):
    code = "ocr.access_denied"


class OcrModelNotFound(OcrServiceError):
    code = "ocr.model_not_found"


class OcrThrottled(OcrServiceError):
    code = "ocr.throttled"
    retryable = True


class OcrServerError(OcrServiceError):
    code = "ocr.server_error"
    retryable = True


class OcrTimeout(OcrServiceError):
    """No answer in time: our read timeout, the deadline, or the vendor's own 408 RequestTimeOut."""

    code = "ocr.timeout"
    retryable = True


class OcrConnectionError(OcrServiceError):
    code = "ocr.connection_error"
    retryable = True


class OcrMalformedResponse(OcrServiceError):
    """The body cannot be read: not JSON, or no choices, content or usage. Usually a truncated or proxied
    reply, so worth one more try. (A readable reply whose content is odd is never this: see results.py.)"""

    code = "ocr.malformed_response"
    retryable = True

    def __init__(self, message: str, *, billed_usage: Usage | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        # The usage the reply carried, when that much could be read: the vendor billed this attempt.
        self.billed_usage = billed_usage


class OcrRetriesExhausted(OcrServiceError):
    """Every attempt failed with a retryable error; `last_error` tells which."""

    code = "ocr.retries_exhausted"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        last_error: OcrServiceError,
        attempts: int,
        come_back_after_s: float | None = None,
        billed_attempts: int = 0,
    ) -> None:
        super().__init__(
            message,
            status_code=last_error.status_code,
            vendor_code=last_error.vendor_code,
            request_id=last_error.request_id,
            retry_after=last_error.retry_after,
            attempts=attempts,
            last_code=last_error.code,
            **({"billed_attempts": billed_attempts} if billed_attempts else {}),
        )
        self.last_error = last_error
        self.attempts = attempts
        # The server asked us to wait longer than this call may: the work comes back when it said.
        self.retry_after_s = come_back_after_s


# --- multi-page documents ----------------------------------------------------------------


class DocumentUnreadable(ImageError):
    """A PDF or multi-page TIFF that cannot be opened or rendered."""

    code = "document.unreadable"


class DocumentEncrypted(DocumentUnreadable):
    code = "document.encrypted"


class DocumentEmpty(DocumentUnreadable):
    """Nothing to read: a zero-byte object, or a PDF without pages."""

    code = "document.empty"


class DocumentTooManyPages(OcrPipelineError):
    code = "document.too_many_pages"


# --- work that ran out of retries ------------------------------------------------------------


class PageRetriesExhausted(OcrPipelineError):
    """A page message was delivered until its queue gave up on it and moved it to the dead-letter queue."""

    code = "page.retries_exhausted"


class UploadFailed(OcrPipelineError):
    """The upload function failed on an object on every attempt Lambda made."""

    code = "upload.failed"


class RequestRetriesExhausted(OcrPipelineError):
    """A request message was delivered until its queue gave up on it and moved it to the dead-letter queue."""

    code = "request.retries_exhausted"


# --- the batch lane ------------------------------------------------------------------------------


class BatchLaneUnsupported(InvalidRequest):
    """A document sent to the batch lane with a model or region the vendor's Batch File API does not take."""

    code = "request.batch_unsupported"


class BatchRetriesExhausted(OcrPipelineError):
    """A page's batches expired, failed or were cancelled (or its line failed retryably) on every attempt allowed."""

    code = "batch.retries_exhausted"
