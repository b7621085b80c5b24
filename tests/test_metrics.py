"""Exact AUC and average precision against sklearn, ties and tiny classes included; Holm's
adjustment by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrprobe.metrics.auc import auc_score, mean_auc, per_class_auc, per_class_auc_ap
from cxrprobe.metrics.stats import holm, mean_ci, paired_difference


def sklearn_or_nan(y, scores):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return roc_auc_score(y, scores)
        except ValueError:
            return float("nan")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(-3, 3)), min_size=1, max_size=60),
    st.sampled_from([1.0, 0.25, 1e-9]),
)
def test_auc_equals_sklearn_with_ties_and_tiny_classes(pairs, scale):
    """Scores on a coarse grid make ties common; one-element classes come up often."""
    y = np.array([p[0] for p in pairs], dtype=int)
    scores = np.array([p[1] for p in pairs], dtype=float) * scale
    ours = auc_score(y, scores)
    if y.min() == y.max():
        assert math.isnan(ours)
        assert math.isnan(sklearn_or_nan(y, scores))  # sklearn raises (older) or warns and gives NaN
    else:
        assert abs(ours - roc_auc_score(y, scores)) <= 1e-12


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 400), st.integers(0, 2**32 - 1))
def test_auc_equals_sklearn_on_continuous_scores(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    scores = rng.normal(size=n) + y * rng.uniform(0, 2)
    assert abs(auc_score(y, scores) - roc_auc_score(y, scores)) <= 1e-12


def test_known_values():
    assert auc_score([0, 1], [0.1, 0.9]) == 1.0
    assert auc_score([0, 1], [0.9, 0.1]) == 0.0
    assert auc_score([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert math.isnan(auc_score([1, 1, 1], [0.1, 0.2, 0.3]))


def test_per_class_reports_undefined_classes_as_nan_and_the_mean_skips_them():
    labels = np.array([[0, 1, 0], [1, 1, 0], [0, 1, 1], [1, 1, 0]])
    scores = np.array([[0.1, 0.3, 0.2], [0.9, 0.2, 0.1], [0.2, 0.1, 0.8], [0.7, 0.4, 0.3]])
    aucs = per_class_auc(labels, scores)
    assert aucs[0] == 1.0 and math.isnan(aucs[1]) and aucs[2] == 1.0
    assert mean_auc(aucs) == 1.0
    assert math.isnan(mean_auc([float("nan")]))


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        auc_score([0, 1], [0.1, float("nan")])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(-3, 3)), min_size=2, max_size=50))
def test_weighted_auc_with_unit_weights_is_the_plain_auc(pairs):
    from cxrprobe.metrics.bootstrap import SortedScores, weighted_auc_batch

    y = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs], dtype=float)
    if y.min() == y.max():
        return
    got = weighted_auc_batch(SortedScores.of(y, scores), np.ones((1, len(y))))[0]
    assert abs(got - roc_auc_score(y, scores)) <= 1e-12


def test_weighted_auc_equals_the_auc_of_the_repeated_sample():
    from cxrprobe.metrics.bootstrap import SortedScores, weighted_auc_batch

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40).astype(bool)
    scores = rng.integers(0, 6, 40).astype(float)
    weights = rng.integers(0, 4, 40).astype(float)
    weights[np.flatnonzero(y)[0]] = weights[np.flatnonzero(~y)[0]] = 1  # keep both classes
    got = weighted_auc_batch(SortedScores.of(y, scores), weights[None])[0]
    repeat = np.repeat(np.arange(40), weights.astype(int))
    assert abs(got - roc_auc_score(y[repeat], scores[repeat])) <= 1e-12


def test_bootstrap_ci_brackets_the_auc_narrows_with_more_data_and_widens_with_shared_patients():
    from cxrprobe.metrics.bootstrap import patient_bootstrap_cis

    rng = np.random.default_rng(1)
    widths = []
    for n in (200, 5000):
        y = rng.integers(0, 2, (n, 1))
        scores = rng.normal(size=(n, 1)) + y
        (ci,), _ = patient_bootstrap_cis(y, scores, np.arange(n), n_resamples=400, seed=0)
        assert ci[0] < auc_score(y[:, 0], scores[:, 0]) < ci[1]
        widths.append(ci[1] - ci[0])
    assert widths[1] < widths[0] / 3
    # the same 5000 images as 500 patients of 10 correlated images each: a wider interval
    patient = np.repeat(np.arange(500), 10)
    y = np.repeat(rng.integers(0, 2, 500), 10)[:, None]
    scores = (np.repeat(rng.normal(size=500), 10) + rng.normal(size=5000) * 0.3)[:, None] + y
    (shared,), _ = patient_bootstrap_cis(y, scores, patient, n_resamples=400, seed=0)
    (naive,), _ = patient_bootstrap_cis(y, scores, np.arange(5000), n_resamples=400, seed=0)
    assert shared[1] - shared[0] > 2 * (naive[1] - naive[0])
    (undefined,), _ = patient_bootstrap_cis(np.ones((5, 1)), np.arange(5.0)[:, None], np.arange(5))
    assert all(math.isnan(v) for v in undefined)  # one class: undefined


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(-3, 3)), min_size=2, max_size=60),
    st.sampled_from([1.0, 0.25, 1e-9]),
)
def test_average_precision_equals_sklearn_with_ties(pairs, scale):
    """Tied scores are one threshold, as in sklearn's precision-recall steps."""
    y = np.array([p[0] for p in pairs], dtype=int)
    scores = np.array([p[1] for p in pairs], dtype=float) * scale
    aucs, aps = per_class_auc_ap(y[:, None], scores[:, None])
    if y.min() == y.max():
        assert math.isnan(aps[0]) and math.isnan(aucs[0])
    else:
        assert abs(aps[0] - average_precision_score(y, scores)) <= 1e-12
        assert abs(aucs[0] - roc_auc_score(y, scores)) <= 1e-12


