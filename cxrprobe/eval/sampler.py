"""Few-shot support sets, drawn the honest way.

For N shots and a seed, from one split's images only (``train`` for support sets, ``val`` for
the few-shot validation sets that hyperparameter searches may use, never ``test``), one of
three designs, each image with its full multi-hot labels:

- ``per-finding`` (the default): N images positive for each finding (all of them where fewer
  exist), deduplicated, plus normal images (by the label set's rule: NIH's "No Finding" rows,
  CheXpert's ``No Finding == 1``): N of them by default, or none, a given number, or
  ``natural`` (as many as their share of the pool asks for beside the others).
- ``pos-neg``: at least N known positives and N known negatives for every finding, then greedy pruning of
  every image whose removal keeps that (StefanoWoerner/torchcross ``multilabel_few_shot_sample``,
  as MedIMeta draws its tasks).
- ``realistic``: a budget of 15 N images drawn at random, so by the pool's label marginal,
  every finding at least once (jusiro/SS-Text's realistic setting: one positive per finding
  first, the rest uniform).

``all`` (the full-data reference point) is every image of the split, whatever the design.

Positives and negatives are drawn among the images whose label is known (an unknown label
is 0 in ``labels`` and never counts as either). Co-occurring findings make a finding's effective positive count exceed N; it is recorded. A
(design, shots, seed) always gives the same set, whatever else is drawn, so every head sees
the same support set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrprobe.errors import InputError
from cxrprobe.eval.options import ALL_SHOTS, Shots

POOL_SPLITS = ("train", "val")
DESIGNS = ("per-finding", "pos-neg", "realistic")
SHOTS_NORMALS = "N"  # as many "No Finding" images as shots
NATURAL_NORMALS = "natural"
REALISTIC_BUDGET = 15  # images per shot: SS-Text's K x C with C = 15 classes (NIH's 14 findings and normal)


@dataclass(frozen=True)
class SupportSet:
    """Rows of the cache drawn for one (shots, seed), sorted, with what they hold."""

    shots: Shots  # a count, or "all"
    seed: int
    split: str
    rows: np.ndarray  # int64, sorted cache rows
    positives: np.ndarray  # int64 [C], images positive for each finding in ``rows``
    no_finding: int  # normal images in ``rows``
    short: tuple[str, ...]  # findings whose pool held fewer than ``shots`` positives


def draw_support(
    labels: np.ndarray, split: np.ndarray, shots: Shots, seed: int, pool_split: str = "train", strict: bool = False,
    design: str = "per-finding", normals: str | int = SHOTS_NORMALS, known: np.ndarray | None = None,
    normal: np.ndarray | None = None, classes: tuple[str, ...] | None = None,
) -> SupportSet:
    """Draw the support set of ``shots`` by ``design`` from ``pool_split``.

    ``labels`` [n, C] is 0 where ``known`` [n, C] is false (default: every label known);
    ``normal`` [n] marks the normal images (default: no finding positive); ``classes`` names
    the columns in messages.

    With ``strict``, a finding with fewer than ``shots`` positives in the pool is an error
    instead of contributing all it has. ``normals`` ("N", "natural", or a count; 0 is the
    paper's sampler, whose negatives come only from other findings' images) applies to the
    per-finding design.
    """
    if pool_split not in POOL_SPLITS:
        raise ValueError(f"support sets come from {' or '.join(POOL_SPLITS)}, never from {pool_split!r}")
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    if shots != ALL_SHOTS and shots < 1:
        raise InputError(f"shots must be at least 1, got {shots}")
    if normal is None:
        normal = np.asarray(labels).sum(axis=1) == 0
    pool = np.flatnonzero(split == pool_split)
    if pool.size == 0:
        raise InputError(f"the cache has no {pool_split} images to draw support sets from")
    if shots == ALL_SHOTS:
        return _described(labels, normal, pool.astype(np.int64), shots, seed, pool_split, [])
    rng = np.random.default_rng([seed, shots, POOL_SPLITS.index(pool_split), *_design_key(design)])
    pool_labels = labels[pool]
    classes = classes or tuple(f"class {c}" for c in range(labels.shape[1]))
    short = _short(pool_labels, shots, pool_split, strict, classes)
    if design == "per-finding":
        rows = _per_finding(rng, pool, pool_labels, normal[pool], shots, normals)
    elif design == "pos-neg":
        pool_known = np.ones(pool_labels.shape, dtype=bool) if known is None else np.asarray(known[pool], dtype=bool)
        rows = _pos_neg(rng, pool, pool_labels, pool_known, shots)
    else:
        rows = _realistic(rng, pool, pool_labels, shots)
    return _described(labels, normal, rows, shots, seed, pool_split, short)


def _described(labels: np.ndarray, normal: np.ndarray, rows: np.ndarray, shots: Shots, seed: int,
               pool_split: str, short: list[str]) -> SupportSet:
    return SupportSet(
        shots=shots,
        seed=seed,
        split=pool_split,
        rows=rows,
        positives=labels[rows].sum(axis=0).astype(np.int64),
        no_finding=int(np.count_nonzero(normal[rows])),
        short=tuple(short),
    )


def _design_key(design: str) -> tuple[int, ...]:
    """The default design draws what support sets have always drawn; the others from streams of their own."""
    return () if design == "per-finding" else (DESIGNS.index(design),)


def _short(pool_labels: np.ndarray, shots: int, pool_split: str, strict: bool, classes: tuple[str, ...]) -> list[str]:
    """Findings with fewer than ``shots`` positives in the pool (an error when ``strict``)."""
    short = []
    for c, name in enumerate(classes):
        available = int(pool_labels[:, c].sum())
        if available < shots:
            if strict:
                raise InputError(f"{name} has {available} {pool_split} image(s), fewer than {shots} shots "
                                 "(drop --strict-shots to use all there are)")
            short.append(name)
    return short


def _per_finding(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, pool_normal: np.ndarray,
                 shots: int, normals: str | int) -> np.ndarray:
    chosen = [rng.choice(pool[pool_labels[:, c] == 1], size=min(shots, int(pool_labels[:, c].sum())), replace=False)
              for c in range(pool_labels.shape[1])]
    normal_pool = pool[pool_normal]
    abnormal = np.unique(np.concatenate(chosen))
    count = normal_count(normals, shots, len(abnormal), len(normal_pool) / max(len(pool), 1))
    chosen.append(rng.choice(normal_pool, size=min(count, len(normal_pool)), replace=False))
    return np.unique(np.concatenate(chosen)).astype(np.int64)


def normal_count(normals: str | int, shots: int, abnormal: int, normal_share: float) -> int:
    """How many "No Finding" images a per-finding set holds beside ``abnormal`` others."""
    if normals == SHOTS_NORMALS:
        return shots
    if normals == NATURAL_NORMALS:  # the pool's share: k / (k + abnormal) = share
        return int(round(normal_share / max(1.0 - normal_share, 1e-12) * abnormal))
    return int(normals)


def _pos_neg(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, pool_known: np.ndarray,
             shots: int) -> np.ndarray:
    positive = pool_labels == 1
    negative = ~positive & pool_known
    need_pos = np.minimum(shots, positive.sum(axis=0))
    need_neg = np.minimum(shots, negative.sum(axis=0))
    chosen: list[np.ndarray] = []
    for c in range(pool_labels.shape[1]):  # n positives and n negatives of every finding, deduplicated
        chosen.append(rng.choice(np.flatnonzero(positive[:, c]), size=need_pos[c], replace=False))
        chosen.append(rng.choice(np.flatnonzero(negative[:, c]), size=need_neg[c], replace=False))
    keep = np.unique(np.concatenate(chosen))
    pos_count, neg_count = positive[keep].sum(axis=0), negative[keep].sum(axis=0)
    for index in rng.permutation(len(keep)):  # drop whatever is not needed to keep both counts
        row, row_negative = positive[keep[index]], negative[keep[index]]
        if np.all(pos_count - row >= need_pos) and np.all(neg_count - row_negative >= need_neg):
            pos_count, neg_count = pos_count - row, neg_count - row_negative
            keep[index] = -1
    return np.sort(pool[keep[keep >= 0]]).astype(np.int64)


def _realistic(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, shots: int) -> np.ndarray:
    budget = min(REALISTIC_BUDGET * shots, len(pool))
    first = [rng.choice(np.flatnonzero(pool_labels[:, c] == 1)) for c in range(pool_labels.shape[1])
             if pool_labels[:, c].any()]
    chosen = set(int(i) for i in first)
    rest = np.setdiff1d(np.arange(len(pool)), list(chosen))
    extra = rng.choice(rest, size=max(0, min(budget - len(chosen), len(rest))), replace=False)
    return np.sort(pool[np.concatenate([np.array(sorted(chosen), dtype=np.int64), extra])]).astype(np.int64)
