"""``cxrprobe fewshot`` and its Python form: validate, run the grid, build config.json; the
result in memory, and the results dir written from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cxrprobe.cores import usable_cores
from cxrprobe.errors import InputError
from cxrprobe.eval.grid_data import TEST_BOOTSTRAP_SEED, GridData, grid_data
from cxrprobe.eval.options import (
    ALL_SHOTS,
    Shots,
    at_least_one,
    at_least_zero,
    check_aggregate,
    check_protocol,
    check_shots,
    check_support,
    parse_normals,
)
from cxrprobe.eval.runner import VALIDATION_SHOTS_MAX, GridResult, GridSpec, run_grid
from cxrprobe.heads.registry import check_heads
from cxrprobe.versions import package_versions

# The paper's few-shot code: continue training the adapted head on each support set for 5
# epochs (AdamW 1e-4, batch 16), support sets without explicit normals, one draw per N.
PAPER_EPOCHS = 5


@dataclass
class FewshotResult:
    """A few-shot grid in memory. ``runs`` and ``summary`` are the rows of runs.csv and
    summary.csv as plain dicts (floats, NaN where undefined), ``config`` is config.json's
    content, ``grid`` the runner's own record; ``write(out)`` publishes the results dir."""

    grid: GridResult
    spec: GridSpec
    config: dict
    image_ids: np.ndarray

    @property
    def runs(self) -> list[dict]:
        from cxrprobe.report.results import run_records

        return run_records(self.grid, self.config["protocol"])

    @property
    def summary(self) -> list[dict]:
        from cxrprobe.report.results import summary_records

        return summary_records(self.grid)

    def write(self, out: Path | str) -> Path:
        """The results dir (runs.csv, summary.csv, ..., config.json, the plots) at ``out``, which
        must be new or empty; returns its path."""
        from cxrprobe.report.results import write_results

        write_results(Path(out), self.grid, self.config["protocol"], self.image_ids, self.config)
        return Path(out)


