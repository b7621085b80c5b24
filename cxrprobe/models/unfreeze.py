"""Partial unfreezing of an open_clip ViT: the top K transformer blocks plus ln_post and proj.

With the paper's head on ViT-B-32 and K = 3 this trains 22,057,486 parameters:
3 x 7,087,872 (blocks) + 1,536 (ln_post) + 393,216 (proj) + 399,118 (head).
"""

from __future__ import annotations

import torch
from torch import nn

from cxrprobe.errors import InputError


def visual_blocks(visual: nn.Module) -> nn.ModuleList:
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise InputError(f"{type(visual).__name__} has no transformer blocks to unfreeze (only open_clip ViTs do)")
    return blocks


def unfreeze_top(visual: nn.Module, k: int) -> None:
    """Freeze the whole visual tower, then make the top ``k`` blocks, ln_post and proj trainable."""
    blocks = visual_blocks(visual)
    if not 0 <= k <= len(blocks):
        raise InputError(f"--unfreeze must be between 0 and {len(blocks)} (the model's blocks), got {k}")
    for parameter in visual.parameters():
        parameter.requires_grad_(False)
    trainable: list[nn.Module | nn.Parameter] = list(blocks[len(blocks) - k:]) if k else []
    for name in ("ln_post",):
        if getattr(visual, name, None) is not None:
            trainable.append(getattr(visual, name))
    for item in trainable:
        for parameter in item.parameters():
            parameter.requires_grad_(True)
    proj = getattr(visual, "proj", None)
    if isinstance(proj, nn.Parameter):
        proj.requires_grad_(True)


def trainable_count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def total_count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters ``unfreeze_top`` made trainable, by name: what adaptation changes, and all
    a checkpoint needs beside the base weights (a quarter of ViT-B-32's tower at K = 3)."""
    return {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put a checkpoint's tensors into ``module`` over its base weights. Every name must be one
    of the module's, every shape must fit (RuntimeError, KeyError otherwise); a full state dict,
    as older checkpoints hold, loads too."""
    own = module.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise KeyError(f"unexpected tensor {unknown[0]!r}")
    module.load_state_dict(state, strict=False)
