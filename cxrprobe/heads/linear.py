"""A torch linear probe: one linear layer over L2-normalised embeddings, BCE, full batch."""

from __future__ import annotations

import numpy as np
from torch import nn

from cxrprobe.heads.base import Head, torch_seed
from cxrprobe.heads.torch_fit import fit_linear_bce, scores
from cxrprobe.seeding import seeded_cpu


class LinearHead(Head):
    input_transform = "l2"
    draws_random = True  # its initial weights

    def __init__(self, epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-4,
                 random_state: int | None = None) -> None:
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, known: np.ndarray | None = None) -> LinearHead:
        X, Y = self._check_fit_data(X, Y)
        known = self._check_known(known, Y)
        seed = torch_seed(self.random_state)
        with seeded_cpu(seed):
            layer = nn.Linear(X.shape[1], Y.shape[1])
        self.module_ = fit_linear_bce(layer, self.head_input(X), Y, self.epochs, self.lr, self.weight_decay,
                                     known)
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        return scores(self.module_, Z)
