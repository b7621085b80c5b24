"""The paper's MLP head trained from scratch on the support set: raw embeddings in (as the
paper's head takes the visual tower's output), plain BCE, batch 16, AdamW 1e-4, a fixed
number of epochs. Nothing is chosen on test: the paper's code picked its epoch by test AUC.

With ``init_state`` (the adapted head's weights from the cache) it continues training that
head instead, as the paper's few-shot code did (``--protocol paper``: 5 epochs)."""

from __future__ import annotations

import numpy as np
import torch

from cxrprobe.heads.base import Head, torch_seed
from cxrprobe.heads.torch_fit import fit_paper_head, paper_head_scores
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.seeding import seeded_cpu


class PaperMlpHead(Head):
    draws_random = True  # its initial weights and mini-batch order and dropout
    def __init__(self, epochs: int = 30, batch_size: int = 16, lr: float = 1e-4, weight_decay: float = 1e-2,
                 init_state: dict | None = None, random_state: int | None = None) -> None:
        self.epochs = epochs
        self.init_state = init_state
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, known: np.ndarray | None = None) -> PaperMlpHead:
        X, Y = self._check_fit_data(X, Y)
        known = self._check_known(known, Y)
        seed = torch_seed(self.random_state)
        with seeded_cpu(seed):
            head = PaperHead(in_dim=X.shape[1], n_classes=Y.shape[1])
            if self.init_state is not None:
                head.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in self.init_state.items()})
            # dropout draws from the global generator: keep it inside the fork too
            self.module_ = fit_paper_head(head, X, Y, self.epochs, self.batch_size, self.lr, self.weight_decay, seed,
                                          known)
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        return paper_head_scores(self.module_, Z)
