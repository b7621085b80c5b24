"""The paper's multi-label MLP head (Dalsania, "Label-Efficient Chest X-ray Diagnosis via
Partial CLIP Adaptation"): Linear(d,512) LayerNorm GELU Dropout(0.3) Linear(512,256) LayerNorm
GELU Dropout(0.2) Linear(256,14), Kaiming-normal linear weights, zero biases."""

from __future__ import annotations

from torch import nn

from cxrprobe.labels import FINDINGS


class PaperHead(nn.Sequential):
    def __init__(self, in_dim: int = 512, n_classes: int = len(FINDINGS)) -> None:
        super().__init__(
            nn.Linear(in_dim, 512), nn.LayerNorm(512), nn.GELU(), nn.Dropout(0.3),
            nn.Linear(512, 256), nn.LayerNorm(256), nn.GELU(), nn.Dropout(0.2),
            nn.Linear(256, n_classes),
        )
        for module in self:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)
