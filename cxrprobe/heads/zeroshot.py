"""Zero-shot from text: per finding, the image's cosine to the positive prompt minus its cosine
to the negative prompt (CheXzero: sigmoid of that difference is the pair softmax). No
labelled image is used; ``fit`` only checks its input."""

from __future__ import annotations

import numpy as np

from cxrprobe.heads.base import Head, TextPrompts
from cxrprobe.heads.registry import NEGATIVES
from cxrprobe.models.text import GENERIC_NEGATIVE_CLASS, PAPER_NEGATIVE


def prompt_pair(text: TextPrompts | None, negative: str = "pair", unit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each finding's positive and negative prompt embeddings, two [k, d] arrays (the text's
    findings in order), L2-normalised
    unless ``unit`` is False (the raw text-encoder outputs, as CLAP starts from). Heads that
    learn from text (lp++, zs-lp, clap) start from these."""
    if text is None:
        raise ValueError("this head needs the cache's text embeddings")
    if negative not in NEGATIVES:
        raise ValueError(f"negative must be one of {NEGATIVES}")
    findings = text.findings
    positives = np.stack([text.embedding_of(f, "positive", unit=unit) for f in findings])
    if negative == "pair":
        negatives = np.stack([text.embedding_of(f, "negative", unit=unit) for f in findings])
    else:
        generic = text.embedding_of(GENERIC_NEGATIVE_CLASS, "negative", PAPER_NEGATIVE, unit=unit)
        negatives = np.repeat(generic[None], len(findings), axis=0)
    return positives, negatives


class ZeroShotHead(Head):
    """``negative="pair"``: "A chest X-ray showing no {finding}" per finding (CheXzero-style);
    ``"paper"``: the paper's single "No finding" for every finding."""

    uses_text = True
    input_transform = "l2"
    needs_support = False

    def __init__(self, text: TextPrompts | None = None, negative: str = "pair", random_state: int | None = None) -> None:
        self.text = text
        self.negative = negative
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray, *, known: np.ndarray | None = None) -> ZeroShotHead:
        self._check_fit_data(X, Y)  # labels are not used, known or not
        self.weights_ = self._prompt_difference()
        return self

    def _prompt_difference(self) -> np.ndarray:
        positives, negatives = prompt_pair(self.text, self.negative)
        return (positives - negatives).T  # [d, k]

    def decision_from(self, Z: np.ndarray) -> np.ndarray:
        weights = getattr(self, "weights_", None)
        if weights is None:
            weights = self._prompt_difference()  # a zero-shot head needs no fit
        return Z @ weights.astype(np.float32)
