"""Memory of `ocr-pipeline run`: the peak resident memory of its whole process tree on a long PDF.

`run` is started as a user starts it (`python -m ocr_devkit.cli run FILE --out DIR --json`), and its
process tree is sampled every SAMPLE_INTERVAL_S from /proc: each process's proportional set size
(PSS, from smaps_rollup: a page shared by n processes counts 1/n in each, so the sum is what the tree
really occupies) and its resident set size (RSS, which counts shared pages in every process). The
run process holds the emulator (its OCR engine among it), the moto server and the runner's threads;
each function worker is a process of its own, named by its AWS_LAMBDA_FUNCTION_NAME.

The PDF's pages are all different, so the emulator's engine really reads every one (its cache of
recent answers never hits). What the engine alone takes is measured apart, in a fresh process that
loads it and reads a few rendered pages, since it shares the run process with moto.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .documents import text_pdf

ROOT = Path(__file__).resolve().parents[1]
# (pages, distinct pages): the long run repeats its pages so that `make bench` does not spend half an
# hour in the CPU OCR engine; every page is still drawn, sent, stored and recorded, and the engine's
# peak is one page's (it reads one at a time).
RUNS: tuple[tuple[int, int | None], ...] = ((30, None), (100, 20))
GOAL_PEAK_MIB = 2048
SAMPLE_INTERVAL_S = 0.5
# `run`'s own --timeout is a minute less: it then still reports, and stops in order.
RUN_TIMEOUT_S = 2700.0
RUN_PROCESS = "run process (emulator, moto, runner)"
# 3.4 x 72 dpi: an A4 page of 2024 x 2863 pixels, about what a vector page is sent at near the pixel budget.
ENGINE_PAGE_SCALE = 3.4


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return None


def _field_kib(text: str, name: str) -> int:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0])
    return 0


def process_memory_kib(pid: int) -> tuple[int, int] | None:
    """(PSS, RSS) of a process in KiB, or None once it has gone."""
    rollup = _read(f"/proc/{pid}/smaps_rollup")
    if rollup is None:
        return None
    return _field_kib(rollup, "Pss"), _field_kib(rollup, "Rss")


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        text = _read(f"/proc/{pid}/task/{task}/children") or ""
        children.extend(int(child) for child in text.split())
    return children


def process_tree(root: int) -> list[int]:
    pids, pending = [], [root]
    while pending:
        pid = pending.pop()
        pids.append(pid)
        pending.extend(child_pids(pid))
    return pids


def part_of(pid: int, root: int) -> str:
    """Which part of the run a process is: the run process itself, a function worker, or something else.

    Workers are spawned by multiprocessing (`spawn_main` in their command line); they set their
    function's environment inside, so /proc/<pid>/environ does not name the function.
    """
    if pid == root:
        return RUN_PROCESS
    command = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ")
    if "spawn_main" in command:
        return "function workers"
    return "other processes"


@dataclass
class TreeSample:
    at_s: float
    pss_kib: dict[str, int] = field(default_factory=dict)  # by part
    rss_kib: dict[str, int] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)

    @property
    def total_pss_kib(self) -> int:
        return sum(self.pss_kib.values())

    @property
    def total_rss_kib(self) -> int:
        return sum(self.rss_kib.values())


def sample_tree(root: int, at_s: float) -> TreeSample:
    sample = TreeSample(at_s)
    for pid in process_tree(root):
        memory = process_memory_kib(pid)
        if memory is None:
            continue
        part = part_of(pid, root)
        sample.pss_kib[part] = sample.pss_kib.get(part, 0) + memory[0]
        sample.rss_kib[part] = sample.rss_kib.get(part, 0) + memory[1]
        sample.processes[part] = sample.processes.get(part, 0) + 1
    return sample


class TreeSampler:
    """Samples a process tree in a thread until stopped; keeps the peak and each part's own peak."""

    def __init__(self, root: int, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.root = root
        self.interval_s = interval_s
        self.samples = 0
        self.peak: TreeSample | None = None
        self.peak_rss_kib = 0
        self.part_peaks_kib: dict[str, int] = {}
        self.part_processes: dict[str, int] = {}
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="run-memory-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = sample_tree(self.root, time.monotonic() - self._started)
            self.samples += 1
            if self.peak is None or sample.total_pss_kib > self.peak.total_pss_kib:
                self.peak = sample
            self.peak_rss_kib = max(self.peak_rss_kib, sample.total_rss_kib)
            for part, kib in sample.pss_kib.items():
                self.part_peaks_kib[part] = max(self.part_peaks_kib.get(part, 0), kib)
            for part, count in sample.processes.items():
                self.part_processes[part] = max(self.part_processes.get(part, 0), count)
            self._stop.wait(self.interval_s)


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def measure_run(pages: int, *, distinct: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Peak memory of `ocr-pipeline run` on a PDF of `pages` text-heavy A4 pages, `distinct` of them
    different (all when None): the emulator's engine reads each distinct page at least once."""
    with tempfile.TemporaryDirectory(prefix="ocr-bench-memory-") as scratch:
        pdf = Path(scratch) / f"report-{pages}.pdf"
        pdf.write_bytes(text_pdf(pages, distinct=distinct))
        out = Path(scratch) / "out"
        command = [sys.executable, "-m", "ocr_devkit.cli", "run", str(pdf), "--out", str(out), "--json"]
        command += ["--timeout", f"{RUN_TIMEOUT_S - 60:g}"]
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with TreeSampler(process.pid) as sampler:
            try:
                stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
        elapsed = time.monotonic() - started
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        report = {}
    documents = report.get("documents", [])
    completed = bool(documents) and all(d.get("status") == "completed" for d in documents)
    emulator = (report.get("stats") or {}).get("emulator") or {}
    peak = sampler.peak or TreeSample(0.0)
    functions = {
        name: {key: stats.get(key) for key in ("invocations", "records_failed", "retries", "cold_starts")}
        for name, stats in ((report.get("stats") or {}).get("functions") or {}).items()
        if stats.get("invocations")
    }
    result = {
        "pages": pages,
        "distinct_pages": distinct or pages,
        "exit_code": process.returncode,
        "completed": completed,
        "elapsed_s": round(elapsed, 1),
        "samples": sampler.samples,
        "peak_pss_mib": _mib(peak.total_pss_kib),
        "peak_rss_mib": _mib(sampler.peak_rss_kib),
        "peak_at_s": round(peak.at_s, 1),
        "at_peak_pss_mib": {part: _mib(kib) for part, kib in sorted(peak.pss_kib.items())},
        "part_peak_pss_mib": {part: _mib(kib) for part, kib in sorted(sampler.part_peaks_kib.items())},
        "part_processes": dict(sorted(sampler.part_processes.items())),
        "emulator": {
            key: emulator.get(key)
            for key in ("successes", "engine_calls", "shed", "abandoned", "longest_engine_wait_s")
            if key in emulator
        },
        "functions": functions,
        "goal_peak_mib": GOAL_PEAK_MIB,
        "met": completed and process.returncode == 0 and peak.total_pss_kib / 1024 < GOAL_PEAK_MIB,
    }
    if process.returncode != 0:
        result["stderr_tail"] = stderr[-600:]
    log(
        f"  {pages} pages: exit {process.returncode}, {elapsed:.0f} s, peak {result['peak_pss_mib']} MiB PSS "
        f"({result['peak_rss_mib']} MiB RSS)"
    )
    return result


_ENGINE_PROBE = """
import io, json, sys
from PIL import Image
import pypdfium2 as pdfium
from benchmarks.documents import text_pdf
from ocr_devkit.emulator.engine import OcrEngine

def kib(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1])

pages, RENDER_SCALE = int(sys.argv[1]), float(sys.argv[2])
document = pdfium.PdfDocument(text_pdf(pages))
images = [document[i].render(scale=RENDER_SCALE).to_pil().convert("RGB") for i in range(pages)]
before = kib("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) starts again from here
except OSError:
    pass
engine = OcrEngine()
engine.warm_up()
loaded = kib("VmRSS")
for image in images:
    engine.recognize(image)
after = kib("VmRSS")
engine.close()
print(json.dumps({"before": before, "loaded": loaded, "after": after, "hwm": kib("VmHWM"),
                  "released": kib("VmRSS")}))
"""


def measure_engine(pages: int = 2) -> dict[str, Any]:
    """Resident memory the emulator's OCR engine adds to a process: loaded, at its peak, and after reading
    A4 pages drawn at ENGINE_PAGE_SCALE (about what a vector page is sent at, near the pixel budget)."""
    result = subprocess.run(
        [sys.executable, "-c", _ENGINE_PROBE, str(pages), str(ENGINE_PAGE_SCALE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    kib = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "pages_read": pages,
        "loaded_mib": _mib(kib["loaded"] - kib["before"]),
        "after_reading_mib": _mib(kib["after"] - kib["before"]),
        "peak_mib": _mib(kib["hwm"] - kib["before"]),
        "released_mib": _mib(kib["released"] - kib["before"]),
    }


def measure(log: Callable[[str], None] = print, runs: tuple[tuple[int, int | None], ...] = RUNS) -> dict[str, Any]:
    results = [measure_run(pages, distinct=distinct, log=log) for pages, distinct in runs]
    engine = measure_engine()
    log(
        f"  OCR engine: {engine['loaded_mib']} MiB loaded, {engine['peak_mib']} MiB at its peak, "
        f"{engine['after_reading_mib']} MiB after reading pages"
    )
    longest = max(results, key=lambda run: run["pages"])
    return {
        "runs": results,
        "engine": engine,
        "goal_peak_mib": GOAL_PEAK_MIB,
        "met": all(run["met"] for run in results) and longest["pages"] >= 100,
    }


if __name__ == "__main__":
    # python -m benchmarks.run_memory [PAGES[:DISTINCT] ...]
    chosen = tuple(
        (int(pages), int(distinct) if distinct else None)
        for pages, _, distinct in (arg.partition(":") for arg in sys.argv[1:])
    )
    print(json.dumps(measure(runs=chosen or RUNS), indent=2))
