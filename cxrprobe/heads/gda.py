"""Gaussian discriminant analysis (Wang et al., ICLR'24, "a hard-to-beat training-free
baseline"), made multi-label: per finding a binary LDA on L2-normalised embeddings, positives'
and negatives' means with one shared, shrunk precision Sigma^-1 = d pinv((N-1) S + tr(S) I)
(S: covariance of the class-centred support), blended with zero-shot as
z_c = 100 zeroshot_c + alpha (w_c . x + b_c). Validation-free default alpha = 1. Without text,
the LDA score alone.
"""

from __future__ import annotations

import numpy as np

from cxrprobe.heads.base import Head, TextPrompts, check_xy
from cxrprobe.heads.zeroshot import ZeroShotHead

ZERO_SHOT_SCALE = 100.0  # CLIP's logit scale, as the method blends its logits


def shrunk_precision(centred: np.ndarray) -> np.ndarray:
    n, d = centred.shape
    covariance = centred.T @ centred / max(n - 1, 1)
    return d * np.linalg.pinv((n - 1) * covariance + np.trace(covariance) * np.eye(d))


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
            precision = shrunk_precision(centred)
            self.coef_[:, c] = precision @ (mu_pos - mu_neg)
            self.intercept_[c] = -0.5 * (mu_pos @ precision @ mu_pos - mu_neg @ precision @ mu_neg)
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        lda = Z @ self.coef_.astype(np.float32) + self.intercept_.astype(np.float32)
        if self.zero_shot_ is None:
            return lda
        return np.float32(ZERO_SHOT_SCALE) * self.zero_shot_.decision_from(Z) + np.float32(self.alpha) * lda
