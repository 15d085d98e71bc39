"""The vendor's two wire formats as the emulator sees them: validate a request, shape a reply.

Validation follows the documented limits (Model Studio "Qwen-OCR", image and model restrictions)
and answers with the vendor's status codes and error codes. Messages are ours, written to say
exactly what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from .engine import Line
from .prompts import builtin_prompt, classify_prompt
from .responses import task_output
from .tokenizer import count_tokens, prompt_tokens, truncate_to_tokens
from .vendor import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    DEFAULT_PROMPT,
    MAX_SCHEMA_DEPTH,
    Budget,
    Model,
    Task,
    find_model,
    image_tokens,
    schema_depth,
    smart_resize,
)

Mode = Literal["native", "compatible"]

# Documented image limits.
MIN_SIDE_EXCLUSIVE = 10
MAX_ASPECT_RATIO = 200
MAX_PIXELS_PER_IMAGE = 15_680_000
MAX_BASE64_CHARS = 10 * 1024 * 1024
PIXELS_4K = 3840 * 2160

# What the real bytes are, by their first bytes; the data URL must declare the same.
_MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_FORMATS_ABOVE_4K = {"image/jpeg", "image/png"}


class ApiError(Exception):
    """A request the vendor would refuse: HTTP status, the vendor's error code, and what is wrong."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param


def invalid(message: str, *, param: str | None = None) -> ApiError:
    return ApiError(400, "InvalidParameter", message, param=param)


THROTTLED = ApiError(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
INTERNAL_ERROR = ApiError(500, "InternalError", "An internal error has occurred, please try again later.")

# Native code -> (OpenAI-style type, code) of the compatible endpoint.
_COMPATIBLE_CODES: dict[str, tuple[str, str]] = {
    "InvalidParameter": ("invalid_request_error", "invalid_parameter_error"),
    "InvalidApiKey": ("invalid_request_error", "invalid_api_key"),
    "ModelNotFound": ("invalid_request_error", "model_not_found"),
    "Throttling.RateQuota": ("limit_requests", "limit_requests"),
    "InternalError": ("internal_error", "internal_error"),
    "NotFound": ("invalid_request_error", "not_found"),
    "MethodNotAllowed": ("invalid_request_error", "method_not_allowed"),
}


def native_error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "code": error.code, "message": error.message}


def compatible_error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    kind, code = _COMPATIBLE_CODES.get(error.code, ("invalid_request_error", error.code))
    return {
        "error": {"message": error.message, "type": kind, "param": error.param, "code": code},
        "request_id": request_id,
    }


def new_request_id() -> str:
    return str(uuid.uuid4())


