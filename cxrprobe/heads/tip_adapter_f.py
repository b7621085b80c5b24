"""Tip-Adapter-F (Zhang et al., ECCV'22), made multi-label: tip-adapter with learned keys.

The cache keys start as the L2-normalised support embeddings and are trained, values fixed,
on the support set with BCE on the official code's logits, z = tau zeroshot + a (A . v): tau the
model's logit scale on the zero-shot cosines (``clip_logits = 100 x W^T``) and A . v
tip_adapter.py's signed sum over the support. On unscaled cosines BCE stays in its linear
regime (logits within +-0.25) and learns little. ``alpha`` is given relative to the unscaled
cosines, a = tau alpha, so that the default alpha = beta = 1 (SS-Text's validation-free values)
starts the training exactly where tip-adapter's default ranks (tau times its scores). The rest
from gaopengcuhk/Tip-Adapter: AdamW lr 1e-3, eps 1e-4, weight decay 0.01 (torch's default,
which the official code keeps), a cosine schedule over all steps, a fixed 20 epochs. An epoch
is one full batch: the official batch of 256 holds a whole support set (16 shots is ~240).

Every epoch scores the N support images against the N keys, so training costs N^2 d per
epoch: it is not run on more than ``max_support`` images (the grid leaves it out of ``all``
shots on a large archive, and says so).

With ``search``, the epoch (at the training alpha and beta), then a and beta are chosen by
mean AUC on the few-shot validation set, as the official code re-searches them after training
(it picked its epoch on test): beta on the official grid, a on the official alpha grid and on
the same grid times tau, so that the search also reaches the scale the summed cache trains at.
"""

from __future__ import annotations

import numpy as np

from cxrprobe.heads.adapter_fit import bce_residual, cosine_rates, first_best, validation_auc
from cxrprobe.heads.base import TextPrompts
from cxrprobe.heads.tip_adapter import ALPHA_GRID, TipAdapterHead, cache_scores, kernel_cache

ADAM_BETAS = (0.9, 0.999)


def adamw_step(param: np.ndarray, grad: np.ndarray, state: dict, lr: float, eps: float, weight_decay: float) -> None:
    """One step of torch.optim.AdamW, in place (decoupled decay, bias-corrected moments);
    ``grad`` is used as scratch space."""
    b1, b2 = ADAM_BETAS
    state["t"] = t = state.get("t", 0) + 1
    m = state.setdefault("m", np.zeros_like(param))
    v = state.setdefault("v", np.zeros_like(param))
    param *= np.float32(1.0 - lr * weight_decay)
    m *= np.float32(b1)
    m += np.float32(1 - b1) * grad
    v *= np.float32(b2)
    grad *= grad
    grad *= np.float32(1 - b2)
    v += grad
    denom = np.sqrt(v, out=grad)
    denom *= np.float32(1 / np.sqrt(1 - b2**t))
    denom += np.float32(eps)
    np.divide(m, denom, out=denom)
    denom *= np.float32(lr / (1 - b1**t))
    param -= denom


class TipAdapterFHead(TipAdapterHead):
    max_support = 16_000
    max_support_reason = ("each epoch scores every support image against every key; 16,000 keys is the official "
                          "code's largest cache, ImageNet at 16 shots")

    def __init__(self, text: TextPrompts | None = None, alpha: float = 1.0, beta: float = 1.0, epochs: int = 20,
                 lr: float = 1e-3, eps: float = 1e-4, weight_decay: float = 0.01, negative: str = "pair",
                 search: bool = False, random_state: int | None = None) -> None:
        super().__init__(text=text, alpha=alpha, beta=beta, negative=negative, search=search,
                         random_state=random_state)
        self.epochs = epochs
        self.lr = lr
        self.eps = eps
        self.weight_decay = weight_decay

    def _zero_shot_scale(self) -> float:
        return self.text.logit_scale  # trained as the official code trains, searched or not

    def _build_cache(self, X: np.ndarray, Y: np.ndarray, known: np.ndarray | None) -> None:
        super()._build_cache(X, Y, known)
        self.alpha_ = self.text.logit_scale * self.alpha  # a: the cache's multiplier against tau zeroshot

    def fit(self, X: np.ndarray, Y: np.ndarray, *, X_val: np.ndarray | None = None,
            Y_val: np.ndarray | None = None, known: np.ndarray | None = None) -> TipAdapterFHead:
        X, Y = self._check_fit_data(X, Y)
        validation = self._validation_inputs(X_val, Y_val) if self.search else None
        known = self._check_known(known, Y)
        self._build_cache(X, Y, known)  # the training-free cache: keys_, values_, zero_shot_
        Y = np.asarray(Y, dtype=np.float32)
        Z = self.keys_.copy()  # the support images are also the training queries
        zero_shot = self._zero_shot_logits(Z)
        alpha, beta = np.float32(self.alpha_), np.float32(self.beta)
        keys, values, state = self.keys_, self.values_, {}  # keys_ is trained in place
        self.epoch_ = self.epochs
        snapshots = []
        for rate in cosine_rates(self.lr, self.epochs):
            affinity = Z @ keys.T
            cache = kernel_cache(affinity, values, beta)  # affinity now holds A
            residual = bce_residual(zero_shot + alpha * cache, Y, len(Y))
            if known is not None:
                residual *= known  # an unknown label adds no loss
            # z = zs + alpha A V with A = exp(beta (Z K^T - 1)): dL/dK = (alpha beta A * (R V^T))^T Z
            d_scores = (alpha * beta) * affinity * (residual @ values.T)
            adamw_step(keys, d_scores.T @ Z, state, float(rate), self.eps, self.weight_decay)
            if validation is not None:
                snapshots.append(keys.copy())
        if validation is not None and snapshots:
            self._select_epoch(*validation, snapshots)
            tau = self.text.logit_scale
            self._search(*validation, alphas=ALPHA_GRID + tuple(tau * a for a in ALPHA_GRID))
        return self

    def _select_epoch(self, Z_val: np.ndarray, Y_val: np.ndarray, snapshots: list[np.ndarray]) -> None:
        """The epoch with the best validation AUC at the training alpha and beta."""
        zero_shot = self._zero_shot_logits(Z_val)

        def auc(keys: np.ndarray) -> float:
            return validation_auc(Y_val, zero_shot + np.float32(self.alpha_) * cache_scores(
                Z_val, keys, self.values_, self.beta))

        epoch = first_best([auc(keys) for keys in snapshots])
        self.keys_, self.epoch_ = snapshots[epoch], epoch + 1
