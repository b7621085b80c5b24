"""Pieces of the paper's adaptation: what is trainable, and the focal loss."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch

from cxrprobe.errors import InputError
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.models.unfreeze import total_count, trainable_count, unfreeze_top
from cxrprobe.train.losses import focal_bce_with_logits


def test_vit_b_32_with_three_blocks_and_the_head_trains_22_057_486_parameters():
    model = open_clip.create_model("ViT-B-32", pretrained=None)  # uninitialised: no download
    unfreeze_top(model.visual, 3)
    head = PaperHead(512)
    assert trainable_count(model.visual, head) == 22_057_486
    share = trainable_count(model.visual, head) / total_count(model.visual, head)
    assert round(100 * share, 2) == 24.99  # the paper's "24.99% of total"
    blocks = model.visual.transformer.resblocks
    assert not any(p.requires_grad for p in blocks[8].parameters())
    assert all(p.requires_grad for p in blocks[9].parameters())
    assert not model.visual.conv1.weight.requires_grad


@pytest.mark.parametrize("k", [-1, 13])
def test_unfreeze_outside_the_block_count_is_refused(k):
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with pytest.raises(InputError, match="between 0 and 12"):
        unfreeze_top(model.visual, k)


def test_focal_loss_matches_its_formula_and_masks_held_out_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = []
    for z, y in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = 1 / (1 + math.exp(-z))
        p_t = p if y == 1 else 1 - p
        a_t = 0.25 if y == 1 else 0.75
        expected.append(-a_t * (1 - p_t) ** 2 * math.log(p_t))
    assert focal_bce_with_logits(logits, targets).item() == pytest.approx(sum(expected) / 4, rel=1e-6)
    logits.requires_grad_(True)
    mask = torch.tensor([[1.0, 0.0]])  # second finding held out
    focal_bce_with_logits(logits, targets, mask=mask).backward()
    assert torch.all(logits.grad[:, 1] == 0) and torch.all(logits.grad[:, 0] != 0)
