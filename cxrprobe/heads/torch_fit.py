"""Training small torch heads with BCE on a support set, deterministically, their gradients
written out.

A few-shot grid trains 100 heads of a few hundred steps each, and a step of these heads is a
handful of small matrix products: autograd's graph and ``torch.optim``'s bookkeeping cost as
much as the arithmetic. The steps here call the very kernels autograd and the fused AdamW
call (``native_layer_norm_backward``, ``gelu_backward``, ``_fused_adamw_``), in the same
order on the same random draws, so they give the same numbers (tests compare them with
autograd) at about half the cost.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxrprobe.models.mlp_head import PaperHead


class FusedAdamW:
    """``torch.optim.AdamW(params, fused=True)``: the same kernel on the same state, without
    the Optimizer wrapper, which costs ~0.12 ms a step on this CPU (a third of a paper-mlp
    step, most of a linear-probe step). ``grads`` are read at every step, whatever wrote them."""

    def __init__(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = [p.detach() for p in params]  # the same storage: updated in place
        self.grads = grads
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]  # as torch keeps them, fused
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps

    def step(self) -> None:
        torch._foreach_add_(self.steps, 1)
        torch._fused_adamw_(
            self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, [], self.steps, amsgrad=False, lr=self.lr,
            beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps, maximize=False,
        )


def _flat(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One contiguous copy of ``tensors`` and views of it shaped like each: one optimiser
    kernel over every parameter instead of one per tensor (AdamW is elementwise: same numbers)."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    views, offset = [], 0
    for t in tensors:
        views.append(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return flat, views


def _dropout_noise(h: torch.Tensor, p: float) -> torch.Tensor:
    """What ``F.dropout(h, p, training=True)`` multiplies by on a CPU: the same draw from the
    global generator, so the masks are autograd's masks."""
    return torch.empty_like(h).bernoulli_(1 - p).div_(1 - p)


def _block_forward(x: torch.Tensor, params: tuple[torch.Tensor, ...], norm: nn.LayerNorm, p: float) -> tuple:
    """Linear, LayerNorm, GELU, dropout in training mode: the output and what the backward needs."""
    weight, bias, gain, shift = params
    a = torch.addmm(bias, x, weight.t())
    n, mean, rstd = torch.native_layer_norm(a, list(norm.normalized_shape), gain, shift, norm.eps)
    h = torch.ops.aten.gelu(n)
    noise = _dropout_noise(h, p)
    return h * noise, (x, a, n, mean, rstd, noise)


def _block_backward(upstream: torch.Tensor, saved: tuple, params: tuple[torch.Tensor, ...],
                    grads: tuple[torch.Tensor, ...], norm: nn.LayerNorm) -> torch.Tensor:
    """The block's parameter gradients into ``grads``, from d loss / d output; returns
    d loss / d (linear output), which times the weight is the gradient of the block's input."""
    x, a, n, mean, rstd, noise = saved
    _, _, gain, shift = params
    d_weight, d_bias, d_gain, d_shift = grads
    e = torch.ops.aten.gelu_backward(upstream * noise, n)
    e, gain_grad, shift_grad = torch.ops.aten.native_layer_norm_backward(
        e, a, list(norm.normalized_shape), mean, rstd, gain, shift, [True, True, True])
    d_gain.copy_(gain_grad)
    d_shift.copy_(shift_grad)
    torch.mm(e.t(), x, out=d_weight)
    torch.sum(e, 0, out=d_bias)
    return e


def fit_paper_head(
    head: PaperHead, X: np.ndarray, Y: np.ndarray, epochs: int, batch_size: int, lr: float,
    weight_decay: float, seed: int,
) -> PaperHead:
    """AdamW on plain BCE-with-logits (mean) for a fixed number of epochs, mini-batches
    shuffled from ``seed``, dropout from torch's global generator (fork it around the call).

    The length is fixed in advance: nothing here looks at validation or test data.
    """
    _, norm1, _, drop1, _, norm2, _, drop2, _ = head
    generator = torch.Generator().manual_seed(int(seed))
    inputs = torch.as_tensor(X, dtype=torch.float32)
    targets = torch.as_tensor(Y, dtype=torch.float32)
    flat, values = _flat(list(head.parameters()))
    flat_grad, grads = _flat([torch.zeros_like(p) for p in head.parameters()])
    block1, block2, (W3, b3) = tuple(values[:4]), tuple(values[4:8]), values[8:]
    grads1, grads2, (dW3, db3) = tuple(grads[:4]), tuple(grads[4:8]), grads[8:]
    optimiser = FusedAdamW([flat], [flat_grad], lr=lr, weight_decay=weight_decay)
    with torch.no_grad():
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(inputs), batch_size):
                batch = order[start:start + batch_size]
                d1, saved1 = _block_forward(inputs[batch], block1, norm1, drop1.p)
                d2, saved2 = _block_forward(d1, block2, norm2, drop2.p)
                logits = torch.addmm(b3, d2, W3.t())
                # d mean BCE / d logits = (sigmoid - target) / numel
                residual = (torch.sigmoid(logits) - targets[batch]) / logits.numel()
                torch.mm(residual.t(), d2, out=dW3)
                torch.sum(residual, 0, out=db3)
                e2 = _block_backward(residual @ W3, saved2, block2, grads2, norm2)
                _block_backward(e2 @ block2[0], saved1, block1, grads1, norm1)
                optimiser.step()
        nn.utils.vector_to_parameters(flat, head.parameters())
    head.eval()
    return head


def fit_linear_bce(layer: nn.Linear, X: np.ndarray, Y: np.ndarray, epochs: int, lr: float, weight_decay: float) -> nn.Linear:
    """Full-batch AdamW on BCE-with-logits (mean over rows and findings) for a linear layer, its
    gradient written out (a step is ~10 small ops)."""
    inputs = torch.as_tensor(X, dtype=torch.float32)
    targets = torch.as_tensor(Y, dtype=torch.float32)
    weight, bias = layer.weight, layer.bias
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    optimiser = FusedAdamW([weight, bias], [weight.grad, bias.grad], lr=lr, weight_decay=weight_decay)
    scale = 1.0 / max(targets.numel(), 1)
    with torch.no_grad():
        for _ in range(epochs):
            residual = (torch.sigmoid(torch.addmm(bias, inputs, weight.T)) - targets) * scale
            torch.mm(residual.T, inputs, out=weight.grad)
            torch.sum(residual, 0, out=bias.grad)
            optimiser.step()
    layer.eval()
    return layer


SCORE_ROWS = 1024  # a block's activations stay in cache: ~1.4x faster than one pass over 25k rows


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
    """``scores(head, X)`` for the paper's head in eval mode (a test compares the two) at ~0.75x
    the cost on a memory-mapped X (545 -> 406 ms for 25,596 rows here): no copy of X, the blocks' activations in two buffers reused, LayerNorm and GELU in
    place (dropout is the identity). Scoring 25,596 rows is ~20 GFLOP, the grid's costliest step."""
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
            h = torch.ops.aten.gelu_(F.layer_norm(h, norm1.normalized_shape, norm1.weight, norm1.bias, norm1.eps))
            h = torch.mm(h, W2, out=second[:len(x)]).add_(linear2.bias)
            h = torch.ops.aten.gelu_(F.layer_norm(h, norm2.normalized_shape, norm2.weight, norm2.bias, norm2.eps))
            torch.addmm(linear3.bias, h, W3, out=out[start:start + len(x)])
        return out.numpy()