def run_fewshot(
    cache: Path | str | None = None, *, shots: Sequence[Shots] = (1, 2, 4, 8, 16), seeds: int = 20,
    heads: Sequence[str] | None = None, jobs: int | None = None, search: bool = False, support: str = "per-finding",
    normals: str | int = "N", strict_shots: bool = False, test_bootstrap: int = 0, protocol: str = "default",
    allow_undefined: bool = False, embeddings: np.ndarray | None = None, labels: np.ndarray | None = None,
    splits: np.ndarray | None = None, patients: np.ndarray | None = None, text: object = None,
    image_ids: np.ndarray | None = None, known: np.ndarray | None = None, normal: np.ndarray | None = None,
    classes: Sequence[str] | None = None, study_ids: np.ndarray | None = None, aggregate: str = "image",
    out: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FewshotResult:
    """The few-shot grid: ``shots`` (counts, or "all") x ``seeds`` x ``heads`` on a cache, or on
    arrays: ``embeddings`` [n, d], ``labels`` [n, C], ``splits`` (each row's "train", "val" or
    "test") and ``patients``, with ``text`` (a TextPrompts) for the heads that use it, and
    optionally ``known`` [n, C], ``normal`` [n], ``classes`` and ``study_ids`` (see ``grid_data``).
    ``aggregate`` "study-max" or "study-mean" scores each test study from its images.

    ``heads`` None is every head the data can run; ``jobs`` None one process per usable core.
    With ``out``, the results dir is written there (checked before the grid runs)."""
    from cxrprobe.report.results import check_results_dir

    check_protocol(protocol)
    check_aggregate(aggregate)
    normals = parse_normals(normals)
    check_support(support, normals)
    shots = check_shots(shots)
    jobs = at_least_one(usable_cores() if jobs is None else jobs, "jobs")
    seeds, test_bootstrap = at_least_one(seeds, "seeds"), at_least_zero(test_bootstrap, "test_bootstrap")
    if (cache is None) == (embeddings is None):
        raise InputError("give either a cache or embeddings (with labels, splits and patients), not both or neither")
    head_params: dict[str, dict] = {}
    if cache is not None:
        from cxrprobe.cache.reader import FeatureCache

        with FeatureCache(cache) as opened:
            image_ids, has_head = opened.table.image_ids, "head" in opened.file
            if protocol == "paper":
                if not has_head:
                    raise InputError(f"the paper protocol continues training the adapted head, which {cache} does "
                                     "not hold (embed with --checkpoint RUN_DIR)")
                head_params["paper-mlp"] = {"init_state": opened.head_state(), "epochs": PAPER_EPOCHS}
        source: Path | GridData = Path(cache)
    else:
        if protocol == "paper":
            raise InputError("the paper protocol needs a cache embedded with --checkpoint (its adapted head)")
        if labels is None or splits is None or patients is None:
            raise InputError("embeddings need labels, splits and patients beside them")
        has_head = False
        image_ids = np.asarray([str(i) for i in range(len(embeddings))] if image_ids is None else image_ids)
    if protocol == "paper":
        seeds, heads, normals = 1, ("adapted", "paper-mlp"), 0  # one draw per N, no normals, as the paper's code ran
    spec = GridSpec(shots=shots, seeds=seeds, heads=check_heads(heads, has_head), strict_shots=strict_shots,
                    search=search, allow_undefined=allow_undefined, support=support, normals=normals,
                    test_bootstrap=test_bootstrap, head_params=head_params, aggregate=aggregate)
    if out is not None:
        check_results_dir(Path(out))
    if cache is None:
        source = grid_data(embeddings, labels, splits, patients, text=text, heads=spec.heads,
                           allow_undefined=allow_undefined, test_bootstrap=test_bootstrap, known=known,
                           normal=normal, classes=None if classes is None else tuple(classes),
                           study_ids=study_ids, aggregate=aggregate)
    result = run_grid(source, spec, jobs=jobs, progress=progress)
    fewshot = FewshotResult(result, spec, fewshot_config(cache, spec, result, protocol), image_ids)
    if out is not None:
        fewshot.write(out)
    return fewshot


def fewshot_config(cache: Path | str | None, spec: GridSpec, result: GridResult, protocol: str) -> dict:
    """config.json: what was run, on what, and what its figures are."""
    from cxrprobe.report.results import label_record

    attrs = result.cache_attrs
    encoder = encoder_record(attrs)
    source = (f"{attrs.get('model')}/{attrs.get('pretrained')} on {attrs.get('dataset')}" if cache is not None
              else "embeddings given as arrays")
    return {
        "command": "fewshot",
        "protocol": protocol,
        "label": f"{source}; "
                 + ("the paper's protocol (adapted head trained further, one draw)" if protocol == "paper" else "default protocol")
                 + (f"; {encoder['summary']}" if encoder["adapted"] else ""),
        "encoder": encoder,
        "cache": None if cache is None else str(cache),
        "cache_fingerprint": {k: attrs.get(k) for k in ("weights_sha256", "dataset_fingerprint", "manifest_sha256", "model", "pretrained")},
        "shots": list(spec.shots),
        "seeds": list(range(spec.seeds)),
        "heads": list(spec.heads),
        "strict_shots": spec.strict_shots,
        "support": {"design": spec.support, "normals": spec.normals},
        "test_bootstrap": None if not spec.test_bootstrap else {
            "resamples": spec.test_bootstrap, "unit": "patient", "stratified_by": "any positive image",
            "seed": TEST_BOOTSTRAP_SEED,
            "what": "seed_and_test_ci95 in summary.csv: each replicate resamples the seeds and the test patients",
        },
        "full_data": None if ALL_SHOTS not in spec.shots else {
            "images": len(next(s for s in result.supports if s.shots == ALL_SHOTS).rows),
            "what": "shots 'all': every training image, one draw (the supervised reference point); heads whose fit "
                    "is random are refitted at every seed, the others fitted once, their run standing for every "
                    "seed; a search's validation set is the first seed's "
                    f"{VALIDATION_SHOTS_MAX}-shot one",
        },
        "not_fitted": result.not_fitted,
        "search_on_validation": spec.search,
        "allow_undefined": spec.allow_undefined,
        "aggregate": {"how": spec.aggregate, "test_units": result.n_test_units,
                      "what": "each test image scored on its own" if spec.aggregate == "image" else
                              f"each test study scored by the {spec.aggregate.removeprefix('study-')} of its images' "
                              "scores, against the study's labels"},
        "classes": list(result.classes),
        "labels": label_record(attrs),
        "undefined_findings": result.undefined_findings,
        "test_images": result.n_test,
        "labelled_images_used": {
            "adaptation": encoder["labelled_images"],
            "support_per_run_max": max(len(s.rows) for s in result.supports),
            "validation_per_run_max": result.validation_images,
        },
        "versions": package_versions(),
        "note": "CIs are t-based over seeds (support-set draws); " + (
            encoder["summary"] + ": " + encoder["label_efficiency"] if encoder["adapted"]
            else "zeroshot uses text only, no labelled image"
        ) + "; " + CL2N_NOTE,
    }


CL2N_NOTE = ("prototype and knn centre every embedding on the mean of the unlabelled training images "
             "(CL2N), which uses their embeddings but none of their labels")


def encoder_record(attrs: dict) -> dict:
    """What the cache's encoder learned from labels: nothing (as pretrained), or an adapt run's
    labelled images, with the findings it held out. Few-shot curves measure label efficiency
    only where the encoder never saw the labels."""
    if not attrs.get("checkpoint"):
        return {"adapted": False, "labelled_images": 0, "held_out": [], "summary": "encoder as pretrained",
                "label_efficiency": "every finding's curve counts every labelled image used"}
    try:
        record = json.loads(str(attrs.get("adaptation", "{}")))
    except ValueError:
        record = {}
    record = record if isinstance(record, dict) else {}
    labelled, held_out = record.get("labelled_images"), record.get("held_out")
    count = f"{labelled:,}" if isinstance(labelled, int) else "an unrecorded number of"
    held = ", ".join(held_out) if held_out else ""
    return {
        "adapted": True, "labelled_images": labelled, "held_out": held_out, "run": attrs.get("checkpoint"),
        "summary": f"encoder adapted with {count} labelled images" + (f" (held out: {held})" if held else ""),
        "label_efficiency": (f"few-shot figures measure label efficiency only for the held-out findings ({held})"
                             if held else "no finding was held out, so no few-shot curve measures label efficiency"),
    }
