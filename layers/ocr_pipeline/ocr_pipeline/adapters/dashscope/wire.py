"""The two wire formats: request bodies, successful replies and error replies.

Pure functions of dicts, so every shape is testable without a network.
"""

from __future__ import annotations

from typing import Any

from ... import errors
from ...ocr_service import OcrCall, OcrReply, prompt_for
from ...results import RecognitionResult, parse_model_output
from ...tokens import image_tokens
from ...usage import Usage
from .settings import WireProtocol


def build_body(protocol: WireProtocol, call: OcrCall, *, max_tokens: int | None = None) -> dict[str, Any]:
    """The request body. max_tokens is always sent (None: the model's documented maximum output), so the
    limit a cut answer ran into is ours, known, and the same whatever default a server applies."""
    limit = max_tokens or call.model.max_output_tokens
    if protocol is WireProtocol.DASHSCOPE:
        return _native_body(call, limit)
    return _compatible_body(call, limit)


def _native_body(call: OcrCall, max_tokens: int) -> dict[str, Any]:
    options = call.options
    budget = call.budget
    image_item: dict[str, Any] = {
        "image": call.image_url,
        "min_pixels": budget.min_pixels,
        "max_pixels": budget.max_pixels,
        "enable_rotate": options.enable_rotate,
    }
    content: list[dict[str, Any]] = [image_item]
    parameters: dict[str, Any] = {"max_tokens": max_tokens}
    body: dict[str, Any] = {
        "model": call.model.name,
        "input": {"messages": [{"role": "user", "content": content}]},
        "parameters": parameters,
    }
    task = options.effective_task
    if task is None or not call.model.supports_builtin_tasks:
        # A free prompt, or a snapshot without built-in tasks: the task's documented prompt stands in.
        content.append({"text": prompt_for(options)})
        return body
    ocr_options: dict[str, Any] = {"task": task.value}
    if options.result_schema is not None:
        ocr_options["task_config"] = {"result_schema": options.result_schema}
    parameters["ocr_options"] = ocr_options
    return body


def _compatible_body(call: OcrCall, max_tokens: int) -> dict[str, Any]:
    options = call.options
    if options.enable_rotate:
        raise errors.InvalidRequest("enable_rotate exists only in the native DashScope API; use the dashscope protocol")
    budget = call.budget
    image_part = {
        "type": "image_url",
        "image_url": {"url": call.image_url},
        "min_pixels": budget.min_pixels,
        "max_pixels": budget.max_pixels,
    }
    text_part = {"type": "text", "text": prompt_for(options)}
    return {
        "model": call.model.name,
        "messages": [{"role": "user", "content": [image_part, text_part]}],
        "max_tokens": max_tokens,
    }


# --- replies ------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _estimated_image_tokens(call: OcrCall) -> int:
    if call.image_width is None or call.image_height is None:
        return 0
    return image_tokens(call.image_height, call.image_width, call.budget)


def parse_reply(protocol: WireProtocol, body: Any, call: OcrCall) -> OcrReply:
    """Read a 200 reply.

    Only an envelope that cannot be read (no choices, no message content, no usage) is
    OcrMalformedResponse, which is retried; it carries the usage when that much was readable, since
    the vendor billed it. What the model wrote is parsed leniently and never fails the reply: it was
    billed, and asking again costs as much and usually answers the same.
    """
    request_id = _request_id(protocol, body)
    usage: Usage | None = None
    try:
        if not isinstance(body, dict):
            raise TypeError("the body is not a JSON object")
        if protocol is WireProtocol.DASHSCOPE:
            usage = _native_usage(body["usage"], call)
            text, ocr_result = _native_content(body)
            choice = body["output"]["choices"][0]
        else:
            usage = _compatible_usage(body["usage"], call)
            text, ocr_result = _compatible_content(body), {}
            choice = body["choices"][0]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise errors.OcrMalformedResponse(
            f"the reply does not have the documented shape ({type(exc).__name__}: {exc})",
            request_id=request_id,
            billed_usage=usage,
        ) from None
    return OcrReply(
        result=_model_output(call, text, ocr_result),
        usage=usage,
        request_id=request_id,
        finish_reason=_text(choice.get("finish_reason")),
    )


