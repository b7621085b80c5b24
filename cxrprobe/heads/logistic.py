"""Fourteen binary L2 logistic regressions solved as one problem.

The objective is scikit-learn's ``LogisticRegression(penalty="l2", C=C)`` for each finding,
intercept unpenalised, ``class_weight="balanced"`` optional:
``C * sum_i s_i log(1 + exp(-y_i (w . x_i + b))) + |w|^2 / 2`` with y in {-1, +1}.
The findings share the support rows, so their losses and gradients are two matrix products
for all 14 at once, and one L-BFGS run over the stacked parameters replaces 14 sklearn fits
(the problems are independent: the sum's minimiser is each one's minimiser). A warm start
(the solution at a nearby C) makes a C search cheap, and ``row_space`` shrinks the problem
from d to at most n coordinates, exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
from scipy.special import expit


def row_space(Z: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(Q, Z Q): an orthonormal basis Q [d, n] of the span of Z's n rows, and the rows in it.

    The L2-penalised optimum lies in that span (a part of w outside it changes no margin and
    only adds penalty), so a problem solved on Z Q, its coefficients mapped back by Q, has the
    same solution with n coordinates instead of d: a support set has far fewer rows than
    dimensions. With n >= d there is nothing to gain: (None, Z).
    """
    n, d = Z.shape
    if n >= d:
        return None, Z
    basis, triangle = np.linalg.qr(Z.T)  # Z^T = Q R, so Z Q = R^T
    return basis, np.ascontiguousarray(triangle.T)


def balanced_weights(Y: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """sklearn's class_weight='balanced' per finding: n / (2 n_class) for each row's class, n
    counting the rows whose label is ``known``."""
    n = len(Y) if known is None else known.sum(axis=0)
    positives = Y.sum(axis=0)
    negatives = n - positives
    with np.errstate(divide="ignore"):
        w_pos = np.where(positives > 0, n / (2.0 * positives), 0.0)
        w_neg = np.where(negatives > 0, n / (2.0 * negatives), 0.0)
    return np.where(Y == 1, w_pos, w_neg)


def fit_logistic(
    Z: np.ndarray, Y: np.ndarray, C: float, balanced: bool = True, start: np.ndarray | None = None,
    max_iter: int = 1000, tol: float = 1e-4, known: np.ndarray | None = None,
) -> np.ndarray:
    """Coefficients [d + 1, k] (the last row: intercepts) of the k binary problems in Y [n, k],
    each over the rows whose label is ``known`` (default: all).

    A finding with one class only in Y gets zeros (nothing to separate: constant scores).
    """
    Z = np.asarray(Z, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n, d = Z.shape
    k = Y.shape[1]
    if known is None:
        both = (Y.min(axis=0) != Y.max(axis=0))
        weights = (balanced_weights(Y) if balanced else np.ones_like(Y)) * both * C
    else:  # an unknown label weighs nothing; balancing counts the known ones
        positives, counted = Y.sum(axis=0), known.sum(axis=0)
        both = (positives > 0) & (positives < counted)
        weights = (balanced_weights(Y, known) if balanced else known.astype(np.float64)) * known * both * C
    signs = 2.0 * Y - 1.0
    design = np.hstack([Z, np.ones((n, 1))])
    penalised = np.ones((d + 1, 1))
    penalised[d] = 0.0  # the intercept is not penalised, as in sklearn

    scale = 1.0 / (C * n)  # as sklearn scales it: the tolerance then means the same at every C

    def loss_and_gradient(flat: np.ndarray) -> tuple[float, np.ndarray]:
        W = flat.reshape(d + 1, k)
        margins = signs * (design @ W)
        loss = (weights * np.logaddexp(0.0, -margins)).sum() + 0.5 * ((W * penalised) ** 2).sum()
        slope = -weights * signs * expit(-margins)  # d loss / d (w . x + b)
        return float(loss * scale), (design.T @ slope + W * penalised).ravel() * scale

    x0 = np.zeros((d + 1) * k) if start is None else np.asarray(start, dtype=np.float64).ravel()
    result = scipy.optimize.minimize(
        loss_and_gradient, x0, jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    return result.x.reshape(d + 1, k) * both
