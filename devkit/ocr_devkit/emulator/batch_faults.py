"""What the emulator's Batch API does on purpose: how long a batch takes, how it ends, which lines fail.

- `completion_delay_s`: a batch reaches its final status no earlier than this long after its creation.
- `outcomes`: a script applied to the next batches created, one each, in order (then `completed`):
  `completed`; `failed` (errors set, no line processed, no output); `expired` (no line processed, no
  output), or `{"outcome": "expired", "lines_done": K}` (the first K lines processed, their results in the
  output and error files, the other lines in neither); `cancelled` (cancelling, then cancelled, no line
  processed, no output).
- `error_lines`: rules that send a line to the error file instead of the model, by `custom_ids` and/or
  `every_nth` line of a batch (the Nth, 2Nth, ...), with the `status_code` and vendor `code` to answer
  (say 500 `InternalError`, retryable, or 400 `InvalidParameter`, permanent). The first rule that matches
  a line decides; they apply to every batch while they are set.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_COMPLETION_DELAY_S = 2.0


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ScriptedOutcome:
    outcome: Outcome
    # For `expired` only: how many lines are processed before the batch expires.
    lines_done: int = 0

    def describe(self) -> str | dict[str, Any]:
        if self.outcome is Outcome.EXPIRED and self.lines_done:
            return {"outcome": self.outcome.value, "lines_done": self.lines_done}
        return self.outcome.value


COMPLETED = ScriptedOutcome(Outcome.COMPLETED)


@dataclass(frozen=True)
class ErrorLineRule:
    status_code: int
    code: str
    message: str
    custom_ids: frozenset[str] = frozenset()
    every_nth: int | None = None

    def matches(self, custom_id: str, position: int) -> bool:
        """`position` counts the batch's request lines from 1."""
        if custom_id in self.custom_ids:
            return True
        return self.every_nth is not None and position % self.every_nth == 0

    def describe(self) -> dict[str, Any]:
        return {
            "custom_ids": sorted(self.custom_ids),
            "every_nth": self.every_nth,
            "status_code": self.status_code,
            "code": self.code,
            "message": self.message,
        }


class BatchFaults:
    """The settings above, changed at run time through `configure`. Thread-safe."""

    def __init__(
        self,
        *,
        completion_delay_s: float = DEFAULT_COMPLETION_DELAY_S,
        outcomes: Iterable[Any] = (),
        error_lines: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._lock = threading.Lock()
        self._default_delay_s = 0.0
        self._delay_s = 0.0
        self._outcomes: deque[ScriptedOutcome] = deque()
        self._rules: tuple[ErrorLineRule, ...] = ()
        self.configure(completion_delay_s=completion_delay_s, outcomes=list(outcomes), error_lines=list(error_lines))
        self._default_delay_s = self._delay_s

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change any of completion_delay_s, outcomes (replaces the script), error_lines (replaces the rules).

        Validates everything before changing anything."""
        unknown = set(settings) - {"completion_delay_s", "outcomes", "error_lines"}
        if unknown:
            raise ValueError(f"unknown batch fault settings: {', '.join(sorted(unknown))}")
        delay = settings.get("completion_delay_s")
        if "completion_delay_s" in settings and (
            isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0
        ):
            raise ValueError(f"completion_delay_s must be a number >= 0, got {delay!r}")
        outcomes = _outcomes(settings["outcomes"]) if "outcomes" in settings else None
        rules = _rules(settings["error_lines"]) if "error_lines" in settings else None
        with self._lock:
            if delay is not None:
                self._delay_s = float(delay)
            if outcomes is not None:
                self._outcomes = deque(outcomes)
            if rules is not None:
                self._rules = tuple(rules)
        return self.snapshot()

    def reset(self) -> None:
        """No scripted outcome, no error line, the delay the emulator was started with."""
        self.configure(completion_delay_s=self._default_delay_s, outcomes=[], error_lines=[])

    @property
    def completion_delay_s(self) -> float:
        return self._delay_s

    def next_outcome(self) -> ScriptedOutcome:
        """The outcome of the batch being created; call once per batch."""
        with self._lock:
            return self._outcomes.popleft() if self._outcomes else COMPLETED

    def error_rule(self, custom_id: str, position: int) -> ErrorLineRule | None:
        with self._lock:
            rules = self._rules
        return next((rule for rule in rules if rule.matches(custom_id, position)), None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "completion_delay_s": self._delay_s,
                "outcomes": [item.describe() for item in self._outcomes],
                "error_lines": [rule.describe() for rule in self._rules],
            }


def _outcomes(values: Any) -> list[ScriptedOutcome]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError("outcomes must be a list")
    known = ", ".join(item.value for item in Outcome)
    parsed = []
    for value in values:
        lines_done: Any = 0
        if isinstance(value, Mapping):
            extra = set(value) - {"outcome", "lines_done"}
            if extra:
                raise ValueError(f"unknown outcome fields: {', '.join(sorted(extra))}")
            lines_done = value.get("lines_done", 0)
            value = value.get("outcome")
        try:
            outcome = Outcome(value)
        except ValueError:
            raise ValueError(f"unknown batch outcome {value!r}; known outcomes: {known}") from None
        if isinstance(lines_done, bool) or not isinstance(lines_done, int) or lines_done < 0:
            raise ValueError(f"lines_done must be an integer >= 0, got {lines_done!r}")
        if lines_done and outcome is not Outcome.EXPIRED:
            raise ValueError("lines_done applies to the expired outcome only")
        parsed.append(ScriptedOutcome(outcome, lines_done))
    return parsed


def _rules(values: Any) -> list[ErrorLineRule]:
    if isinstance(values, str | Mapping) or not isinstance(values, Iterable):
        raise ValueError("error_lines must be a list of rules")
    rules = []
    for value in values:
        if not isinstance(value, Mapping):
            raise ValueError("each error_lines rule must be an object")
        extra = set(value) - {"custom_ids", "every_nth", "status_code", "code", "message"}
        if extra:
            raise ValueError(f"unknown error_lines fields: {', '.join(sorted(extra))}")
        custom_ids = value.get("custom_ids", [])
        if isinstance(custom_ids, str) or not all(isinstance(item, str) for item in custom_ids):
            raise ValueError("custom_ids must be a list of strings")
        every_nth = value.get("every_nth")
        if every_nth is not None and (isinstance(every_nth, bool) or not isinstance(every_nth, int) or every_nth < 1):
            raise ValueError(f"every_nth must be an integer >= 1, got {every_nth!r}")
        if not custom_ids and every_nth is None:
            raise ValueError("an error_lines rule needs custom_ids or every_nth")
        status = value.get("status_code", 500)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"status_code must be an HTTP error status (400..599), got {status!r}")
        code = value.get("code", "InternalError" if status >= 500 else "InvalidParameter")
        if not isinstance(code, str) or not code:
            raise ValueError("code must be a non-empty string")
        message = value.get("message", f"injected by the emulator: {code}")
        if not isinstance(message, str):
            raise ValueError("message must be a string")
        rules.append(
            ErrorLineRule(
                status_code=status, code=code, message=message, custom_ids=frozenset(custom_ids), every_nth=every_nth
            )
        )
    return rules
