"""Few-shot support sets, drawn the honest way.

For N shots and a seed: from one split's images only (``train`` for support sets, ``val`` for
the few-shot validation sets that hyperparameter searches may use, never ``test``), N images
positive for each finding (all of them where fewer exist) plus N "No Finding" images,
deduplicated, with their full multi-hot labels. Co-occurring findings make a finding's
effective positive count exceed N; it is recorded. A (shots, seed) pair always gives the
same set, whatever else is drawn, so every head sees the same support set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrprobe.errors import InputError
from cxrprobe.labels import FINDINGS

POOL_SPLITS = ("train", "val")


@dataclass(frozen=True)
class SupportSet:
    """Rows of the cache drawn for one (shots, seed), sorted, with what they hold."""

    shots: int
    seed: int
    split: str
    rows: np.ndarray  # int64, sorted cache rows
    positives: np.ndarray  # int64 [14], images positive for each finding in ``rows``
    no_finding: int  # images with no finding in ``rows``
    short: tuple[str, ...]  # findings whose pool held fewer than ``shots`` positives


def draw_support(
    labels: np.ndarray, split: np.ndarray, shots: int, seed: int, pool_split: str = "train", strict: bool = False,
    with_normals: bool = True,
) -> SupportSet:
    """Draw the support set of ``shots`` per finding plus ``shots`` normals from ``pool_split``.

    With ``strict``, a finding with fewer than ``shots`` positives in the pool is an error
    instead of contributing all it has. Without ``with_normals`` no "No Finding" images are drawn
    (the paper's sampler: negatives come only from other findings' images).
    """
    if pool_split not in POOL_SPLITS:
        raise ValueError(f"support sets come from {' or '.join(POOL_SPLITS)}, never from {pool_split!r}")
    if shots < 1:
        raise InputError(f"shots must be at least 1, got {shots}")
    pool = np.flatnonzero(split == pool_split)
    if pool.size == 0:
        raise InputError(f"the cache has no {pool_split} images to draw support sets from")
    rng = np.random.default_rng([seed, shots, POOL_SPLITS.index(pool_split)])
    pool_labels = labels[pool]
    chosen: list[np.ndarray] = []
    short: list[str] = []
    candidates = [pool_labels[:, c] == 1 for c in range(len(FINDINGS))]
    names = list(FINDINGS)
    if with_normals:
        candidates.append(pool_labels.sum(axis=1) == 0)
        names.append("No Finding")
    for name, mask in zip(names, candidates):
        available = pool[mask]
        if available.size < shots:
            if strict:
                raise InputError(
                    f"{name} has {available.size} {pool_split} image(s), fewer than {shots} shots "
                    "(drop --strict-shots to use all there are)"
                )
            short.append(name)
        chosen.append(rng.choice(available, size=min(shots, available.size), replace=False))
    rows = np.unique(np.concatenate(chosen)).astype(np.int64)
    held = labels[rows]
    return SupportSet(
        shots=shots,
        seed=seed,
        split=pool_split,
        rows=rows,
        positives=held.sum(axis=0).astype(np.int64),
        no_finding=int((held.sum(axis=1) == 0).sum()),
        short=tuple(short),
    )
