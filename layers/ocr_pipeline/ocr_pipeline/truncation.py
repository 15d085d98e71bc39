"""Reading a page again as two overlapping halves when the model's output limit cut its answer short.

A page whose answer stopped at max_tokens holds more text than one answer can. Each half holds about
half of it, so each fits where the whole did not. The halves are cut from the image already prepared
for the page, at its scale: the model sees every line at the size it saw it the first time, and pays
for about the image tokens of the page once, plus the overlap band.

The overlap band is there so that no line is lost where the halves meet: a line the top half's lower
edge cuts through lies whole in the bottom half, and the other way round. Its lines are read twice,
and kept once (`stitch_text`, `stitch_words`).

Only answers that are lines of text, top to bottom, can be joined this way. A table, the fields of an
extraction or a LaTeX document read in two halves would be two tables, two partial objects or two
documents, which no rule can safely merge: those pages keep the cut answer, flagged.

No I/O of its own: the recognizer passed in makes the calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import OcrPipelineError
from .imaging import PreparationLimits, PreparedImage, crop_rows
from .ocr_service import FINISH_LENGTH
from .recognition import Recognition, Recognizer, budget_for
from .results import RecognitionResult, Word
from .tasks import OcrTask, TaskOptions
from .tokens import PixelBudget, smart_resize

# Tasks whose answer is lines of text in reading order, which two halves' answers can be joined into.
STITCHABLE_TASKS = frozenset({OcrTask.TEXT_RECOGNITION, OcrTask.ADVANCED_RECOGNITION, OcrTask.MULTI_LAN})

# The overlap band is this share of the page's height, in whole rows of patches, and at least
# MIN_OVERLAP_PATCHES rows: several lines of body text on a page dense enough to fill an answer, so the
# band holds whole lines besides the two the crop edges cut through, and its text can be recognized
# in both halves' answers. Each half then costs a little over half the page's image tokens.
OVERLAP_SHARE = 0.08
MIN_OVERLAP_PATCHES = 2


@dataclass(frozen=True)
class HalfPlan:
    """Rows of the page's prepared image: the top half is [0, top_end), the bottom half [bottom_start, height).

    [bottom_start, top_end) is the overlap band; `seam` is the row in its middle, where words of the
    top half end and words of the bottom half begin.
    """

    height: int
    top_end: int
    bottom_start: int

    @property
    def seam(self) -> int:
        return (self.bottom_start + self.top_end) // 2


def why_not_stitchable(options: TaskOptions) -> str | None:
    """Why a cut answer to `options` cannot be read again in halves, or None when it can."""
    task = options.effective_task
    if task is None:
        return "a free prompt's answer has no known shape, so two halves' answers cannot be joined safely"
    if task not in STITCHABLE_TASKS:
        return f"{task.value} answers cannot be joined from two halves of the page (one table, object or document)"
    return None


def plan_halves(width: int, height: int, budget: PixelBudget, limits: PreparationLimits) -> HalfPlan | None:
    """Where to cut a prepared image `width` x `height`; None when its halves would not be read at its scale.

    Every cut is on a patch boundary, so each half's height is a whole number of patches and the vendor's
    smart_resize leaves it as it is: the model's coordinates in a half are pixels of the half, and its
    rows are the page's rows. That is checked, not assumed, as are the vendor's side and ratio limits.
    """
    patch = budget.patch
    rows = height // patch
    overlap = max(MIN_OVERLAP_PATCHES, math.ceil(rows * OVERLAP_SHARE))
    before_band = (rows - overlap) // 2
    if before_band < 1:
        return None
    plan = HalfPlan(height=height, top_end=(before_band + overlap) * patch, bottom_start=before_band * patch)
    for half_height in (plan.top_end, height - plan.bottom_start):
        if smart_resize(half_height, width, budget) != (half_height, width):
            return None
        if min(width, half_height) < limits.min_side:
            return None
        if max(width, half_height) / min(width, half_height) > limits.max_aspect_ratio:
            return None
    return plan


def _line_key(line: str) -> str:
    return " ".join(line.split())


def stitch_text(top: str, bottom: str) -> tuple[str, bool]:
    """The two halves' texts as one, the overlap band's lines once; and whether the band was found.

    Each half is read top to bottom, so the band's lines are the last lines of the top text and the
    first lines of the bottom text. We drop the longest run of leading bottom lines that equals a run
    of trailing top lines: the longest, because the band is a block of consecutive lines and a shorter
    match may be one line that merely repeats (a heading, a total). Lines compare with their spacing
    collapsed, since the two reads of a line may space it differently. Each crop edge may cut a line
    through, and a line cut through reads differently from the same line whole; so the run may end one
    line before the top text's end, and start one line after the bottom text's start. Such a cut line
    is dropped: the other half holds it whole, on the right side of the run. When no run is found, the
    texts are joined as they are, and the caller says that lines near the seam may repeat.
    """
    top_lines = top.rstrip().splitlines()
    bottom_lines = bottom.strip("\n").splitlines()
    top_keys = [_line_key(line) for line in top_lines]
    bottom_keys = [_line_key(line) for line in bottom_lines]
    best: tuple[int, int, int] | None = None  # (run length, lines skipped at the top's end, at the bottom's start)
    for skip_top in (0, 1):
        for skip_bottom in (0, 1):
            end = len(top_keys) - skip_top
            longest = min(end, len(bottom_keys) - skip_bottom)
            for run in range(longest, 0, -1):
                if top_keys[end - run : end] == bottom_keys[skip_bottom : skip_bottom + run]:
                    # A run of blank lines only is no evidence of where the band is.
                    if any(top_keys[end - run : end]) and (best is None or run > best[0]):
                        best = (run, skip_top, skip_bottom)
                    break
    if best is None:
        return "\n".join([*top_lines, *bottom_lines]), False
    run, skip_top, skip_bottom = best
    kept_top = top_lines[: len(top_lines) - skip_top]
    return "\n".join([*kept_top, *bottom_lines[skip_bottom + run :]]), True


def _centre_y(word: Word) -> float:
    return sum(word.location[1::2]) / 4


def stitch_words(top: list[Word], bottom: list[Word], seam_y: float) -> list[Word]:
    """The two halves' boxes, already in page coordinates, each line once.

    A line in the overlap band is boxed by both halves; the seam in the band's middle decides which
    box stays, by the box's centre: the top half's above it, the bottom half's at or below it. A line
    cut by a half's edge lies more than half a band away from the seam (for any line shorter than half
    the band), on the other half's side, so the box kept is always that of the line read whole.
    """
    return [word for word in top if _centre_y(word) < seam_y] + [word for word in bottom if _centre_y(word) >= seam_y]


def read_in_halves(
    recognizer: Recognizer,
    image: PreparedImage,
    options: TaskOptions,
    first: Recognition,
    *,
    deadline: float | None = None,
) -> Recognition:
    """`first`, a cut answer for `image`, replaced by the page read again in two halves and stitched.

    Every call made is in the usage: the cut one and both halves. A half cut again is kept as it is,
    not split further, and the page stays truncated. When the page cannot be split (its task, its
    shape) or a half's call fails, `first` is kept with a warning that says why, billed for every
    call that was answered.
    """
    refusal = why_not_stitchable(options)
    if refusal is not None:
        return _kept(recognizer, first, [], f"truncated answer kept, not read again in halves: {refusal}")
    plan = plan_halves(image.width, image.height, budget_for(recognizer.model, options), recognizer.limits)
    if plan is None:
        return _kept(
            recognizer,
            first,
            [],
            f"truncated answer kept: a {image.width}x{image.height} image cannot be halved at its scale",
        )
    answered: list[Recognition] = []
    try:
        for top, bottom in ((0, plan.top_end), (plan.bottom_start, plan.height)):
            half = crop_rows(image, top, bottom, recognizer.limits)
            answered.append(recognizer.recognize_prepared(half, options, deadline=deadline))
    except OcrPipelineError as error:
        return _kept(
            recognizer, first, answered, f"truncated answer kept: reading it again in halves failed ({error.code})"
        )
    upper, lower = answered
    seam_y = image.mapping.to_original_point(0, plan.seam)[1]
    return _stitched(recognizer, first, upper, lower, seam_y)


def _billed_together(recognizer: Recognizer, first: Recognition, more: list[Recognition]) -> dict[str, object]:
    calls = [first, *more]
    usage = first.usage
    for call in more:
        usage = usage + call.usage
    return {
        "usage": usage,
        "cost": recognizer.price(usage),
        "attempts": sum(call.attempts for call in calls),
        "latency_ms": sum(call.latency_ms for call in calls),
        "billed_attempts": [attempt for call in calls for attempt in call.billed_attempts],
        "calls": sum(call.calls for call in calls),
    }


def _kept(recognizer: Recognizer, first: Recognition, answered: list[Recognition], warning: str) -> Recognition:
    return first.model_copy(
        update={**_billed_together(recognizer, first, answered), "warnings": [*first.warnings, warning]}
    )


def _stitched(
    recognizer: Recognizer, first: Recognition, upper: Recognition, lower: Recognition, seam_y: float
) -> Recognition:
    top, bottom = upper.result, lower.result
    warnings = list(first.warnings)
    words: list[Word] | None = None
    if top.words is not None and bottom.words is not None:
        words = stitch_words(top.words, bottom.words, seam_y)
        # Boxed lines are what the text is made of (results.parse_model_output): keep the two in step.
        text = "\n".join(word.text for word in words)
    else:
        text, found = stitch_text(top.text, bottom.text)
        if not found:
            warnings.append("the halves' texts share no lines where they overlap: lines near the middle may repeat")
    cut_again = upper.finish_reason == FINISH_LENGTH or lower.finish_reason == FINISH_LENGTH
    if cut_again:
        warnings.append("a half of the page was cut short again at max_tokens: the text still ends early")
    result = RecognitionResult(
        task=top.task,
        text=text,
        words=words,
        raw_text=f"{top.raw_text}\n{bottom.raw_text}",
        parse_warnings=[*top.parse_warnings, *bottom.parse_warnings],
    )
    update: dict[str, object] = {
        "result": result,
        "finish_reason": FINISH_LENGTH if cut_again else lower.finish_reason,
        "split": True,
        "warnings": warnings,
        **_billed_together(recognizer, first, [upper, lower]),
    }
    return first.model_copy(update=update)