def test_holm_by_hand_and_paired_differences_with_their_ci():
    adjusted = holm(np.array([0.01, 0.04, np.nan, 0.03, 0.5]))
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 0.04, 0.09, 0.08 -> 0.09 (non-decreasing), 0.5
    assert np.allclose(adjusted[[0, 3, 1, 4]], [0.04, 0.09, 0.09, 0.5]) and math.isnan(adjusted[2])
    assert np.array_equal(holm(np.array([0.3, 0.9])), [0.6, 0.9])
    a, b = np.array([0.7, 0.72, 0.69, 0.75]), np.array([0.68, 0.7, 0.7, 0.71])
    diff, low, high, p, n = paired_difference(a, b)
    mean, _, ci_low, ci_high, _ = mean_ci(a - b)
    assert (diff, low, high, n) == (mean, ci_low, ci_high, 4) and low < diff < high and 0 < p < 1


def test_patient_bootstrap_equals_a_direct_loop_over_resampled_patients():
    """Draw patients with replacement (the same random numbers), take all their images, call
    sklearn, take percentiles: the weighted, sort-once implementation gives the same CIs."""
    from cxrprobe.metrics.bootstrap import patient_bootstrap_cis

    rng = np.random.default_rng(5)
    patients = np.repeat(np.arange(40), rng.integers(1, 4, 40))
    n = len(patients)
    labels = np.zeros((n, 2), dtype=int)
    labels[:, 0] = rng.random(n) < 0.3
    labels[:, 1] = np.isin(patients, [3, 7, 11, 20])  # a rare finding, whole patients
    scores = np.round(rng.normal(size=(n, 2)) + labels, 1)  # ties
    B = 60
    cis, mean_ci = patient_bootstrap_cis(labels, scores, patients, n_resamples=B, seed=9)

    draw = np.random.default_rng(9)

    def resampled(in_first):  # patient ids of each resample, in the implementation's draw order
        chosen = [[] for _ in range(B)]
        for stratum in (np.flatnonzero(in_first), np.flatnonzero(~in_first)):
            picks = draw.integers(0, len(stratum), size=(B, len(stratum)))
            for b in range(B):
                chosen[b].extend(stratum[picks[b]])
        return chosen

    def aucs(chosen, c):
        out = []
        for ids in chosen:
            rows = np.concatenate([np.flatnonzero(patients == i) for i in ids])
            out.append(sklearn_or_nan(labels[rows, c], scores[rows, c]))
        return np.array(out)

    for c in range(2):
        positive_patient = np.array([labels[patients == i, c].any() for i in range(40)])
        values = aucs(resampled(positive_patient), c)
        assert np.allclose(cis[c], np.nanquantile(values, [0.025, 0.975]), atol=1e-12)
    any_positive = np.array([labels[patients == i].any() for i in range(40)])
    chosen = resampled(any_positive)
    means = np.nanmean([aucs(chosen, c) for c in range(2)], axis=0)
    assert np.allclose(mean_ci, np.nanquantile(means, [0.025, 0.975]), atol=1e-12)


def test_grid_test_resamples_and_the_combined_ci_equal_direct_loops():
    from cxrprobe.metrics.bootstrap import replicate_mean_aucs, seed_and_test_ci

    rng = np.random.default_rng(3)
    labels = (rng.random((50, 3)) < 0.3).astype(int)
    scores = np.round(rng.normal(size=(50, 3)) + labels, 1)
    weights = rng.integers(0, 3, size=(7, 50)).astype(float)
    got = replicate_mean_aucs(labels, scores, weights)
    for b in range(7):
        rows = np.repeat(np.arange(50), weights[b].astype(int))
        expected = np.nanmean([sklearn_or_nan(labels[rows, c], scores[rows, c]) for c in range(3)])
        assert abs(got[b] - expected) <= 1e-12
    values = rng.random((5, 40))
    low, high = seed_and_test_ci(values, seed=1)
    draw = np.random.default_rng(1).integers(0, 5, size=(40, 5))
    means = [values[draw[b], b].mean() for b in range(40)]
    assert np.allclose((low, high), np.quantile(means, [0.025, 0.975]), rtol=0, atol=1e-15)
