"""ZS-LP and CLAP (Silva-Rodriguez et al., CVPR'24), made multi-label (docs/heads.md).

ZS-LP: per finding a positive and a negative prototype, initialised to the finding's prompt
embeddings t+ ("{finding}") and t- ("no {finding}") as the text encoder gave them, not
normalised, as CLAP does: the logit is scale-free, so their norm only sets how far a step of
lr 0.1 turns a prototype (with unit prompts the same lr turns them ~norm^2 times further and
the training became chaotic on the synthetic cache). The logit is
z_c = tau (cos(x, w_c+) - cos(x, w_c-)) with tau the model's logit scale, frozen (CLAP's
exp(4.60517) = 100 is OpenAI CLIP's), so at initialisation it is CheXzero's zero-shot pair,
scaled. BCE; SGD lr 0.1, momentum 0.9, cosine schedule, 300
full-batch epochs, no weight decay, no validation (the reference's one config for every task).

CLAP adds its class-adaptive penalty toward the text, one multiplier per class, the class's
zero-shot performance on the support set (jusiro/CLAP ``init_lagrangian_multipliers``: the
mean probability the zero-shot softmax gives a class's own images), and the mean over classes
of lambda |w - t|^2. Its exact two-class reduction, per finding c with its two classes
"positive" and "negative": (lambda_c+ |w_c+ - t_c+|^2 + lambda_c- |w_c- - t_c-|^2) / 2, with
lambda_c+ = mean over the support's positives of sigmoid(z_c) and lambda_c- = mean over its
negatives of 1 - sigmoid(z_c), z_c the zero-shot logit; fixed during training (CLAP's default
"l2" constraint). The penalty is applied as its exact
proximal step after each SGD step: the same fixed points as adding its gradient, and stable
however large the penalty.

Every iterate lies in the span of the support rows and the prompts, w_j = [X; T]^T b_j (SGD
and the proximal step commute with rotations), so training runs on their (N + 28)^2 Gram
matrix instead of N x d features: the same iterates at a fraction of the cost (past d rows,
the full-data fit, through the features: adapter_fit.GramProducts).
"""

from __future__ import annotations

import numpy as np

from cxrprobe.heads.adapter_fit import GramProducts, cosine_rates, linear_scores, sigmoid, two_sided
from cxrprobe.heads.base import Head, TextPrompts
from cxrprobe.heads.zeroshot import prompt_pair


def train_prototypes(rows: np.ndarray, n: int, Y: np.ndarray, usable: np.ndarray, epochs: int, lr: float,
                     momentum: float, penalty: np.ndarray, tau: float, known: np.ndarray | None = None) -> np.ndarray:
    """SGD on the cosine prototypes w_j = rows^T b_j, j < 14 positive, j >= 14 negative.

    ``rows`` holds the n unit support rows then the 28 prompts; prototype j starts at
    prompt j. ``penalty`` is rho_j of rho_j |w_j - t_j|^2; ``known`` [14, n] masks the loss
    of unknown labels. Returns B [28, n + 28].

    Prototype-major float32. The products rows . w_j (D = B G) are updated alongside B, as
    every update of B is linear in B and the gradient: the one matrix product a step needs is
    the residual's [14, n] x [n, m], half of recomputing B G. B and D sit side by side in one
    array, so that each update is one operation on both."""
    k, m = len(Y), len(rows)
    gram = GramProducts(rows)
    targets = np.asarray(Y, dtype=np.float32)  # [14, n]
    # tau / n per finding from the loss; zero for one-sided findings, which keep their prompts
    scale = (tau / n * usable).astype(np.float32)[:, None]
    start = np.zeros((2 * k, 2 * m), dtype=np.float32)  # [B | D] at the prompts
    start[:, :m][np.arange(2 * k), n + np.arange(2 * k)] = 1
    start[:, m:] = gram(start[:, :m])
    state, velocity, grad = start.copy(), np.zeros_like(start), np.zeros_like(start)
    B, dots = state[:, :m], state[:, m:]
    pull = 2 * penalty.astype(np.float32)[:, None]
    pulled = pull * start if penalty.any() else None
    for rate in cosine_rates(lr, epochs).astype(np.float32):
        norm2 = np.einsum("ij,ij->i", B, dots)[:, None]
        inverse = 1 / np.sqrt(norm2)
        cosine = dots[:, :n] * inverse
        residual = sigmoid(np.float32(tau) * (cosine[:k] - cosine[k:]))
        residual -= targets
        residual *= scale  # dL/dcos: +residual for the positive prototype, -residual for the negative
        if known is not None:
            residual *= known
        grad[:k, :n] = residual
        np.negative(residual, out=grad[k:, :n])
        # d cos_ij / d w_j = x_i / |w_j| - cos_ij w_j / |w_j|^2, in the coordinates b_j
        shrink = np.einsum("ij,ij->i", grad[:, :n], cosine)[:, None] / norm2
        grad[:, :n] *= inverse
        support_dots = gram(residual)  # grad G, up to each row's +-1 / |w_j|
        np.multiply(support_dots, inverse[:k], out=grad[:k, m:])
        np.multiply(support_dots, -inverse[k:], out=grad[k:, m:])
        velocity *= momentum
        velocity += grad
        velocity -= shrink * state
        if pulled is None:
            state -= rate * velocity
        else:  # then the prox of rate * rho |w - t|^2: w <- (w + 2 rate rho t) / (1 + 2 rate rho)
            state -= rate * (velocity - pulled)
            state /= 1 + rate * pull
    return B


