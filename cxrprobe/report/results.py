"""The results dir of a few-shot grid: runs.csv, summary.csv, per_class.csv, paired.csv,
supports.csv, config.json and auc_vs_shots.png, written under a temporary name and renamed
into place, so a results dir is either whole or absent."""

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
from cxrprobe.fsutil import check_writable_folder, remove_stale_temporaries, reporting_no_room, temporary_sibling
from cxrprobe.eval.metrics import mean_auc
from cxrprobe.eval.runner import GridResult, GridSpec
from cxrprobe.eval.stats import mean_ci, paired_difference
from cxrprobe.labels import FINDINGS

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


def runs_table(result: GridResult, protocol: str) -> list[list[object]]:
    rows: list[list[object]] = [["head", "protocol", "shots", "seed", "class", "auc"]]
    for run in result.runs:
        for name, auc in zip(FINDINGS, run.aucs):
            rows.append([run.head, protocol, run.shots, run.seed, name, number(auc)])
        rows.append([run.head, protocol, run.shots, run.seed, MEAN, number(mean_auc(run.aucs))])
    return rows


def _by_head_and_shots(result: GridResult) -> dict[tuple[str, int], list]:
    groups: dict[tuple[str, int], list] = {}
    for run in result.runs:
        groups.setdefault((run.head, run.shots), []).append(run)
    return groups


def summary_table(result: GridResult) -> list[list[object]]:
    rows: list[list[object]] = [["head", "shots", "mean_auc", "std", "ci95_low", "ci95_high", "n_seeds"]]
    for (head, shots), runs in _by_head_and_shots(result).items():
        mean, sd, low, high, n = mean_ci(np.array([mean_auc(r.aucs) for r in runs]))
        rows.append([head, shots, number(mean), number(sd), number(low), number(high), n])
    return rows


def per_class_table(result: GridResult) -> list[list[object]]:
    rows: list[list[object]] = [["head", "shots", *FINDINGS]]
    for (head, shots), runs in _by_head_and_shots(result).items():
        stacked = np.array([r.aucs for r in runs])
        means = [mean_ci(stacked[:, c])[0] for c in range(len(FINDINGS))]
        rows.append([head, shots, *[number(m) for m in means]])
    return rows


def paired_table(result: GridResult) -> list[list[object]]:
    """Every ordered pair of heads at every shot count, on the same seeds (paired t-test)."""
    rows: list[list[object]] = [["shots", "head", "versus", "mean_difference", "p_value", "n_seeds"]]
    groups = _by_head_and_shots(result)
    heads = list(dict.fromkeys(run.head for run in result.runs))
    shots_levels = list(dict.fromkeys(run.shots for run in result.runs))
    for shots in shots_levels:
        for i, a in enumerate(heads):
            for b in heads[i + 1:]:
                ra = sorted(groups[(a, shots)], key=lambda r: r.seed)
                rb = sorted(groups[(b, shots)], key=lambda r: r.seed)
                diff, p, n = paired_difference(
                    np.array([mean_auc(r.aucs) for r in ra]), np.array([mean_auc(r.aucs) for r in rb])
                )
                rows.append([shots, a, b, number(diff), number(p), n])
    return rows


def supports_table(result: GridResult, image_ids: np.ndarray) -> list[list[object]]:
    rows: list[list[object]] = [["shots", "seed", "image_id"]]
    for support in result.supports:
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
            if out.exists():
                out.rmdir()  # checked empty above
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_csv(path: Path, rows: list[list[object]]) -> None:
    path.write_text(_csv(rows))


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_results(
    out: Path, result: GridResult, spec: GridSpec, protocol: str, image_ids: np.ndarray, config: dict,
) -> None:
    """Every results file of a grid, published as one folder."""

    def fill(folder: Path) -> None:
        write_csv(folder / "runs.csv", runs_table(result, protocol))
        write_csv(folder / "summary.csv", summary_table(result))
        write_csv(folder / "per_class.csv", per_class_table(result))
        write_csv(folder / "paired.csv", paired_table(result))
        write_csv(folder / "supports.csv", supports_table(result, image_ids))
        write_json(folder / "config.json", config)
        from cxrprobe.report.plots import plot_auc_vs_shots

        plot_auc_vs_shots(folder / "summary.csv", folder / "auc_vs_shots.png", config.get("label", ""))

    publish_folder(out, fill)
