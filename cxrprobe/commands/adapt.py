"""``cxrprobe adapt``: the paper's partial CLIP adaptation, fast, resumable and honest.

Top K visual blocks + ln_post + proj and the paper's MLP head train with focal BCE, AdamW
(1e-5 encoder, 1e-4 head, weight decay 1e-2), gradient clipping at 1.0, ReduceLROnPlateau and
early stopping on validation mean AUC over a patient-disjoint validation split (never test),
CLIP normalisation in training and evaluation alike. Images are decoded once into pixel caches.
Any dataset embed reads (NIH, CheXpert, MIMIC-CXR-JPG, a CSV export) trains the head over its
own classes; unknown labels (an ``ignore`` policy's) and held-out findings' labels are masked
out of the loss and out of every selection, so few-shot curves on held-out findings measure
label efficiency. Every epoch ends in a checkpoint (the trained
parameters only: the frozen ones are the base weights, whose sha256 the run records);
``--resume`` continues from it. On the CPU a resumed run ends with the very bytes of an
uninterrupted one; on CUDA it continues from the same state, but GPU kernels (attention
backward, cuBLAS reductions) do not promise bitwise repeatable sums, so it ends within
floating-point noise of it. Only a run that ended writes summary.json: a run dir without it
is unfinished, and nothing downstream takes it for done. Every file is replaced whole
(temporary name, then rename), so a kill leaves no torn file. Under torchrun each process
trains a DDP replica on its slice of every batch, and rank 0 writes (train/distributed.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cxrprobe.data.datasets import DatasetOptions, locate
from cxrprobe.data.table import LocatedDataset
from cxrprobe.errors import DataError, InputError, ModelError
from cxrprobe.fsutil import (
    check_writable_folder,
    remove_stale_temporaries,
    reporting_no_room,
    write_json,
)
from cxrprobe.launch import Place, launch_place, share
from cxrprobe.metrics.auc import mean_auc
from cxrprobe.models.device import (
    choose_precision,
    full_fp32,
    hardware,
    process_device,
    reporting_out_of_memory,
    running_on,
    use_device,
)
from cxrprobe.models.loading import LoadedModel, load_model
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.models.unfreeze import (
    load_trainable_state,
    total_count,
    trainable_count,
    trainable_state,
    unfreeze_top,
)
from cxrprobe.report.training import write_training_history
from cxrprobe.seeding import seeded_cpu
from cxrprobe.train.adapted import BEST, DONE
from cxrprobe.train.checkpoint import load_checkpoint, read_run_config, save_checkpoint
from cxrprobe.train.distributed import Group, joined
from cxrprobe.train.loop import Trainable, TrainStep, make_optimiser, train_epoch, validation_aucs, validation_scores
from cxrprobe.train.pixels import PixelDataset, pixel_loader, run_pixel_cache

Notify = Callable[[str], None]
CHECKPOINT = "last.pt"
# config.json entries a resume may change (the epoch budget) or that describe the machine only
# (the device type itself must agree: other kernels give other bits)
NOT_COMPARED = ("epochs", "hardware")
BASE = "base_weights_sha256"
READ_LATER = (BASE, "dataset_name", "classes")  # config.json entries known once the data and weights are read


@dataclass(frozen=True)
class AdaptOptions(DatasetOptions):
    """What adapt trains on (``DatasetOptions``: which dataset, its policies, views and
    validation carve-out), from which model, and how."""

    data_dir: Path
    out: Path
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    unfreeze: int = 3
    epochs: int = 10
    batch_size: int = 32
    lr_encoder: float = 1e-5
    lr_head: float = 1e-4
    weight_decay: float = 1e-2
    patience: int = 5
    hold_out: tuple[str, ...] = ()
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on GPUs that have it, fp16 with loss scaling on older ones, fp32 on the CPU
    workers: int | None = None  # None: the usable cores (one left to the training loop on CUDA)
    seed: int = 7
    limit: int | None = None
    resume: bool = False
    force: bool = False


@dataclass
class RunState:
    """What a checkpoint restores beside the weights and the optimiser."""

    epoch: int = 0
    best_auc: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    history: list[dict] = field(default_factory=list)


def parse_hold_out(text: str) -> tuple[str, ...]:
    """'Hernia,Pneumonia' -> ('Hernia', 'Pneumonia'): in the order given, once each; checked
    against the dataset's classes once it is read."""
    return tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def check_hold_out(names: tuple[str, ...], classes: tuple[str, ...]) -> tuple[str, ...]:
    """``names``, each one of the dataset's ``classes``."""
    unknown = [f for f in names if f not in classes]
    if unknown:
        raise InputError(f"unknown finding {unknown[0]!r} in --hold-out; expected some of {', '.join(classes)}")
    return names


