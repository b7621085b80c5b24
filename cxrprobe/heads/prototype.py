"""Nearest class mean with CL2N (SimpleShot): centre every embedding on the mean of the
unlabelled training pool, L2-normalise, then per finding score how much nearer the image is
to the positives' mean than to the negatives' mean. Without ``center``, plain L2N."""

from __future__ import annotations

import numpy as np

from cxrprobe.heads.base import Head


class PrototypeHead(Head):
    uses_center = True
    input_transform = "cl2n"

    def __init__(self, center: np.ndarray | None = None, random_state: int | None = None) -> None:
        self.center = center
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, known: np.ndarray | None = None) -> PrototypeHead:
        X, Y = self._check_fit_data(X, Y)
        known = self._check_known(known, Y)
        Z = self.head_input(X).astype(np.float64)
        negatives = 1 - Y if known is None else (1 - Y) * known  # a finding's negatives: known ones only
        n_pos = Y.sum(axis=0)
        n_neg = negatives.sum(axis=0)
        positive = (Y.T @ Z) / np.maximum(n_pos, 1)[:, None]
        negative = (negatives.T @ Z) / np.maximum(n_neg, 1)[:, None]
        # ||z - p-||^2 - ||z - p+||^2 = 2 (p+ - p-) . z - (|p+|^2 - |p-|^2): a linear score
        self.coef_ = 2.0 * (positive - negative).T
        self.intercept_ = -((positive**2).sum(axis=1) - (negative**2).sum(axis=1))
        no_contrast = (n_pos == 0) | (n_neg == 0)  # nothing to learn from: a constant score
        self.coef_[:, no_contrast] = 0.0
        self.intercept_[no_contrast] = 0.0
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        return Z @ self.coef_.astype(np.float32) + self.intercept_.astype(np.float32)
