"""Seeded torch randomness that leaves every other generator as it was.

``torch.manual_seed`` seeds the CPU generator *and every CUDA device's*, while
``torch.random.fork_rng(devices=[])`` restores only the CPU one: code that seeds inside it
silently re-seeds the GPUs (an image's augmentation seed would then decide the next dropout
masks). These helpers seed exactly the generators they fork.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def seeded_cpu(seed: int) -> Iterator[None]:
    """Within: the CPU generator seeded with ``seed``; after: as it was. CUDA is not touched."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


@contextlib.contextmanager
def seeded_on(device: torch.device, seed: int) -> Iterator[None]:
    """Within: the CPU generator and, on CUDA, ``device``'s own, seeded with ``seed`` (dropout on
    the GPU draws from the latter); after: both as they were, other GPUs never touched."""
    if device.type != "cuda":
        with seeded_cpu(seed):
            yield
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.random.fork_rng(devices=[index], device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        with torch.cuda.device(index):
            torch.cuda.manual_seed(seed)
        yield
