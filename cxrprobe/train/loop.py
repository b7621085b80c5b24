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
from cxrprobe.metrics.auc import per_class_auc
from cxrprobe.models.device import PRECISIONS
from cxrprobe.models.encode import encode_with_head
from cxrprobe.models.loading import LoadedModel
from cxrprobe.seeding import seeded_on
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


def train_epoch(loaded: LoadedModel, head: torch.nn.Module, loader: torch.utils.data.DataLoader, step: TrainStep,
                keep: torch.Tensor, epoch: int, seed: int) -> float:
    """One pass over ``loader``'s (epoch, row) order; returns the mean focal loss per image."""
    device = loaded.device
    loader.sampler.set_epoch(epoch)
    loaded.model.visual.train()
    head.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with seeded_on(device, seed):  # dropout draws: the same on a resumed run
        for grey, y in loader:
            x = to_model_input(grey.to(device, non_blocking=True), loaded.preprocessing, torch.float32)
            with step.autocast():
                features = loaded.model.encode_image(x)
            y = y.to(device, non_blocking=True)
            known = ~torch.isnan(y)  # an unknown label gives no gradient, as a held-out finding's
            loss = focal_bce_with_logits(head(features.float()), torch.nan_to_num(y), mask=keep[None] * known)
            step(loss)
            total += loss.detach().double() * len(grey)
            count += len(grey)
    return float(total) / max(count, 1)


def validate(loaded: LoadedModel, head: torch.nn.Module, loader: torch.utils.data.DataLoader,
             precision: str) -> np.ndarray:
    """Per-finding AUC of the head's logits, computed exactly as embed --checkpoint stores them,
    over the images whose label is known (NaN: unknown)."""
    loaded.model.visual.eval()
    head.eval()
    adapted = dataclasses.replace(loaded, head=head)
    scores, labels = [], []
    for grey, y in loader:
        scores.append(encode_with_head(adapted, grey, precision)[1])
        labels.append(y.numpy())
    labels = np.concatenate(labels)
    known = ~np.isnan(labels)
    return per_class_auc(np.nan_to_num(labels).astype(np.uint8), np.concatenate(scores), known)
