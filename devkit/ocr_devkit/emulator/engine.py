"""A real CPU OCR engine behind the emulator: rapidocr-onnxruntime, loaded once and shared.

The engine finds text lines and reads them; everything task-specific happens in `responses`.
rapidocr is imported only when the first image is recognized, so importing this module (or the
emulator package) stays cheap, and the layer package `ocr_pipeline` never pulls it in.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

Point = tuple[float, float]
Quad = tuple[Point, Point, Point, Point]

# rapidocr's own threshold: lines read with less confidence are noise more often than text.
MIN_SCORE = 0.5
# Words whose boxes are at most this many line heights apart belong to the same line; table
# columns are usually further apart than that, so they stay separate segments.
WORD_GAP_IN_HEIGHTS = 1.0
# Two boxes share a row when they overlap vertically by at least this share of the smaller one.
ROW_OVERLAP = 0.5
# onnxruntime's own threads per session. With more than one, each of the three sessions keeps a pool of
# C++ threads that spin while they wait for work: CPU taken from a busy machine between calls, and
# threads alive when the interpreter exits. The emulator reads one page at a time and its speed does
# not matter. (rapidocr already turns onnxruntime's CPU memory arena off: `enable_cpu_mem_arena`.)
ONNX_THREADS = 1


@functools.cache
def _libc() -> Any:
    """glibc, for malloc_trim; None elsewhere (musl, macOS), where there is nothing to trim this way."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Give the heap's free pages back to the system.

    One page's detection allocates about half a gigabyte in onnxruntime, in blocks glibc serves from
    its heap once its mmap threshold has grown; freed, they stay resident until trimmed.
    """
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(OSError):
            libc.malloc_trim(0)


@dataclass(frozen=True, slots=True)
class Line:
    """One recognized line (or line segment): its text, its corners TL, TR, BR, BL, and the reader's confidence."""

    text: str
    quad: Quad
    score: float

    @property
    def left(self) -> float:
        return min(x for x, _ in self.quad)

    @property
    def right(self) -> float:
        return max(x for x, _ in self.quad)

    @property
    def top(self) -> float:
        return min(y for _, y in self.quad)

    @property
    def bottom(self) -> float:
        return max(y for _, y in self.quad)

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def center(self) -> Point:
        return (sum(x for x, _ in self.quad) / 4, sum(y for _, y in self.quad) / 4)


def vertical_overlap(a: Line, b: Line) -> float:
    """Share of the shorter box's height that the two boxes have in common."""
    common = min(a.bottom, b.bottom) - max(a.top, b.top)
    return max(0.0, common) / max(1e-6, min(a.height, b.height))


def group_rows(lines: Sequence[Line]) -> list[list[Line]]:
    """Lines grouped into visual rows, rows top to bottom and each row left to right."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda item: (item.top, item.left)):
        for row in rows:
            if any(vertical_overlap(line, other) >= ROW_OVERLAP for other in row):
                row.append(line)
                break
        else:
            rows.append([line])
    rows.sort(key=lambda row: min(item.center[1] for item in row))
    return [sorted(row, key=lambda item: item.left) for row in rows]


def reading_order(lines: Sequence[Line]) -> list[Line]:
    """Top to bottom, then left to right within a row."""
    return [line for row in group_rows(lines) for line in row]


def _merge_words(quads: Sequence[Quad]) -> list[Quad]:
    """Join word boxes that the detector split apart into one box per line segment.

    The joined box keeps the outer corners of its first and last word, so a tilted line stays tilted.
    """
    boxes = sorted(quads, key=lambda quad: min(x for x, _ in quad))
    groups: list[list[Quad]] = []
    for quad in boxes:
        probe = Line("", quad, 1.0)
        for group in groups:
            last = Line("", group[-1], 1.0)
            gap = probe.left - last.right
            limit = WORD_GAP_IN_HEIGHTS * max(probe.height, last.height)
            if vertical_overlap(probe, last) >= ROW_OVERLAP and gap <= limit:
                group.append(quad)
                break
        else:
            groups.append([quad])
    return [(group[0][0], group[-1][1], group[-1][2], group[0][3]) for group in groups]


def _crop(image: np.ndarray, quad: Quad) -> np.ndarray:
    """The quad's content straightened into an upright rectangle, as rapidocr crops it for its reader."""
    import cv2

    points = np.array(quad, dtype=np.float32)
    width = int(max(np.linalg.norm(points[0] - points[1]), np.linalg.norm(points[2] - points[3])))
    height = int(max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(points, target)
    crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if height / width >= 1.5:
        # Vertical text: the reader expects it lying down.
        crop = np.rot90(crop)
    return crop


class OcrEngine:
    """Thread-safe, lazily loaded rapidocr: detection, word-to-line merging, then recognition per line.

    One lock guards every call: onnxruntime sessions are not meant to be shared by concurrent
    callers here, and the emulator's throughput does not matter.
    """

    def __init__(self, **rapidocr_options: Any) -> None:
        # "max" keeps small images at their size instead of blowing the short side up to 736 px,
        # which is several times faster on CPU and reads printed text just as well.
        self._options = {
            "det_limit_type": "max",
            "det_limit_side_len": 960,
            "intra_op_num_threads": ONNX_THREADS,
            "inter_op_num_threads": ONNX_THREADS,
            **rapidocr_options,
        }
        self._ocr: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._ocr is None:
            from rapidocr_onnxruntime import RapidOCR

            self._ocr = RapidOCR(**self._options)
        return self._ocr

    def close(self) -> None:
        """Release the models (after the last call; a later call loads them again)."""
        with self._lock:
            self._ocr = None
        release_free_memory()

    def warm_up(self) -> None:
        """Load the models and run them once, so that the first real request is not the slow one."""
        canvas = Image.new("RGB", (96, 32), "white")
        self.recognize(canvas)

    def recognize(self, image: Image.Image, *, correct_rotation: bool = False) -> list[Line]:
        """Lines of text in `image`, in reading order, with corners in the image's pixel space.

        `correct_rotation` runs rapidocr's 0/180 degree classifier on each line before reading it,
        the closest thing this engine has to the vendor's enable_rotate.
        """
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        with self._lock:
            try:
                ocr = self._load()
                detected, _ = ocr(bgr, use_det=True, use_cls=False, use_rec=False)
                if not detected:
                    return []
                quads = _merge_words([_as_quad(box) for box in detected])
                crops = [_crop(bgr, quad) for quad in quads]
                if correct_rotation:
                    crops, _, _ = ocr.text_cls(crops)
                # rapidocr 1.4's reader takes a batch of crops; reading each line crop (rather than each
                # detected word) gives line-level text like the vendor's.
                readings, _ = ocr.text_rec(crops)
            finally:
                del bgr
                release_free_memory()
        lines = [
            Line(text=str(text).strip(), quad=quad, score=float(score))
            for quad, (text, score, *_) in zip(quads, readings, strict=True)
            if str(text).strip() and float(score) >= MIN_SCORE
        ]
        return reading_order(lines)


def _as_quad(box: Sequence[Sequence[float]]) -> Quad:
    points = [(float(x), float(y)) for x, y in box]
    if len(points) != 4 or not all(math.isfinite(v) for point in points for v in point):
        raise ValueError(f"not a quadrilateral: {box!r}")
    return (points[0], points[1], points[2], points[3])


@functools.cache
def shared_engine() -> OcrEngine:
    """The process-wide engine, so that several emulators in one process load the models once."""
    return OcrEngine()