def _check(options: AdaptOptions) -> None:
    if options.epochs < 1 or options.batch_size < 1:
        raise InputError("--epochs and --batch-size must be at least 1")
    if options.workers is not None and options.workers < 0:
        raise InputError(f"--workers must be 0 or more, got {options.workers}")
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another --out")
    check_writable_folder(out.parent)
    if out.is_dir() and any(out.iterdir()) and not (options.resume or options.force):
        raise InputError(f"{out} already holds a run; use --resume to continue it or --force to start over")


def adapt(options: AdaptOptions, notify: Notify = lambda _: None) -> dict:
    """Run (or resume) the adaptation; returns the final summary."""
    _check(options)
    place = launch_place()  # one process, or one of a torchrun launch's (distributed.py)
    # before the metadata, the model or the run dir
    device = process_device(options.device, place.local_rank if place.size > 1 else None)
    precision = choose_precision(options.precision, device, training=True)
    use_device(device)
    out = Path(options.out)
    created = not out.exists()
    oom_remedy = "free GPU memory and rerun with --resume, or start over with a lower --batch-size and --force"
    try:
        with reporting_no_room(out), reporting_out_of_memory(options.batch_size, oom_remedy), \
                full_fp32(device, precision), joined(place, device) as group:
            return _run(options, out, device, precision, group, notify if group.first else lambda _: None)
    except Exception:  # an interrupt keeps what was written, as the CLI says
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no empty folder behind
        raise


@dataclass
class Training:
    """What the training stages share: the model and head, what runs them forward (their DDP
    replica on several processes, of ``group``), the loaders, the optimiser, its schedule and
    loss scaling, and the run's progress (what a checkpoint restores)."""

    loaded: LoadedModel
    head: torch.nn.Module
    forward: torch.nn.Module
    group: Group
    loaders: dict
    step: TrainStep
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    state: RunState
    classes: tuple[str, ...]


def _run(options: AdaptOptions, out: Path, device: torch.device, precision: str, group: Group,
         notify: Notify) -> dict:
    """The stages in order; every input is checked (by every process) before the run dir is
    touched, and rank 0 alone writes it."""
    config = _config(options, device, precision, group.size)
    previous = _previous_config(out, options, group.size)
    if previous is not None and _compared(previous, *READ_LATER) != _compared(config):  # cheap checks first
        raise _different_run(out)
    saved = load_checkpoint(out / CHECKPOINT) if options.resume and (out / CHECKPOINT).is_file() else None
    dataset, notes = locate(Path(options.data_dir), options)
    classes = dataset.metadata.table.classes
    check_hold_out(options.hold_out, classes)
    for note in notes:
        notify(note)
    rows = _training_rows(options, dataset.paths, dataset.metadata.table.split, group.size)
    loaded, head = _model_and_head(options, len(classes), device, notify)
    config.update({BASE: loaded.weights_sha256, "dataset_name": dataset.metadata.dataset, "classes": list(classes)})
    if previous is not None and _compared(previous) != _compared(config):
        raise _different_run(out)
    group.barrier()  # every process has checked its inputs
    if group.first:
        out.mkdir(exist_ok=True)
        remove_stale_temporaries(out)  # half-written files of killed runs (the run dir is ours)
    loaders = _loaders(options, out, dataset, rows, loaded, group, notify)
    training = _training(options, loaded, head, loaders, precision, group, saved, classes, notify)
    unfinished = training.state.epoch < options.epochs and training.state.stale < options.patience
    if group.first:
        write_json(out / "config.json", config)
        if unfinished:
            (out / DONE).unlink(missing_ok=True)  # a finished run given more epochs is unfinished until they end
    if unfinished:
        notify(f"training on {len(rows['train']):,} images, validating on {len(rows['val']):,}, "
               f"{running_on(device, precision)}")
    _train(training, options, precision, device, out, notify)
    if group.first and training.state.history and training.state.epoch == (saved or {}).get("epoch"):
        # no epoch ran: a run killed between its last checkpoint and these files resumed at its end
        write_training_history(out, training.state.history)
    return _finish(training.state, options, rows, out, group.first)


