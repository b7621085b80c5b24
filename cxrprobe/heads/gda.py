"""Gaussian discriminant analysis (Wang et al., ICLR'24, "a hard-to-beat training-free
baseline"), made multi-label: per finding a binary LDA on L2-normalised embeddings, positives'
and negatives' means with one shared, shrunk precision Sigma^-1 = d pinv((N-1) S + tr(S) I)
(S: covariance of the class-centred support), blended with zero-shot as
z_c = 100 zeroshot_c + alpha (w_c . x + b_c). Validation-free default alpha = 1. Without text,
the LDA score alone.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from cxrprobe.heads.base import Head, TextPrompts, check_xy
from cxrprobe.heads.zeroshot import ZeroShotHead

ZERO_SHOT_SCALE = 100.0  # CLIP's logit scale, as the method blends its logits


def apply_shrunk_precision(centred: np.ndarray, V: np.ndarray) -> np.ndarray:
    """d pinv((N-1) S + tr(S) I) @ V without forming a d x d inverse.

    (N-1) S = C^T C for the centred rows C, so the matrix is C^T C + t I with t = tr(S) > 0:
    positive definite, pinv = inv. With fewer rows than dimensions (every few-shot support
    set) the Woodbury identity turns the d x d solve into an N x N one:
    (C^T C + t I)^-1 V = (V - C^T (t I + C C^T)^-1 C V) / t.
    """
    n, d = centred.shape
    t = float(np.einsum("ij,ij->", centred, centred)) / max(n - 1, 1)
    if t == 0.0:  # every row equals its class mean: pinv of the zero matrix is zero
        return np.zeros_like(V)
    if n < d:
        inner = scipy.linalg.solve(t * np.eye(n) + centred @ centred.T, centred @ V, assume_a="pos")
        return d * (V - centred.T @ inner) / t
    return d * scipy.linalg.solve(centred.T @ centred + t * np.eye(d), V, assume_a="pos")


class GdaHead(Head):
    uses_text = True
    input_transform = "l2"

    def __init__(self, text: TextPrompts | None = None, alpha: float = 1.0, negative: str = "pair",
                 random_state: int | None = None) -> None:
        self.text = text
        self.alpha = alpha
        self.negative = negative
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray) -> GdaHead:
        X, Y = check_xy(X, Y)
        Z = self.transform(X).astype(np.float64)
        self.zero_shot_ = ZeroShotHead(text=self.text, negative=self.negative).fit(X, Y) if self.text else None
        d, k = Z.shape[1], Y.shape[1]
        self.coef_ = np.zeros((d, k))
        self.intercept_ = np.zeros(k)
        for c in range(k):
            positive, negative = Y[:, c] == 1, Y[:, c] == 0
            if not positive.any() or not negative.any():
                continue
            mu_pos, mu_neg = Z[positive].mean(axis=0), Z[negative].mean(axis=0)
            centred = np.where(positive[:, None], Z - mu_pos, Z - mu_neg)
            p_pos, p_neg = apply_shrunk_precision(centred, np.stack([mu_pos, mu_neg], axis=1)).T
            self.coef_[:, c] = p_pos - p_neg
            self.intercept_[c] = -0.5 * (mu_pos @ p_pos - mu_neg @ p_neg)
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        lda = Z @ self.coef_.astype(np.float32) + self.intercept_.astype(np.float32)
        if self.zero_shot_ is None:
            return lda
        return np.float32(ZERO_SHOT_SCALE) * self.zero_shot_.decision_from(Z) + np.float32(self.alpha) * lda
