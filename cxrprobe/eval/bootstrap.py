"""Bootstrap CIs of AUC over test images, exact and fast.

Stratified resampling (positives and negatives each drawn with replacement from their own
group, as pROC's ``boot.stratified``) keeps every resample's AUC defined. A resample is a
vector of multiplicities, and the AUC of a weighted sample needs only one sort of the
scores: per tie group, the weight of negatives below it and within it. So B resamples cost
one sort plus B passes of O(n), instead of B sorts.
"""

from __future__ import annotations

import numpy as np


def weighted_auc_batch(groups: np.ndarray, is_pos: np.ndarray, weights: np.ndarray, n_groups: int) -> np.ndarray:
    """AUC for each row of ``weights`` [B, n] (multiplicities), ties counted half.

    ``groups`` [n] numbers the distinct scores in increasing order (np.unique's inverse).
    """
    B = weights.shape[0]
    neg_weights = np.where(is_pos, 0.0, weights)
    offsets = (np.arange(B)[:, None] * n_groups + groups[None, :]).ravel()
    per_group = np.bincount(offsets, weights=neg_weights.ravel(), minlength=B * n_groups).reshape(B, n_groups)
    below = np.cumsum(per_group, axis=1) - per_group  # negatives strictly below each group
    credit = below + 0.5 * per_group
    pos_credit = np.take_along_axis(credit, np.broadcast_to(groups, weights.shape), axis=1)
    wins = (pos_credit * np.where(is_pos, weights, 0.0)).sum(axis=1)
    return wins / (weights[:, is_pos].sum(axis=1) * weights[:, ~is_pos].sum(axis=1))


def bootstrap_auc_ci(
    y: np.ndarray, scores: np.ndarray, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
    chunk: int = 100,
) -> tuple[float, float]:
    """Percentile CI of the AUC under stratified resampling of test images; NaNs if undefined."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return (float("nan"), float("nan"))
    _, groups = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    n_groups = int(groups.max()) + 1
    rng = np.random.default_rng(seed)
    aucs = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        weights = np.zeros((b, len(y)))
        weights[:, y] = _multiplicities(rng, n_pos, b)
        weights[:, ~y] = _multiplicities(rng, n_neg, b)
        aucs.append(weighted_auc_batch(groups, y, weights, n_groups))
    values = np.concatenate(aucs)
    tail = (1.0 - level) / 2.0
    return (float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail)))


def _multiplicities(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """[b, n] counts of each of n items in b resamples of size n with replacement."""
    draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
