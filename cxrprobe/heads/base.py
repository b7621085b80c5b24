"""What every head shares: the estimator contract and embedding transforms.

A head is a scikit-learn style estimator over cached embeddings: ``__init__`` stores its
parameters unchanged, ``fit(X, Y)`` (X [n, d] embeddings, Y [n, 14] multi-hot) returns self,
``decision_function(X)`` gives [n, 14] scores (higher = more likely positive; AUC needs only
the ranking), ``random_state`` seeds whatever is random. Heads that use text take the
cache's prompts as the ``text`` parameter; the runner supplies it, and the training-pool
mean as ``center`` for heads that centre.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator

from cxrprobe.labels import FINDINGS
from cxrprobe.models.text import TextPrompts  # noqa: F401 - the heads' text, re-exported


def l2_normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


TRANSFORMS = ("raw", "l2", "cl2n", "head_logits")


def transform_embeddings(X: np.ndarray, kind: str, center: np.ndarray | None = None) -> np.ndarray:
    """The input a head scores, as float32: raw, L2-normalised, or centred then normalised (CL2N).

    Test embeddings go through this once per grid, not once per run: the runner caches it.
    """
    if kind == "raw":
        return np.asarray(X, dtype=np.float32)
    if kind == "l2":
        return l2_normalise(X).astype(np.float32)
    if kind == "cl2n":
        X = np.asarray(X, dtype=np.float64)
        return l2_normalise(X - center if center is not None else X).astype(np.float32)
    if kind == "head_logits":
        raise ValueError("head logits come from the cache, not from the embeddings")
    raise ValueError(f"unknown transform {kind!r}; expected one of {TRANSFORMS}")


def check_xy(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or Y.shape[1] != len(FINDINGS) or len(X) != len(Y):
        raise ValueError(f"need X [n, d] and Y [n, {len(FINDINGS)}], got {X.shape} and {Y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("embeddings contain NaN or Inf")
    return X, Y.astype(np.float64)


class Head(BaseEstimator):
    """Base class: sklearn's get_params / set_params / clone, and the scores-only contract."""

    uses_text = False
    uses_center = False
    input_transform = "raw"  # what decision_from expects; see transform_embeddings
    needs_support = True  # False: the scores do not depend on the support set (zero-shot)
    uses_validation = False  # True: fit(X, Y, X_val, Y_val) selects hyperparameters on validation
    draws_random = False  # True: the fit draws from random_state (two seeds, two fits of the same data)
    max_support: int | None = None  # the most support images the fit is run on (its cost grows faster)
    max_support_reason = ""

    def transform(self, X: np.ndarray) -> np.ndarray:
        return transform_embeddings(X, self.input_transform, getattr(self, "center", None))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.decision_from(self.transform(X))

    def decision_from(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Scores [n, 14] of inputs already transformed by ``transform``."""
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Per-finding probabilities: the logistic of the decision function."""
        return expit(self.decision_function(X))  # no overflow warning for large float32 scores
