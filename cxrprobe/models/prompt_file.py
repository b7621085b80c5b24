"""Reading a user's prompts and encoding them with the model a cache was made with.

The file is JSON, one entry per finding to override, each with lists of positive and
negative prompts, averaged per side (prompt ensembling):

    {"Pneumonia": {"positive": ["pneumonia", "a chest X-ray with pneumonia"],
                   "negative": ["no pneumonia"]}}

Findings the file leaves out keep the cache's own prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cxrprobe.errors import CacheError, InputError
from cxrprobe.labels import FINDINGS
from cxrprobe.models.loading import load_model
from cxrprobe.models.text import PromptSet


def read_prompt_file(path: Path, known_classes: tuple[str, ...] = FINDINGS) -> PromptSet:
    """The file's prompts; every finding it names must be one of ``known_classes`` (the cache's)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompts file {path} does not exist")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or not spec:
        raise InputError(f"{path} must hold an object mapping findings to their prompts")
    prompts, classes, polarity = [], [], []
    for finding, sides in spec.items():
        if finding not in known_classes:
            raise InputError(f"{path}: unknown finding {finding!r}; expected one of {', '.join(known_classes)}")
        for side in ("positive", "negative"):
            texts = sides.get(side) if isinstance(sides, dict) else None
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise InputError(f"{path}: {finding} needs a non-empty list of {side} prompt strings")
            prompts += texts
            classes += [finding] * len(texts)
            polarity += [side] * len(texts)
    return PromptSet(tuple(prompts), tuple(classes), tuple(polarity))


def encode_with_weights(prompts: PromptSet, name: str, pretrained: str, expected_sha256: str | None) -> np.ndarray:
    """Embed ``prompts`` with model ``name``/``pretrained``, on the CPU, refused unless its
    weights hash to ``expected_sha256`` (the weights that embedded the images they will meet)."""
    try:
        loaded = load_model(name, pretrained, "cpu")
    except InputError as exc:
        raise CacheError(f"cannot rebuild the cache's model {name}/{pretrained} to encode new prompts: {exc}") from None
    if loaded.weights_sha256 != expected_sha256:
        raise CacheError(
            f"the weights now found for {name}/{pretrained} are not the ones the cache was embedded with "
            "(their sha256 differs), so new prompts would not match its image embeddings"
        )
    if not loaded.has_text:
        raise CacheError(f"{name} has no text tower: it encodes no prompts")
    return loaded.encode_texts(prompts.prompts)


def merge_prompts(base: PromptSet, base_embeddings: np.ndarray, extra: PromptSet, extra_embeddings: np.ndarray):  # noqa: ANN201
    """The cache's prompts with every finding in ``extra`` replaced by the new ones."""
    replaced = set(extra.classes)
    keep = [i for i, c in enumerate(base.classes) if c not in replaced]
    merged = PromptSet(
        tuple(base.prompts[i] for i in keep) + extra.prompts,
        tuple(base.classes[i] for i in keep) + extra.classes,
        tuple(base.polarity[i] for i in keep) + extra.polarity,
    )
    return merged, np.concatenate([base_embeddings[keep], extra_embeddings])
