"""Loading an encoder by name: ``xrv:NAME`` is a torchxrayvision classifier
(``models.encoders.xrv``), ``hf:FOLDER`` a Hugging Face transformers model
(``models.encoders.hf``), anything else an open_clip model (``models.encoders.openclip``:
open_clip names, bundled configs, ``hf-hub:`` and ``local-dir:``)."""

from __future__ import annotations

import torch

from cxrprobe.errors import ModelError
from cxrprobe.models.device import resolve_device
from cxrprobe.models.encoders.base import FEATURES, LoadedModel

__all__ = ["LoadedModel", "load_model"]


def load_model(name: str, pretrained: str, device: str | torch.device = "cpu", visual_only: bool = False,
               features: str | None = None) -> LoadedModel:
    """``name`` with weights from ``pretrained`` (a tag, a file or 'none'), in eval mode, on
    ``device`` (a torch.device, or text for resolve_device); ``visual_only`` leaves a text tower
    on the CPU, for work that only encodes images; ``features`` (projected or pooled; None: the
    encoder's own) which feature is embedded."""
    from cxrprobe.models.encoders.hf import is_hf, load_hf
    from cxrprobe.models.encoders.xrv import is_xrv, load_xrv

    if features is not None and features not in FEATURES:
        raise ModelError(f"--features must be one of {', '.join(FEATURES)}, got {features!r}")
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    if is_xrv(name):
        return load_xrv(name, pretrained, torch_device, features or "pooled")
    if is_hf(name):
        return load_hf(name, pretrained, torch_device, features)
    from cxrprobe.models.encoders.openclip import load_open_clip

    return load_open_clip(name, pretrained, torch_device, visual_only, features or "projected")
