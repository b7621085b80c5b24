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


def kernel_cache(affinity: np.ndarray, values: np.ndarray, beta: float) -> np.ndarray:
    """exp(-beta (1 - affinity)) @ values, in place on ``affinity`` (x . keys): it is the
    largest array a head builds while scoring the test set."""
    affinity -= np.float32(1.0)
    affinity *= np.float32(beta)
    np.exp(affinity, out=affinity)
    return affinity @ values


def cache_scores(Z: np.ndarray, keys: np.ndarray, values: np.ndarray, beta: float) -> np.ndarray:
    return kernel_cache(Z @ keys.T, values, beta)


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
        # signed values: the positives' kernel mean minus the negatives'
        values = Y / np.maximum(positives, 1) - (1 - Y) / np.maximum(negatives, 1)
        self.values_ = (values * usable).astype(np.float32)
        self.alpha_, self.beta_ = self.alpha, self.beta  # tip-adapter-f may re-select them
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        # one product for the zero-shot weights and the keys: reading Z is much of the cost
        weights = np.concatenate([self.zero_shot_.weights_.astype(np.float32), self.keys_.T], axis=1)
        both = Z @ weights
        k = self.values_.shape[1]
        scores = kernel_cache(both[:, k:], self.values_, self.beta_)
        scores *= np.float32(self.alpha_)
        scores += both[:, :k]
        return scores
