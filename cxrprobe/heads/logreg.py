"""One binary L2 logistic regression per finding on L2-normalised embeddings (the CLIP /
CoOp linear probe, made multi-label). Validation-free default C = 0.316 with balanced class
weights (each finding sees ~N positives against ~14N negatives in a support set). The 14
problems are solved together (heads/logistic.py: scikit-learn's objective and tolerance).

With ``search``, one C shared by the 14 findings is chosen from a log grid by mean AUC on
a few-shot validation set drawn from validation patients (never from test); ``fit`` then
needs ``X_val`` and ``Y_val``."""

from __future__ import annotations

from typing import Callable

import numpy as np

from cxrprobe.heads.base import Head
from cxrprobe.heads.logistic import fit_logistic, row_space
from cxrprobe.metrics.auc import mean_auc, per_class_auc

C_GRID = tuple(float(c) for c in np.logspace(-2, 3, 11))


class LogRegHead(Head):
    input_transform = "l2"

    def __init__(self, C: float = 0.316, class_weight: str | None = "balanced", max_iter: int = 1000,
                 search: bool = False, random_state: int | None = None) -> None:
        self.C = C
        self.search = search
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    @property
    def uses_validation(self) -> bool:
        return bool(self.search)

    def fit(self, X: np.ndarray, Y: np.ndarray, *, X_val: np.ndarray | None = None,
            Y_val: np.ndarray | None = None, known: np.ndarray | None = None) -> LogRegHead:
        X, Y = self._check_fit_data(X, Y)
        known = self._check_known(known, Y)
        Z = self.head_input(X).astype(np.float64)
        if self.class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        basis, reduced = row_space(Z)  # the same optimum in at most n coordinates
        solutions: dict[float, np.ndarray] = {}  # log10 C -> solution in the reduced coordinates

        def solve(C: float) -> np.ndarray:
            # warm-started from the nearest C solved so far (benchmarks/choices.py); the search
            # order is fixed, so the result is deterministic
            key = float(np.log10(C))
            if key not in solutions:
                nearest = min(solutions, key=lambda x: abs(x - key), default=None)
                solutions[key] = fit_logistic(reduced, Y, C, self.class_weight == "balanced",
                                              None if nearest is None else solutions[nearest], self.max_iter,
                                              known=known)
            weights = solutions[key]
            return weights if basis is None else np.vstack([basis @ weights[:-1], weights[-1:]])

        if self.uses_validation:
            X_val, Y_val = self._check_validation_data(X_val, Y_val)
            Z_val = self.head_input(X_val)
            self.validation_auc_ = {}  # what the search saw: C -> validation mean AUC

            def score(C: float) -> float:
                self.validation_auc_[C] = self._validation_auc(solve(C), Z_val, Y_val)
                return self.validation_auc_[C]

            self.C_ = self._choose_C(score)
        else:
            self.C_ = self.C
        weights = solve(self.C_)
        self.coef_, self.intercept_ = weights[:-1], weights[-1]
        return self

    @staticmethod
    def _validation_auc(weights: np.ndarray, Z_val: np.ndarray, Y_val: np.ndarray) -> float:
        score = mean_auc(per_class_auc(Y_val, Z_val @ weights[:-1] + weights[-1]))
        return score if np.isfinite(score) else -np.inf

    def _choose_C(self, score: Callable[[float], float]) -> float:
        """The grid point with the best validation mean AUC; the most regularised on ties."""
        scores = [score(C) for C in C_GRID]
        return C_GRID[int(np.argmax(scores))]

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        return Z @ self.coef_.astype(np.float32) + self.intercept_.astype(np.float32)


class LogRegCvHead(LogRegHead):
    """The CLIP paper's / CoOp's search for C, always on: a coarse grid 1e-6 ... 1e6 (every two
    decades), then ``bisection_steps`` halvings of the log interval around the best point, all
    scored by mean AUC on the few-shot validation set."""

    COARSE = tuple(10.0**e for e in range(-6, 7, 2))

    uses_validation = True

    def __init__(self, class_weight: str | None = "balanced", max_iter: int = 1000, bisection_steps: int = 8,
                 random_state: int | None = None) -> None:
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.bisection_steps = bisection_steps
        self.random_state = random_state

    def _choose_C(self, score: Callable[[float], float]) -> float:
        logs = [float(np.log10(C)) for C in self.COARSE]
        values = {x: score(10.0**x) for x in logs}
        best = max(logs, key=lambda x: (values[x], -x))
        low, high = best - 2.0, best + 2.0
        for _ in range(self.bisection_steps):
            middle_low, middle_high = (low + best) / 2, (best + high) / 2
            for x in (middle_low, middle_high):
                if x not in values:
                    values[x] = score(10.0**x)
            best = max((middle_low, best, middle_high), key=lambda x: (values[x], -x))
            span = (high - low) / 4
            low, high = best - span, best + span
        return float(10.0**best)
