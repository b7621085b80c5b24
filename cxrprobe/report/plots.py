"""auc_vs_shots.png: mean AUC over seeds per head against shots, with 95% CI bands, and the
full-data reference (``all`` shots) as a star one octave right of the last N."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cxrprobe.eval.options import ALL_SHOTS, read_shots, shot_order


class CurvePoint(NamedTuple):
    """One point of a head's curve: at ``x`` (shots, "all", or labelled images), the mean AUC
    over ``n_seeds`` seeds and its 95% CI."""

    x: int | float | str
    mean: float
    low: float
    high: float
    n_seeds: int


Curves = dict[str, list[CurvePoint]]


def summary_curves(records: list[dict]) -> Curves:
    """summary rows in memory (FewshotResult.summary) as read_summary's curves."""
    curves: Curves = {}
    for r in records:
        curves.setdefault(r["head"], []).append(
            CurvePoint(r["shots"], r["mean_auc"], r["ci95_low"], r["ci95_high"], r["n_seeds"]))
    return curves


def read_summary(path: Path) -> Curves:
    curves: Curves = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            value = lambda key: float(row[key]) if row[key] else float("nan")  # noqa: E731
            curves.setdefault(row["head"], []).append(
                CurvePoint(read_shots(row["shots"]), value("mean_auc"), value("ci95_low"), value("ci95_high"),
                           int(row["n_seeds"]))
            )
    return curves


SHOTS_AXIS = "N (positives drawn per finding)"
LABELLED_AXIS = "labelled images per run (support set, and validation set where a head searched)"


def read_labelled_curves(path: Path) -> Curves:
    """summary.csv's curves against the mean labelled images per run instead of N (heads that
    used no labelled image, such as zeroshot, are left out)."""
    labelled: dict[tuple[str, int | str], float] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            labelled[(row["head"], read_shots(row["shots"]))] = float(row["mean_labelled_images"] or "nan")
    curves = {}
    for head, points in read_summary(path).items():
        moved = [p._replace(x=labelled[(head, p.x)]) for p in points if labelled[(head, p.x)] > 0]
        if moved:
            curves[head] = moved
    return curves


def plot_auc_vs_shots(summary_csv: Path, out_png: Path, title: str = "") -> None:
    plot_curves(read_summary(summary_csv), out_png, title)


def plot_auc_vs_labelled(summary_csv: Path, out_png: Path, title: str = "") -> None:
    plot_curves(read_labelled_curves(summary_csv), out_png, title, x_label=LABELLED_AXIS, ticks_at_points=False)


if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width: float, height: float, dpi: int) -> Figure:
    """A figure drawn by Agg without pyplot: no backend switched, no global figure registry, and
    pyplot's import (about a second) skipped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def full_data_position(curves: dict[str, list]) -> float:
    """Where ``all`` is drawn on the N axis: one octave past the largest N."""
    counts = [p.x for points in curves.values() for p in points if p.x != ALL_SHOTS]
    return 2.0 * max(counts, default=1)


def plot_curves(curves: Curves, out_png: Path,
                title: str = "", x_label: str = SHOTS_AXIS, ticks_at_points: bool = True) -> None:
    """One line per curve (mean AUC against N, or labelled images, on a log2 axis) with its CI
    band; an ``all`` point as a star with its CI as an error bar, dotted to the curve."""
    import matplotlib

    fig = new_figure(7, 4.5, 120)
    ax = fig.subplots()
    seeds = set()
    # past ten curves the default colours repeat: twenty distinct ones, and two line styles
    colours = (matplotlib.colormaps["tab20"].colors if len(curves) > 10
               else matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    at_all = full_data_position(curves)
    for i, (head, points) in enumerate(curves.items()):
        points = sorted(points, key=lambda p: shot_order(p.x))
        full = [p for p in points if p.x == ALL_SHOTS]
        points = [p for p in points if p.x != ALL_SHOTS]
        shots = [p.x for p in points]
        colour = colours[i % len(colours)]
        label = head + (" (text only)" if head.endswith("zeroshot") else "")
        ax.plot(shots, [p.mean for p in points], marker="o", color=colour, linestyle="-" if i % 2 == 0 else "--",
                label=label)
        ax.fill_between(shots, [p.low for p in points], [p.high for p in points], color=colour, alpha=0.12)
        for _, mean, low, high, _ in full:
            ax.errorbar([at_all], [mean], yerr=[[mean - low], [high - mean]] if math.isfinite(low) else None, marker="*",
                        markersize=9, color=colour, capsize=3, label=None if points else label)
            if points:
                ax.plot([shots[-1], at_all], [points[-1].mean, mean], color=colour, linestyle=":", linewidth=1)
        seeds.update(p.n_seeds for p in points + full)
    ax.set_xscale("log", base=2)
    if ticks_at_points:
        ticks = sorted({p.x for pts in curves.values() for p in pts if p.x != ALL_SHOTS})
        full_data = any(p.x == ALL_SHOTS for pts in curves.values() for p in pts)
        ax.set_xticks(ticks + ([at_all] if full_data else []), [str(t) for t in ticks] + (["all"] if full_data else []))
    else:
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean AUC over 14 findings (test)")
    n = ", ".join(str(s) for s in sorted(seeds))
    ax.set_title((title + "\n" if title else "") + f"mean over {n} seeds, 95% CI bands (support-set draws)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, format="png", metadata={"Software": None})  # out_png may be a temporary name
