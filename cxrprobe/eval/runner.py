"""The few-shot grid: shots x seeds x heads on one cache, deterministic whatever ``jobs`` is.

Every (shots, seed) is one task: draw the support set once, fit every head on it, score the
whole test split, compute per-finding AUC. At ``all`` shots (every training image) there is
one draw: a head that draws nothing random is fitted once, at the first seed, and that run
stands for every seed; only heads whose fit is random are refitted per seed. Tasks run single-threaded (BLAS, torch and FAISS
alike) so that a task's numbers do not depend on how many run beside it; ``jobs`` processes
share the embeddings through memory-mapped files written once per grid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.errors import CacheError
from cxrprobe.eval.options import ALL_SHOTS, Shots, at_least_one, shot_order
from cxrprobe.eval.sampler import SupportSet, draw_support
from cxrprobe.eval.studies import Studies
from cxrprobe.fsutil import remove_stale_temporaries
from cxrprobe.heads.base import TextPrompts, transform_embeddings
from cxrprobe.heads.registry import head_class, make_head
from cxrprobe.metrics.auc import per_class_auc_ap
from cxrprobe.metrics.bootstrap import joint_patient_resamples, replicate_mean_aucs


@dataclass(frozen=True)
class GridSpec:
    shots: tuple[Shots, ...]
    seeds: int
    heads: tuple[str, ...]
    strict_shots: bool = False
    search: bool = False  # heads that can, select hyperparameters on a few-shot validation set
    allow_undefined: bool = False  # findings with no test positives (or negatives): empty AUC, not an error
    support: str = "per-finding"  # the support-set design (eval/sampler.py)
    normals: str | int = "N"  # "No Finding" images in a per-finding set: N, natural, or a count
    test_bootstrap: int = 0  # resamples of test patients scored by every run (0: none)
    aggregate: str = "image"  # test scored per image, or per study from its images (eval/studies.py)
    head_params: dict[str, dict] = field(default_factory=dict, hash=False)  # head -> parameters set on it

    def tasks(self) -> list[tuple[Shots, int]]:
        return [(s, seed) for s in self.shots for seed in range(self.seeds)]

    def draw_seed(self, shots: Shots, seed: int) -> int:
        """The seed a task's support and validation sets are drawn with: at ``all``, one draw (seed 0's)."""
        return 0 if shots == ALL_SHOTS else seed

    def refits(self, head: type, shots: Shots, seed: int) -> bool:
        """Whether the task (shots, seed) fits ``head``, or takes its run from the first seed's."""
        return head.draws_random or self.draw_seed(shots, seed) == seed


@dataclass(frozen=True)
class RunResult:
    head: str
    shots: Shots
    seed: int
    aucs: np.ndarray  # [C], NaN where the test split has one class only
    aps: np.ndarray  # [C] average precision, NaN where the AUC is
    labelled: int = 0  # labelled images the head used: its support set, and a validation set if it searched
    test_replicates: np.ndarray | None = field(default=None, compare=False)  # [B] mean AUC per test resample
    seconds: float = field(default=0.0, compare=False)  # fit + score + AUC, single-threaded; never written to runs.csv


@dataclass
class GridResult:
    runs: list[RunResult]
    supports: list[SupportSet]
    n_test: int
    validation_images: int
    cache_attrs: dict = field(default_factory=dict)
    seconds_by_head: dict[str, float] = field(default_factory=dict)  # summed single-threaded seconds
    undefined_findings: list[str] = field(default_factory=list)  # no AUC on this test split (--allow-undefined)
    test_prevalence: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [C] share of known test labels positive
    not_fitted: dict[str, str] = field(default_factory=dict)  # head -> why some support sets were too large for it
    classes: tuple[str, ...] = ()  # the label columns, in order
    n_test_units: int = 0  # what each AUC ranks: test images, or test studies with --aggregate


@dataclass(frozen=True)
class GridData:
    """What a task needs, as plain arrays (memory-mapped into worker processes)."""

    embeddings: np.ndarray  # float32 [n, d], every row
    labels: np.ndarray  # uint8 [n, C], 0 where unknown
    split: np.ndarray
    test_rows: np.ndarray
    center: np.ndarray  # mean of the unlabelled training pool
    text: TextPrompts | None
    test_inputs: dict[str, np.ndarray]  # the test rows under each transform the heads use, made once
    test_weights: np.ndarray | None = None  # [B, test rows] image weights of B patient resamples
    known: np.ndarray | None = None  # bool [n, C] whether each label is known; None: all are
    normal: np.ndarray | None = None  # bool [n] the normal images; None: those with no finding
    classes: tuple[str, ...] = ()  # the label columns' names
    test_labels: np.ndarray | None = None  # what test scores are compared with: per image, or per study
    test_known: np.ndarray | None = None
    studies: Studies | None = None  # the test rows grouped by study, when scored per study

    def known_at(self, rows: np.ndarray) -> np.ndarray | None:
        return None if self.known is None else self.known[rows]

    def test_scores(self, scores: np.ndarray) -> np.ndarray:
        """A head's test-image scores as they are compared with ``test_labels``."""
        return scores if self.studies is None else self.studies.scores(scores)


