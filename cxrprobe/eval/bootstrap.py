"""Bootstrap CIs of AUC, over test images or over test patients, exact and fast.

Stratified resampling (positives and negatives each drawn with replacement from their own
group, as pROC's ``boot.stratified``) keeps every resample's AUC defined. A resample is a
vector of multiplicities, and the AUC of a weighted sample needs only one sort of the
scores: per tie group, the weight of negatives below it and within it. So B resamples cost
one sort plus B passes of O(n), instead of B sorts.

Images of one patient are not independent (NIH's 25,596 test images come from 2,797
patients; Hernia's 86 from 32), so resampling images makes CIs too narrow. The patient
bootstrap draws patients with replacement, each bringing all their images: per finding,
stratified by whether the patient has a positive image for it; for the mean over findings,
one draw of patients for every finding at once (stratified by whether the patient has any
positive image), so that the mean has a CI of its own.
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


def _multiplicities(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """[b, n] counts of each of n items in b resamples of size n with replacement."""
    draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def patient_bootstrap_cis(
    labels: np.ndarray, scores: np.ndarray, patients: np.ndarray, n_resamples: int = 1000, level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Percentile CIs of each finding's AUC [k, 2] (NaN where undefined) and of their mean,
    resampling patients; see the module's docstring for the strata."""
    labels = np.asarray(labels).astype(bool)
    _, patient = np.unique(np.asarray(patients), return_inverse=True)
    n_patients = int(patient.max()) + 1
    rng = np.random.default_rng(seed)
    tail = (1.0 - level) / 2.0
    per_finding = np.full((labels.shape[1], 2), np.nan)
    prepared = [_sorted_groups(scores[:, c]) for c in range(labels.shape[1])]
    for c in range(labels.shape[1]):
        if labels[:, c].all() or not labels[:, c].any():
            continue
        positive_patient = np.bincount(patient, weights=labels[:, c], minlength=n_patients) > 0
        values = _weighted_aucs(prepared[c], labels[:, c], patient, _stratified_patients(
            rng, positive_patient, n_resamples))
        per_finding[c] = np.nanquantile(values, [tail, 1.0 - tail])
    any_positive = np.bincount(patient, weights=labels.any(axis=1), minlength=n_patients) > 0
    counts = _stratified_patients(rng, any_positive, n_resamples)
    defined = [c for c in range(labels.shape[1]) if labels[:, c].any() and not labels[:, c].all()]
    if not defined:
        return per_finding, (float("nan"), float("nan"))
    means = np.nanmean([_weighted_aucs(prepared[c], labels[:, c], patient, counts) for c in defined], axis=0)
    return per_finding, (float(np.nanquantile(means, tail)), float(np.nanquantile(means, 1.0 - tail)))


def _sorted_groups(scores: np.ndarray) -> tuple[np.ndarray, int]:
    _, groups = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    return groups, int(groups.max()) + 1


def _stratified_patients(rng: np.random.Generator, in_first: np.ndarray, n_resamples: int) -> np.ndarray:
    """[B, patients] multiplicities: each stratum resampled with replacement to its own size."""
    counts = np.zeros((n_resamples, len(in_first)))
    for stratum in (np.flatnonzero(in_first), np.flatnonzero(~in_first)):
        if len(stratum):
            counts[:, stratum] = _multiplicities(rng, len(stratum), n_resamples)
    return counts


def _weighted_aucs(prepared: tuple[np.ndarray, int], y: np.ndarray, patient: np.ndarray, counts: np.ndarray,
                   chunk: int = 100) -> np.ndarray:
    """The AUC of each resample, every image weighted by its patient's multiplicity; NaN where a
    resample holds one class only."""
    groups, n_groups = prepared
    out = []
    for start in range(0, len(counts), chunk):
        weights = counts[start:start + chunk][:, patient]
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(weighted_auc_batch(groups, y, weights, n_groups))
    return np.concatenate(out)
