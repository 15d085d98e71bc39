"""The OCR service adapter: httpx, retries with backoff, typed errors.

The httpx.Client is cached per process so warm Lambda invocations reuse connections
(TLS handshakes to the vendor cost more than a small OCR reply).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

import httpx

from ... import errors
from ...ocr_service import CallObserver, CallOutcome, OcrCall, OcrReply
from ...usage import BilledAttempt
from .credentials import ApiKeyProvider, api_key_provider_for
from .ratelimit import CallSlots, RateLimiter, shared_call_slots, shared_limiter
from .settings import OcrServiceSettings
from .wire import build_body, error_from_reply, parse_reply

# Leave this much of the caller's deadline for what follows the call (storing, publishing).
DEADLINE_MARGIN_S = 2.0
USER_AGENT = "ocr-pipeline/0.1 (+httpx)"
WAIT_PAST_DEADLINE = "the server's Retry-After reaches past the deadline"


class RetryStats:
    """Counters a caller can read after a call; shared by all calls of one client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries = 0
        self.by_code: dict[str, int] = {}

    def record(self, error: errors.OcrServiceError) -> None:
        with self._lock:
            self.retries += 1
            self.by_code[error.code] = self.by_code.get(error.code, 0) + 1


@cache
def shared_http_client(connect_timeout_s: float, read_timeout_s: float) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=8, keepalive_expiry=60),
        headers={"User-Agent": USER_AGENT},
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After in seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class _Unobserved:
    def call_succeeded(self, latency_ms: float, attempts: int) -> None:
        pass

    def retrying(self, code: str) -> None:
        pass

    def call_failed(self, code: str) -> None:
        pass

    def attempt_billed_in_vain(self, attempt: BilledAttempt) -> None:
        pass