def class_names(n: int, classes: tuple[str, ...] | None) -> tuple[str, ...]:
    """``classes`` checked against the label width, or NIH's findings where the width is
    theirs (arrays from the Python API without names), or "class c"."""
    from cxrprobe.labels import FINDINGS

    if classes:
        if len(classes) != n:
            raise CacheError(f"{len(classes)} class names for labels with {n} columns")
        return tuple(classes)
    return FINDINGS if n == len(FINDINGS) else tuple(f"class {c}" for c in range(n))


def undefined_findings(test_labels: np.ndarray, classes: tuple[str, ...],
                       test_known: np.ndarray | None = None) -> list[str]:
    """Findings whose test split holds only positives or only negatives among its known labels:
    no AUC is defined."""
    test_labels = np.asarray(test_labels)
    known = np.ones(test_labels.shape, dtype=bool) if test_known is None else np.asarray(test_known, dtype=bool)
    positives = (test_labels.astype(bool) & known).sum(axis=0)
    return [name for name, n, k in zip(classes, positives, known.sum(axis=0)) if n == 0 or n == k]


def check_defined(test_labels: np.ndarray, source: object, allow_undefined: bool, classes: tuple[str, ...],
                  test_known: np.ndarray | None = None) -> None:
    """A finding without an AUC is refused unless allowed: a mean over findings would otherwise
    quietly be over fewer of them, and not comparable with another cache's."""
    undefined = undefined_findings(test_labels, classes, test_known)
    if len(undefined) == len(classes):
        raise CacheError(f"{source}: no finding has both positive and negative test images, so no AUC "
                         "is defined; embed more of the test split")
    if undefined and not allow_undefined:
        raise CacheError(f"{source}: no AUC is defined for {', '.join(undefined)} (its test images are all "
                         "negative or all positive); embed the whole test split, or pass --allow-undefined to "
                         "leave it empty and average over the other findings")


TEST_BOOTSTRAP_SEED = 0  # one set of test resamples for every run, so runs stay paired


def _text_heads(heads: tuple[str, ...]) -> str:
    """The heads among ``heads`` that score from text prompts, for a message ('' if none)."""
    return ", ".join(h for h in heads if head_class(h).uses_text)


def load_grid_data(cache_path: Path, heads: tuple[str, ...], allow_undefined: bool = False,
                   test_bootstrap: int = 0, aggregate: str = "image") -> tuple[GridData, dict]:
    """The grid's arrays from a cache, and the cache's attributes."""
    with FeatureCache(cache_path) as cache:
        needs_text = bool(_text_heads(heads))
        if needs_text and "text" not in cache.file:
            raise CacheError(f"{cache_path} holds no text embeddings, which {_text_heads(heads)} need")
        needs_logits = any(head_class(h).input_transform == "head_logits" for h in heads)
        data = grid_data(
            cache.embeddings(), cache.labels, cache.table.split, cache.table.patient_ids,
            known=None if cache.known.all() else cache.known, normal=cache.normal, classes=cache.classes,
            study_ids=cache.table.study_ids, aggregate=aggregate,
            text=cache.text_prompts() if needs_text else None,
            head_logits=cache.head_logits() if needs_logits else None,
            heads=heads, allow_undefined=allow_undefined, test_bootstrap=test_bootstrap, source=str(cache_path),
        )
        return data, dict(cache.attrs)


