"""The results dir of a few-shot grid: runs.csv, summary.csv, per_class.csv, paired.csv,
supports.csv, support_counts.csv, config.json, auc_vs_shots.png and auc_vs_labelled.png,
written under a temporary name and renamed into place, so a results dir is either whole or
absent."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from cxrprobe.errors import InputError
from cxrprobe.eval.options import ALL_SHOTS, Shots
from cxrprobe.eval.runner import GridResult
from cxrprobe.fsutil import (
    check_writable_folder,
    fsync_files,
    json_text,
    remove_stale_temporaries,
    reporting_no_room,
    temporary_sibling,
)
from cxrprobe.labels import NORMAL_IF_NONE_POSITIVE
from cxrprobe.metrics.auc import mean_auc
from cxrprobe.metrics.bootstrap import seed_and_test_ci
from cxrprobe.metrics.stats import holm, mean_ci, paired_difference

MEAN = "mean"


def check_results_dir(out: Path) -> None:
    """A results dir must be new or empty: nothing already there is ever overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; choose a new --out")
    check_writable_folder(out.parent)


def number(value: float) -> str:
    """Full precision, fixed text: byte-identical files for identical numbers; NaN written as ''."""
    return "" if not np.isfinite(value) else repr(float(value))


def _csv(rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


RUN_COLUMNS = ["head", "protocol", "shots", "seed", "class", "auc", "ap"]
SUMMARY_COLUMNS = ["head", "shots", "mean_auc", "std", "ci95_low", "ci95_high", "n_seeds", "mean_ap", "ap_ci95_low",
                   "ap_ci95_high", "mean_labelled_images", "seed_and_test_ci95_low", "seed_and_test_ci95_high"]


def table_rows(records: list[dict], columns: list[str]) -> list[list[object]]:
    """Records as CSV rows under ``columns``: floats at full precision (NaN as ''), the rest as is."""
    return [columns] + [[number(r[c]) if isinstance(r[c], float) else r[c] for c in columns] for r in records]


def run_records(result: GridResult, protocol: str) -> list[dict]:
    """runs.csv as plain rows: every run's AUC and AP per finding, then their means ("mean")."""
    records = []
    for run in result.runs:
        where = {"head": run.head, "protocol": protocol, "shots": run.shots, "seed": run.seed}
        for name, auc, ap in zip(result.classes, run.aucs, run.aps):
            records.append({**where, "class": name, "auc": float(auc), "ap": float(ap)})
        records.append({**where, "class": MEAN, "auc": float(mean_auc(run.aucs)), "ap": float(mean_auc(run.aps))})
    return records


def runs_table(result: GridResult, protocol: str) -> list[list[object]]:
    return table_rows(run_records(result, protocol), RUN_COLUMNS)


def _by_head_and_shots(result: GridResult) -> dict[tuple[str, Shots], list]:
    groups: dict[tuple[str, int], list] = {}
    for run in result.runs:
        groups.setdefault((run.head, run.shots), []).append(run)
    return groups


def summary_records(result: GridResult) -> list[dict]:
    """Per head and shot level: mean AUC with its seed CI, the same for the mean AP (average
    precision), the mean labelled images a run used, and the seed-and-test CI where the runs
    scored test resamples (NaN where not)."""
    records = []
    for (head, shots), runs in _by_head_and_shots(result).items():
        mean, sd, low, high, n = mean_ci(np.array([mean_auc(r.aucs) for r in runs]))
        ap, _, ap_low, ap_high, _ = mean_ci(np.array([mean_auc(r.aps) for r in runs]))
        both = (seed_and_test_ci(np.array([r.test_replicates for r in runs]))
                if runs[0].test_replicates is not None else (np.nan, np.nan))
        records.append({
            "head": head, "shots": shots, "mean_auc": mean, "std": sd, "ci95_low": low, "ci95_high": high,
            "n_seeds": n, "mean_ap": ap, "ap_ci95_low": ap_low, "ap_ci95_high": ap_high,
            "mean_labelled_images": float(np.mean([r.labelled for r in runs])),
            "seed_and_test_ci95_low": float(both[0]), "seed_and_test_ci95_high": float(both[1]),
        })
    return records


def summary_table(result: GridResult) -> list[list[object]]:
    """summary.csv: the first columns as results dirs have always had them, then AP and the rest."""
    return table_rows(summary_records(result), SUMMARY_COLUMNS)


def support_counts_table(result: GridResult) -> list[list[object]]:
    """What each (shots, seed) really drew: its images, its normal images, and each
    finding's effective positives (co-occurrence puts more than N of most findings in a set)."""
    classes = result.support_classes or result.classes
    rows: list[list[object]] = [["shots", "seed", "images", "no_finding", *(f"positives_{f}" for f in classes)]]
    for support in result.supports:
        rows.append([support.shots, support.seed, len(support.rows), support.no_finding, *support.positives.tolist()])
    return rows


def per_class_table(result: GridResult) -> list[list[object]]:
    """Mean AUC and mean AP per finding, per head and shot level; a last row gives each
    finding's test prevalence (the AP of a constant score)."""
    rows: list[list[object]] = [["head", "shots", "metric", *result.classes]]
    for (head, shots), runs in _by_head_and_shots(result).items():
        for metric in ("auc", "ap"):
            stacked = np.array([getattr(r, metric + "s") for r in runs])
            rows.append([head, shots, metric, *[number(mean_ci(stacked[:, c])[0]) for c in range(len(result.classes))]])
    rows.append(["test images", "", "prevalence", *[number(p) for p in result.test_prevalence]])
    return rows


# Comparisons a reader of a few-shot study asks for first: against text alone, and against the
# standard linear probe. They are marked as such, every other pair is exploratory.
PRESPECIFIED = ("zeroshot", "logreg")


def paired_table(result: GridResult) -> list[list[object]]:
    """Every pair of heads at every shot count, on the same seeds: the mean paired difference in
    mean AUC with its t-based 95% CI, the paired t-test's p-value and Holm's adjustment over
    all pairs at that shot count."""
    rows: list[list[object]] = [["shots", "head", "versus", "mean_difference", "ci95_low", "ci95_high", "p_value",
                                 "p_holm", "n_seeds", "prespecified"]]
    groups = _by_head_and_shots(result)
    heads = list(dict.fromkeys(run.head for run in result.runs))
    shots_levels = list(dict.fromkeys(run.shots for run in result.runs))
    for shots in shots_levels:
        level = []
        for i, a in enumerate(heads):
            for b in heads[i + 1:]:
                if (a, shots) not in groups or (b, shots) not in groups:
                    continue  # a head left out at this level (GridResult.not_fitted)
                ra = sorted(groups[(a, shots)], key=lambda r: r.seed)
                rb = sorted(groups[(b, shots)], key=lambda r: r.seed)
                level.append((a, b, *paired_difference(np.array([mean_auc(r.aucs) for r in ra]),
                                                        np.array([mean_auc(r.aucs) for r in rb]))))
        adjusted = holm(np.array([row[5] for row in level]))
        for (a, b, diff, low, high, p, n), p_holm in zip(level, adjusted):
            rows.append([shots, a, b, number(diff), number(low), number(high), number(p), number(p_holm), n,
                         a in PRESPECIFIED or b in PRESPECIFIED])
    return rows


def supports_table(result: GridResult, image_ids: np.ndarray) -> list[list[object]]:
    """Every support set's images; ``all`` (every training image, the same at every seed) is
    listed once, under the first seed."""
    rows: list[list[object]] = [["shots", "seed", "image_id"]]
    listed = set()
    for support in result.supports:
        if support.shots == ALL_SHOTS and ALL_SHOTS in listed:
            continue
        listed.add(support.shots)
        rows.extend([support.shots, support.seed, image_ids[row]] for row in support.rows)
    return rows


def publish_folder(out: Path, fill: Callable[[Path], None]) -> None:
    """Let ``fill`` write into a fresh hidden folder beside ``out``, then rename it to ``out``."""
    check_results_dir(out)
    remove_stale_temporaries(out.parent, out.name)  # what killed runs into the same --out left
    tmp = temporary_sibling(out, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with reporting_no_room(out):
            tmp.mkdir()
            fill(tmp)
            fsync_files(tmp)
            if out.exists():
                out.rmdir()  # checked empty above
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_csv(path: Path, rows: list[list[object]]) -> None:
    path.write_text(_csv(rows))


def write_json(path: Path, value: dict) -> None:
    path.write_text(json_text(value))  # inside a folder that is published whole


def write_results(out: Path, result: GridResult, protocol: str, image_ids: np.ndarray, config: dict) -> None:
    """Every results file of a grid, published as one folder."""

    def fill(folder: Path) -> None:
        write_csv(folder / "runs.csv", runs_table(result, protocol))
        write_csv(folder / "summary.csv", summary_table(result))
        write_csv(folder / "per_class.csv", per_class_table(result))
        write_csv(folder / "paired.csv", paired_table(result))
        write_csv(folder / "supports.csv", supports_table(result, image_ids))
        write_csv(folder / "support_counts.csv", support_counts_table(result))
        write_json(folder / "config.json", config)
        from cxrprobe.report.plots import plot_auc_vs_labelled, plot_auc_vs_shots

        plot_auc_vs_shots(folder / "summary.csv", folder / "auc_vs_shots.png", config.get("label", ""))
        plot_auc_vs_labelled(folder / "summary.csv", folder / "auc_vs_labelled.png", config.get("label", ""))

    publish_folder(out, fill)


def label_record(attrs: dict) -> dict:
    """What the labels mean: the normal rule support sets draw normals by, the policy that
    turned uncertain and unmentioned labels into 0, 1 or unknown (None: the dataset has neither),
    and what the test split is."""
    policy = attrs.get("label_policy")
    return {"normal": str(attrs.get("normal_rule", NORMAL_IF_NONE_POSITIVE)),
            "policy": json.loads(str(policy)) if policy else None,
            "test": str(attrs.get("test_source", "official test list")),
            "scored_over": "per class, the test images whose label is known"}
