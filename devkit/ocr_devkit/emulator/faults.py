"""Fault injection and bookkeeping for the emulator: what goes wrong next, and what happened so far."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import random
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    THROTTLE = "throttle"  # 429 with the vendor's body and a Retry-After header
    SERVER_ERROR = "server_error"  # 500 InternalError
    HANG = "hang"  # read the request, answer nothing, close after hang_seconds
    MALFORMED = "malformed"  # 200 with a truncated JSON body


class FaultInjector:
    """Decides, per API request, whether it fails and how. Thread-safe.

    Scripted faults come first, one per request, in order. Once the script is empty, each request
    fails with probability `fault_rate`, the kind drawn uniformly from `kinds`, from a generator
    seeded with `seed` so that a run can be replayed. `latency_ms` is the least time from a request's
    arrival to its successful reply.
    """

    def __init__(
        self,
        *,
        script: Iterable[FaultKind | str] = (),
        fault_rate: float = 0.0,
        kinds: Iterable[FaultKind | str] = tuple(FaultKind),
        seed: int | None = None,
        latency_ms: float = 0.0,
        retry_after_seconds: float = 1.0,
        hang_seconds: float = 30.0,
    ) -> None:
        self._lock = threading.Lock()
        self._script: deque[FaultKind] = deque()
        self._rate = 0.0
        self._kinds: tuple[FaultKind, ...] = tuple(FaultKind)
        self._seed: int | None = None
        self._rng = random.Random()
        self._latency_ms = 0.0
        self._retry_after = 1.0
        self._hang = 30.0
        self.configure(
            script=list(script),
            fault_rate=fault_rate,
            kinds=list(kinds),
            seed=seed,
            latency_ms=latency_ms,
            retry_after_seconds=retry_after_seconds,
            hang_seconds=hang_seconds,
        )

    # --- configuration ------------------------------------------------------------

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change any of: script (replaces the queue), fault_rate, kinds, seed, latency_ms,
        retry_after_seconds, hang_seconds. Validates everything before changing anything."""
        unknown = set(settings) - {
            "script",
            "fault_rate",
            "kinds",
            "seed",
            "latency_ms",
            "retry_after_seconds",
            "hang_seconds",
        }
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        script = _kinds(settings["script"], "script") if "script" in settings else None
        kinds = _kinds(settings["kinds"], "kinds") if "kinds" in settings else None
        if kinds is not None and not kinds:
            raise ValueError("kinds must name at least one fault kind")
        rate = _number(settings, "fault_rate", low=0.0, high=1.0)
        latency = _number(settings, "latency_ms", low=0.0)
        retry_after = _number(settings, "retry_after_seconds", low=0.0)
        hang = _number(settings, "hang_seconds", low=0.0)
        seed = settings.get("seed")
        if "seed" in settings and seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer or null")
        with self._lock:
            if script is not None:
                self._script = deque(script)
            if kinds is not None:
                self._kinds = tuple(kinds)
            if rate is not None:
                self._rate = rate
            if latency is not None:
                self._latency_ms = latency
            if retry_after is not None:
                self._retry_after = retry_after
            if hang is not None:
                self._hang = hang
            if "seed" in settings:
                self._seed = seed
                self._rng = random.Random(seed)
        return self.snapshot()

    def script(self, kinds: Iterable[FaultKind | str]) -> None:
        """Replace the queue: the next requests fail with these kinds, in this order."""
        self.configure(script=list(kinds))

    def enqueue(self, *kinds: FaultKind | str) -> None:
        """Add faults at the end of the queue."""
        parsed = _kinds(kinds, "kinds")
        with self._lock:
            self._script.extend(parsed)

    def reset(self) -> None:
        """No faults, no latency, default Retry-After and hang time."""
        self.configure(
            script=[],
            fault_rate=0.0,
            kinds=list(FaultKind),
            seed=None,
            latency_ms=0.0,
            retry_after_seconds=1.0,
            hang_seconds=30.0,
        )

    @property
    def latency_ms(self) -> float:
        return self._latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self.configure(latency_ms=value)

    @property
    def retry_after_seconds(self) -> float:
        return self._retry_after

    @property
    def hang_seconds(self) -> float:
        return self._hang

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "script": [kind.value for kind in self._script],
                "fault_rate": self._rate,
                "kinds": [kind.value for kind in self._kinds],
                "seed": self._seed,
                "latency_ms": self._latency_ms,
                "retry_after_seconds": self._retry_after,
                "hang_seconds": self._hang,
            }

    # --- use ------------------------------------------------------------------------

    def next_fault(self) -> FaultKind | None:
        """The fault for the request being served, if any. Call once per API request."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self._rate > 0 and self._rng.random() < self._rate:
                return self._rng.choice(self._kinds)
            return None


def _kinds(values: Any, name: str) -> list[FaultKind]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of fault kinds")
    parsed = []
    for value in values:
        try:
            parsed.append(FaultKind(value))
        except ValueError:
            known = ", ".join(kind.value for kind in FaultKind)
            raise ValueError(f"unknown fault kind {value!r} in {name}; known kinds: {known}") from None
    return parsed


def _number(settings: Mapping[str, Any], name: str, *, low: float, high: float | None = None) -> float | None:
    if name not in settings:
        return None
    value = settings[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < low or (high is not None and value > high):
        bounds = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return float(value)


# --- what happened -----------------------------------------------------------------------


def redact_images(value: Any) -> Any:
    """A request body with every base64 data URL replaced by its MIME type, length and sha256.

    The hash is of the decoded bytes when they decode, so tests can compare it with the file they sent.
    """
    if isinstance(value, dict):
        return {key: redact_images(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_images(item) for item in value]
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value[:200]:
        header, _, payload = value.partition(",")
        try:
            digest = hashlib.sha256(base64.b64decode(payload, validate=True)).hexdigest()
        except (binascii.Error, ValueError):
            digest = hashlib.sha256(payload.encode()).hexdigest()
        return {"data_url": header.removeprefix("data:"), "base64_length": len(payload), "sha256": digest}
    return value


class Recorder:
    """Counters and a bounded log of the requests received, for tests and for `/_emulator/*`. Thread-safe."""

    def __init__(self, max_requests: int = 200) -> None:
        self._lock = threading.Lock()
        self._log: deque[dict[str, Any]] = deque(maxlen=max_requests)
        self._sequence = 0
        self._requests: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._successes = 0
        # Digests of every request body seen (images as their own digests): a body seen before is a
        # retry, by the client or by a redelivered page, whatever the caller's own counters say.
        self._seen: set[bytes] = set()
        self._repeats = 0
        # When each request body first met a fault, and how long it took until the same body succeeded:
        # the time a transient failure cost the page it hit.
        self._first_fault_at: dict[str, float] = {}
        self._recoveries: list[float] = []
        # Requests received and not yet answered, and the most there ever were at once: the calls in
        # flight the stack's limits (OcrMaxConcurrency, OcrCallsPerInstance) bound.
        self._open: set[int] = set()
        self._most_open = 0

    def received(self, endpoint: str, path: str, body: Any, *, key_suffix: str | None) -> dict[str, Any]:
        """Log a request as it arrives; the returned entry is completed by `answered`."""
        with self._lock:
            self._sequence += 1
            self._requests[endpoint] += 1
            self._open.add(self._sequence)
            self._most_open = max(self._most_open, len(self._open))
            redacted = redact_images(body)
            digest = hashlib.sha256(
                json.dumps([endpoint, path, redacted], sort_keys=True, default=str).encode()
            ).digest()
            repeat = digest in self._seen
            self._seen.add(digest)
            self._repeats += 1 if repeat else 0
            entry: dict[str, Any] = {
                "digest": digest.hex(),
                "seq": self._sequence,
                "received_at": time.time(),
                "endpoint": endpoint,
                "path": path,
                "key_suffix": key_suffix,
                "body": redacted,
                "repeat": repeat,
                "status": None,
                "fault": None,
                "error_code": None,
                "request_id": None,
            }
            self._log.append(entry)
            return entry

    def answered(
        self,
        entry: dict[str, Any],
        *,
        status: int | None,
        request_id: str | None,
        fault: FaultKind | None = None,
        error_code: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            self._open.discard(entry["seq"])
            entry.update(status=status, request_id=request_id, fault=fault.value if fault else None)
            # What the API billed, as its reply said: lets tests compare billing events with the source.
            entry["response_usage"] = copy.deepcopy(usage)
            entry["error_code"] = error_code
            if status is not None:
                self._statuses[str(status)] += 1
            if fault is not None:
                self._first_fault_at.setdefault(entry["digest"], entry["received_at"])
            elif status == 200 and entry["digest"] in self._first_fault_at:
                self._recoveries.append(time.time() - self._first_fault_at.pop(entry["digest"]))
            if fault is not None:
                self._faults[fault.value] += 1
            elif error_code is not None:
                self._errors[error_code] += 1
            elif status == 200:
                self._successes += 1

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._log))

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": {"native": 0, "compatible": 0, **self._requests},
                "faults": {kind.value: self._faults[kind.value] for kind in FaultKind},
                "successes": self._successes,
                # Requests identical to an earlier one (same endpoint, parameters and image bytes).
                "repeated_requests": self._repeats,
                # Requests open at once, at most (received, not yet answered).
                "most_open_at_once": self._most_open,
                # From a request's first fault to the same request's success, in seconds.
                "recoveries": {
                    "count": len(self._recoveries),
                    "max_s": round(max(self._recoveries), 2) if self._recoveries else None,
                    "median_s": round(statistics.median(self._recoveries), 2) if self._recoveries else None,
                },
                "errors": dict(self._errors),
                "statuses": dict(self._statuses),
            }

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._requests.clear()
            self._faults.clear()
            self._statuses.clear()
            self._errors.clear()
            self._successes = 0
            self._seen.clear()
            self._repeats = 0
            self._first_fault_at.clear()
            self._recoveries.clear()
            self._open.clear()
            self._most_open = 0
