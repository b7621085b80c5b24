"""Statistics over seeds: mean with a t-based 95% CI, and paired comparisons of heads.

The CI covers the randomness of the support-set draw (the seeds), not of the test set.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float, int]:
    """(mean, sd, low, high, n) over the finite values; sd and CI are NaN below two values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2:
        return (mean, math.nan, math.nan, math.nan, n)
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, sd, mean - half, mean + half, n)


def paired_difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float, int]:
    """(mean of a - b, t-based CI low, high, the paired t-test's p-value, n) over the seeds where
    both are finite; CI and p are NaN below two seeds or when every difference is the same."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    diff = a[both] - b[both]
    if len(diff) < 2 or np.all(diff == diff[0]):
        mean = float(diff.mean()) if len(diff) else math.nan
        return (mean, math.nan, math.nan, math.nan, int(len(diff)))
    mean, _, low, high, n = mean_ci(diff, level)
    return (mean, low, high, float(stats.ttest_rel(a[both], b[both]).pvalue), n)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaNs are left out of the family and
    stay NaN): the k-th smallest of m is multiplied by m - k + 1, then made non-decreasing."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
