"""Exact ROC AUC and average precision, per class and batched.

AUC is the probability that a random positive scores above a random negative, ties counted
half: sort the negatives once, then binary-search every positive. Average precision (AP,
the area under the precision-recall steps) comes from the same sorts: each positive adds the
precision at its own score, TP(>= s) / (TP(>= s) + FP(>= s)), tied scores forming one
threshold. Both equal sklearn's ``roc_auc_score`` and ``average_precision_score`` (ties
included) to within float rounding, at a fraction of their cost. Where a class has only
positives or only negatives in ``y``, both are undefined and returned as NaN, never as 0.5.
"""

from __future__ import annotations

import numpy as np


def auc_score(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of binary labels ``y`` [n] against ``scores`` [n]; NaN when undefined."""
    y = np.asarray(y).astype(bool).ravel()
    scores = _float_scores(scores).ravel()
    if y.shape != scores.shape:
        raise ValueError(f"y has {y.size} values, scores {scores.size}")
    return _auc(y, scores)


def per_class_auc(labels: np.ndarray, scores: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """AUC of each column: ``labels`` [n, k] (0/1), ``scores`` [n, k] -> [k], NaN where undefined."""
    return per_class_auc_ap(labels, scores, known)[0]


def per_class_auc_ap(labels: np.ndarray, scores: np.ndarray,
                     known: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(AUC, AP) of each column, [k] each, NaN where undefined; one sort serves both. With
    ``known`` [n, k], column c is scored over the rows whose label c is known only."""
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.shape != scores.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal [n, k] shapes")
    if known is not None and np.shape(known) != labels.shape:
        raise ValueError(f"known {np.shape(known)} must be shaped as labels {labels.shape}")
    # one column per contiguous row: the per-class masking and sorting read memory in order
    by_class = np.ascontiguousarray(_float_scores(scores).T)
    positive = np.ascontiguousarray(labels.T).astype(bool)
    if known is None or np.all(known):
        pairs = [_auc_ap(positive[c], by_class[c]) for c in range(len(by_class))]
    else:
        mask = np.ascontiguousarray(np.asarray(known, dtype=bool).T)
        pairs = [_auc_ap(positive[c][mask[c]], by_class[c][mask[c]]) for c in range(len(by_class))]
    pairs = np.array(pairs).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _float_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)  # float32 scores stay float32: half the sort's cost
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    return _auc_ap(y, scores)[0]


def _auc_ap(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    positives = scores[y]
    n_pos = positives.size
    n_neg = scores.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    negatives = np.sort(scores[~y])
    positives = np.sort(positives)  # sorted queries keep the binary searches in cache (benchmarks/choices.py)
    below = np.searchsorted(negatives, positives, side="left")
    not_above = np.searchsorted(negatives, positives, side="right")
    # each positive beats `below` negatives and ties with (not_above - below) of them: wins count 2, ties 1
    wins = below.sum(dtype=np.int64) + not_above.sum(dtype=np.int64)
    # at each positive's score s: TP(>= s) positives (its tie group and above) and FP(>= s) negatives
    true_above = n_pos - np.searchsorted(positives, positives, side="left")
    false_above = n_neg - below
    ap = float(np.mean(true_above / (true_above + false_above)))
    return float(wins) / (2.0 * n_pos * n_neg), ap


def per_class_ap(labels: np.ndarray, scores: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Average precision of each column, [k], NaN where undefined."""
    return per_class_auc_ap(labels, scores, known)[1]


def defined_columns(labels: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """bool [k]: the columns with an AUC, a positive and a negative among their known labels."""
    labels = np.asarray(labels).astype(bool)
    counted = np.ones(labels.shape, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    return (labels & counted).any(axis=0) & (~labels & counted).any(axis=0)


def mean_auc(aucs: np.ndarray) -> float:
    """Mean over the classes where the AUC is defined; NaN if none is."""
    aucs = np.asarray(aucs, dtype=np.float64)
    defined = aucs[~np.isnan(aucs)]
    return float(defined.mean()) if defined.size else float("nan")
