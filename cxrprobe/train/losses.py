"""Focal binary cross-entropy with logits (Lin et al. 2017), as the paper trains with it.

FL = -alpha_t (1 - p_t)^gamma log(p_t), with alpha_t = alpha for positives and 1 - alpha for
negatives; alpha 0.25 and gamma 2.0 are the paper's. ``mask`` zeroes the loss of held-out
findings' labels so they give no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
    mask: torch.Tensor | None = None, denominator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean focal loss over the unmasked entries of [batch, classes]; a slice of a batch shared
    among processes sums its entries over its ``denominator``, its share of the batch's count."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)  # the probability given to the true label
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * (1 - p_t) ** gamma * bce
    if mask is None:
        return loss.mean()
    weights = mask.to(loss.dtype).expand_as(loss)
    return (loss * weights).sum() / (weights.sum().clamp(min=1) if denominator is None else denominator)
