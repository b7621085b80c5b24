"""What every encoder back-end hands the rest of cxrprobe: a ready model, how to turn model
input into embeddings (and prompts into text embeddings, where it has a text tower), and
everything a cache records about it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cxrprobe.data.images import Preprocessing
from cxrprobe.models.text import OPENAI_LOGIT_SCALE

SOFTMAX, SIGMOID = "softmax", "sigmoid"  # how a text tower's cosines become scores: CLIP's, SigLIP's
FEATURES = ("projected", "pooled")
NO_WEIGHTS = "none"  # --pretrained none: random weights, drawn from RANDOM_INIT_SEED
RANDOM_INIT_SEED = 0  # the same random model in every process: a resumed embed continues with its weights


@dataclass
class LoadedModel:
    """A ready encoder and everything a cache records about it.

    ``encode_image`` maps normalised model input [b, channels, s, s] to embeddings [b,
    embed_dim]; ``encode_texts`` maps prompts to raw text embeddings, None for an image-only
    encoder. ``features`` names which feature ``encode_image`` returns: ``projected`` (a CLIP
    model's joint image-text space, where text heads work) or ``pooled`` (before any
    projection: the CLIP paper's linear-probe features, or an image-only model's)."""

    model: torch.nn.Module
    name: str
    pretrained: str
    weights_sha256: str
    preprocessing: Preprocessing
    embed_dim: int
    device: torch.device
    encode_image: Callable[[torch.Tensor], torch.Tensor]
    encode_texts: Callable[[Sequence[str]], np.ndarray] | None = None
    backend: str = "open_clip"
    features: str = "projected"
    head: torch.nn.Module | None = None  # an adapted run's MLP head, scored beside the embeddings
    logit_scale: float = OPENAI_LOGIT_SCALE  # exp(logit_scale): the temperature of image-text cosines
    logit_bias: float = 0.0  # SigLIP's; 0 for CLIP models
    text_scoring: str = SOFTMAX
    preset: str | None = None  # the encoder preset it was loaded as (models.encoders.presets)
    trained_on: tuple[str, ...] = ()  # the datasets its weights were trained on, where a preset documents them

    @property
    def has_text(self) -> bool:
        return self.encode_texts is not None

    def reading_with(self, intensity: str, dicom_window: str) -> LoadedModel:
        """This model with 16-bit images and DICOM files turned to 8 bits as these policies say
        (``Preprocessing``)."""
        return replace(self, preprocessing=replace(self.preprocessing, intensity=intensity, dicom_window=dicom_window))

    def record(self) -> dict:
        """What a cache records of the encoder beside its name, weights and preprocessing."""
        return {"backend": self.backend, "features": self.features, "text": self.has_text,
                "text_scoring": self.text_scoring if self.has_text else None,
                **({"preset": self.preset, "trained_on": list(self.trained_on)} if self.preset else {})}


def cached_snapshot(repo: str, filename: str) -> Path | None:
    """The folder of ``repo``'s snapshot in the local Hugging Face cache that holds
    ``filename``, found without touching the network; None where there is none (or ``repo``
    is no hub name at all)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id=repo, filename=filename)
    except HFValidationError:
        return None
    return Path(found).parent if isinstance(found, str) else None