def _model_and_head(options: AdaptOptions, n_classes: int, device: torch.device,
                    notify: Notify) -> tuple[LoadedModel, torch.nn.Module]:
    """The base model with its top blocks unfrozen (the text tower stays idle on the CPU) and a
    fresh paper head of ``n_classes`` outputs, seeded."""
    loaded = load_model(options.model, options.pretrained, device, visual_only=True)
    if loaded.backend != "open_clip":  # the partial fine-tuning unfreezes a CLIP ViT's top blocks
        raise ModelError(f"adapt trains open_clip ViTs (the paper's partial fine-tuning); {options.model} is a "
                         f"{loaded.backend} encoder: embed it as it is")
    loaded = loaded.reading_with(options.intensity, options.dicom_window)
    unfreeze_top(loaded.model.visual, options.unfreeze)
    with seeded_cpu(options.seed):
        head = PaperHead(loaded.embed_dim, n_classes).to(device)
    trainable, total = trainable_count(loaded.model.visual, head), total_count(loaded.model.visual, head)
    notify(f"trainable parameters: {trainable:,} ({100 * trainable / total:.2f}% of visual encoder + head)")
    return loaded, head


def _loaders(options: AdaptOptions, out: Path, dataset: LocatedDataset, rows: dict, loaded: LoadedModel,
             group: Group, notify: Notify) -> dict:
    """Training (augmented, shuffled; this rank's slice of each batch) and validation (this
    rank's slice of the images) loaders over the run dir's pixel caches, which rank 0 decodes
    while the others wait; an unknown label is NaN, which the loss and the AUCs leave out."""
    table, device = dataset.metadata.table, loaded.device
    decoders = default_workers(options.workers, device)  # every core of the node: the other processes wait
    workers = default_workers(options.workers, device, group.place)  # this process's share of them

    def pixel_caches(decode: bool) -> dict:
        return {split: run_pixel_cache(out, split, dataset.paths[r].tolist(), table.image_ids[r].tolist(),
                                       loaded.preprocessing, decoders, notify, dataset.metadata.bit_depths(r),
                                       decode=decode) for split, r in rows.items()}

    if group.first:
        pixels = pixel_caches(decode=True)
    group.barrier()
    if not group.first:
        pixels = pixel_caches(decode=False)  # what rank 0 decoded
    targets = {s: np.where(table.known[r], table.labels[r], np.nan).astype(np.float32) for s, r in rows.items()}
    mine = share(len(rows["val"]), group.place.rank, group.size)
    train = PixelDataset(pixels["train"], targets["train"], augment=True, seed=options.seed)
    val = PixelDataset(pixels["val"][mine.start:mine.stop], targets["val"][mine.start:mine.stop], augment=False)
    cuda = device.type == "cuda"
    return {"train": pixel_loader(train, options.batch_size, True, workers, cuda, options.seed, group.place.rank,
                                  group.size),
            "val": pixel_loader(val, options.batch_size * 2, False, workers, cuda, options.seed)}


def _training(options: AdaptOptions, loaded: LoadedModel, head: torch.nn.Module, loaders: dict, precision: str,
              group: Group, saved: dict | None, classes: tuple[str, ...], notify: Notify) -> Training:
    """The optimiser, schedule and loss scaling, restored from ``saved`` (a checkpoint) when
    resuming; then the DDP replica of the restored model on several processes."""
    device = loaded.device
    optimiser = make_optimiser(loaded.model.visual, head, options.lr_encoder, options.lr_head, options.weight_decay,
                               device)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="max", factor=0.5, patience=2)
    step = TrainStep(optimiser, precision, device)
    state = RunState()
    if saved is not None:
        load_trainable_state(loaded.model.visual, saved["visual"])
        head.load_state_dict(saved["head"])
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        step.load_state_dict(saved.get("scaler", {}))
        state = RunState(**{f.name: saved[f.name] for f in dataclasses.fields(RunState)})
        notify(f"resuming after epoch {state.epoch}")
    forward = group.wrap(Trainable(loaded.model.visual, head, step))
    return Training(loaded, head, forward, group, loaders, step, scheduler, state, classes)


def _train(training: Training, options: AdaptOptions, precision: str, device: torch.device, out: Path,
           notify: Notify) -> None:
    """Epochs until the budget or the patience runs out; held-out findings' labels masked."""
    keep = torch.tensor([f not in options.hold_out for f in training.classes], dtype=torch.float32, device=device)
    while training.state.epoch < options.epochs and training.state.stale < options.patience:
        _one_epoch(training, keep, options, precision, out, notify)


def _finish(state: RunState, options: AdaptOptions, rows: dict, out: Path, writes: bool) -> dict:
    """summary.json, written last (by rank 0): a run dir without it is unfinished."""
    summary = {"epochs_run": state.epoch, "best_epoch": state.best_epoch, "best_val_auc": state.best_auc,
               "stopped_by": "patience" if state.stale >= options.patience else "epochs",
               # the labelled images adaptation saw (training, and validation for selection), and
               # the findings whose labels it never saw
               "train_images": int(len(rows["train"])), "val_images": int(len(rows["val"])),
               "held_out": list(options.hold_out)}
    if writes:
        write_json(out / DONE, summary)
    return summary


