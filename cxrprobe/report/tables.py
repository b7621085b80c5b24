"""Terminal tables of results."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from cxrprobe.report.plots import read_summary


def render_summary(summary_csv: Path, console: Console | None = None) -> None:
    """Mean AUC [95% CI] per head and shot level; the seed count in the title."""
    console = console or Console(highlight=False)
    curves = read_summary(summary_csv)
    shots = sorted({p[0] for points in curves.values() for p in points})
    seeds = sorted({p[4] for points in curves.values() for p in points})
    table = Table(title=f"mean test AUC over 14 findings, {'/'.join(map(str, seeds))} seeds, 95% CI")
    table.add_column("head")
    for s in shots:
        table.add_column(f"{s}-shot", justify="right")
    for head, points in curves.items():
        cells = {p[0]: f"{p[1]:.3f} [{p[2]:.3f}, {p[3]:.3f}]" for p in points}
        table.add_row(head + (" (text only)" if head == "zeroshot" else ""), *[cells.get(s, "") for s in shots])
    console.print(table)
