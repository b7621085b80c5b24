"""LP++ (Huang et al., CVPR'24), made multi-label: a linear probe blended with text,
z_c = x . w_c + b_c + alpha_c x . u_c with u_c = t_c+ - t_c- (the zero-shot direction), BCE.

Step sizes come from the data, so there is no learning rate to tune (docs/heads.md):
- w, b: SGD with momentum 0.9 at lr_w = 4N / lambda_max(X^T X), the Lipschitz step of the
  summed per-finding mean BCE (its Hessian in w_c is at most X^T X / 4N) and the released code's
  lr_w exactly;
- alpha_c: a plain step of 4N / sum_i (x_i . u_c)^2 (the same bound along alpha_c) every 10th
  epoch, after that epoch's w step, as the released code does.
Init: w_c = mean(positives) - mean(negatives) (the binary analogue of the class centroids),
b = 0, every alpha_c = alpha0 = 250 mean_ic x_i . t_c^(y_ic), the mean over images and findings
of each image's cosine to its own class's prompt (t_c+ where it is positive for c, t_c-
where not): the exact two-class reduction of the released ``calculate_init_alpha`` (250 x
the mean over classes of the class members' cosine to their class's text).
``alpha_rule="abs-margin"`` keeps an earlier proposal, 250 mean_ic |x_i . u_c|, for ablation
only: ~19x weaker, it made LP++ fall below zero-shot at 1 and 4 shots. Full batch, a fixed 300 epochs, the last one kept (SS-Text's validation-free run).
With ``search``, the epoch is chosen among every 10th by mean AUC on the few-shot validation
set, as the released code picked it on its K-shot val split.

The weights never leave the span of the support rows, w_c = X^T b_c, so the loop runs on
the N x N Gram matrix instead of N x d features: the same iterates, a fraction of the cost
(past d rows, the full-data fit, through the features: adapter_fit.GramProducts).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from cxrprobe.heads.adapter_fit import (
    GramProducts,
    ValidationSearch,
    bce_residual,
    linear_scores,
    two_sided,
    validation_auc,
)
from cxrprobe.heads.base import Head, TextPrompts
from cxrprobe.heads.zeroshot import prompt_pair


def largest_eigenvalue(symmetric: np.ndarray) -> float:
    return float(scipy.linalg.eigh(symmetric, eigvals_only=True, subset_by_index=[len(symmetric) - 1] * 2)[0])


class LpPlusPlusHead(ValidationSearch, Head):
    uses_text = True
    input_transform = "l2"

    def __init__(self, text: TextPrompts | None = None, epochs: int = 300, alpha_every: int = 10,
                 momentum: float = 0.9, alpha_init: float = 250.0, alpha_rule: str = "own-prompt",
                 negative: str = "pair", search: bool = False, random_state: int | None = None) -> None:
        self.text = text
        self.epochs = epochs
        self.alpha_every = alpha_every
        self.momentum = momentum
        self.alpha_init = alpha_init
        self.alpha_rule = alpha_rule
        self.negative = negative
        self.search = search
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, X_val: np.ndarray | None = None,
            Y_val: np.ndarray | None = None, known: np.ndarray | None = None) -> LpPlusPlusHead:
        X, Y = self._check_fit_data(X, Y)
        known = self._check_known(known, Y)
        validation = self._validation_inputs(X_val, Y_val) if self.search else None
        Z = self.head_input(X).astype(np.float64)
        positives, negatives = prompt_pair(self.text, self.negative)
        U = positives - negatives  # [14, d]
        N = len(Z)
        text = U @ Z.T  # [14, N]: x_i . u_c; finding-major arrays keep every step's reductions contiguous
        gram = GramProducts(Z)
        self.lr_w_ = 4.0 * N / largest_eigenvalue(gram.smaller)  # lambda_max(Z^T Z) = lambda_max(Z Z^T)
        self.lr_alpha_ = 4.0 * N / np.maximum((text**2).sum(axis=1), 1e-12)
        usable = two_sided(Y, known)
        negative = 1 - Y if known is None else (1 - Y) * known
        n_pos = Y.sum(axis=0)
        # w_c = mean(positives) - mean(negatives) = Z^T b_c; one-sided findings keep w = 0
        B = ((Y / np.maximum(n_pos, 1) - negative / np.maximum(negative.sum(axis=0), 1)) * usable).T
        b = np.zeros(len(B))
        alpha = np.full(len(B), self.alpha_init * self._alpha_scale(Z, positives, negatives, Y, text, known))
        if validation is not None:  # validation logits are Z_val Z^T B^T + b + alpha Z_val U^T
            Z_val, Y_val = validation
            validation = (Z_val @ Z.T, Z_val @ U.T, Y_val)
        state = self._train(gram, text, Y.T, usable, B, b, alpha, validation, None if known is None else known.T)
        B, b, alpha = (v.astype(np.float64) for v in state)
        self.coef_ = Z.T @ B.T + U.T * alpha
        self.intercept_ = b
        self.alpha_ = alpha
        return self

    def _alpha_scale(self, Z: np.ndarray, positives: np.ndarray, negatives: np.ndarray, Y: np.ndarray,
                     text: np.ndarray, known: np.ndarray | None = None) -> float:
        """What alpha_init multiplies: the mean cosine of each image to its own class's prompt
        (over the known labels)."""
        if self.alpha_rule == "own-prompt":
            own = np.where(Y == 1, Z @ positives.T, Z @ negatives.T)
            return float(own.mean() if known is None else own[known].mean())
        if self.alpha_rule == "abs-margin":
            return float(np.abs(text).mean() if known is None else np.abs(text.T)[known].mean())
        raise ValueError(f"alpha_rule must be 'own-prompt' or 'abs-margin', got {self.alpha_rule!r}")

    def _train(self, gram: GramProducts, text: np.ndarray, targets: np.ndarray, usable: np.ndarray, B: np.ndarray,
               b: np.ndarray, alpha: np.ndarray, validation: tuple | None,
               known: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Full-batch momentum SGD on (B, b), alpha steps every ``alpha_every`` epochs; the last
        epoch's (B, b, alpha), or with a validation set the best checkpoint's. ``known`` [k, N]:
        an unknown label adds no loss."""
        f32 = np.float32
        text, targets = text.astype(f32), targets.astype(f32)
        B, b, alpha = B.astype(f32), b.astype(f32), alpha.astype(f32)
        lr_w, lr_alpha, momentum = f32(self.lr_w_), self.lr_alpha_.astype(f32), f32(self.momentum)
        frozen = ~usable
        n = text.shape[1]
        velocity_B, velocity_b = np.zeros_like(B), np.zeros_like(b)
        best, kept, self.epoch_ = -np.inf, None, self.epochs
        for epoch in range(1, self.epochs + 1):
            logits = gram(B)
            logits += b[:, None]
            logits += alpha[:, None] * text
            residual = bce_residual(logits, targets, n)
            residual[frozen] = 0
            if known is not None:
                residual *= known
            alpha_grad = np.einsum("ij,ij->i", residual, text)
            velocity_B *= momentum
            velocity_B += residual  # dL/dw_c = Z^T r_c: the coefficients' gradient is r itself
            velocity_b *= momentum
            velocity_b += residual.sum(axis=1)
            B -= lr_w * velocity_B
            b -= lr_w * velocity_b
            if epoch % self.alpha_every == 0:
                alpha -= lr_alpha * alpha_grad
            if validation is not None and (epoch % self.alpha_every == 0 or epoch == self.epochs):
                kernel_val, text_val, Y_val = validation
                score = validation_auc(Y_val, kernel_val @ B.T + b + alpha * text_val)
                if score > best:  # strictly: the earliest epoch on ties
                    best, self.epoch_, kept = score, epoch, (B.copy(), b.copy(), alpha.copy())
        return kept if kept is not None else (B, b, alpha)

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        return linear_scores(Z, self.coef_, self.intercept_)
