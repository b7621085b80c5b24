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
    """A results dir's summary.csv (and its config.json) as ``render_result`` shows it."""
    path = Path(summary_csv).with_name("config.json")
    config = json.loads(path.read_text()) if path.is_file() else {}
    render_result(read_summary(summary_csv), config, console)


def render_result(curves: dict[str, list], config: dict, console: Console | None = None) -> None:
    """Above the table, what limits its reading (the weights saw this dataset; an image-only
    encoder ran no text head); then mean AUC ± 95% CI per head and shot level, the seed count
    in the title; then what ``all`` was, heads left out, and what an adapted encoder learned."""
    console = console or Console(highlight=False)
    encoder = config.get("encoder") or {}
    if encoder.get("contamination"):
        console.print(f"warning: {encoder['contamination']}", soft_wrap=True)
    if encoder.get("text") is False:
        console.print(f"image-only encoder ({encoder.get('backend')}, {encoder.get('features')} features): the heads "
                      "that score from text are left out", soft_wrap=True)
    render_curves(curves, console, config.get("undefined_findings", []), len(config.get("classes", FINDINGS)))
    full_data = config.get("full_data") or {}
    if full_data:
        console.print(f"all = {full_data['images']:,} training images: {full_data['what']}", soft_wrap=True)
    for head, why in (config.get("not_fitted") or {}).items():
        console.print(f"{head}: {why}", soft_wrap=True)
    if encoder.get("adapted"):
        console.print(f"{encoder['summary']}: {encoder['label_efficiency']}", soft_wrap=True)


def render_curves(curves: dict[str, list], console: Console | None = None, undefined: list[str] = (),
                  n_classes: int = len(FINDINGS)) -> None:
    """``n_classes``: the label set's size (results dirs from before config.json named their
    classes were NIH's)."""
    console = console or Console(highlight=False)
    shots = sorted({p.x for points in curves.values() for p in points}, key=shot_order)
    seeds = sorted({p.n_seeds for points in curves.values() for p in points})
    over = (f"the {n_classes - len(undefined)} findings with a defined AUC (none for {', '.join(undefined)})"
            if undefined else f"the {n_classes} findings")
    console.print(
        f"mean test AUC over {over} ± half-width of its 95% CI over {'/'.join(map(str, seeds))} seeds "
        "(support-set draws)", soft_wrap=True,
    )
    table = Table()
    table.add_column("head")
    for s in shots:
        table.add_column("all" if s == ALL_SHOTS else f"{s}-shot", justify="right")
    for head, points in curves.items():
        cells = {p.x: _cell(p.mean, p.low, p.high) for p in points}
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


def render_zeroshot(rows: list[dict], resamples: int, console: Console | None = None) -> None:
    """Zero-shot AUC per finding with its patient-bootstrap CI, positive images and patients."""
    table = Table(title=f"zero-shot from text (no labelled image), test AUC, 95% CIs from {resamples} "
                        "bootstrap resamples of test patients")
    for name in ("finding", "AUC", "95% CI", "positive images", "positive patients"):
        table.add_column(name, justify="left" if name == "finding" else "right")
    for row in rows:
        ci = f"{row['ci95_low']:.3f}-{row['ci95_high']:.3f}" if math.isfinite(row["ci95_low"]) else ""
        auc = f"{row['auc']:.3f}" if math.isfinite(row["auc"]) else "undefined"
        table.add_row(row["class"], auc, ci, str(row["n_positive"]), str(row["n_positive_patients"]))
    (console or Console(highlight=False)).print(table)
