"""Tip-Adapter (Zhang et al., ECCV'22), training-free, made multi-label.

The support embeddings are a key-value cache. For a query x the affinity to key i is
A_i = exp(-beta (1 - x . k_i)); per finding the cache score is the kernel mean over the
support's positives minus that over its negatives (a signed score: plain A . Y would only
collect evidence for a finding). The final score adds it to the zero-shot cosine difference:
z_c = zeroshot_c + alpha s_c. Validation-free default alpha = beta = 1 (as SS-Text runs it).
"""

from __future__ import annotations

import numpy as np

from cxrprobe.heads.base import Head, TextPrompts, check_xy
from cxrprobe.heads.zeroshot import ZeroShotHead


class TipAdapterHead(Head):
    uses_text = True
    input_transform = "l2"

    def __init__(self, text: TextPrompts | None = None, alpha: float = 1.0, beta: float = 1.0,
                 negative: str = "pair", random_state: int | None = None) -> None:
        self.text = text
        self.alpha = alpha
        self.beta = beta
        self.negative = negative
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray) -> TipAdapterHead:
        X, Y = check_xy(X, Y)
        self.zero_shot_ = ZeroShotHead(text=self.text, negative=self.negative).fit(X, Y)
        self.keys_ = self.transform(X)
        positives = Y.sum(axis=0)
        negatives = len(Y) - positives
        usable = (positives > 0) & (negatives > 0)  # a one-sided support has no contrast to offer
        self.positive_values_ = (Y / np.maximum(positives, 1) * usable).astype(np.float32)
        self.negative_values_ = ((1 - Y) / np.maximum(negatives, 1) * usable).astype(np.float32)
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        affinity = np.exp(-self.beta * (1.0 - Z @ self.keys_.T))
        cache = affinity @ self.positive_values_ - affinity @ self.negative_values_
        return self.zero_shot_.decision_from(Z) + np.float32(self.alpha) * cache
