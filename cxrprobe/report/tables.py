"""Terminal tables of results."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cxrprobe.eval.options import ALL_SHOTS, shot_order
from cxrprobe.labels import FINDINGS
from cxrprobe.report.plots import read_summary


def render_summary(summary_csv: Path, console: Console | None = None) -> None:
    """Mean AUC ± 95% CI per head and shot level; the seed count in the title."""
    path = Path(summary_csv).with_name("config.json")
    config = json.loads(path.read_text()) if path.is_file() else {}
    console = console or Console(highlight=False)
    render_curves(read_summary(summary_csv), console, config.get("undefined_findings", []))
    full_data = config.get("full_data") or {}
    if full_data:
        console.print(f"all = {full_data['images']:,} training images: {full_data['what']}", soft_wrap=True)
    for head, why in (config.get("not_fitted") or {}).items():
        console.print(f"{head}: {why}", soft_wrap=True)
    encoder = config.get("encoder") or {}
    if encoder.get("adapted"):
        console.print(f"{encoder['summary']}: {encoder['label_efficiency']}", soft_wrap=True)


def render_curves(curves: dict[str, list], console: Console | None = None, undefined: list[str] = ()) -> None:
    console = console or Console(highlight=False)
    shots = sorted({p[0] for points in curves.values() for p in points}, key=shot_order)
    seeds = sorted({p[4] for points in curves.values() for p in points})
    over = (f"the {len(FINDINGS) - len(undefined)} findings with a defined AUC (none for {', '.join(undefined)})"
            if undefined else f"the {len(FINDINGS)} findings")
    console.print(
        f"mean test AUC over {over} ± half-width of its 95% CI over {'/'.join(map(str, seeds))} seeds "
        "(support-set draws)", soft_wrap=True,
    )
    table = Table()
    table.add_column("head")
    for s in shots:
        table.add_column("all" if s == ALL_SHOTS else f"{s}-shot", justify="right")
    for head, points in curves.items():
        cells = {p[0]: _cell(p[1], p[2], p[3]) for p in points}
        table.add_row(head + (" (text only)" if head.endswith("zeroshot") else ""), *[cells.get(s, "") for s in shots])
    console.print(table)


def _cell(mean: float, low: float, high: float) -> str:
    if not math.isfinite(mean):
        return "undefined"
    if not math.isfinite(low):
        return f"{mean:.3f}"
    if high == low:
        return f"{mean:.3f} (every seed)"  # a head that ignores the support set: no seed variance
    return f"{mean:.3f} ±{(high - low) / 2:.3f}"
