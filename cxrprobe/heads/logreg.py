"""One binary L2 logistic regression per finding on L2-normalised embeddings (the CLIP /
CoOp linear probe, made multi-label). Validation-free default C = 0.316 with balanced class
weights (each finding sees ~N positives against ~14N negatives in a support set)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from cxrprobe.heads.base import Head, check_xy


class LogRegHead(Head):
    input_transform = "l2"
    def __init__(self, C: float = 0.316, class_weight: str | None = "balanced", max_iter: int = 1000,
                 random_state: int | None = None) -> None:
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray) -> LogRegHead:
        X, Y = check_xy(X, Y)
        Z = self.transform(X).astype(np.float64)
        self.coef_ = np.zeros((Z.shape[1], Y.shape[1]))
        self.intercept_ = np.zeros(Y.shape[1])
        for c in range(Y.shape[1]):
            if Y[:, c].min() == Y[:, c].max():
                continue  # one class only: nothing to separate, scores stay constant
            model = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter)
            model.fit(Z, Y[:, c].astype(int))
            self.coef_[:, c] = model.coef_[0]
            self.intercept_[c] = model.intercept_[0]
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        return Z @ self.coef_.astype(np.float32) + self.intercept_.astype(np.float32)
