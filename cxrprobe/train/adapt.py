"""``cxrprobe adapt``: the paper's partial CLIP adaptation, fast, resumable and honest.

Top K visual blocks + ln_post + proj and the paper's MLP head train with focal BCE, AdamW
(1e-5 encoder, 1e-4 head, weight decay 1e-2), gradient clipping at 1.0, ReduceLROnPlateau and
early stopping on validation mean AUC over a patient-disjoint validation split (never test),
CLIP normalisation in training and evaluation alike. Images are decoded once into pixel caches.
Held-out findings' labels are masked out of the loss and out of every selection, so few-shot
curves on them measure label efficiency. Every epoch ends in a checkpoint; ``--resume``
continues from it and ends where an uninterrupted run ends. Only a run that ended writes
summary.json: a run dir without it is unfinished, and nothing downstream takes it for done.
Every file is replaced whole (temporary name, then rename), so a kill leaves no torn file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cxrprobe.data.images import Preprocessing
from cxrprobe.data.locate import find_images
from cxrprobe.data.nih import load_nih_metadata
from cxrprobe.errors import DataError, InputError
from cxrprobe.eval.metrics import mean_auc, per_class_auc
from cxrprobe.fsutil import check_writable_folder, remove_stale_temporaries, reporting_no_room, write_new_file
from cxrprobe.labels import FINDINGS
from cxrprobe.models.loading import load_model
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.models.unfreeze import total_count, trainable_count, unfreeze_top
from cxrprobe.train.adapted import BEST, DONE
from cxrprobe.train.checkpoint import load_checkpoint, read_run_config, save_checkpoint
from cxrprobe.train.losses import focal_bce_with_logits
from cxrprobe.train.pixels import PixelDataset, build_pixel_cache, pixel_source

Notify = Callable[[str], None]
CHECKPOINT = "last.pt"


@dataclass(frozen=True)
class AdaptOptions:
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
    workers: int = 0
    seed: int = 7
    limit: int | None = None
    resume: bool = False
    force: bool = False
    val_fraction: float = 0.1
    val_seed: int = 7
    extra: dict = field(default_factory=dict)


def parse_hold_out(text: str) -> tuple[str, ...]:
    """'Hernia,Pneumonia' -> ('Hernia', 'Pneumonia'): known findings, in the order given, once each."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    _check_findings(names)
    return names


def _check_findings(names: tuple[str, ...]) -> None:
    unknown = [f for f in names if f not in FINDINGS]
    if unknown:
        raise InputError(f"unknown finding {unknown[0]!r} in --hold-out; expected some of {', '.join(FINDINGS)}")


def _check(options: AdaptOptions) -> None:
    if options.epochs < 1 or options.batch_size < 1:
        raise InputError("--epochs and --batch-size must be at least 1")
    _check_findings(options.hold_out)
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another --out")
    check_writable_folder(out.parent)
    if out.is_dir() and any(out.iterdir()) and not (options.resume or options.force):
        raise InputError(f"{out} already holds a run; use --resume to continue it or --force to start over")


def _config(options: AdaptOptions) -> dict:
    config = asdict(options)
    for key in ("out", "data_dir"):
        config[key] = str(config[key])
    config["hold_out"] = list(options.hold_out)
    for key in ("resume", "force", "workers", "device"):
        config.pop(key)
    return config


def adapt(options: AdaptOptions, notify: Notify = lambda _: None) -> dict:
    """Run (or resume) the adaptation; returns the final summary."""
    _check(options)
    out = Path(options.out)
    created = not out.exists()
    try:
        with reporting_no_room(out):
            return _run(options, out, notify)
    except Exception:  # an interrupt keeps what was written, as the CLI says
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no empty folder behind
        raise


def _open_pixels(path: Path) -> np.ndarray:
    """A run dir's pixel cache, memory-mapped; np.load never unpickles (allow_pickle is off)."""
    try:
        pixels = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path} is not a pixel cache ({str(exc)[:120]}); start over with --force") from None
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise InputError(f"{path} is not a pixel cache (a {pixels.dtype} array of {pixels.ndim} dimensions); "
                         "start over with --force")
    return pixels


