"""auc_vs_shots.png: mean AUC over seeds per head against shots, with 95% CI bands."""

from __future__ import annotations

import csv
from pathlib import Path


def read_summary(path: Path) -> dict[str, list[tuple[int, float, float, float, int]]]:
    curves: dict[str, list[tuple[int, float, float, float, int]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            value = lambda key: float(row[key]) if row[key] else float("nan")  # noqa: E731
            curves.setdefault(row["head"], []).append(
                (int(row["shots"]), value("mean_auc"), value("ci95_low"), value("ci95_high"), int(row["n_seeds"]))
            )
    return curves


SHOTS_AXIS = "N (positives drawn per finding)"
LABELLED_AXIS = "labelled images per run (support set, and validation set where a head searched)"


def read_labelled_curves(path: Path) -> dict[str, list[tuple[float, float, float, float, int]]]:
    """summary.csv's curves against the mean labelled images per run instead of N (heads that
    used no labelled image, such as zeroshot, are left out)."""
    labelled: dict[tuple[str, int], float] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            labelled[(row["head"], int(row["shots"]))] = float(row["mean_labelled_images"] or "nan")
    curves = {}
    for head, points in read_summary(path).items():
        moved = [(labelled[(head, p[0])], *p[1:]) for p in points if labelled[(head, p[0])] > 0]
        if moved:
            curves[head] = moved
    return curves


def plot_auc_vs_shots(summary_csv: Path, out_png: Path, title: str = "") -> None:
    plot_curves(read_summary(summary_csv), out_png, title)


def plot_auc_vs_labelled(summary_csv: Path, out_png: Path, title: str = "") -> None:
    plot_curves(read_labelled_curves(summary_csv), out_png, title, x_label=LABELLED_AXIS, ticks_at_points=False)


def plot_curves(curves: dict[str, list[tuple[float, float, float, float, int]]], out_png: Path, title: str = "",
                x_label: str = SHOTS_AXIS, ticks_at_points: bool = True) -> None:
    """One line per curve (mean AUC against N, or labelled images, on a log2 axis) with its CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    seeds = set()
    # past ten curves the default colours repeat: twenty distinct ones, and two line styles
    colours = plt.get_cmap("tab20").colors if len(curves) > 10 else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (head, points) in enumerate(curves.items()):
        points.sort()
        shots = [p[0] for p in points]
        colour = colours[i % len(colours)]
        ax.plot(shots, [p[1] for p in points], marker="o", color=colour, linestyle="-" if i % 2 == 0 else "--",
                label=head + (" (text only)" if head.endswith("zeroshot") else ""))
        ax.fill_between(shots, [p[2] for p in points], [p[3] for p in points], color=colour, alpha=0.12)
        seeds.update(p[4] for p in points)
    ax.set_xscale("log", base=2)
    if ticks_at_points:
        ax.set_xticks(sorted({p[0] for pts in curves.values() for p in pts}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean AUC over 14 findings (test)")
    n = ", ".join(str(s) for s in sorted(seeds))
    ax.set_title((title + "\n" if title else "") + f"mean over {n} seeds, 95% CI bands (support-set draws)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, metadata={"Software": None})
    plt.close(fig)
