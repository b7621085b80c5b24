"""``cxrprobe zeroshot``: text-only AUC per finding on the test split, with bootstrap CIs over
test images. No labelled image is used; labels only score the result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cxrprobe.eval.bootstrap import bootstrap_auc_ci
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
    rows: list[list[object]] = [["class", "auc", "ci95_low", "ci95_high", "n_positive", "n_negative"]]
    for c, name in enumerate(FINDINGS):
        low, high = bootstrap_auc_ci(Y[:, c], scores[:, c], n_resamples, seed=seed + c)
        rows.append([name, number(aucs[c]), number(low), number(high), int(Y[:, c].sum()), int((1 - Y[:, c]).sum())])
    rows.append(["mean", number(mean_auc(aucs)), "", "", "", ""])
    config = {
        "command": "zeroshot",
        "what": "zero-shot from text prompts: no labelled image used",
        "negative": negative,
        "prompts_file": str(prompts_file) if prompts_file else None,
        "prompts": [{"class": c, "polarity": p, "prompt": t}
                    for t, c, p in zip(text.prompts.prompts, text.prompts.classes, text.prompts.polarity)],
        "bootstrap": {"resamples": n_resamples, "stratified": True, "method": "percentile", "seed": seed},
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
