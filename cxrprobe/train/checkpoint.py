"""Run-dir checkpoints that load with ``torch.load(weights_only=True)``: tensors, numbers,
strings, lists and dicts only, written under a temporary name and renamed."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from cxrprobe.errors import InputError
from cxrprobe.fsutil import temporary_sibling


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = temporary_sibling(path, "new")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(
            f"checkpoint {path} cannot be read safely ({type(exc).__name__}: not a tensors-only torch file); "
            "start over with --force"
        ) from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise InputError(f"checkpoint {path} is not a cxrprobe adapt checkpoint; start over with --force")
    return state
