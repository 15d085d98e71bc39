"""Terminal output of `ocr-pipeline run`: a progress bar per document and the summary table."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ocr_devkit.run import RunReport
from ocr_devkit.run_batch import BatchProgress


class ProgressDisplay:
    """Pages settled out of the total, per document, as the job records show them."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            # "settled/total pages" for a document; nothing for the batch lane's line, which has no total.
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.batch_task: Any = None

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def update(self, progress: dict[str, tuple[int, int]], finished: set[str]) -> None:
        for key, (settled, total) in sorted(progress.items()):
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(key, total=total, counts="")
            self.progress.update(self.tasks[key], completed=settled, total=total, counts=f"{settled}/{total} pages")

    def update_batches(self, batches: BatchProgress) -> None:
        """One line for the batch lane: pages waiting for a batch file, batches open, batches done."""
        description = (
            f"batch lane: {batches.pages_queued} page(s) queued · {batches.batches_open} batch(es) open · "
            f"{batches.batches_done} done"
        )
        if self.batch_task is None:
            self.batch_task = self.progress.add_task(description, total=None, counts="")
        self.progress.update(self.batch_task, description=description)


# Warnings printed per document under the table; the rest are in its result file.
WARNINGS_SHOWN = 5


def print_summary(report: RunReport) -> None:
    # A pipe or CI log has no width; keep the table readable there too.
    console = Console() if Console().is_terminal else Console(width=160)
    table = Table(title="ocr-pipeline run", show_lines=False)
    for column in ("document", "task", "pages", "tokens in", "tokens out", "cost", "status"):
        table.add_column(column, justify="right" if column in ("pages", "tokens in", "tokens out", "cost") else "left")
    total = Decimal(0)
    currencies = set()
    for doc in report.documents:
        status = doc.status if doc.status == "completed" else f"[red]{doc.status} {doc.error_code}[/red]"
        if doc.status == "completed" and doc.pages_failed:
            status = f"[yellow]completed, pages {doc.pages_failed} failed[/yellow]"
        elif doc.status == "completed" and (doc.pages_truncated or doc.pages_split or doc.warnings):
            notes = [f"pages {doc.pages_truncated} truncated"] if doc.pages_truncated else []
            notes += [f"pages {doc.pages_split} read in halves"] if doc.pages_split else []
            notes += [f"{len(doc.warnings)} warning(s)"] if doc.warnings else []
            status = f"[yellow]completed, {', '.join(notes)}[/yellow]"
        cost = f"{doc.cost} {doc.currency}" if doc.cost is not None else "-"
        if doc.cost is not None and doc.lane == "batch":
            cost += " (batch)"
        if doc.cost is not None:
            total += Decimal(doc.cost)
            currencies.add(doc.currency)
        table.add_row(
            doc.key,
            doc.task or "-",
            str(doc.pages or "-"),
            str(doc.input_tokens),
            str(doc.output_tokens),
            cost,
            status,
        )
    console.print(table)
    for doc in report.documents:
        for warning in doc.warnings[:WARNINGS_SHOWN]:
            console.print(f"[yellow]warning[/yellow] {doc.key} {warning}", highlight=False)
        if len(doc.warnings) > WARNINGS_SHOWN:
            console.print(
                f"[yellow]warning[/yellow] {doc.key}: {len(doc.warnings) - WARNINGS_SHOWN} more in {doc.result_file}"
            )
    events = ", ".join(f"{count} {kind}" for kind, count in sorted(report.event_counts.items()))
    money = f"{total} {currencies.pop()}" if len(currencies) == 1 else "-"
    console.print(
        f"{_count(len(report.documents), 'document')}, {len(report.failed)} not completed · total cost {money} · "
        f"events: {events} → {report.events_file} · {report.elapsed_s} s"
    )
    figures = run_figures(report)
    if figures["pages_billed_batch"] or report.stats.get("batch"):
        console.print(batch_line(figures, report.stats.get("batch") or {}), highlight=False)
    faults = ", ".join(f"{count} {kind}" for kind, count in figures["faults_by_kind"].items() if count)
    console.print(
        f"documents {figures['documents']} · pages {figures['pages']} (recognized {figures['pages_recognized']}) · "
        f"faults injected {figures['faults_injected']}{f' ({faults})' if faults else ''} · "
        f"repeated OCR requests {figures['retries']} · redeliveries {figures['redeliveries']} · "
        f"completed {figures['completed']} · failed {figures['failed']} · "
        f"billing events {figures['billing_events']} · duplicates delivered {figures['duplicates_delivered']}, "
        f"dropped {figures['duplicates_dropped']} · workers killed {figures['workers_killed']} · "
        f"repeated event ids {figures['repeated_event_ids']}"
        + (
            f" · fault to success: median {recovery['median_s']} s, slowest {recovery['max_s']} s"
            if (recovery := figures["recovery_s"]) and recovery.get("count")
            else ""
        ),
        highlight=False,
    )


