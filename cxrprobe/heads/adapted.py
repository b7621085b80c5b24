"""The adapted head: the logits the partially fine-tuned model's own MLP head gave each image,
stored in the cache at embed time. What the paper calls "zero-shot" is this: a head supervised
on the whole training set, not text. It uses no support set; ``fit`` only checks its input."""

from __future__ import annotations

import numpy as np

from cxrprobe.heads.base import Head


class AdaptedHead(Head):
    input_transform = "head_logits"  # the runner supplies the cache's stored logits
    needs_support = False

    def __init__(self, random_state: int | None = None) -> None:
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, known: np.ndarray | None = None) -> AdaptedHead:
        X, Y = self._check_fit_data(X, Y)
        if X.shape[1] != Y.shape[1]:
            raise ValueError(f"the adapted head's X is its logits, one column per finding: got {X.shape[1]} "
                             f"columns for {Y.shape[1]} findings")
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(Z, dtype=np.float32)