def grid_data(
    embeddings: np.ndarray, labels: np.ndarray, split: np.ndarray, patients: np.ndarray, *,
    text: TextPrompts | None = None, head_logits: np.ndarray | None = None, heads: tuple[str, ...] = (),
    allow_undefined: bool = False, test_bootstrap: int = 0, source: str = "the embeddings",
    known: np.ndarray | None = None, normal: np.ndarray | None = None, classes: tuple[str, ...] | None = None,
    study_ids: np.ndarray | None = None, aggregate: str = "image",
) -> GridData:
    """The grid's arrays from embeddings [n, d], labels [n, C], each row's split ("train",
    "val" or "test") and patient; ``text`` for heads that use it, ``head_logits`` [n, C] for
    heads that score an adapted head's logits. ``known`` [n, C] marks the labels that are known
    (default all; ``labels`` must be 0 elsewhere), ``normal`` [n] the normal images (default:
    no finding positive), ``classes`` names the columns; ``aggregate`` "study-max" or
    "study-mean" scores each test study (``study_ids`` [n]) from its images."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels, split, patients = np.asarray(labels), np.asarray(split), np.asarray(patients)
    classes = class_names(labels.shape[1], classes)
    if known is not None:
        known = np.asarray(known, dtype=bool)
        if known.shape != labels.shape:
            raise CacheError(f"{source}: known {known.shape} is not shaped as labels {labels.shape}")
        if (labels[~known] != 0).any():
            raise CacheError(f"{source}: labels must be 0 where they are unknown")
    if normal is None:
        normal = labels.sum(axis=1) == 0
        if known is not None:
            normal &= known.all(axis=1)
    normal = np.asarray(normal, dtype=bool)
    if not np.isfinite(embeddings).all():
        raise CacheError(f"{source} holds NaN or Inf embeddings; re-embed it")
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    if len(test) == 0:
        raise CacheError(f"{source} has no test images")
    studies = None
    if aggregate != "image":
        if study_ids is None:
            raise CacheError(f"{source}: --aggregate {aggregate} needs each image's study")
        studies = Studies.of(np.asarray(study_ids)[test], aggregate)
    test_labels, test_known = labels[test], None if known is None else known[test]
    test_patients = patients[test]
    if studies is not None:
        test_labels, test_known = studies.labels(test_labels, test_known)
        test_patients = studies.first(test_patients)
    check_defined(test_labels, source, allow_undefined, classes, test_known)
    if len(train) == 0:
        raise CacheError(f"{source} has no training images to draw support sets from")
    check_patient_disjoint(split, patients, source)
    if _text_heads(heads) and text is None:
        raise CacheError(f"{source} comes with no text embeddings, which {_text_heads(heads)} need")
    center = embeddings[train].astype(np.float64).mean(axis=0)
    inputs = {}
    for kind in sorted({head_class(h).input_transform for h in heads}):
        if kind == "head_logits":
            if head_logits is None:
                raise CacheError(f"{source} holds no adapted head's logits (embed with --checkpoint RUN_DIR)")
            inputs[kind] = np.asarray(head_logits, dtype=np.float32)[test]
        else:
            inputs[kind] = transform_embeddings(embeddings[test], kind, center)
    return GridData(
        embeddings=embeddings, labels=labels, split=split, test_rows=test, center=center, text=text,
        test_inputs=inputs, test_weights=_test_weights(test_labels, test_patients, test_bootstrap),
        known=known, normal=normal, classes=classes, test_labels=test_labels, test_known=test_known, studies=studies,
    )


def check_patient_disjoint(split: np.ndarray, patients: np.ndarray, source: object) -> None:
    """No patient in two splits: support sets, validation sets and test must not share one."""
    if len(patients) != len(split):
        raise CacheError(f"{source}: {len(patients)} patients for {len(split)} images")
    names = ("train", "val", "test")
    members = {name: np.unique(patients[split == name]) for name in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(members[a], members[b])
            if len(shared):
                raise CacheError(f"{source}: {len(shared)} patient(s) have images in both {a} and {b} "
                                 f"(e.g. {shared[0]}); splits must be patient-disjoint")


def _test_weights(labels: np.ndarray, patients: np.ndarray, n_resamples: int) -> np.ndarray | None:
    if n_resamples < 1:
        return None
    counts = joint_patient_resamples(labels, patients, n_resamples, np.random.default_rng(TEST_BOOTSTRAP_SEED))
    _, patient = np.unique(patients, return_inverse=True)
    return counts[:, patient].astype(np.float32)


VALIDATION_SHOTS_MAX = 4  # CoOp's K_val = min(K, 4)


def validation_shots(shots: Shots) -> int:
    return VALIDATION_SHOTS_MAX if shots == ALL_SHOTS else min(shots, VALIDATION_SHOTS_MAX)


def known_labels(data: GridData, rows: np.ndarray) -> dict[str, np.ndarray]:
    """``fit``'s ``known`` for these rows where some label is unknown: each head fits a finding
    on the images whose label for it is known (an unknown label is never read as a negative)."""
    known = data.known_at(rows)
    return {} if known is None or known.all() else {"known": known}


def check_searchable(data: GridData, rows: np.ndarray) -> None:
    """The searches score validation sets by AUC over every label they hold."""
    if data.known is not None and not data.known[rows].all():
        raise CacheError("--search needs a validation set whose labels are all known; this cache's validation "
                         "images have unknown labels (its label policy), so run without --search")


def too_large(head: type, support: SupportSet) -> bool:
    """A head whose cost grows with the square of the support set is not fitted past its limit."""
    return head.max_support is not None and len(support.rows) > head.max_support


def run_task(data: GridData, spec: GridSpec, shots: Shots, seed: int) -> tuple[SupportSet, list[RunResult], int]:
    """One (shots, seed): the support set and the per-finding test AUC of every head the task
    fits (see ``GridSpec.refits`` and ``too_large``)."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        with threadpool_limits(1):
            draw_seed = spec.draw_seed(shots, seed)
            pool = {"known": data.known, "normal": data.normal, "classes": data.classes}
            support = draw_support(data.labels, data.split, shots, draw_seed, strict=spec.strict_shots,
                                   design=spec.support, normals=spec.normals, **pool)
            X = data.embeddings[support.rows]
            Y = data.labels[support.rows]
            known = known_labels(data, support.rows)
            Y_test, known_test = data.test_labels, data.test_known
            results = []
            validation = None
            for name in spec.heads:
                cls = head_class(name)
                if not cls.needs_support or not spec.refits(cls, shots, seed) or too_large(cls, support):
                    continue  # scored once for the whole grid, or taken from another run, by run_grid
                start = time.perf_counter()
                head = make_head(name, data.text, data.center, random_state=seed, search=spec.search,
                                 **spec.head_params.get(name, {}))
                labelled = len(support.rows)
                if head.uses_validation:
                    if validation is None:  # other patients than the support set's: the val split
                        validation = draw_support(data.labels, data.split, validation_shots(shots), draw_seed,
                                                  pool_split="val", design=spec.support, normals=spec.normals, **pool)
                        check_searchable(data, validation.rows)
                    rows = validation.rows
                    head.fit(X, Y, X_val=data.embeddings[rows], Y_val=data.labels[rows], **known)
                    labelled += len(rows)
                else:
                    head.fit(X, Y, **known)
                scores = data.test_scores(head.decision_from(data.test_inputs[head.input_transform]))
                aucs, aps = per_class_auc_ap(Y_test, scores, known_test)
                replicates = None if data.test_weights is None else \
                    replicate_mean_aucs(Y_test, scores, data.test_weights, known_test)
                results.append(RunResult(name, shots, seed, aucs, aps, labelled, replicates,
                                         time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)
    return support, results, 0 if validation is None else len(validation.rows)


def memory_mapped(data: GridData, folder: Path) -> GridData:
    """``data`` with its large arrays as read-only memory maps of files in ``folder``.

    joblib sends a memory map to a worker as its file name; a plain array it hashes (to name
    its own memory-map file) every time a task is sent: 400 MB a task, which cost this grid a
    fifth of its time on 2 cores."""

    def mapped(name: str, array: np.ndarray) -> np.ndarray:
        path = folder / f"{name}.npy"
        np.save(path, array)
        return np.load(path, mmap_mode="r")

    return dataclasses.replace(
        data, embeddings=mapped("embeddings", data.embeddings), labels=mapped("labels", data.labels),
        split=mapped("split", data.split), test_rows=mapped("test_rows", data.test_rows),
        test_inputs={kind: mapped(f"test-{kind}", array) for kind, array in data.test_inputs.items()},
        test_weights=None if data.test_weights is None else mapped("test-weights", data.test_weights),
        known=None if data.known is None else mapped("known", data.known), normal=mapped("normal", data.normal),
    )


GRID_FOLDER = "cxrprobe-grid"


@contextlib.contextmanager
def shared_folder() -> Iterator[Path]:
    """A temporary folder for the workers' memory maps (~320 MB on NIH), named as cxrprobe's
    temporaries are (``.cxrprobe-grid.<random>-<pid>``): a grid that was killed cannot remove
    its own, so each grid first removes those whose process is gone."""
    root = Path(tempfile.gettempdir())
    remove_stale_temporaries(root, GRID_FOLDER)
    folder = Path(tempfile.mkdtemp(prefix=f".{GRID_FOLDER}.", suffix=f"-{os.getpid()}", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_task_in_worker(data: GridData, spec: GridSpec, shots: Shots, seed: int) -> tuple[SupportSet, list[RunResult], int]:
    """``run_task`` in a worker process, its long-lived objects frozen out of the collector.

    Without psutil, loky runs a full ``gc.collect()`` after nearly every task, and a full
    collection walks every object torch, scipy and sklearn created on import, after every
    task (benchmarks/choices.py). Frozen objects are skipped; collecting first
    frees the previous task's cycles, so nothing is kept that should not be."""
    gc.collect()
    gc.freeze()
    return run_task(data, spec, shots, seed)


def _support_free_runs(data: GridData, spec: GridSpec) -> dict[str, RunResult]:
    """Heads whose scores ignore the support set (zero-shot) are scored once, not per run."""
    Y_test, known_test = data.test_labels, data.test_known
    out = {}
    for name in spec.heads:
        if not head_class(name).needs_support:
            start = time.perf_counter()
            head = make_head(name, data.text, data.center, random_state=0, **spec.head_params.get(name, {}))
            scores = data.test_scores(head.decision_from(data.test_inputs[head.input_transform]))
            aucs, aps = per_class_auc_ap(Y_test, scores, known_test)
            replicates = None if data.test_weights is None else \
                replicate_mean_aucs(Y_test, scores, data.test_weights, known_test)
            out[name] = RunResult(name, 0, 0, aucs, aps, test_replicates=replicates, seconds=time.perf_counter() - start)
    return out


def run_grid(
    source: Path | GridData, spec: GridSpec, jobs: int = 1, progress: Callable[[int, int], None] | None = None,
) -> GridResult:
    """The grid on a cache (its path) or on arrays already in a ``GridData`` (``grid_data``)."""
    at_least_one(jobs, "jobs")
    if isinstance(source, GridData):
        data, attrs = source, {}
    else:
        data, attrs = load_grid_data(Path(source), spec.heads, spec.allow_undefined, spec.test_bootstrap,
                                     spec.aggregate)
    tasks = spec.tasks()
    jobs = min(jobs, len(tasks))  # a worker without a task would only cost its start-up
    if jobs == 1:
        outputs = []
        for i, (shots, seed) in enumerate(tasks):
            outputs.append(run_task(data, spec, shots, seed))
            if progress:
                progress(i + 1, len(tasks))
    else:
        from joblib import Parallel, delayed

        # the costliest tasks (most shots) first, so that no worker is left with one at the end
        order = sorted(range(len(tasks)), key=lambda i: shot_order(tasks[i][0]), reverse=True)
        with shared_folder() as folder:
            shared = memory_mapped(data, folder)
            done = Parallel(n_jobs=jobs, backend="loky", max_nbytes="1M")(
                delayed(run_task_in_worker)(shared, spec, *tasks[i]) for i in order
            )
        outputs = [None] * len(tasks)
        for i, output in zip(order, done):
            outputs[i] = output
    fixed = _support_free_runs(data, spec)
    supports = [support for support, _, _ in outputs]
    fitted = {(run.head, run.shots, run.seed): run for _, task_runs, _ in outputs for run in task_runs}
    runs, not_fitted = [], {}
    for (shots, seed), (support, _, _) in zip(tasks, outputs):
        for name in spec.heads:
            cls = head_class(name)
            if not cls.needs_support:
                runs.append(dataclasses.replace(fixed[name], shots=shots, seed=seed, seconds=0.0))
            elif too_large(cls, support):
                not_fitted[name] = (f"not fitted on support sets of more than {cls.max_support:,} images "
                                    f"({cls.max_support_reason}); left out at {shots} shots ({len(support.rows):,})")
            elif spec.refits(cls, shots, seed):
                runs.append(fitted[(name, shots, seed)])
            else:  # the same fit on the same draw: the first seed's run
                runs.append(dataclasses.replace(fitted[(name, shots, spec.draw_seed(shots, seed))], seed=seed,
                                                seconds=0.0))
    validation_images = max(n for _, _, n in outputs)
    seconds = {name: fixed[name].seconds if name in fixed else 0.0 for name in spec.heads}
    for run in runs:
        seconds[run.head] += run.seconds
    test_labels, test_known = data.test_labels, data.test_known
    prevalence = test_labels.mean(axis=0) if test_known is None else \
        (test_labels * test_known).sum(axis=0) / np.maximum(test_known.sum(axis=0), 1)
    return GridResult(runs, supports, len(data.test_rows), validation_images, attrs, seconds,
                      undefined_findings(test_labels, data.classes, test_known), prevalence, not_fitted, data.classes,
                      len(test_labels))