class QwenOcrClient:
    """Sends one OcrCall and returns the parsed reply, retrying what is worth retrying."""

    def __init__(
        self,
        settings: OcrServiceSettings,
        *,
        http: httpx.Client | None = None,
        api_keys: ApiKeyProvider | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        limiter: RateLimiter | None = None,
        slots: CallSlots | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.settings = settings
        self._http = http
        self._api_keys = api_keys or api_key_provider_for(settings)
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self.stats = RetryStats()
        self._limiter = limiter
        self._observer: CallObserver = observer or _Unobserved()
        if limiter is None and settings.requests_per_second is not None:
            self._limiter = shared_limiter(settings.requests_per_second)
        self._slots = slots
        if slots is None and settings.calls_in_flight:
            self._slots = shared_call_slots(settings.calls_in_flight)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = shared_http_client(self.settings.connect_timeout_s, self.settings.read_timeout_s)
        return self._http

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self._api_keys.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif self.settings.require_api_key:
            raise errors.ConfigurationError(
                "no API key: set DASHSCOPE_API_KEY, or DASHSCOPE_API_KEY_SECRET_ARN to read it from Secrets Manager"
            )
        return headers

    def recognize(self, call: OcrCall, *, deadline: float | None = None) -> CallOutcome:
        """Send `call`; `deadline` is a `clock()` value after which no new attempt starts."""
        body = build_body(self.settings.protocol, call, max_tokens=self.settings.max_tokens_for(call.model))
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = self._headers()
        started = self._clock()
        attempt = 0
        billed: list[BilledAttempt] = []
        while True:
            attempt += 1
            try:
                reply = self._attempt(payload, headers, call, deadline)
                latency_ms = (self._clock() - started) * 1000
                self._observer.call_succeeded(latency_ms, attempt)
                return CallOutcome(reply=reply, attempts=attempt, latency_ms=latency_ms, billed_attempts=billed)
            except errors.OcrServiceError as error:
                if isinstance(error, errors.OcrMalformedResponse) and error.billed_usage is not None:
                    wasted = BilledAttempt.of(error.billed_usage, reason=error.code, request_id=error.request_id)
                    billed.append(wasted)
                    self._observer.attempt_billed_in_vain(wasted)
                if not error.retryable:
                    self._observer.call_failed(error.code)
                    raise
                delay, why_not = self._next_try(attempt, error, deadline)
                if why_not is not None:
                    self._observer.call_failed(errors.OcrRetriesExhausted.code)
                    raise errors.OcrRetriesExhausted(
                        f"gave up after {attempt} attempt(s), {why_not}; last error {error.code}: {error.message}",
                        last_error=error,
                        attempts=attempt,
                        come_back_after_s=error.retry_after if why_not == WAIT_PAST_DEADLINE else None,
                        billed_attempts=len(billed),
                    ) from error
                self.stats.record(error)
                self._observer.retrying(error.code)
                self._sleep(delay)

    def _next_try(
        self, attempt: int, error: errors.OcrServiceError, deadline: float | None
    ) -> tuple[float, str | None]:
        """How long to wait before the next attempt, or why there is none.

        A server's Retry-After is honored in full: trying sooner only meets the same throttle. It is
        capped by the call's deadline (the Lambda invocation's time), not by a fixed ceiling; what does
        not fit gives the work back to its queue, to come back when the server said. Without a deadline
        (the CLI) `retry_after_max_s` bounds the wait instead.
        """
        if attempt >= self.settings.max_attempts:
            return 0.0, "out of attempts"
        if error.retry_after is not None:
            delay = error.retry_after
            if deadline is None and delay > self.settings.retry_after_max_s:
                return delay, f"the server asked to wait {delay:g} s, above retry_after_max_s"
        else:
            # Full jitter spreads a burst of throttled workers instead of retrying in lockstep.
            ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
            delay = ceiling * self._jitter()
        if deadline is not None and self._clock() + delay + DEADLINE_MARGIN_S >= deadline:
            return delay, WAIT_PAST_DEADLINE if error.retry_after is not None else "out of time before the deadline"
        return delay, None

    def _attempt(self, payload: bytes, headers: dict[str, str], call: OcrCall, deadline: float | None) -> OcrReply:
        last_start = None if deadline is None else deadline - DEADLINE_MARGIN_S
        # The call slot first, then the rate: a request starts as soon as its rate slot comes, so
        # starts keep their spacing however long the wait for a call slot was.
        if self._slots is not None and not self._slots.acquire(last_start):
            # Retryable: the message goes back to the queue and is tried when there is room again.
            raise errors.OcrTimeout("no call slot of this instance came free before the deadline")
        try:
            return self._send(payload, headers, call, deadline, last_start)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _send(
        self, payload: bytes, headers: dict[str, str], call: OcrCall, deadline: float | None, last_start: float | None
    ) -> OcrReply:
        if self._limiter is not None and not self._limiter.acquire(last_start):
            # Retryable: the message goes back to the queue and is tried when there is room again.
            raise errors.OcrTimeout("the requests-per-second limit leaves no slot before the deadline")
        timeout = self.http.timeout
        if deadline is not None:
            remaining = deadline - self._clock() - DEADLINE_MARGIN_S
            if remaining <= 0:
                raise errors.OcrTimeout("no time left before the deadline to call the OCR service")
            timeout = httpx.Timeout(
                min(self.settings.read_timeout_s, remaining), connect=self.settings.connect_timeout_s
            )
        try:
            response = self.http.post(self.settings.endpoint, content=payload, headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise errors.OcrTimeout(f"the OCR service did not answer in time ({type(exc).__name__})") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # A peer that drops the connection mid-reply is a transport failure like any other.
            raise errors.OcrConnectionError(f"cannot reach the OCR service: {type(exc).__name__}: {exc}") from None
        body = _json_or_none(response)
        if response.status_code != 200:
            raise error_from_reply(
                response.status_code, body, retry_after=parse_retry_after(response.headers.get("Retry-After"))
            )
        if body is None:
            raise errors.OcrMalformedResponse(
                f"the reply is not JSON ({len(response.content)} bytes)",
                status_code=200,
                request_id=response.headers.get("x-request-id") or response.headers.get("x-dashscope-request-id"),
            )
        return parse_reply(self.settings.protocol, body, call)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None
