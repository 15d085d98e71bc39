"""`make bench`: run every measurement, then write benchmarks/report.json and BENCHMARKS.md.

python -m benchmarks.run [--only prep,throughput,cold_start,fanout,tokens,memory,pdf_dpi,cost,run_memory]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import (
    cold_start,
    cost,
    fanout,
    machine,
    memory_share,
    page_prep,
    pdf_dpi,
    run_memory,
    throughput,
    token_accuracy,
)
from .recognition import emulator_reader
from .report import render_markdown

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "report.json"
MARKDOWN = ROOT / "BENCHMARKS.md"
MEASUREMENTS = ("prep", "throughput", "cold_start", "fanout", "tokens", "memory", "pdf_dpi", "cost", "run_memory")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument(
        "--only", default=",".join(MEASUREMENTS), help="comma-separated subset of " + ", ".join(MEASUREMENTS)
    )
    args = parser.parse_args(argv)
    chosen = [name for name in args.only.split(",") if name]
    unknown = set(chosen) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurements: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    report: dict[str, Any] = {"machine": machine.describe(ROOT), "results": {}}
    results = report["results"]

    def step(name: str, run: Callable[[], dict[str, Any]]) -> None:
        if name not in chosen:
            return
        log(f"{name}:")
        step_started = time.monotonic()
        try:
            results[name] = run()
        except Exception as exc:  # one broken measurement must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  failed: {type(exc).__name__}: {exc}")
        results[name]["seconds"] = round(time.monotonic() - step_started, 1)
        results[name]["load_average_after"] = machine.load_average()

    # The light measurements go first, the 200-page run (which loads both cores) near the end.
    step("fanout", lambda: fanout.measure(log))
    with emulator_reader() as reader:
        step("tokens", lambda: token_accuracy.measure(reader))
        step("prep", lambda: page_prep.measure(reader, log))
        step("pdf_dpi", lambda: pdf_dpi.measure(reader, log))
    step("cold_start", lambda: cold_start.measure(log))
    step("memory", lambda: memory_share.measure(log))
    step("throughput", lambda: throughput.measure(log=log))
    step("cost", lambda: cost.measure(log=log))
    step("run_memory", lambda: run_memory.measure(log))

    report["machine"]["load_average_at_end"] = machine.load_average()
    report["duration_s"] = round(time.monotonic() - started, 1)
    REPORT.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    MARKDOWN.write_text(render_markdown(report), encoding="utf-8")
    log(f"wrote {REPORT.relative_to(ROOT)} and {MARKDOWN.relative_to(ROOT)} in {report['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
