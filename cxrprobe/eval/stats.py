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


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """Mean of a - b over seeds where both are finite, and the paired t-test's p-value."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    diff = a[both] - b[both]
    if len(diff) < 2 or np.all(diff == diff[0]):
        return (float(diff.mean()) if len(diff) else math.nan, math.nan, int(len(diff)))
    return (float(diff.mean()), float(stats.ttest_rel(a[both], b[both]).pvalue), int(len(diff)))
