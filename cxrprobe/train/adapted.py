"""Loading an adapted run (``cxrprobe adapt``'s best.pt) for embedding."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from cxrprobe.errors import InputError
from cxrprobe.labels import FINDINGS
from cxrprobe.models.loading import LoadedModel, load_model
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.models.unfreeze import load_trainable_state
from cxrprobe.models.weights import state_sha256, weights_sha256
from cxrprobe.train.checkpoint import load_checkpoint, read_run_config

BEST = "best.pt"
DONE = "summary.json"  # written last by a run that ended (train/adapt.py): present means finished


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_adapted(run_dir: Path, device: str | torch.device) -> tuple[LoadedModel, Path, tuple[str, ...]]:
    """The run's base model with its adapted visual tower and head (the best epoch's), its
    checkpoint file, and the classes the head scores."""
    run_dir = Path(run_dir)
    config_path, best = run_dir / "config.json", run_dir / BEST
    if not config_path.is_file() or not best.is_file():
        raise InputError(f"{run_dir} is not a finished cxrprobe adapt run (no config.json and {BEST})")
    if not (run_dir / DONE).is_file():
        raise InputError(f"{run_dir} is an unfinished cxrprobe adapt run (no {DONE}); finish it with adapt --resume")
    remedy = "give --checkpoint the folder of a finished cxrprobe adapt run"
    config = read_run_config(config_path, remedy)
    classes = adapted_classes(config, f"{config_path}: ")  # checked before the model loads
    if not isinstance(config.get("model"), str) or not isinstance(config.get("pretrained"), str):
        raise InputError(f"{config_path} names no model and pretrained weights; {remedy}")
    saved = load_checkpoint(best, remedy)
    loaded = load_model(config["model"], config["pretrained"], device)  # the text tower stays the base one
    base = config.get("base_weights_sha256")
    if base is not None and base != loaded.weights_sha256:
        raise InputError(f"the {config['pretrained']!r} weights of {config['model']} are not those {run_dir} was "
                         "adapted from (their sha256 differs); give the same weights, or adapt again")
    try:
        load_trainable_state(loaded.model.visual, saved["visual"])
        head = PaperHead(loaded.embed_dim, len(classes))
        head.load_state_dict(saved["head"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as exc:  # not a dict of fitting tensors
        raise InputError(f"{best} does not fit {config['model']}: {str(exc).splitlines()[0][:160]}") from None
    head.eval().to(loaded.device)
    # the base weights' hash (computed once, by load_model) and the adapted tensors' identify it
    identity = hashlib.sha256(
        (loaded.weights_sha256 + state_sha256(saved["visual"]) + weights_sha256(head)).encode()
    ).hexdigest()
    adapted = dataclasses.replace(
        loaded, head=head, weights_sha256=identity, pretrained=f"{config['pretrained']}+adapted",
    )
    return adapted, best, classes


def adapted_classes(config: dict, where: str = "") -> tuple[str, ...]:
    """The classes a run's head scores, from its config.json (runs from before they were
    recorded adapted on NIH: its 14 findings)."""
    classes = config.get("classes", list(FINDINGS))
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{where}classes must be a list of class names, got {str(classes)[:80]}")
    return tuple(classes)


def adaptation_record(run_dir: Path) -> dict:
    """What a cache embedded from ``run_dir`` says of its adaptation: the labelled images it
    used and the findings it held out (runs from before these were recorded: unknown, None)."""
    try:
        summary = json.loads((Path(run_dir) / DONE).read_text())
    except (OSError, ValueError):
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    train, val = summary.get("train_images"), summary.get("val_images")
    labelled = train + val if isinstance(train, int) and isinstance(val, int) else None
    held_out = summary.get("held_out")
    return {"labelled_images": labelled, "train_images": train, "val_images": val,
            "held_out": held_out if isinstance(held_out, list) else None}
