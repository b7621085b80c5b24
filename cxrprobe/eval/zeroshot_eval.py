"""``cxrprobe zeroshot``: text-only AUC per finding on the test split and their mean, with CIs
from resampling test patients. No labelled image is used; labels only score the result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cxrprobe.eval.bootstrap import patient_bootstrap_cis
from cxrprobe.eval.metrics import mean_auc, per_class_auc
from cxrprobe.eval.runner import load_grid_data
from cxrprobe.heads.zeroshot import ZeroShotHead
from cxrprobe.labels import FINDINGS
from cxrprobe.versions import package_versions


def run_zeroshot(
    cache: Path, out: Path, negative: str, n_resamples: int, seed: int, prompts_file: Path | None = None,
    allow_undefined: bool = False,
) -> list[list[object]]:
    """Write ``out``/zeroshot.csv and config.json; returns the table's rows."""
    from cxrprobe.report.results import check_results_dir, number, publish_folder, write_csv, write_json

    if n_resamples < 10:
        from cxrprobe.errors import InputError

        raise InputError(f"--bootstrap must be at least 10 resamples, got {n_resamples}")
    out = Path(out)
    check_results_dir(out)
    data, attrs = load_grid_data(Path(cache), ("zeroshot",), allow_undefined=allow_undefined)
    text = data.text
    if prompts_file is not None:
        from cxrprobe.models.prompt_file import encode_for_cache, merge_prompts, read_prompt_file

        new = read_prompt_file(prompts_file)
        merged, embeddings = merge_prompts(text.prompts, text.embeddings, new, encode_for_cache(new, attrs))
        text = dataclasses.replace(text, prompts=merged, embeddings=embeddings)  # the cache's logit scale kept
    X = data.embeddings[data.test_rows]
    Y = data.labels[data.test_rows]
    scores = ZeroShotHead(text=text, negative=negative).decision_function(X)
    aucs = per_class_auc(Y, scores)
    patients = patients_of(Path(cache), data.test_rows)
    cis, mean_ci = patient_bootstrap_cis(Y, scores, patients, n_resamples, seed=seed)
    rows: list[list[object]] = [["class", "auc", "ci95_low", "ci95_high", "n_positive", "n_negative",
                                 "n_positive_patients"]]
    for c, name in enumerate(FINDINGS):
        positive_patients = len(np.unique(patients[Y[:, c] == 1]))
        rows.append([name, number(aucs[c]), number(cis[c, 0]), number(cis[c, 1]), int(Y[:, c].sum()),
                     int((1 - Y[:, c]).sum()), positive_patients])
    rows.append(["mean", number(mean_auc(aucs)), number(mean_ci[0]), number(mean_ci[1]), "", "", ""])
    config = {
        "command": "zeroshot",
        "what": "zero-shot from text prompts: no labelled image used",
        "negative": negative,
        "prompts_file": str(prompts_file) if prompts_file else None,
        "prompts": [{"class": c, "polarity": p, "prompt": t}
                    for t, c, p in zip(text.prompts.prompts, text.prompts.classes, text.prompts.polarity)],
        "bootstrap": {"unit": "patient", "resamples": n_resamples, "method": "percentile", "seed": seed,
                      "stratified_by": "per finding: a positive image for it; the mean: any positive image",
                      "test_patients": int(len(np.unique(patients)))},
        "cache": str(cache),
        "model": attrs.get("model"),
        "pretrained": attrs.get("pretrained"),
        "weights_sha256": attrs.get("weights_sha256"),
        "test_images": int(len(X)),
        "versions": package_versions(),
    }

    def fill(folder: Path) -> None:
        write_csv(folder / "zeroshot.csv", rows)
        write_json(folder / "config.json", config)

    publish_folder(out, fill)
    return rows


def patients_of(cache: Path, rows: np.ndarray) -> np.ndarray:
    from cxrprobe.cache.reader import FeatureCache

    with FeatureCache(cache) as opened:
        return opened.table.patient_ids[rows]