# --- images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedImage:
    """The decoded image as sent (before the model's resize)."""

    image: Image.Image
    mime: str
    sha256: str

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def sniff_mime(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
        return "image/heic"
    return None


def decode_image_url(url: Any, *, param: str) -> ReceivedImage:
    """A `data:<mime>;base64,...` URL checked against the documented limits, decoded.

    The emulator runs offline, so it cannot fetch http(s) URLs the way the vendor does.
    """
    if not isinstance(url, str) or not url:
        raise invalid("the image must be given as a non-empty string (a data: URL)", param=param)
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        raise invalid(
            "the offline emulator cannot download image URLs; send the image inline as a data:<mime>;base64,<data> URL",
            param=param,
        )
    if scheme != "data":
        raise invalid(
            f"unsupported image reference scheme {scheme!r}; send a data:<mime>;base64,<data> URL", param=param
        )
    header, comma, payload = url[5:].partition(",")
    attributes = [part.strip().lower() for part in header.split(";")]
    if not comma or "base64" not in attributes[1:]:
        raise invalid("the data URL must be base64-encoded: data:<mime>;base64,<data>", param=param)
    if len(payload) > MAX_BASE64_CHARS:
        raise invalid(
            f"the base64 image is {len(payload)} characters; the limit is 10 MB (raw file under about 7 MB)",
            param=param,
        )
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("the data URL's payload is not valid base64", param=param) from None
    declared = _MIME_ALIASES.get(attributes[0], attributes[0])
    actual = sniff_mime(data)
    if actual is None:
        raise invalid(
            "unsupported image format; use BMP, JPEG, PNG, TIFF, WEBP or HEIC",
            param=param,
        )
    if declared != actual:
        raise invalid(
            f"the data URL declares MIME type {attributes[0]!r} but the data is {actual}; they must match",
            param=param,
        )
    image = _open(data, actual, param=param)
    return ReceivedImage(image=image, mime=actual, sha256=hashlib.sha256(data).hexdigest())


def _open(data: bytes, mime: str, *, param: str) -> Image.Image:
    if mime == "image/heic":
        try:
            from pi_heif import register_heif_opener
        except ImportError:
            raise invalid("HEIC images need pi-heif, which this emulator lacks", param=param) from None
        register_heif_opener()
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        check_dimensions(width, height, mime, param=param)
        image.load()
        return image.convert("RGB")
    except ApiError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid(f"the image data cannot be decoded as {mime}: {exc}", param=param) from None


def check_dimensions(width: int, height: int, mime: str, *, param: str | None = None) -> None:
    if width <= MIN_SIDE_EXCLUSIVE or height <= MIN_SIDE_EXCLUSIVE:
        raise invalid(
            f"The image length and width do not meet the model restrictions: "
            f"height {height} and width {width} must both be larger than {MIN_SIDE_EXCLUSIVE} pixels",
            param=param,
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise invalid(
            f"the image's aspect ratio {width}x{height} exceeds {MAX_ASPECT_RATIO}:1",
            param=param,
        )
    if width * height > MAX_PIXELS_PER_IMAGE:
        raise invalid(
            f"the image has {width * height} pixels; at most {MAX_PIXELS_PER_IMAGE} (15.68 MP) are allowed",
            param=param,
        )
    if width * height > PIXELS_4K and mime not in _FORMATS_ABOVE_4K:
        raise invalid(f"images larger than 4K (3840x2160) must be JPEG or PNG, not {mime}", param=param)


# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OcrRequest:
    """One validated request, whichever endpoint it came through."""

    mode: Mode
    model: str
    spec: Model
    image: ReceivedImage
    budget: Budget
    task: Task
    result_schema: dict[str, Any] | None
    # The prompt the model reads: the user's text, or the built-in task's prompt.
    prompt: str
    # Set through ocr_options: only then does the native reply carry `ocr_result`.
    builtin_task: bool
    enable_rotate: bool
    max_tokens: int

    @property
    def model_view(self) -> tuple[int, int]:
        """(height, width) of the image the model sees, after the vendor's smart_resize."""
        return smart_resize(self.image.height, self.image.width, self.budget)


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{name} must be a JSON object", param=name)
    return value


def _int(value: Any, name: str, *, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer", param=name)
    if value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise invalid(f"{name} must be in {bounds}, got {value}", param=name)
    return value


def _model(body: dict[str, Any]) -> tuple[str, Model]:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise invalid("model must be given as a non-empty string", param="model")
    model = find_model(name)
    if model is None:
        raise ApiError(404, "ModelNotFound", f"Model not exist: {name!r} is not a Qwen-OCR model")
    return name, model


def _single_user_message(messages: Any, name: str) -> dict[str, Any]:
    if not isinstance(messages, list) or not messages:
        raise invalid(f"{name} must be a non-empty list", param=name)
    if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
        raise invalid(
            "Qwen-OCR does not accept a system message; put every instruction in the user message", param=name
        )
    if len(messages) != 1:
        raise invalid("Qwen-OCR supports single-turn conversations only: send exactly one user message", param=name)
    message = _object(messages[0], f"{name}[0]")
    if message.get("role") != "user":
        raise invalid(f"{name}[0].role must be 'user'", param=f"{name}[0].role")
    return message


def _pixels(item: dict[str, Any], name: str) -> tuple[int, int]:
    min_pixels = _int(item.get("min_pixels", DEFAULT_MIN_PIXELS), f"{name}.min_pixels")
    max_pixels = _int(item.get("max_pixels", DEFAULT_MAX_PIXELS), f"{name}.max_pixels")
    if min_pixels > max_pixels:
        raise invalid(f"{name}.min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})", param=name)
    return min_pixels, max_pixels


def _max_tokens(value: Any, spec: Model, name: str) -> int:
    if value is None:
        return spec.max_output_tokens
    return _int(value, name, high=spec.max_output_tokens)


def _exactly_one_image(count: int, name: str) -> None:
    if count != 1:
        raise invalid(f"the user message must contain exactly one image, found {count}", param=name)


def _content_parts(
    content: Any,
    name: str,
    shape: str,
    kind_of: Callable[[dict[str, Any]], str | None],
    unknown: Callable[[str, dict[str, Any]], str],
) -> tuple[dict[str, Any], str | None]:
    """The user message's one image part, and its text parts joined (None without any).

    Both protocols put an image and text parts in one list; they differ only in how a part says which
    it is (`kind_of`) and in how they word a part of neither kind (`unknown`)."""
    if not isinstance(content, list) or not content:
        raise invalid(f"{name} must be a non-empty {shape}", param=name)
    images: list[dict[str, Any]] = []
    texts: list[str] = []
    for index, part in enumerate(content):
        where = f"{name}[{index}]"
        part = _object(part, where)
        kind = kind_of(part)
        if kind == "image":
            images.append(part)
        elif kind == "text":
            if not isinstance(part.get("text"), str):
                raise invalid(f"{where}.text must be a string", param=where)
            texts.append(part["text"])
        else:
            raise invalid(unknown(where, part), param=where)
    _exactly_one_image(len(images), name)
    return images[0], "\n".join(texts) if texts else None


def parse_native(body: Any) -> OcrRequest:
    """POST {base}/services/aigc/multimodal-generation/generation."""
    body = _object(body, "body")
    model, spec = _model(body)
    message = _single_user_message(_object(body.get("input"), "input").get("messages"), "input.messages")
    image_item, text = _content_parts(
        message.get("content"),
        "input.messages[0].content",
        "list",
        lambda item: "image" if "image" in item else "text" if "text" in item else None,
        lambda where, item: f"{where} must be an image item or a text item",
    )
    image_name = "input.messages[0].content.image"
    min_pixels, max_pixels = _pixels(image_item, image_name)
    enable_rotate = image_item.get("enable_rotate", False)
    if not isinstance(enable_rotate, bool):
        raise invalid(f"{image_name}.enable_rotate must be a boolean", param=image_name)

    parameters = _object(body.get("parameters", {}), "parameters")
    ocr_options = _object(parameters.get("ocr_options", {}), "parameters.ocr_options")
    task, schema = _ocr_options(ocr_options, spec)
    max_tokens = _max_tokens(parameters.get("max_tokens"), spec, "parameters.max_tokens")

    # Decode last: it is the expensive part, and the cheap checks should answer first.
    image = decode_image_url(image_item["image"], param=image_name)
    budget = Budget(patch=spec.patch, min_pixels=min_pixels, max_pixels=max_pixels)
    if task is not None:
        return OcrRequest(
            mode="native",
            model=model,
            spec=spec,
            image=image,
            budget=budget,
            task=task,
            result_schema=schema,
            prompt=builtin_prompt(task, schema),
            builtin_task=True,
            enable_rotate=enable_rotate,
            max_tokens=max_tokens,
        )
    intent = classify_prompt(text)
    return OcrRequest(
        mode="native",
        model=model,
        spec=spec,
        image=image,
        budget=budget,
        task=intent.task,
        result_schema=intent.result_schema,
        prompt=text or DEFAULT_PROMPT,
        builtin_task=False,
        enable_rotate=enable_rotate,
        max_tokens=max_tokens,
    )


def _ocr_options(options: dict[str, Any], spec: Model) -> tuple[Task | None, dict[str, Any] | None]:
    name = "parameters.ocr_options"
    raw_task = options.get("task")
    task_config = _object(options.get("task_config", {}), f"{name}.task_config")
    schema = task_config.get("result_schema")
    if raw_task is None:
        if schema is not None:
            raise invalid("result_schema needs ocr_options.task = key_information_extraction", param=f"{name}.task")
        return None, None
    try:
        task = Task(raw_task)
    except ValueError:
        known = ", ".join(t.value for t in Task)
        raise invalid(
            f"{name}.task {raw_task!r} is not a built-in task; use one of: {known}", param=f"{name}.task"
        ) from None
    if not spec.builtin_tasks:
        raise invalid(f"{spec.name} does not support built-in OCR tasks; send a prompt instead", param=f"{name}.task")
    if schema is not None:
        param = f"{name}.task_config.result_schema"
        if task is not Task.KEY_INFORMATION_EXTRACTION:
            raise invalid(f"result_schema only applies to key_information_extraction, not {task.value}", param=param)
        if not isinstance(schema, dict) or not schema:
            raise invalid("result_schema must be a non-empty JSON object", param=param)
        depth = schema_depth(schema)
        if depth > MAX_SCHEMA_DEPTH:
            raise invalid(
                f"result_schema is nested {depth} levels deep; at most {MAX_SCHEMA_DEPTH} are supported", param=param
            )
    return task, schema


def parse_compatible(body: Any) -> OcrRequest:
    """POST {base}/chat/completions, OpenAI-style. No built-in tasks: the prompt says what to do."""
    body = _object(body, "body")
    model, spec = _model(body)
    if body.get("stream"):
        raise invalid("the emulator does not stream; send stream=false", param="stream")
    message = _single_user_message(body.get("messages"), "messages")
    content = message.get("content")
    if isinstance(content, str):
        _exactly_one_image(0, "messages[0].content")
    part, text = _content_parts(
        content,
        "messages[0].content",
        "list of parts",
        lambda part: {"image_url": "image", "text": "text"}.get(str(part.get("type"))),
        lambda where, part: f"{where}.type must be 'image_url' or 'text', not {part.get('type')!r}",
    )
    image_name = "messages[0].content.image_url"
    reference = part.get("image_url")
    url = reference.get("url") if isinstance(reference, dict) else reference
    min_pixels, max_pixels = _pixels(part, image_name)
    max_tokens = _max_tokens(body.get("max_tokens", body.get("max_completion_tokens")), spec, "max_tokens")

    image = decode_image_url(url, param=image_name)
    intent = classify_prompt(text)
    return OcrRequest(
        mode="compatible",
        model=model,
        spec=spec,
        image=image,
        budget=Budget(patch=spec.patch, min_pixels=min_pixels, max_pixels=max_pixels),
        task=intent.task,
        result_schema=intent.result_schema,
        prompt=text or DEFAULT_PROMPT,
        builtin_task=False,
        # enable_rotate is native-only.
        enable_rotate=False,
        max_tokens=max_tokens,
    )


# --- replies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    ocr_result: dict[str, Any] | None
    finish_reason: Literal["stop", "length"]
    text_tokens: int
    image_tokens: int
    output_tokens: int

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.image_tokens


def answer(request: OcrRequest, lines: list[Line]) -> Answer:
    """The model's reply to `request`, given the lines the engine read in the model's view of the image.

    A reply longer than max_tokens is cut there and finishes with "length", as the vendor's
    table example (cut off mid-tag) does.
    """
    output = task_output(request.task, lines, result_schema=request.result_schema)
    text = output.text
    finish: Literal["stop", "length"] = "stop"
    if count_tokens(text) > request.max_tokens:
        text, finish = truncate_to_tokens(text, request.max_tokens), "length"
    return Answer(
        text=text,
        ocr_result=output.ocr_result if request.builtin_task else None,
        finish_reason=finish,
        text_tokens=prompt_tokens(request.prompt),
        image_tokens=image_tokens(request.image.height, request.image.width, request.budget),
        # The end-of-turn token is always there, even after an empty answer.
        output_tokens=max(1, count_tokens(text)),
    )


def native_body(reply: Answer, request_id: str) -> dict[str, Any]:
    content: dict[str, Any] = {"text": reply.text}
    if reply.ocr_result is not None:
        content["ocr_result"] = reply.ocr_result
    return {
        "output": {
            "choices": [{"finish_reason": reply.finish_reason, "message": {"role": "assistant", "content": [content]}}]
        },
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "image_tokens": reply.image_tokens,
            "input_tokens_details": {"text_tokens": reply.text_tokens, "image_tokens": reply.image_tokens},
            "output_tokens_details": {"text_tokens": reply.output_tokens},
        },
        "request_id": request_id,
    }


def compatible_body(reply: Answer, model: str, completion_id: str) -> dict[str, Any]:
    return {
        "choices": [
            {
                "message": {"content": reply.text, "role": "assistant"},
                "finish_reason": reply.finish_reason,
                "index": 0,
                "logprobs": None,
            }
        ],
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": {"image_tokens": reply.image_tokens, "text_tokens": reply.text_tokens},
            "completion_tokens_details": {"text_tokens": reply.output_tokens},
        },
        "created": int(time.time()),
        "system_fingerprint": None,
        "model": model,
        "id": completion_id,
    }


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4()}"
