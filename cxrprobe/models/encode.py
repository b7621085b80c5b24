"""Image batches through the visual tower."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from cxrprobe.data.images import to_model_input
from cxrprobe.models.device import PRECISIONS
from cxrprobe.models.loading import LoadedModel


def encode_images(loaded: LoadedModel, grey: torch.Tensor, precision: str) -> np.ndarray:
    return encode_with_head(loaded, grey, precision)[0]


def encode_with_head(loaded: LoadedModel, grey: torch.Tensor, precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 [b, s, s] grey images -> (raw float32 embeddings [b, d], the adapted head's logits
    [b, 14] or None). Embeddings are not normalised.

    Weights stay fp32; fp16 and bf16 run the image tower under autocast, as open_clip's own
    evaluation does. The adapted head runs outside it, in fp32 on the fp32 features, as it ran
    when its validation AUC chose it.
    """
    device = loaded.device
    autocast = (
        torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])
        if precision != "fp32" else contextlib.nullcontext()
    )
    with torch.inference_mode():
        x = to_model_input(grey.to(device, non_blocking=True), loaded.preprocessing, torch.float32)
        with autocast:
            features = loaded.model.encode_image(x)
        features = features.float()
        logits = loaded.head(features).cpu().numpy() if loaded.head is not None else None
        return features.cpu().numpy(), logits
