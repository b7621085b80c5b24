"""``cxrprobe zeroshot``: text-only AUC per finding on the test split and their mean, with CIs
from resampling test patients. No labelled image is used; labels only score the result."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrprobe.commands.fewshot import encoder_record
from cxrprobe.eval.grid_data import load_grid_data
from cxrprobe.eval.options import check_aggregate
from cxrprobe.heads.zeroshot import ZeroShotHead
from cxrprobe.metrics.auc import mean_auc, per_class_auc
from cxrprobe.metrics.bootstrap import patient_bootstrap_cis
from cxrprobe.versions import package_versions

COLUMNS = ["class", "auc", "ci95_low", "ci95_high", "n_positive", "n_negative", "n_positive_patients"]


@dataclass
class ZeroshotResult:
    """Zero-shot AUC per finding and their mean ("mean"), in memory: ``rows`` as plain dicts
    (floats, NaN where undefined), ``config`` as config.json holds it."""

    rows: list[dict]
    config: dict

    def write(self, out: Path | str) -> Path:
        """zeroshot.csv and config.json in the new or empty folder ``out``."""
        from cxrprobe.report.results import publish_folder, table_rows, write_csv, write_json

        def fill(folder: Path) -> None:
            write_csv(folder / "zeroshot.csv", table_rows(self.rows, COLUMNS))
            write_json(folder / "config.json", self.config)

        publish_folder(Path(out), fill)
        return Path(out)


def run_zeroshot(
    cache: Path | str, *, negative: str = "pair", bootstrap: int = 1000, seed: int = 0,
    prompts_file: Path | str | None = None, allow_undefined: bool = False, aggregate: str = "image",
    out: Path | str | None = None,
) -> ZeroshotResult:
    """Text-only scores of the cache's test split: AUC per finding with a CI from ``bootstrap``
    resamples of test patients; ``aggregate`` "study-max" or "study-mean" scores each test study
    from its images. With ``out``, the results are written there (checked first)."""
    from cxrprobe.errors import OptionError
    from cxrprobe.heads.registry import NEGATIVES
    from cxrprobe.report.results import check_results_dir, label_record

    if negative not in NEGATIVES:
        raise OptionError("negative", f"must be one of {', '.join(NEGATIVES)}, got {negative!r}")
    if bootstrap < 10:
        raise OptionError("bootstrap", f"must be at least 10 resamples, got {bootstrap}")
    check_aggregate(aggregate)
    if out is not None:
        check_results_dir(Path(out))
    n_resamples = bootstrap
    data, attrs = load_grid_data(Path(cache), ("zeroshot",), allow_undefined=allow_undefined, aggregate=aggregate)
    text = data.text
    if prompts_file is not None:
        from cxrprobe.models.prompt_file import encode_with_weights, merge_prompts, read_prompt_file

        new = read_prompt_file(prompts_file, data.classes)
        encoded = encode_with_weights(new, str(attrs.get("model")), str(attrs.get("pretrained")),
                                      attrs.get("weights_sha256"))
        merged, embeddings = merge_prompts(text.prompts, text.embeddings, new, encoded)
        text = dataclasses.replace(text, prompts=merged, embeddings=embeddings)  # the cache's logit scale kept
    X = data.embeddings[data.test_rows]
    Y, known = data.test_labels, data.test_known
    counted = np.ones(Y.shape, dtype=bool) if known is None else known
    scores = data.test_scores(ZeroShotHead(text=text, negative=negative).decision_function(X))
    aucs = per_class_auc(Y, scores, known)
    patients = patients_of(Path(cache), data.test_rows)
    if data.studies is not None:
        patients = data.studies.first(patients)
    cis, mean_ci = patient_bootstrap_cis(Y, scores, patients, n_resamples, seed=seed, known=known)
    rows = [{"class": name, "auc": float(aucs[c]), "ci95_low": float(cis[c, 0]), "ci95_high": float(cis[c, 1]),
             "n_positive": int(Y[:, c].sum()), "n_negative": int(((1 - Y[:, c]) * counted[:, c]).sum()),
             "n_positive_patients": len(np.unique(patients[Y[:, c] == 1]))} for c, name in enumerate(data.classes)]
    rows.append({"class": "mean", "auc": float(mean_auc(aucs)), "ci95_low": float(mean_ci[0]),
                 "ci95_high": float(mean_ci[1]), "n_positive": "", "n_negative": "", "n_positive_patients": ""})
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
        "encoder": encoder_record(attrs),
        "test_images": int(len(X)),
        "aggregate": {"how": aggregate, "test_units": int(len(Y))},
        "classes": list(data.classes),
        "labels": label_record(attrs),
        "versions": package_versions(),
    }
    result = ZeroshotResult(rows, config)
    if out is not None:
        result.write(out)
    return result


def patients_of(cache: Path, rows: np.ndarray) -> np.ndarray:
    from cxrprobe.cache.reader import FeatureCache

    with FeatureCache(cache) as opened:
        return opened.table.patient_ids[rows]
