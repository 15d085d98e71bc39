"""Time and peak memory of one piece of work, in a fresh process of its own.

    python -m benchmarks.probe NAME REPEATS

prints one JSON object: the milliseconds of each repetition and the peak memory the work added
to the process (the kernel's high-water mark of resident memory, reset once the inputs are built
and everything is imported), plus the peak of any child process it ran (pdftoppm). Resident memory
sees what tracemalloc cannot: PDFium's and Pillow's native buffers.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import workloads

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak() -> bool:
    # Writing 5 resets the peak resident set size (VmHWM) to the current one (Linux 4.0+).
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def probe(name: str, repeats: int) -> dict[str, object]:
    work: Callable[[int], object] = workloads.WORKLOADS[name]()
    work(0)  # warm: imports, first-use caches, PDFium's font cache, as a warm Lambda has them
    resettable = _reset_peak()
    baseline = _status_kib("VmRSS")
    times_ms = []
    for index in range(repeats):
        started = time.perf_counter()
        work(index)
        times_ms.append((time.perf_counter() - started) * 1000)
    peak = _status_kib("VmHWM")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "name": name,
        "times_ms": [round(t, 2) for t in times_ms],
        "peak_added_kib": peak - baseline if resettable and peak is not None and baseline is not None else None,
        "peak_rss_kib": peak,
        "child_peak_rss_kib": children or None,
    }


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], int(sys.argv[2]))))
