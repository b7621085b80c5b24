"""Tip-Adapter (Zhang et al., ECCV'22), training-free, made multi-label.

The support embeddings are a key-value cache. For a query x the affinity to key i is
A_i = exp(-beta (1 - x . k_i)); per finding the cache score is A . v_c with signed values
v_ic = 1 for a positive and -n_pos,c / n_neg,c for a negative: the exact two-class analogue of
the one-hot values the official code sums over (a plain A . Y would only collect evidence for
a finding; these balance the negatives' total weight against the positives').

- Validation-free default (jusiro/SS-Text's ``TIPAd``): alpha = beta = 1 on plain cosines,
  z_c = zeroshot_c + alpha (A . v_c), zeroshot_c the cosine difference of the prompt pair.
- ``search`` (gaopengcuhk/Tip-Adapter's ``search_hp``, on the few-shot validation set instead
  of its test or val split): z_c = tau zeroshot_c + alpha (A . v_c), tau the model's logit scale
  as in the official ``clip_logits = 100 x W^T``, beta in {0.1 + i (7 - 0.1) / 200 : i < 200}
  and alpha in {0.1 + i (3 - 0.1) / 20 : i < 20} (the ImageNet ``search_scale`` [7, 3]), one
  pair for all findings by mean validation AUC, the first best on ties.
"""

from __future__ import annotations

import numpy as np

from cxrprobe.heads.adapter_fit import ValidationSearch, first_best, validation_auc
from cxrprobe.heads.base import Head, TextPrompts
from cxrprobe.heads.zeroshot import ZeroShotHead

AFFINITY_BLOCK = 1 << 26  # float32 entries of the query x key affinities scored at once
BETA_GRID = tuple(0.1 + i * (7 - 0.1) / 200 for i in range(200))
ALPHA_GRID = tuple(0.1 + i * (3 - 0.1) / 20 for i in range(20))


def kernel_cache(affinity: np.ndarray, values: np.ndarray, beta: float) -> np.ndarray:
    """exp(-beta (1 - affinity)) @ values, in place on ``affinity`` (x . keys): it is the
    largest array a head builds while scoring the test set."""
    affinity -= np.float32(1.0)
    affinity *= np.float32(beta)
    np.exp(affinity, out=affinity)
    return affinity @ values


def cache_scores(Z: np.ndarray, keys: np.ndarray, values: np.ndarray, beta: float) -> np.ndarray:
    return kernel_cache(Z @ keys.T, values, beta)


def signed_values(Y: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """1 for a finding's positives, -n_pos / n_neg for its (known) negatives, 0 for an unknown
    label; 0 where the support set has one side only (no contrast to offer)."""
    negative = 1 - Y if known is None else (1 - Y) * known
    positives = Y.sum(axis=0)
    negatives = negative.sum(axis=0)
    usable = (positives > 0) & (negatives > 0)
    values = Y - negative * positives / np.maximum(negatives, 1)
    return (values * usable).astype(np.float32)


def search_alpha_beta(zero_shot: np.ndarray, Z_val: np.ndarray, Y_val: np.ndarray, keys: np.ndarray,
                      values: np.ndarray, alphas: tuple[float, ...] = ALPHA_GRID) -> tuple[float, float]:
    """The grid's (alpha, beta) with the best mean validation AUC (the first on ties)."""
    affinity = Z_val @ keys.T
    best, choice = -np.inf, (alphas[0], BETA_GRID[0])
    for beta in BETA_GRID:
        cache = kernel_cache(affinity.copy(), values, beta)
        scores = [validation_auc(Y_val, zero_shot + np.float32(alpha) * cache) for alpha in alphas]
        i = first_best(scores)
        if scores[i] > best:
            best, choice = scores[i], (alphas[i], beta)
    return choice


class TipAdapterHead(ValidationSearch, Head):
    uses_text = True
    input_transform = "l2"

    def __init__(self, text: TextPrompts | None = None, alpha: float = 1.0, beta: float = 1.0,
                 negative: str = "pair", search: bool = False, random_state: int | None = None) -> None:
        self.text = text
        self.alpha = alpha
        self.beta = beta
        self.negative = negative
        self.search = search
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, X_val: np.ndarray | None = None,
            Y_val: np.ndarray | None = None, known: np.ndarray | None = None) -> TipAdapterHead:
        X, Y = self._check_fit_data(X, Y)
        validation = self._validation_inputs(X_val, Y_val) if self.search else None
        self._build_cache(X, Y, self._check_known(known, Y))
        if validation is not None:
            self._search(*validation)
        return self

    def _zero_shot_scale(self) -> float:
        """The official code's logit scale on the zero-shot term where its search is followed."""
        return self.text.logit_scale if self.search else 1.0

    def _build_cache(self, X: np.ndarray, Y: np.ndarray, known: np.ndarray | None) -> None:
        self.zero_shot_ = ZeroShotHead(text=self.text, negative=self.negative).fit(X, Y)
        self.keys_ = self.head_input(X)
        self.values_ = signed_values(Y, known)
        self.zero_shot_scale_ = self._zero_shot_scale()
        self.alpha_, self.beta_ = self.alpha, self.beta

    def _zero_shot_logits(self, Z: np.ndarray) -> np.ndarray:
        return np.float32(self.zero_shot_scale_) * self.zero_shot_.decision_from(Z)

    def _search(self, Z_val: np.ndarray, Y_val: np.ndarray, alphas: tuple[float, ...] = ALPHA_GRID) -> None:
        self.alpha_, self.beta_ = search_alpha_beta(self._zero_shot_logits(Z_val), Z_val, Y_val, self.keys_,
                                                    self.values_, alphas)

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        # one product for the zero-shot weights and the keys: reading Z is much of the cost
        weights = np.concatenate([self.zero_shot_.weights_.astype(np.float32), self.keys_.T], axis=1)
        k = self.values_.shape[1]
        scores = np.empty((len(Z), k), dtype=np.float32)
        # in row blocks of at most AFFINITY_BLOCK affinities: one block for a few-shot cache, and
        # 256 MB at a time, not 8 GB, for a full-data one (25,596 queries x 78,000 keys)
        rows = max(1, AFFINITY_BLOCK // max(len(self.keys_), 1))
        for start in range(0, len(Z), rows):
            both = Z[start:start + rows] @ weights
            block = kernel_cache(both[:, k:], self.values_, self.beta_)
            block *= np.float32(self.alpha_)
            block += np.float32(self.zero_shot_scale_) * both[:, :k]
            scores[start:start + rows] = block
        return scores
