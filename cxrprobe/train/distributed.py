"""adapt on several processes (torchrun): one DistributedDataParallel replica a process over
what trains (the unfrozen blocks and the head), gloo on the CPU, NCCL on GPUs.

The recipe does not change with the number of processes: each batch of ``--batch-size``
images (the one-process run's batches, in its order) is cut into one contiguous slice a rank,
and a slice's loss is divided by the whole batch's count of known labels, so the gradient DDP
averages is the one-process batch's. Validation is cut the same way and its scores gathered
in row order, so every rank takes the same decisions (learning rate, early stopping). A
process alone is a group of one, where each of these is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from cxrprobe.errors import InputError
from cxrprobe.launch import Place

# rank 0 decodes the pixel caches while the others wait at a barrier: hours, for a large
# dataset on few cores
PATIENCE = datetime.timedelta(hours=6)


class Group:
    """This process's part in the launch, and the few collectives adapt needs."""

    def __init__(self, place: Place, device: torch.device) -> None:
        self.place, self.device = place, device

    @property
    def size(self) -> int:
        return self.place.size

    @property
    def first(self) -> bool:
        return self.place.first

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` as DDP replicas whose gradients are averaged across the group."""
        if self.size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def loss_denominator(self, weights: torch.Tensor) -> torch.Tensor | None:
        """What a slice's summed loss is divided by so that DDP's mean of the ranks' losses is
        the whole batch's mean: the batch's count of known labels over the ranks (None alone:
        the slice is the batch)."""
        if self.size == 1:
            return None
        total = weights.sum().detach()
        dist.all_reduce(total)
        return total.clamp(min=1) / self.size

    def total(self, value: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every rank's ``rows`` (its contiguous slice of a split), in rank order: the split's."""
        if self.size == 1:
            return rows
        counts = [torch.zeros((), dtype=torch.int64, device=self.device) for _ in range(self.size)]
        dist.all_gather(counts, torch.tensor(len(rows), device=self.device))
        sizes = [int(n) for n in counts]
        mine = torch.from_numpy(np.ascontiguousarray(rows)).to(self.device)
        padded = torch.zeros((max(sizes), *rows.shape[1:]), dtype=mine.dtype, device=self.device)
        padded[:len(rows)] = mine
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return np.concatenate([part[:n].cpu().numpy() for part, n in zip(parts, sizes)])

    def seed(self, seed: int) -> int:
        """This rank's seed for the random draws of training (dropout): rank 0 draws as one
        process does, each other rank its own."""
        if self.place.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.place.rank]).generate_state(1)[0])


@contextlib.contextmanager
def joined(place: Place, device: torch.device) -> Iterator[Group]:
    """The launch's process group for the block, torchrun's rendezvous (MASTER_ADDR, MASTER_PORT)."""
    if place.size == 1:
        yield Group(place, device)
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise InputError(f"adapt on {place.size} processes needs torchrun's rendezvous (MASTER_ADDR and MASTER_PORT "
                         "are unset): launch it with torchrun, under srun too (docs/scale-out.md)")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=place.rank, world_size=place.size,
                            timeout=PATIENCE)
    try:
        yield Group(place, device)
    finally:
        dist.destroy_process_group()
