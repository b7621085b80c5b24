"""Image batches through the visual tower."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from cxrprobe.data.images import to_model_input
from cxrprobe.models.device import PRECISIONS
from cxrprobe.models.loading import LoadedModel


@dataclass(frozen=True)
class Encoded:
    """A batch's results on their way to host memory: on CUDA, copied into pinned memory
    behind an event, so the next batch can be launched before this one is read."""

    features: torch.Tensor
    logits: torch.Tensor | None
    copied: torch.cuda.Event | None = None

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(raw float32 embeddings [b, d], the adapted head's logits [b, 14] or None)."""
        if self.copied is not None:
            self.copied.synchronize()
        return self.features.numpy(), None if self.logits is None else self.logits.numpy()


def encode_images(loaded: LoadedModel, grey: torch.Tensor, precision: str) -> np.ndarray:
    return encode_with_head(loaded, grey, precision)[0]


def encode_with_head(loaded: LoadedModel, grey: torch.Tensor, precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 [b, s, s] grey images -> (raw float32 embeddings [b, d], the adapted head's logits
    [b, 14] or None). Embeddings are not normalised."""
    return launch_encode(loaded, grey, precision).result()


def launch_encode(loaded: LoadedModel, grey: torch.Tensor, precision: str) -> Encoded:
    """Start encoding a batch; read it with ``.result()``.

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
            features = loaded.encode_image(x)
        features = features.float()
        logits = loaded.head(features) if loaded.head is not None else None
        if device.type != "cuda":
            return Encoded(features, logits)
        host = [_pinned_copy(t) if t is not None else None for t in (features, logits)]
        copied = torch.cuda.Event()
        copied.record()
        return Encoded(host[0], host[1], copied)


def _pinned_copy(tensor: torch.Tensor) -> torch.Tensor:
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host
