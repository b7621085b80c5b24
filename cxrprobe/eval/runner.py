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

from cxrprobe.errors import CacheError
from cxrprobe.eval.grid_data import GridData, load_grid_data, undefined_findings
from cxrprobe.eval.options import ALL_SHOTS, Shots, at_least_one, shot_order
from cxrprobe.eval.sampler import SupportSet, draw_support
from cxrprobe.fsutil import remove_stale_temporaries
from cxrprobe.heads.registry import head_class, make_head
from cxrprobe.metrics.auc import per_class_auc_ap
from cxrprobe.metrics.bootstrap import replicate_mean_aucs


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
    classes: tuple[str, ...] = ()  # the classes each run's AUCs are of, in order
    n_test_units: int = 0  # what each AUC ranks: test images, or test studies with --aggregate
    support_classes: tuple[str, ...] = ()  # the support sets' label columns, where not ``classes``


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


def memory_mapped(data: GridData, folder: Path, opener: Callable[[Path], np.ndarray] | None = None) -> GridData:
    """``data`` with its large arrays as read-only memory maps of files in ``folder`` (opened
    by ``opener``: a Dask run's arrays pickle as their paths, ``cluster.SharedArray``).

    joblib sends a memory map to a worker as its file name; a plain array it hashes (to name
    its own memory-map file) every time a task is sent: 400 MB a task, which cost this grid a
    fifth of its time on 2 cores."""

    def mapped(name: str, array: np.ndarray) -> np.ndarray:
        path = folder / f"{name}.npy"
        np.save(path, array)
        return np.load(path, mmap_mode="r") if opener is None else opener(path)

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
    scheduler: str | None = None,
) -> GridResult:
    """The grid on a cache (its path) or on arrays already in a ``GridData`` (``grid_data``):
    in this process (``jobs`` 1), a local pool of ``jobs`` processes, or on the Dask cluster
    whose ``scheduler`` address is given; the same results, byte for byte, whichever."""
    at_least_one(jobs, "jobs")
    if isinstance(source, GridData):
        data, attrs = source, {}
    else:
        data, attrs = load_grid_data(Path(source), spec.heads, spec.allow_undefined, spec.test_bootstrap,
                                     spec.aggregate)
    tasks = spec.tasks()
    jobs = min(jobs, len(tasks))  # a worker without a task would only cost its start-up
    if scheduler is not None:
        outputs = _on_cluster(data, spec, tasks, scheduler)
    elif jobs == 1:
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
                      undefined_findings(test_labels, data.scored_classes, test_known), prevalence, not_fitted,
                      data.scored_classes, len(test_labels), data.classes if data.test_classes else ())


def _on_cluster(data: GridData, spec: GridSpec, tasks: list[tuple[Shots, int]], scheduler: str) -> list:
    """The tasks through joblib's Dask backend on the cluster at ``scheduler``, in task order."""
    from joblib import Parallel, delayed, parallel_config

    from cxrprobe.eval.cluster import check_workers_see, connect, open_shared

    with connect(scheduler) as client, shared_folder() as folder:
        shared = memory_mapped(data, folder, open_shared)
        check_workers_see(client, folder / "embeddings.npy")
        with parallel_config(backend="dask"):
            return Parallel()(delayed(run_task_in_worker)(shared, spec, *task) for task in tasks)