def _pixels_for(out: Path, split: str, paths: list[str], image_ids: list[str], prep: Preprocessing,
                options: AdaptOptions, notify: Notify) -> np.ndarray:
    """The split's pixel cache in ``out``: reused when it records this very image set (its
    ``.source`` file) and has its shape, else decoded anew. A file there that is no pixel cache
    is refused."""
    cache, record = out / f"pixels-{split}.npy", out / f"pixels-{split}.source"
    source = pixel_source(image_ids, paths, prep)
    if cache.is_file():
        pixels = _open_pixels(cache)
        recorded = record.read_text() if record.is_file() else None
        if recorded == source and pixels.shape == (len(paths), prep.image_size, prep.image_size):
            return pixels
        del pixels  # its memory map, before the file is replaced
    notify(f"decoding {len(paths):,} {split} images once into {cache.name}")
    pixels = build_pixel_cache(paths, cache, prep, options.workers)
    write_new_file(record, source.encode())
    return pixels


def _run(options: AdaptOptions, out: Path, notify: Notify) -> dict:
    config = _config(options)
    if options.resume and (out / "config.json").is_file():
        previous = read_run_config(out / "config.json", "use another --out or --force")
        if {k: v for k, v in previous.items() if k != "epochs"} != {k: v for k, v in config.items() if k != "epochs"}:
            raise InputError(f"{out} holds a different run (its config.json differs); use another --out or --force")
    saved = load_checkpoint(out / CHECKPOINT) if options.resume and (out / CHECKPOINT).is_file() else None
    meta = load_nih_metadata(Path(options.data_dir), options.val_fraction, options.val_seed)
    paths = find_images(Path(options.data_dir), meta.table.image_ids)
    rows = {s: np.flatnonzero((meta.table.split == s) & (paths != "")) for s in ("train", "val")}
    if options.limit:
        rows = {s: r[: options.limit] for s, r in rows.items()}
    if len(rows["train"]) == 0:
        raise DataError(f"no training images under {options.data_dir}: adaptation needs the train split's images")
    if len(rows["val"]) == 0:
        raise DataError(f"no validation images under {options.data_dir}: early stopping needs them")
    loaded = load_model(options.model, options.pretrained, options.device)
    model, device, prep = loaded.model, loaded.device, loaded.preprocessing
    unfreeze_top(model.visual, options.unfreeze)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        head = PaperHead(loaded.embed_dim).to(device)
    notify(f"trainable parameters: {trainable_count(model.visual, head):,} "
           f"({100 * trainable_count(model.visual, head) / total_count(model.visual, head):.2f}% of visual encoder + head)")
    out.mkdir(exist_ok=True)  # only once every input has been checked
    remove_stale_temporaries(out)  # half-written files of killed runs (the run dir is ours)
    data = {}
    for split in ("train", "val"):
        pixels = _pixels_for(out, split, paths[rows[split]].tolist(), meta.table.image_ids[rows[split]].tolist(),
                             prep, options, notify)
        data[split] = PixelDataset(pixels, meta.table.labels[rows[split]], prep, augment=split == "train", seed=options.seed)
    keep = torch.tensor([f not in options.hold_out for f in FINDINGS], dtype=torch.float32, device=device)
    encoder = [p for p in model.visual.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(
        [{"params": encoder, "lr": options.lr_encoder}, {"params": list(head.parameters()), "lr": options.lr_head}],
        weight_decay=options.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="max", factor=0.5, patience=2)
    state = {"epoch": 0, "best_auc": -1.0, "best_epoch": 0, "stale": 0, "history": []}
    if saved is not None:
        model.visual.load_state_dict(saved["visual"])
        head.load_state_dict(saved["head"])
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        state = {k: saved[k] for k in state}
        notify(f"resuming after epoch {state['epoch']}")
    write_new_file(out / "config.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    if state["epoch"] < options.epochs and state["stale"] < options.patience:
        (out / DONE).unlink(missing_ok=True)  # a finished run given more epochs is unfinished until they end
    while state["epoch"] < options.epochs and state["stale"] < options.patience:
        epoch = state["epoch"] + 1
        loss = _train_epoch(model, head, data["train"], optimiser, keep, options, epoch, device)
        aucs = _validate(model, head, data["val"], options, device)
        kept = np.where(keep.cpu().numpy() > 0, aucs, np.nan)  # held-out findings choose nothing
        val_auc = mean_auc(kept)
        scheduler.step(val_auc if np.isfinite(val_auc) else 0.0)
        improved = np.isfinite(val_auc) and val_auc > state["best_auc"]
        state.update(epoch=epoch, stale=0 if improved else state["stale"] + 1)
        if improved:
            state.update(best_auc=float(val_auc), best_epoch=epoch)
            save_checkpoint(out / BEST, {"epoch": epoch, "visual": model.visual.state_dict(), "head": head.state_dict()})
        state["history"].append({
            "epoch": epoch, "train_loss": loss, "val_mean_auc": float(val_auc),
            "lr_encoder": optimiser.param_groups[0]["lr"], "lr_head": optimiser.param_groups[1]["lr"],
            **{f"val_auc_{f}": float(a) for f, a in zip(FINDINGS, aucs)},
        })
        save_checkpoint(out / CHECKPOINT, {
            **state, "visual": model.visual.state_dict(), "head": head.state_dict(),
            "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
        })
        _write_history(out, state["history"])
        notify(f"epoch {epoch}: train loss {loss:.4f}, validation mean AUC {val_auc:.4f}")
    if state["history"] and state["epoch"] == (saved or {}).get("epoch"):
        # no epoch ran: a run killed between its last checkpoint and these files resumed at its end
        _write_history(out, state["history"])
    summary = {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "best_val_auc": state["best_auc"],
               "stopped_by": "patience" if state["stale"] >= options.patience else "epochs"}
    write_new_file(out / DONE, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


def _train_epoch(model, head, dataset, optimiser, keep, options, epoch, device) -> float:  # noqa: ANN001
    dataset.set_epoch(epoch)
    order = torch.Generator().manual_seed(int(np.random.SeedSequence([options.seed, epoch]).generate_state(1)[0]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size, shuffle=True, generator=order,
                                         num_workers=options.workers)
    model.visual.train()
    head.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed * 1000 + epoch)  # dropout draws: the same on a resumed run
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with autocast:
                logits = head(model.encode_image(x).float())
            loss = focal_bce_with_logits(logits.float(), y, mask=keep[None])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for group in optimiser.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
    return total / max(count, 1)


def _validate(model, head, dataset, options, device) -> np.ndarray:  # noqa: ANN001
    loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size * 2, num_workers=options.workers)
    model.visual.eval()
    head.eval()
    scores, labels = [], []
    with torch.inference_mode():
        for x, y in loader:
            scores.append(head(model.encode_image(x.to(device)).float()).cpu().numpy())
            labels.append(y.numpy())
    return per_class_auc(np.concatenate(labels), np.concatenate(scores))


def _write_history(out: Path, history: list[dict]) -> None:
    """What follows the checkpoint each epoch, derived from its history alone."""
    _write_metrics(out / "metrics.csv", history)
    _plot_curve(out / "training_curve.png", history)


def _write_metrics(path: Path, history: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_new_file(path, text.getvalue().encode())


def _plot_curve(path: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, left = plt.subplots(figsize=(6, 3.5), dpi=110)
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", color="tab:blue")
    left.set_xlabel("epoch")
    left.set_ylabel("train focal loss", color="tab:blue")
    right = left.twinx()
    right.plot(epochs, [h["val_mean_auc"] for h in history], marker="s", color="tab:red")
    right.set_ylabel("validation mean AUC (not test)", color="tab:red")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", metadata={"Software": None})
    plt.close(fig)
    write_new_file(path, image.getvalue())