def _request_id(protocol: WireProtocol, body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    request_id = body.get("request_id")
    if not isinstance(request_id, str) and protocol is WireProtocol.OPENAI:
        request_id = body.get("id")
    return request_id if isinstance(request_id, str) else None


def _model_output(call: OcrCall, text: str, ocr_result: dict[str, Any]) -> RecognitionResult:
    task = call.options.effective_task
    try:
        return parse_model_output(task, text, ocr_result)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        # The parser keeps what it cannot read as text; this is the net under it, not a path.
        return RecognitionResult(
            task=task, text=text, raw_text=text, parse_warnings=[f"reply kept as text: {type(exc).__name__}: {exc}"]
        )


def _native_content(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    message = body["output"]["choices"][0]["message"]
    content = message["content"]
    if isinstance(content, str):
        content = [{"text": content}]
    if not isinstance(content, list):
        raise TypeError("message content is neither text nor a list")
    texts = [item["text"] for item in content if isinstance(item, dict) and isinstance(item.get("text"), str)]
    ocr_result: dict[str, Any] = {}
    for item in content:
        if isinstance(item, dict) and isinstance(item.get("ocr_result"), dict):
            ocr_result.update(item["ocr_result"])
    return "\n".join(texts), ocr_result


def _native_usage(usage_body: dict[str, Any], call: OcrCall) -> Usage:
    reported_image = _int(usage_body.get("image_tokens"))
    if reported_image is None:
        reported_image = _int((usage_body.get("input_tokens_details") or {}).get("image_tokens"))
    return Usage(
        input_tokens=int(usage_body["input_tokens"]),
        output_tokens=int(usage_body["output_tokens"]),
        image_tokens=reported_image if reported_image is not None else _estimated_image_tokens(call),
        image_tokens_source="api" if reported_image is not None else "estimate",
    )


def _compatible_content(body: dict[str, Any]) -> str:
    content = body["choices"][0]["message"]["content"]
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise TypeError("message content is not text")
    return content


def _compatible_usage(usage_body: dict[str, Any], call: OcrCall) -> Usage:
    reported_image = _int((usage_body.get("prompt_tokens_details") or {}).get("image_tokens"))
    return Usage(
        input_tokens=int(usage_body["prompt_tokens"]),
        output_tokens=int(usage_body["completion_tokens"]),
        image_tokens=reported_image if reported_image is not None else _estimated_image_tokens(call),
        image_tokens_source="api" if reported_image is not None else "estimate",
    )


# 400 codes that no retry can fix, besides InvalidParameter (the default for a 400).
_PERMANENT_400: dict[str, type[errors.OcrServiceError]] = {
    "arrearage": errors.OcrAccountError,
}
# Statuses the vendor's status-code page answers with "please try again later": 408 RequestTimeOut,
# 429 throttling, and the server side (500 InternalError, 502, 503 ServiceUnavailable, 504).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _is_data_inspection(code: str) -> bool:
    """DataInspectionFailed, InvalidParameter.DataInspection, data_inspection_failed: content moderation."""
    return "datainspection" in code.replace("_", "").replace(".", "")


def error_from_reply(status: int, body: Any, retry_after: float | None = None) -> errors.OcrServiceError:
    """Map a non-200 reply of either protocol to a typed error.

    The native API puts `code`, `message` and `request_id` at the top level; the compatible one nests
    `code`, `message` and `type` under `error`; some gateways write `msg` for the message. Any of them.
    """
    vendor_code: str | None = None
    message: str | None = None
    request_id: str | None = None
    if isinstance(body, dict):
        nested = body.get("error")
        detail: dict[str, Any] = nested if isinstance(nested, dict) else {}
        for layer in (detail, body):
            vendor_code = vendor_code or _text(layer.get("code")) or _text(layer.get("type"))
            message = message or _text(layer.get("message")) or _text(layer.get("msg"))
            request_id = request_id or _text(layer.get("request_id"))
    message = message or f"HTTP {status}"
    kwargs: dict[str, Any] = {
        "status_code": status,
        "vendor_code": vendor_code,
        "request_id": request_id,
        "retry_after": retry_after,
    }
    normalized = (vendor_code or "").lower()
    if _is_data_inspection(normalized):
        return errors.OcrContentRejected(message, **kwargs)
    if status == 429 or normalized.startswith("throttling") or normalized.startswith("limit_requests"):
        return errors.OcrThrottled(message, **kwargs)
    if status == 408 or normalized == "requesttimeout":
        return errors.OcrTimeout(message, **kwargs)
    if status >= 500 or status in RETRYABLE_STATUSES:
        return errors.OcrServerError(message, **kwargs)
    if status == 401:
        return errors.OcrUnauthorized(message, **kwargs)
    if status == 403:
        return errors.OcrAccessDenied(message, **kwargs)
    if status == 404:
        return errors.OcrModelNotFound(message, **kwargs)
    if status == 400 and normalized in _PERMANENT_400:
        return _PERMANENT_400[normalized](message, **kwargs)
    return errors.OcrInvalidParameter(message, **kwargs)
