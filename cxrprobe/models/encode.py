"""Image batches through the visual tower."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from cxrprobe.data.images import to_model_input
from cxrprobe.errors import InputError
from cxrprobe.models.loading import PRECISIONS, LoadedModel


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise InputError("fp16 needs a CUDA device; on the CPU use fp32 or bf16")


def encode_images(loaded: LoadedModel, grey: torch.Tensor, precision: str) -> np.ndarray:
    return encode_with_head(loaded, grey, precision)[0]


def encode_with_head(loaded: LoadedModel, grey: torch.Tensor, precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 [b, s, s] grey images -> (raw float32 embeddings [b, d], the adapted head's logits
    [b, 14] or None). Embeddings are not normalised.

    Weights stay fp32; fp16 and bf16 run under autocast, as open_clip's own evaluation does.
    """
    device = loaded.device
    autocast = (
        torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])
        if precision != "fp32" else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        x = to_model_input(grey.to(device, non_blocking=True), loaded.preprocessing, torch.float32)
        features = loaded.model.encode_image(x).float()
        logits = loaded.head(features).float().cpu().numpy() if loaded.head is not None else None
        return features.cpu().numpy(), logits
