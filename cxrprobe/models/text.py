"""Text prompts for the findings, and their embeddings.

A cache stores these so that every zero-shot experiment runs on a CPU without the model.
The default set holds the paper's prompts ("A chest X-ray showing {finding}" against the
negative "No finding"), a CheXzero-style negative per finding ("A chest X-ray showing no
{finding}"), and prompts for a normal study, so a "No Finding" score can be read from text
the right way round rather than by negating a finding's prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrprobe.labels import FINDINGS, NIH_LABELS, NO_FINDING, LabelSet

PAPER_TEMPLATE = "A chest X-ray showing {}"
PAPER_NEGATIVE = "No finding"
NEGATED_TEMPLATE = "A chest X-ray showing no {}"
NORMAL_PROMPTS = ("A normal chest X-ray", "A chest X-ray with no findings")
GENERIC_NEGATIVE_CLASS = "negative"
POLARITIES = ("positive", "negative")


@dataclass(frozen=True)
class PromptSet:
    """Parallel lists: each prompt, the class it speaks of, and whether it asserts or denies it.

    ``classes`` holds a finding name, ``"No Finding"``, or ``"negative"`` for a generic
    negative that belongs to no finding (the paper's "No finding").
    """

    prompts: tuple[str, ...]
    classes: tuple[str, ...]
    polarity: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.prompts) == len(self.classes) == len(self.polarity)):
            raise ValueError("prompts, classes and polarity must have the same length")
        bad = set(self.polarity) - set(POLARITIES)
        if bad:
            raise ValueError(f"polarity must be positive or negative, got {sorted(bad)}")


# exp(logit_scale) of OpenAI's CLIP models: what caches that do not record their model's read as
OPENAI_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class TextPrompts:
    """A cache's prompts with their embeddings [p, d], its model's logit scale (and bias, which
    SigLIP models have: the temperature its image-text cosines were trained at), and the
    findings of the label columns in their order (prompts may be stored in any order)."""

    prompts: PromptSet
    embeddings: np.ndarray
    logit_scale: float = OPENAI_LOGIT_SCALE
    logit_bias: float = 0.0
    findings: tuple[str, ...] = FINDINGS  # the label columns, in order: what a text head scores

    def embedding_of(self, cls: str, polarity: str, text: str | None = None, unit: bool = True) -> np.ndarray:
        """The ensemble embedding of the prompts of ``cls`` with ``polarity`` (or the one
        ``text``): each prompt L2-normalised, averaged, normalised again, as CLIP and CheXzero
        build their classifiers. With ``unit`` False, that direction at the prompts' mean raw
        norm (what CLAP starts its prototypes from)."""
        rows = [
            i for i, (c, p, t) in enumerate(zip(self.prompts.classes, self.prompts.polarity, self.prompts.prompts))
            if c == cls and p == polarity and (text is None or t == text)
        ]
        if not rows:
            raise ValueError(f"the cache has no {polarity} prompt for {cls!r}")
        raw = np.asarray(self.embeddings[rows], dtype=np.float64)
        norms = np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
        mean = (raw / norms).mean(axis=0)
        direction = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return direction if unit else direction * float(norms.mean())


def default_prompts(label_set: LabelSet = NIH_LABELS) -> PromptSet:
    """The default prompts of ``label_set``'s classes, its prompt names in the templates."""
    prompts: list[str] = []
    classes: list[str] = []
    polarity: list[str] = []

    def add(text: str, cls: str, pol: str) -> None:
        prompts.append(text)
        classes.append(cls)
        polarity.append(pol)

    named = list(zip(label_set.classes, label_set.prompt_names))
    for finding, name in named:
        add(PAPER_TEMPLATE.format(name), finding, "positive")
    for finding, name in named:
        add(NEGATED_TEMPLATE.format(name), finding, "negative")
    add(PAPER_NEGATIVE, GENERIC_NEGATIVE_CLASS, "negative")
    for text in NORMAL_PROMPTS:
        add(text, NO_FINDING, "positive")
    return PromptSet(tuple(prompts), tuple(classes), tuple(polarity))
