"""One epoch of adaptation and one validation pass, on the CPU or a GPU, at any precision.

Batches arrive as uint8 grey images and are normalised on the training device. The image
tower runs under autocast (bf16, or fp16 with gradient scaling) unless the run is fp32; the
paper's head and the focal loss always run in fp32, in training and validation alike, as the
head runs when ``embed --checkpoint`` stores its logits. The loss is summed on the device and
read once an epoch: no host synchronisation per step.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from cxrprobe.data.images import to_model_input
from cxrprobe.launch import Place
from cxrprobe.metrics.auc import per_class_auc
from cxrprobe.models.device import PRECISIONS
from cxrprobe.models.encode import encode_with_head
from cxrprobe.models.loading import LoadedModel
from cxrprobe.seeding import seeded_on
from cxrprobe.train.distributed import Group
from cxrprobe.train.losses import focal_bce_with_logits

CLIP_NORM = 1.0


class TrainStep:
    """zero_grad, backward, clipping at norm 1.0 of the true gradients, step; with fp16, the
    loss is scaled (torch.amp.GradScaler) and the gradients unscaled before clipping, and a step
    whose gradients overflowed is skipped. The scaler's state is part of a checkpoint."""

    def __init__(self, optimiser: torch.optim.Optimizer, precision: str, device: torch.device) -> None:
        self.optimiser = optimiser
        self.params = [p for group in optimiser.param_groups for p in group["params"]]
        self.precision = precision
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=PRECISIONS[self.precision])

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, CLIP_NORM)
            self.optimiser.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimiser)
        torch.nn.utils.clip_grad_norm_(self.params, CLIP_NORM)
        self.scaler.step(self.optimiser)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def make_optimiser(visual: torch.nn.Module, head: torch.nn.Module, lr_encoder: float, lr_head: float,
                   weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """The paper's AdamW: the unfrozen encoder at ``lr_encoder``, the head at ``lr_head``; fused
    on CUDA (one kernel for every parameter)."""
    encoder = [p for p in visual.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": encoder, "lr": lr_encoder}, {"params": list(head.parameters()), "lr": lr_head}],
        weight_decay=weight_decay, fused=device.type == "cuda",
    )


class Trainable(torch.nn.Module):
    """The image tower under the step's autocast, then the head in fp32: what one training
    step runs forward, and what DDP wraps on several processes."""

    def __init__(self, visual: torch.nn.Module, head: torch.nn.Module, step: TrainStep) -> None:
        super().__init__()
        self.visual, self.head, self.autocast = visual, head, step.autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            features = self.visual(x)
        return self.head(features.float())


def train_epoch(loaded: LoadedModel, forward: torch.nn.Module, loader: torch.utils.data.DataLoader,
                step: TrainStep, keep: torch.Tensor, epoch: int, seed: int, group: Group | None = None) -> float:
    """One pass over ``loader``'s (epoch, row) order, ``forward`` a ``Trainable`` (or its DDP
    replica, ``group`` its process group); returns the mean focal loss per image."""
    group = group or Group(Place(), loaded.device)
    device = loaded.device
    loader.batch_sampler.set_epoch(epoch)
    forward.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    with seeded_on(device, group.seed(seed)):  # dropout draws: the same on a resumed run
        for (grey, y), images in zip(loader, loader.batch_sampler.batch_sizes()):
            x = to_model_input(grey.to(device, non_blocking=True), loaded.preprocessing, torch.float32)
            y = y.to(device, non_blocking=True)
            weights = keep[None] * ~torch.isnan(y)  # an unknown label gives no gradient, as a held-out finding's
            loss = focal_bce_with_logits(forward(x), torch.nan_to_num(y), mask=weights,
                                         denominator=group.loss_denominator(weights))
            step(loss)
            total += loss.detach().double() * (images / group.size)  # the ranks' shares sum to the batch's loss
    return float(group.total(total)) / max(len(loader.dataset), 1)


def validation_scores(loaded: LoadedModel, head: torch.nn.Module, loader: torch.utils.data.DataLoader,
                      precision: str) -> tuple[np.ndarray, np.ndarray]:
    """The head's logits over ``loader``'s images, computed exactly as embed --checkpoint
    stores them, and their labels (NaN: unknown)."""
    loaded.model.visual.eval()
    head.eval()
    adapted = dataclasses.replace(loaded, head=head)
    scores, labels = [], []
    for grey, y in loader:
        scores.append(encode_with_head(adapted, grey, precision)[1])
        labels.append(y.numpy())
    return np.concatenate(scores), np.concatenate(labels)


def validation_aucs(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-finding AUC over the images whose label is known."""
    known = ~np.isnan(labels)
    return per_class_auc(np.nan_to_num(labels).astype(np.uint8), scores, known)
