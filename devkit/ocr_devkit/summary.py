"""Terminal output of `ocr-pipeline run`: a progress bar per document and the summary table."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ocr_devkit.run import RunReport


class ProgressDisplay:
    """Pages settled out of the total, per document, as the job records show them."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pages"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def update(self, progress: dict[str, tuple[int, int]], finished: set[str]) -> None:
        for key, (settled, total) in sorted(progress.items()):
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(key, total=total)
            self.progress.update(self.tasks[key], completed=settled, total=total)


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
        cost = f"{doc.cost} {doc.currency}" if doc.cost is not None else "-"
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
    events = ", ".join(f"{count} {kind}" for kind, count in sorted(report.event_counts.items()))
    money = f"{total} {currencies.pop()}" if len(currencies) == 1 else "-"
    console.print(
        f"{len(report.documents)} documents, {len(report.failed)} not completed · total cost {money} · "
        f"events: {events} → {report.events_file} · {report.elapsed_s} s"
    )


def report_json(report: RunReport) -> dict[str, Any]:
    return report.model_dump(mode="json")
