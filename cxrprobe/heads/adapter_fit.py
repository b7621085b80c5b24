"""What the trained CLIP adapters (tip-adapter-f, lp++, zs-lp, clap) share.

- One loss convention: the sum over findings of each finding's mean BCE over the support
  set. The findings' parameters are disjoint, so every finding trains exactly as a binary
  problem would alone, and LP++'s Lipschitz step 4N / lambda_max(X^T X) holds per finding.
- Full-batch training, so nothing is random: ``random_state`` is kept for the contract only.
- The optional search on a few-shot validation set, the way ``LogRegHead(search=True)``
  does it: ``fit(X, Y, X_val=X_val, Y_val=Y_val)``, the runner passing the validation set when
  ``uses_validation`` is true, mean AUC as the criterion, the first best candidate on ties.
"""

from __future__ import annotations

import numpy as np

from cxrprobe.metrics.auc import mean_auc, per_class_auc


def sigmoid(z: np.ndarray) -> np.ndarray:
    """(1 + tanh(z / 2)) / 2, the logistic exactly, in place; on the adapters' float32 logits
    no slower than scipy's expit (benchmarks/choices.py), and what their results were made with."""
    out = np.tanh(z * 0.5)
    out *= 0.5
    out += 0.5
    return out


def bce_residual(logits: np.ndarray, targets: np.ndarray, n_images: int) -> np.ndarray:
    """d/d logits of sum_c mean_i BCE(logits_ic, targets_ic): (sigmoid - targets) / N."""
    out = sigmoid(logits)
    out -= targets
    out *= 1.0 / n_images
    return out


def cosine_rates(lr: float, steps: int) -> np.ndarray:
    """torch's CosineAnnealingLR (eta_min 0) stepped once per full-batch step."""
    return lr * 0.5 * (1.0 + np.cos(np.pi * np.arange(steps) / max(steps, 1)))


def two_sided(Y: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Findings with both positives and negatives in the support set (among its known labels):
    the only ones a support set can teach anything (the others keep their text-only start)."""
    positives = Y.sum(axis=0)
    counted = len(Y) if known is None else known.sum(axis=0)
    return (positives > 0) & (positives < counted)


def validation_auc(Y_val: np.ndarray, scores: np.ndarray) -> float:
    """The search criterion: mean AUC over the findings the validation set can score."""
    score = mean_auc(per_class_auc(Y_val, scores))
    return score if np.isfinite(score) else -np.inf


def first_best(values: list[float]) -> int:
    """Index of the best candidate; on ties the first (candidates are listed with the least
    training or the smallest value first)."""
    return int(np.argmax(values))


class ValidationSearch:
    """Mixin for heads with an optional ``search`` on a few-shot validation set (default off:
    every head has a validation-free default)."""

    @property
    def uses_validation(self) -> bool:
        return bool(self.search)

    def _validation_inputs(self, X_val: np.ndarray | None, Y_val: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        X_val, Y_val = self._check_validation_data(X_val, Y_val)
        return self.head_input(X_val), Y_val


class GramProducts:
    """Right products with the Gram matrix G = R R^T of m rows R [m, d], in float32.

    The adapters train in the span of their support rows, where a step is a product with G.
    A few-shot set has m < d rows and G is formed once. The full-data fit (``all`` shots) has
    m > d: G would hold m^2 entries (6e9 at 78,000 images) but has rank d, so a product goes
    through R instead, (P R) R^T: the same numbers up to rounding, at 2 m d per row of P.
    """

    def __init__(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        m, d = rows.shape
        # the smaller of R R^T and R^T R, which share their nonzero eigenvalues
        self.smaller = rows @ rows.T if m <= d else rows.T @ rows
        self.dense = self.smaller.astype(np.float32) if m <= d else None
        self.rows = None if m <= d else rows.astype(np.float32)

    def __call__(self, P: np.ndarray) -> np.ndarray:
        """P @ G[:k] for P [j, k]: P's k columns weigh G's first k rows."""
        k = P.shape[1]
        if self.dense is not None:
            return P @ self.dense[:k]
        return (P @ self.rows[:k]) @ self.rows.T


def linear_scores(Z: np.ndarray, coef: np.ndarray, intercept: np.ndarray | None = None) -> np.ndarray:
    """Z @ coef (+ intercept) in float32, the cost of scoring every test row."""
    scores = Z @ coef.astype(np.float32)
    if intercept is not None:
        scores += intercept.astype(np.float32)
    return scores
