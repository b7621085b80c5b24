"""Run-dir checkpoints that load with ``torch.load(weights_only=True)``: tensors, numbers,
strings, lists and dicts only, written under a temporary name and renamed."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import torch

from cxrprobe.errors import InputError
from cxrprobe.fsutil import replacing
from cxrprobe.models.weights import load_tensors_only


def canonical(value: object) -> object:
    """``value`` rebuilt with every string interned. Pickle writes a string once per object and
    refers back to it after: a resumed run, whose strings were unpickled, would otherwise write
    other bytes than an uninterrupted run for the same contents."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {canonical(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(canonical(v) for v in value)
    return value


def save_checkpoint(path: Path, state: dict) -> None:
    with replacing(path) as tmp:
        torch.save(canonical(state), tmp)


def load_checkpoint(path: Path, remedy: str = "start over with --force") -> dict:
    try:
        state = load_tensors_only(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(
            f"checkpoint {path} cannot be read safely ({type(exc).__name__}: not a tensors-only torch file); {remedy}"
        ) from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise InputError(f"checkpoint {path} is not a cxrprobe adapt checkpoint; {remedy}")
    return state


def read_run_config(path: Path, remedy: str) -> dict:
    """A run dir's config.json as a dict; a damaged one is bad input, not a crash."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: invalid JSON or UTF-8
        raise InputError(f"{path} cannot be read as JSON ({str(exc).splitlines()[0][:120]}); {remedy}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} is not a cxrprobe adapt config (not a JSON object); {remedy}")
    return config