def _previous_config(out: Path, options: AdaptOptions, processes: int) -> dict | None:
    """The config.json of the run a resume continues; one of another number of processes
    (whose batches were cut otherwise) is refused."""
    if not (options.resume and (out / "config.json").is_file()):
        return None
    previous = read_run_config(out / "config.json", "use another --out or --force")
    ran_on = previous.setdefault("processes", 1)  # runs from before multi-process adapt ran on one
    if ran_on != processes:
        raise InputError(f"{out} was trained by {ran_on} process(es), not {processes}: resume it with as many "
                         f"(torchrun --nproc-per-node {ran_on}), or start over with --force")
    return previous


def _config(options: AdaptOptions, device: torch.device, precision: str, processes: int) -> dict:
    """config.json: every option that decides the run's bytes, as resolved, and the machine
    (the base weights' sha256 and the dataset's classes join it once read), in the form it
    reads back as (paths as str, tuples as lists), so a resume compares like with like."""
    config = asdict(options)
    for key in ("resume", "force", "workers"):
        config.pop(key)
    config.update(device=device.type, precision=precision, processes=processes, hardware=hardware(device).as_dict())
    return json.loads(json.dumps(config, default=str))


def _compared(config: dict, *also_ignored: str) -> dict:
    return {k: v for k, v in config.items() if k not in NOT_COMPARED + also_ignored}


def _different_run(out: Path) -> InputError:
    return InputError(f"{out} holds a different run (its config.json differs); use another --out or --force")


def _training_rows(options: AdaptOptions, paths: np.ndarray, split: np.ndarray, processes: int) -> dict:
    """The train and val rows that have an image file, at least one a process."""
    rows = {s: np.flatnonzero((split == s) & (paths != "")) for s in ("train", "val")}
    if options.limit:
        rows = {s: r[: options.limit] for s, r in rows.items()}
    if len(rows["train"]) == 0:
        raise DataError(f"no training images under {options.data_dir}: adaptation needs the train split's images")
    if len(rows["val"]) == 0:
        raise DataError(f"no validation images under {options.data_dir}: early stopping needs them")
    for name, chosen in rows.items():
        if len(chosen) < processes:
            raise DataError(f"{len(chosen)} {name} image(s) cannot be shared among {processes} processes")
    return rows


def default_workers(requested: int | None, device: torch.device, place: Place = Place()) -> int:
    """Decoding and augmentation processes: as asked, else the process's share of the usable
    cores (on CUDA one fewer, left to the process that feeds the GPU)."""
    if requested is not None:
        return requested
    return max(0, place.cores() - (1 if device.type == "cuda" else 0))


def _one_epoch(training: Training, keep: torch.Tensor, options: AdaptOptions, precision: str, out: Path,
               notify: Notify) -> None:
    """Train, validate, step the schedule, checkpoint, write the history."""
    state, loaded, head, loaders = training.state, training.loaded, training.head, training.loaders
    step, scheduler = training.step, training.scheduler
    epoch = state.epoch + 1
    group = training.group
    loss = train_epoch(loaded, training.forward, loaders["train"], step, keep, epoch, options.seed * 1000 + epoch,
                       group)
    scores, labels = validation_scores(loaded, head, loaders["val"], precision)
    aucs = validation_aucs(group.gather_rows(scores), group.gather_rows(labels))
    kept = np.where(keep.cpu().numpy() > 0, aucs, np.nan)  # held-out findings choose nothing
    val_auc = mean_auc(kept)
    scheduler.step(val_auc if np.isfinite(val_auc) else 0.0)
    improved = bool(np.isfinite(val_auc) and val_auc > state.best_auc)
    state.epoch, state.stale = epoch, 0 if improved else state.stale + 1
    visual = trainable_state(loaded.model.visual)
    if improved:
        state.best_auc, state.best_epoch = float(val_auc), epoch
        if group.first:
            save_checkpoint(out / BEST, {"epoch": epoch, "visual": visual, "head": head.state_dict()})
    groups = step.optimiser.param_groups
    state.history.append({
        "epoch": epoch, "train_loss": loss, "val_mean_auc": float(val_auc),
        "lr_encoder": groups[0]["lr"], "lr_head": groups[1]["lr"],
        **{f"val_auc_{f}": float(a) for f, a in zip(training.classes, aucs)},
    })
    if group.first:
        save_checkpoint(out / CHECKPOINT, {
            **asdict(state), "visual": visual, "head": head.state_dict(), "optimiser": step.optimiser.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": step.state_dict(),
        })
        write_training_history(out, state.history)
    notify(f"epoch {epoch}: train loss {loss:.4f}, validation mean AUC {val_auc:.4f}")
