"""Text prompts for the findings, and their embeddings.

A cache stores these so that every zero-shot experiment runs on a CPU without the model.
The default set holds the paper's prompts ("A chest X-ray showing {finding}" against the
negative "No finding"), a CheXzero-style negative per finding ("A chest X-ray showing no
{finding}"), and prompts for a normal study, so a "No Finding" score can be read from text
the right way round rather than by negating a finding's prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cxrprobe.labels import FINDINGS, NO_FINDING, PROMPT_NAMES

if TYPE_CHECKING:  # torch is imported where prompts are encoded: reading a cache (info) needs no torch
    import torch

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


def default_prompts() -> PromptSet:
    prompts: list[str] = []
    classes: list[str] = []
    polarity: list[str] = []

    def add(text: str, cls: str, pol: str) -> None:
        prompts.append(text)
        classes.append(cls)
        polarity.append(pol)

    for finding in FINDINGS:
        add(PAPER_TEMPLATE.format(PROMPT_NAMES[finding]), finding, "positive")
    for finding in FINDINGS:
        add(NEGATED_TEMPLATE.format(PROMPT_NAMES[finding]), finding, "negative")
    add(PAPER_NEGATIVE, GENERIC_NEGATIVE_CLASS, "negative")
    for text in NORMAL_PROMPTS:
        add(text, NO_FINDING, "positive")
    return PromptSet(tuple(prompts), tuple(classes), tuple(polarity))


def encode_prompts(model: torch.nn.Module, tokenizer, prompts: PromptSet, device: torch.device) -> np.ndarray:  # noqa: ANN001
    """Raw (not normalised) float32 text embeddings [n_prompts, embed_dim]."""
    import torch

    with torch.inference_mode():
        tokens = tokenizer(list(prompts.prompts)).to(device)
        return model.encode_text(tokens).float().cpu().numpy()
