"""Gaussian discriminant analysis (Wang et al., ICLR'24, "a hard-to-beat training-free
baseline"), made multi-label: per finding a binary LDA on L2-normalised embeddings, positives'
and negatives' means with one shared, shrunk precision Sigma^-1 = d pinv((N-1) S + tr(S) I)
(S: covariance of the class-centred support), blended with zero-shot as the official code
blends its logits: z_c = tau zeroshot_c + alpha (w_c . x + b_c), tau the model's logit scale.
Without text, the LDA score alone.

The LDA term scales like d / tr(S), so any fixed alpha means something else on another
backbone. Validation-free default ``alpha="auto"``: per finding, alpha_c = std(tau zeroshot_c) /
std(LDA_c) over the support images, the two terms given equal spread (cxrprobe's rule). With
``search``, one alpha for all findings from the official grid {1e-4, ..., 100} by mean AUC on
the few-shot validation set (mrflogs/ICLR24 ``main_few_shots.py``: the first best).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from cxrprobe.heads.adapter_fit import ValidationSearch, first_best, validation_auc
from cxrprobe.heads.base import Head, TextPrompts
from cxrprobe.heads.zeroshot import ZeroShotHead

ALPHA_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def apply_shrunk_precision(centred: np.ndarray, V: np.ndarray) -> np.ndarray:
    """d pinv((N-1) S + tr(S) I) @ V without forming a d x d inverse.

    (N-1) S = C^T C for the centred rows C, so the matrix is C^T C + t I with t = tr(S) > 0:
    positive definite, pinv = inv. With fewer rows than dimensions (every few-shot support
    set) the Woodbury identity turns the d x d solve into an N x N one:
    (C^T C + t I)^-1 V = (V - C^T (t I + C C^T)^-1 C V) / t.
    """
    n, d = centred.shape
    if n >= d:
        return apply_scatter_precision(centred.T @ centred, n, V)
    t = float(np.einsum("ij,ij->", centred, centred)) / max(n - 1, 1)
    if t == 0.0:  # every row equals its class mean: pinv of the zero matrix is zero
        return np.zeros_like(V)
    inner = scipy.linalg.solve(t * np.eye(n) + centred @ centred.T, centred @ V, assume_a="pos")
    return d * (V - centred.T @ inner) / t


def apply_scatter_precision(scatter: np.ndarray, n: int, V: np.ndarray) -> np.ndarray:
    """``apply_shrunk_precision`` from the scatter C^T C = (N-1) S of N rows."""
    d = len(scatter)
    t = float(np.trace(scatter)) / max(n - 1, 1)
    if t <= 0.0:
        return np.zeros_like(V)
    return d * scipy.linalg.solve(scatter + t * np.eye(d), V, assume_a="pos")


class GdaHead(ValidationSearch, Head):
    uses_text = True
    input_transform = "l2"

    def __init__(self, text: TextPrompts | None = None, alpha: float | str = "auto", negative: str = "pair",
                 search: bool = False, random_state: int | None = None) -> None:
        self.text = text
        self.alpha = alpha
        self.negative = negative
        self.search = search
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, X_val: np.ndarray | None = None,
            Y_val: np.ndarray | None = None, known: np.ndarray | None = None) -> GdaHead:
        X, Y = self._check_fit_data(X, Y)
        known = self._check_known(known, Y)
        validation = self._validation_inputs(X_val, Y_val) if self.search else None
        Z = self.head_input(X).astype(np.float64)
        self.zero_shot_ = ZeroShotHead(text=self.text, negative=self.negative).fit(X, Y) if self.text else None
        d, k = Z.shape[1], Y.shape[1]
        self.coef_ = np.zeros((d, k))
        self.intercept_ = np.zeros(k)
        # past d rows (the full-data fit) every finding's scatter follows from one Z^T Z:
        # C^T C = Z^T Z - n+ mu+ mu+^T - n- mu- mu-^T
        second_moment = Z.T @ Z if len(Z) >= d and known is None else None
        for c in range(k):
            positive, negative = Y[:, c] == 1, Y[:, c] == 0
            if known is not None:  # the finding's LDA over the rows whose label it knows
                negative &= known[:, c]
            if not positive.any() or not negative.any():
                continue
            mu_pos, mu_neg = Z[positive].mean(axis=0), Z[negative].mean(axis=0)
            means = np.stack([mu_pos, mu_neg], axis=1)
            if second_moment is None:
                counted = positive | negative
                centred = np.where(positive[counted, None], Z[counted] - mu_pos, Z[counted] - mu_neg)
                p_pos, p_neg = apply_shrunk_precision(centred, means).T
            else:
                scatter = second_moment - positive.sum() * np.outer(mu_pos, mu_pos) - negative.sum() * np.outer(mu_neg, mu_neg)
                p_pos, p_neg = apply_scatter_precision(scatter, len(Z), means).T
            self.coef_[:, c] = p_pos - p_neg
            self.intercept_[c] = -0.5 * (mu_pos @ p_pos - mu_neg @ p_neg)
        self.alpha_ = self._alpha(Z.astype(np.float32), validation)
        return self

    def _alpha(self, Z: np.ndarray, validation: tuple | None) -> np.ndarray:
        """alpha per finding: searched, the equal-spread rule, or as given."""
        k = self.coef_.shape[1]
        if self.zero_shot_ is None:
            return np.ones(k)
        if validation is not None:
            Z_val, Y_val = validation
            text, lda = self._terms(Z_val)
            best = first_best([validation_auc(Y_val, text + np.float32(a) * lda) for a in ALPHA_GRID])
            return np.full(k, ALPHA_GRID[best])
        if self.alpha == "auto":
            text, lda = self._terms(Z)
            spread = lda.std(axis=0)
            return np.where(spread > 0, text.std(axis=0) / np.where(spread > 0, spread, 1), 0.0)
        return np.full(k, float(self.alpha))

    def _terms(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tau zeroshot, the LDA score), [n, 14] each."""
        lda = Z @ self.coef_.astype(np.float32) + self.intercept_.astype(np.float32)
        return np.float32(self.text.logit_scale) * self.zero_shot_.decision_from(Z), lda

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        if self.zero_shot_ is None:
            return Z @ self.coef_.astype(np.float32) + self.intercept_.astype(np.float32)
        text, lda = self._terms(Z)
        return text + self.alpha_.astype(np.float32) * lda
