"""k nearest support images by cosine (FAISS inner product on L2-normalised embeddings); a
finding's score is the similarity-weighted share of the k neighbours positive for it."""

from __future__ import annotations

import faiss
import numpy as np

from cxrprobe.heads.base import Head


class KnnHead(Head):
    uses_center = True
    input_transform = "cl2n"

    def __init__(self, k: int = 5, center: np.ndarray | None = None, random_state: int | None = None) -> None:
        self.k = k
        self.center = center
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, known: np.ndarray | None = None) -> KnnHead:
        X, Y = self._check_fit_data(X, Y)
        self.known_ = self._check_known(known, Y)  # a neighbour votes on the findings it knows
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        support = np.ascontiguousarray(self.head_input(X))
        self.index_ = faiss.IndexFlatIP(support.shape[1])
        self.index_.add(support)
        self.labels_ = Y
        return self

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        queries = np.ascontiguousarray(Z, dtype=np.float32)
        k = min(self.k, self.index_.ntotal)
        similarity, neighbours = self.index_.search(queries, k)
        weights = np.maximum(similarity.astype(np.float64), 0.0) + 1e-6  # cosine may be negative
        votes = np.einsum("nk,nkc->nc", weights, self.labels_[neighbours])
        if self.known_ is None:
            return votes / weights.sum(axis=1, keepdims=True)
        voters = np.einsum("nk,nkc->nc", weights, self.known_[neighbours].astype(np.float64))
        return np.where(voters > 0, votes / np.where(voters > 0, voters, 1.0), 0.5)