class ZsLpHead(Head):
    uses_text = True
    input_transform = "l2"

    def __init__(self, text: TextPrompts | None = None, epochs: int = 300, lr: float = 0.1, momentum: float = 0.9,
                 negative: str = "pair", random_state: int | None = None) -> None:
        self.text = text
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.negative = negative
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, known: np.ndarray | None = None) -> ZsLpHead:
        X, Y = self._check_fit_data(X, Y)
        known = self._check_known(known, Y)
        Z = self.head_input(X).astype(np.float64)
        # [28, d], positives then negatives: the raw prompt embeddings, as in CLAP; their norm
        # sets the prototypes' starting norm, so the step size on their direction
        T = np.concatenate(prompt_pair(self.text, self.negative, unit=False))
        rows = np.concatenate([Z, T])
        penalty = self._penalty(T @ Z.T / np.linalg.norm(T, axis=1)[:, None], Y, known)
        tau = self.text.logit_scale
        B = train_prototypes(rows, len(Z), Y.T, two_sided(Y, known), self.epochs, self.lr, self.momentum, penalty, tau,
                             None if known is None else known.T.astype(np.float32))
        W = B.astype(np.float64) @ rows
        W /= np.linalg.norm(W, axis=1, keepdims=True)
        k = Y.shape[1]
        self.prototypes_ = W
        self.coef_ = tau * (W[:k] - W[k:]).T  # inputs are unit rows: cosines are dot products
        return self

    def _penalty(self, text: np.ndarray, Y: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(len(text))

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        return linear_scores(Z, self.coef_)


class ClapHead(ZsLpHead):
    """``penalty_scale`` multiplies CLAP's lambda (1: the method as published)."""

    def __init__(self, text: TextPrompts | None = None, epochs: int = 300, lr: float = 0.1, momentum: float = 0.9,
                 penalty_scale: float = 1.0, negative: str = "pair", random_state: int | None = None) -> None:
        super().__init__(text=text, epochs=epochs, lr=lr, momentum=momentum, negative=negative,
                         random_state=random_state)
        self.penalty_scale = penalty_scale

    def _penalty(self, text: np.ndarray, Y: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        """rho per prototype, positives' then negatives': lambda / 2, CLAP's mean over a finding's
        two classes (its known labels); lambda_ [2, 14] keeps lambda+ and lambda-."""
        k = Y.shape[1]
        p = sigmoid(self.text.logit_scale * (text[:k] - text[k:]).T)  # zero-shot on the support set
        positive = Y == 1
        negative = ~positive if known is None else ~positive & known
        with np.errstate(invalid="ignore"):  # 0 / 0 where a finding has one side only (it does not train)
            right_on_positives = (p * positive).sum(0) / positive.sum(0)
            right_on_negatives = ((1 - p) * negative).sum(0) / negative.sum(0)
        self.lambda_ = np.nan_to_num(np.stack([right_on_positives, right_on_negatives]))
        return 0.5 * self.penalty_scale * self.lambda_.reshape(-1)
