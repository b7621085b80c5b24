"""Training small torch heads with BCE on a support set, deterministically, with public torch.

``paper-mlp`` trains by autograd and ``torch.optim.AdamW`` (fused where the device has the
kernel). The linear probe's gradient is written out instead, in public ops: for a linear
layer z = x W^T + b under the mean BCE over n rows and k outputs,
dL/dz = (sigmoid(z) - y) / (n k), so dL/dW = (dL/dz)^T x and dL/db = the column sums of
dL/dz: three small products a step, where autograd's graph would cost as much again (a test
compares the two).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxrprobe.models.mlp_head import PaperHead


def adamw(params: list[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """torch's AdamW, fused where the parameters' device has the kernel (CPU and CUDA do)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # a device without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def fit_paper_head(
    head: PaperHead, X: np.ndarray, Y: np.ndarray, epochs: int, batch_size: int, lr: float,
    weight_decay: float, seed: int, known: np.ndarray | None = None,
) -> PaperHead:
    """AdamW on plain BCE-with-logits (mean) for a fixed number of epochs, mini-batches
    shuffled from ``seed``, dropout from torch's global generator (fork it around the call).
    With ``known``, the mean is over the batch's known labels.

    The length is fixed in advance: nothing here looks at validation or test data.
    """
    generator = torch.Generator().manual_seed(int(seed))
    inputs = torch.as_tensor(X, dtype=torch.float32)
    targets = torch.as_tensor(Y, dtype=torch.float32)
    mask = None if known is None else torch.as_tensor(known, dtype=torch.float32)
    optimiser = adamw(list(head.parameters()), lr, weight_decay)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            batch = order[start:start + batch_size]
            optimiser.zero_grad()
            if mask is None:
                loss = F.binary_cross_entropy_with_logits(head(inputs[batch]), targets[batch])
            else:
                weight = mask[batch]
                loss = F.binary_cross_entropy_with_logits(head(inputs[batch]), targets[batch], weight=weight,
                                                          reduction="sum") / weight.sum().clamp(min=1.0)
            loss.backward()
            optimiser.step()
    head.eval()
    return head


def fit_linear_bce(layer: nn.Linear, X: np.ndarray, Y: np.ndarray, epochs: int, lr: float, weight_decay: float,
                   known: np.ndarray | None = None) -> nn.Linear:
    """Full-batch AdamW on BCE-with-logits (mean over rows and findings, or over the ``known``
    labels) for a linear layer, its gradient written out (see the module docstring)."""
    inputs = torch.as_tensor(X, dtype=torch.float32)
    targets = torch.as_tensor(Y, dtype=torch.float32)
    mask = None if known is None else torch.as_tensor(known, dtype=torch.float32)
    weight, bias = layer.weight, layer.bias
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    optimiser = adamw([weight, bias], lr, weight_decay)  # it reads .grad, which the loop writes
    scale = 1.0 / max(targets.numel() if mask is None else float(mask.sum()), 1)
    with torch.no_grad():
        for _ in range(epochs):
            residual = (torch.sigmoid(torch.addmm(bias, inputs, weight.T)) - targets) * scale
            if mask is not None:
                residual *= mask
            torch.mm(residual.T, inputs, out=weight.grad)
            torch.sum(residual, 0, out=bias.grad)
            optimiser.step()
    layer.eval()
    return layer


SCORE_ROWS = 1024  # a block's activations stay in cache (one pass over 25k rows: benchmarks/choices.py)


def scores(module: nn.Module, X: np.ndarray) -> np.ndarray:
    """The module's outputs for every row of X, in row blocks (rows are independent: eval mode)."""
    X = np.asarray(X)
    with torch.inference_mode():
        blocks = [
            module(torch.tensor(X[start:start + SCORE_ROWS], dtype=torch.float32))  # a copy: X may be a read-only memmap
            for start in range(0, max(len(X), 1), SCORE_ROWS)  # one (empty) block for no rows
        ]
        return torch.cat(blocks).numpy()


def paper_head_scores(head: PaperHead, X: np.ndarray) -> np.ndarray:
    """``scores(head, X)`` for the paper's head in eval mode (a test compares the two), cheaper on
    a memory-mapped X: no copy of X, the linear layers' outputs in two buffers reused (dropout
    is the identity). Scoring the test split is the grid's costliest step."""
    linear1, norm1, _, _, linear2, norm2, _, _, linear3 = head
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # X may be a read-only memory map; it is only read
        inputs = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        W1, W2, W3 = (layer.weight.T.contiguous() for layer in (linear1, linear2, linear3))
        out = torch.empty(len(X), W3.shape[1])
        first, second = torch.empty(SCORE_ROWS, W1.shape[1]), torch.empty(SCORE_ROWS, W2.shape[1])
        for start in range(0, len(X), SCORE_ROWS):
            x = inputs[start:start + SCORE_ROWS]
            h = torch.mm(x, W1, out=first[:len(x)]).add_(linear1.bias)
            h = F.gelu(F.layer_norm(h, norm1.normalized_shape, norm1.weight, norm1.bias, norm1.eps))
            h = torch.mm(h, W2, out=second[:len(x)]).add_(linear2.bias)
            h = F.gelu(F.layer_norm(h, norm2.normalized_shape, norm2.weight, norm2.bias, norm2.eps))
            torch.addmm(linear3.bias, h, W3, out=out[start:start + len(x)])
        return out.numpy()
