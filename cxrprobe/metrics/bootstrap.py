"""Bootstrap CIs of AUC, over test images or over test patients, exact and fast.

Stratified resampling (positives and negatives each drawn with replacement from their own
group, as pROC's ``boot.stratified``) keeps every resample's AUC defined. A resample is a
vector of multiplicities, and the AUC of a weighted sample needs only one sort of the
scores: each positive's weight times the weight of the negatives below it (half of its
ties). So B resamples cost one sort plus B cumulative sums, instead of B sorts.

Images of one patient are not independent (NIH's 25,596 test images come from 2,797
patients; Hernia's 86 from 32), so resampling images makes CIs too narrow. The patient
bootstrap draws patients with replacement, each bringing all their images: per finding,
stratified by whether the patient has a positive image for it; for the mean over findings,
one draw of patients for every finding at once (stratified by whether the patient has any
positive image), so that the mean has a CI of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrprobe.metrics.auc import defined_columns


@dataclass(frozen=True)
class SortedScores:
    """One finding's scores prepared once for any number of weightings: its negatives in
    increasing order, and where each positive falls among them (below it, and not above it)."""

    negatives: np.ndarray  # indices of the negatives, by increasing score
    positives: np.ndarray  # indices of the positives
    below: np.ndarray  # [positives] negatives scoring strictly lower
    not_above: np.ndarray  # [positives] negatives scoring lower or equal

    @classmethod
    def of(cls, y: np.ndarray, scores: np.ndarray, known: np.ndarray | None = None) -> SortedScores:
        """``known`` [n]: only the rows whose label is known count (the indices stay the rows')."""
        y = np.asarray(y).astype(bool)
        scores = np.asarray(scores, dtype=np.float64)
        counted = np.ones(len(y), dtype=bool) if known is None else np.asarray(known, dtype=bool)
        negatives = np.flatnonzero(~y & counted)
        negatives = negatives[np.argsort(scores[negatives], kind="stable")]
        positives = np.flatnonzero(y & counted)
        ordered = scores[negatives]
        return cls(negatives, positives, np.searchsorted(ordered, scores[positives], side="left"),
                   np.searchsorted(ordered, scores[positives], side="right"))


def weighted_auc_batch(prepared: SortedScores, weights: np.ndarray) -> np.ndarray:
    """AUC for each row of ``weights`` [B, n] (multiplicities), ties counted half: each
    positive's weight times the negative weight below it, plus half of its ties, from one
    cumulative sum of the sorted negatives' weights per row. NaN where a row weighs one class
    only."""
    negative = weights[:, prepared.negatives]
    cumulative = np.zeros((len(weights), negative.shape[1] + 1))
    np.cumsum(negative, axis=1, out=cumulative[:, 1:])
    positive = weights[:, prepared.positives]
    wins = (positive * (cumulative[:, prepared.below] + cumulative[:, prepared.not_above])).sum(axis=1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (positive.sum(axis=1) * cumulative[:, -1])


def _multiplicities(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """[b, n] counts of each of n items in b resamples of size n with replacement."""
    draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def patient_bootstrap_cis(
    labels: np.ndarray, scores: np.ndarray, patients: np.ndarray, n_resamples: int = 1000, level: float = 0.95,
    seed: int = 0, known: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Percentile CIs of each finding's AUC [k, 2] (NaN where undefined) and of their mean,
    resampling patients; see the module's docstring for the strata. With ``known`` [n, k],
    each finding is scored over the rows whose label is known."""
    labels = np.asarray(labels).astype(bool)
    known = np.ones(labels.shape, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    labels = labels & known  # an unknown label is never a positive
    _, patient = np.unique(np.asarray(patients), return_inverse=True)
    n_patients = int(patient.max()) + 1
    rng = np.random.default_rng(seed)
    tail = (1.0 - level) / 2.0
    per_finding = np.full((labels.shape[1], 2), np.nan)
    prepared = [SortedScores.of(labels[:, c], scores[:, c], known[:, c]) for c in range(labels.shape[1])]
    defined = np.flatnonzero(defined_columns(labels, known))
    for c in defined:
        positive_patient = np.bincount(patient, weights=labels[:, c], minlength=n_patients) > 0
        counts = _stratified_patients(rng, positive_patient, n_resamples)
        values = _weighted_aucs(prepared[c], _image_weights(counts, patient))
        per_finding[c] = np.nanquantile(values, [tail, 1.0 - tail])
    counts = joint_patient_resamples(labels, patients, n_resamples, rng)
    if not len(defined):
        return per_finding, (float("nan"), float("nan"))
    means = np.nanmean([_weighted_aucs(prepared[c], _image_weights(counts, patient)) for c in defined], axis=0)
    return per_finding, (float(np.nanquantile(means, tail)), float(np.nanquantile(means, 1.0 - tail)))


def joint_patient_resamples(labels: np.ndarray, patients: np.ndarray, n_resamples: int,
                            rng: np.random.Generator) -> np.ndarray:
    """[B, patients] multiplicities of one draw of patients for every finding at once,
    stratified by whether a patient has any positive image (patients in np.unique order)."""
    _, patient = np.unique(np.asarray(patients), return_inverse=True)
    n_patients = int(patient.max()) + 1
    any_positive = np.bincount(patient, weights=np.asarray(labels).astype(bool).any(axis=1), minlength=n_patients) > 0
    return _stratified_patients(rng, any_positive, n_resamples)


def replicate_mean_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray,
                        known: np.ndarray | None = None) -> np.ndarray:
    """The mean over findings of the AUC under each row of image ``weights`` [B, n]: what a
    grid run's figure would have been on each resampled test set (each finding over the rows
    whose label is ``known``, when given)."""
    labels = np.asarray(labels).astype(bool)
    known = np.ones(labels.shape, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    defined = np.flatnonzero(defined_columns(labels, known))
    chunks = [np.asarray(weights[i:i + 50], dtype=np.float64) for i in range(0, len(weights), 50)]
    return np.nanmean([_weighted_aucs(SortedScores.of(labels[:, c], scores[:, c], known[:, c]), chunks)
                       for c in defined], axis=0)


def seed_and_test_ci(values: np.ndarray, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A CI of the mean over seeds that also covers test sampling: ``values`` [seeds, B] holds
    each seed's figure on each resampled test set; each replicate resamples the seeds and takes
    one test resample, and the percentiles of the replicates' means are the interval."""
    values = np.asarray(values, dtype=np.float64)
    n_seeds, n_tests = values.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_tests, n_seeds))
    means = np.nanmean(values[seeds, np.arange(n_tests)[:, None]], axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.nanquantile(means, tail)), float(np.nanquantile(means, 1.0 - tail))


def _stratified_patients(rng: np.random.Generator, in_first: np.ndarray, n_resamples: int) -> np.ndarray:
    """[B, patients] multiplicities: each stratum resampled with replacement to its own size."""
    counts = np.zeros((n_resamples, len(in_first)))
    for stratum in (np.flatnonzero(in_first), np.flatnonzero(~in_first)):
        if len(stratum):
            counts[:, stratum] = _multiplicities(rng, len(stratum), n_resamples)
    return counts


def _image_weights(counts: np.ndarray, patient: np.ndarray, chunk: int = 100):  # noqa: ANN202 - a generator
    """Each image weighted by its patient's multiplicity, ``chunk`` resamples at a time."""
    for start in range(0, len(counts), chunk):
        yield counts[start:start + chunk][:, patient]


def _weighted_aucs(prepared: SortedScores, weight_chunks) -> np.ndarray:  # noqa: ANN001 - iterable of arrays
    """The AUC of each resample, given as chunks of image weights."""
    return np.concatenate([weighted_auc_batch(prepared, weights) for weights in weight_chunks])