def run_figures(report: RunReport) -> dict[str, Any]:
    """What a fault-injection run is judged on, each figure read from what the run recorded.

    - faults injected, and retries: API requests identical to an earlier one (a client retry, a
      redelivered page calling again, or the same page in two documents), shown as "repeated OCR
      requests", from the emulator's counters;
    - duplicates delivered (deliveries the runner invoked twice) and dropped (of those, invocations
      that succeeded without one AWS write), and redeliveries (SQS records received again, async
      events invoked again), and workers killed (timeouts, and `--kill-rate`), from the runner's counters;
    - billing events and repeated event ids, from the events the topic published;
    - pages recognized: the pages of completed documents, less their failed pages.
    """
    functions = report.stats.get("functions", {})
    emulator = report.stats.get("emulator") or {}
    faults = dict(emulator.get("faults", {}))
    ids = Counter(json.loads(line)["event_id"] for line in _lines(Path(report.events_file)))
    return {
        "documents": len(report.documents),
        "pages": sum(d.pages or 0 for d in report.documents),
        "pages_recognized": sum(
            (d.pages or 0) - len(d.pages_failed) for d in report.documents if d.status == "completed"
        ),
        "completed": sum(d.status == "completed" for d in report.documents),
        "failed": sum(d.status == "failed" for d in report.documents),
        "timed_out": sum(d.status == "timed_out" for d in report.documents),
        "faults_injected": sum(faults.values()),
        "faults_by_kind": faults,
        "retries": emulator.get("repeated_requests", 0),
        "redeliveries": sum(f.get("retries", 0) for f in functions.values()),
        "billing_events": report.event_counts.get("usage.recorded", 0),
        "duplicates_delivered": sum(f.get("duplicates", 0) for f in functions.values()),
        "duplicates_dropped": sum(f.get("duplicates_dropped", 0) for f in functions.values()),
        "workers_killed": sum(f.get("workers_killed", 0) for f in functions.values()),
        "repeated_event_ids": sum(count - 1 for count in ids.values() if count > 1),
        # From a call's first fault to its success: what a transient failure cost the page it hit.
        "recovery_s": emulator.get("recoveries", {}),
        **batch_figures(Path(report.events_file)),
    }


def batch_figures(events_file: Path) -> dict[str, Any]:
    """Pages billed at the batch price and what they cost, from the usage.recorded events, with what the same
    tokens cost at the real-time price (the price table's, for each page's model and region).

    A page without a batch cost (an unpriced model) or without a real-time price leaves the sum it belongs
    to out (None) rather than understated.
    """
    from ocr_pipeline.pricing import PriceNotFound, cost_of, default_price_table, format_money
    from ocr_pipeline.usage import Usage

    prices = default_price_table()
    pages = 0
    cost: Decimal | None = Decimal(0)
    realtime: Decimal | None = Decimal(0)
    currencies: set[str] = set()
    for line in _lines(events_file):
        envelope = json.loads(line)
        data = envelope.get("data") or {}
        if envelope.get("event_type") != "usage.recorded" or data.get("pricing") != "batch":
            continue
        pages += 1
        if data.get("cost") is None:
            cost = realtime = None
            continue
        if cost is not None:
            cost += Decimal(data["cost"])
        currencies.add(data["currency"])
        usage = Usage(input_tokens=data["input_tokens"], output_tokens=data["output_tokens"], image_tokens=0)
        try:
            price = prices.price_for(data["model"], data["region"])
        except PriceNotFound:
            realtime = None
            continue
        if realtime is not None:
            realtime += cost_of(usage, price, unit_tokens=prices.unit_tokens).amount
    return {
        "pages_billed_batch": pages,
        "batch_cost": format_money(cost) if pages and cost is not None else None,
        "batch_cost_at_realtime_price": format_money(realtime) if pages and realtime is not None else None,
        "batch_currency": currencies.pop() if len(currencies) == 1 else None,
    }


def batch_line(figures: dict[str, Any], progress: dict[str, Any]) -> str:
    """The batch lane's line under the table: pages billed at the batch price, their cost, the batches."""
    line = f"batch lane: {_count(figures['pages_billed_batch'], 'page')} billed at the batch price"
    currency = figures["batch_currency"] or ""
    if figures["batch_cost"] is not None:
        line += f", {figures['batch_cost']} {currency}"
    if figures["batch_cost_at_realtime_price"] is not None:
        line += f" ({figures['batch_cost_at_realtime_price']} {currency} at the real-time price)"
    if progress:
        line += (
            f" · batches done {progress.get('batches_done', 0)}, still open {progress.get('batches_open', 0)}"
            f" · pages still queued {progress.get('pages_queued', 0)}"
        )
    return line


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def report_json(report: RunReport) -> dict[str, Any]:
    return {**report.model_dump(mode="json"), "figures": run_figures(report)}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
