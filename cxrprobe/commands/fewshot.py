"""``cxrprobe fewshot`` and its Python form: validate, run the grid, build config.json; the
result in memory, and the results dir written from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cxrprobe.cache.schema import OPEN_CLIP_ENCODER
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
from cxrprobe.models.encoders.presets import contamination
from cxrprobe.versions import package_versions

# The paper's few-shot code: continue training the adapted head on each support set for 5
# epochs (AdamW 1e-4, batch 16), support sets without explicit normals, one draw per N.
PAPER_EPOCHS = 5
BACKENDS = ("local", "dask")  # where the grid's tasks run: a local process pool, or an existing Dask cluster


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
    test_cache: Path | str | None = None, test_labels: Path | str | None = None, class_map: Path | str | None = None,
    backend: str = "local", scheduler: str | None = None, out: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FewshotResult:
    """The few-shot grid: ``shots`` (counts, or "all") x ``seeds`` x ``heads`` on a cache, or on
    arrays: ``embeddings`` [n, d], ``labels`` [n, C], ``splits`` (each row's "train", "val" or
    "test") and ``patients``, with ``text`` (a TextPrompts) for the heads that use it, and
    optionally ``known`` [n, C], ``normal`` [n], ``classes`` and ``study_ids`` (see ``grid_data``).
    ``aggregate`` "study-max" or "study-mean" scores each test study from its images.

    ``test_cache`` (a cache of another dataset, from the same weights) or ``test_labels`` (a
    re-annotation of the cache's test images, such as Google's 2019 NIH labels) scores other
    test labels, through ``class_map`` (a CSV of test_class,cache_class pairs; by default the
    shipped synonyms, or for ``test_labels`` the shipped Google 2019 NIH map).

    ``heads`` None is every head the data can run; ``jobs`` None one process per usable core.
    ``backend`` "dask" runs the grid's tasks on the Dask cluster at ``scheduler`` (default: the
    DASK_SCHEDULER_ADDRESS variable) instead of a local pool, with the same results.
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
    retest = _check_retest(cache, test_cache, test_labels, class_map, protocol)
    address = _scheduler(backend, scheduler)
    head_params: dict[str, dict] = {}
    if cache is not None:
        from cxrprobe.cache.reader import FeatureCache

        with FeatureCache(cache) as opened:
            # an adapted head scores its own run's classes of its own images: not another test set's
            image_ids, has_head = opened.table.image_ids, "head" in opened.file and not retest
            has_text = "text" in opened.file
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
        has_head, has_text = False, text is not None
        image_ids = np.asarray([str(i) for i in range(len(embeddings))] if image_ids is None else image_ids)
    if protocol == "paper":
        seeds, heads, normals = 1, ("adapted", "paper-mlp"), 0  # one draw per N, no normals, as the paper's code ran
    spec = GridSpec(shots=shots, seeds=seeds, heads=check_heads(heads, has_head, has_text), strict_shots=strict_shots,
                    search=search, allow_undefined=allow_undefined, support=support, normals=normals,
                    test_bootstrap=test_bootstrap, head_params=head_params, aggregate=aggregate)
    if out is not None:
        check_results_dir(Path(out))
    test_set = None
    if retest:
        test_set = _retest_data(Path(cache), test_cache, test_labels, class_map, spec)
        source = test_set.data
    if cache is None:
        source = grid_data(embeddings, labels, splits, patients, text=text, heads=spec.heads,
                           allow_undefined=allow_undefined, test_bootstrap=test_bootstrap, known=known,
                           normal=normal, classes=None if classes is None else tuple(classes),
                           study_ids=study_ids, aggregate=aggregate)
    result = run_grid(source, spec, jobs=jobs, progress=progress, scheduler=address)
    if test_set is not None:
        result.cache_attrs = test_set.attrs
        image_ids = test_set.image_ids
    config = fewshot_config(cache, spec, result, protocol, None if test_set is None else test_set.record)
    fewshot = FewshotResult(result, spec, config, image_ids)
    if out is not None:
        fewshot.write(out)
    return fewshot


def _scheduler(backend: str, scheduler: str | None) -> str | None:
    """The Dask scheduler's address for ``backend`` dask, None for the local pool."""
    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "local":
        if scheduler is not None:
            raise InputError("--scheduler goes with --backend dask")
        return None
    from cxrprobe.eval.cluster import scheduler_address

    return scheduler_address(scheduler)


def _check_retest(cache: object, test_cache: object, test_labels: object, class_map: object, protocol: str) -> bool:
    """Whether the run scores other test labels than the cache's; the options checked."""
    if test_cache is not None and test_labels is not None:
        raise InputError("--test-cache and --test-labels exclude each other")
    if test_cache is None and test_labels is None:
        if class_map is not None:
            raise InputError("--class-map goes with --test-cache or --test-labels")
        return False
    if cache is None:
        raise InputError("--test-cache and --test-labels score a cache's support sets: give a cache, not arrays")
    if protocol == "paper":
        raise InputError("the paper protocol scores the cache's own test split; drop --test-cache / --test-labels")
    return True


def _retest_data(cache: Path, test_cache: object, test_labels: object, class_map: object, spec: GridSpec):
    from cxrprobe.eval.retest import cross_dataset, relabelled

    build = cross_dataset if test_cache is not None else relabelled
    return build(cache, Path(test_cache if test_cache is not None else test_labels),
                 None if class_map is None else Path(class_map), spec.heads, spec.allow_undefined,
                 spec.test_bootstrap, spec.aggregate)


def fewshot_config(cache: Path | str | None, spec: GridSpec, result: GridResult, protocol: str,
                   test_set: dict | None = None) -> dict:
    """config.json: what was run, on what, and what its figures are (``test_set``: where the
    test labels came from, when not from the cache)."""
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
                 + (f"; {encoder['summary']}" if encoder["adapted"] else "")
                 + (f"; test: {test_set.get('test_dataset') or test_set.get('test_labels')}" if test_set else ""),
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
        "support_classes": list(result.support_classes or result.classes),
        "labels": label_record(attrs),
        "test_set": test_set,
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
    """The cache's encoder (back-end, feature point, text tower, the preset it was), what it
    learned from labels (``learned_from_labels``), and whether its weights saw this dataset."""
    try:
        described = json.loads(str(attrs.get("encoder", OPEN_CLIP_ENCODER)))
    except ValueError:
        described = {}
    described = described if isinstance(described, dict) else {}
    overlap = contamination(described.get("trained_on") or [], str(attrs.get("dataset", "")))
    return {**described, **learned_from_labels(attrs), "contamination": overlap}


def learned_from_labels(attrs: dict) -> dict:
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
