"""Adaptation input pipeline: the decode-once pixel cache against decoding PNGs every epoch.

    python benchmarks/adapt_throughput.py [--images 400] [--model cxrprobe-tiny] [--workers N]
    python benchmarks/adapt_throughput.py --model ViT-B-32 --images 2000 --device cuda   # on a GPU

Images are copies of the real NIH PNGs in tests/data (1024x1024) under generated ids. Two
sources feed the same augmented training batches through adapt's own loader (uint8 batches,
workers that live across epochs, pinned memory on CUDA): (a) the pixel cache ``cxrprobe adapt``
builds once (its build is timed apart), (b) decoding and resizing each PNG in every epoch, as
the paper's notebook did. For each, images/s are measured for loading alone and for one epoch
of adapt's real training step (``train.loop.train_epoch``: normalisation on the device,
autocast at ``--precision``, fp32 head and focal loss, loss scaling for fp16, clipping, AdamW),
the epoch after a warm-up one (worker start-up, kernel selection), CUDA synchronised before
every clock is read. The last line reads ``pixel_cache_ips=<n> png_ips=<n> speedup=<ratio>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrprobe.commands.adapt import AdaptOptions, default_workers
from cxrprobe.data.images import Preprocessing, load_grey
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.models.device import choose_precision, resolve_device, running_on, use_device
from cxrprobe.models.loading import load_model
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.models.unfreeze import unfreeze_top
from cxrprobe.train.loop import Trainable, TrainStep, make_optimiser, train_epoch
from cxrprobe.train.pixels import PixelDataset, build_pixel_cache, pixel_loader

REPO = Path(__file__).resolve().parents[1]


class DecodeEveryEpoch(PixelDataset):
    """The same items as PixelDataset, but each read decodes and resizes the PNG again."""

    def __init__(self, paths: list[str], labels: np.ndarray, prep: Preprocessing) -> None:
        super().__init__(np.empty((len(paths), 1, 1), dtype=np.uint8), labels, augment=True)
        self.paths, self.prep = paths, prep

    def __getitem__(self, item: tuple[int, int]):  # noqa: ANN204
        self.pixels = {item[1]: load_grey(self.paths[item[1]], self.prep)}  # one image at a time
        return super().__getitem__(item)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loading_rate(loader: torch.utils.data.DataLoader) -> float:
    """Images/s from the first batch on (worker start-up excluded)."""
    loader.batch_sampler.set_epoch(1)
    start, seen = None, 0
    for grey, _ in loader:
        if start is None:
            start = time.perf_counter()
            continue
        seen += len(grey)
    return seen / (time.perf_counter() - start)


def epoch_rate(loaded, head, loader, step, keep, device) -> float:  # noqa: ANN001
    """Images/s of the second of two epochs of adapt's training step."""
    forward = Trainable(loaded.model.visual, head, step)
    train_epoch(loaded, forward, loader, step, keep, epoch=1, seed=1)
    synchronise(device)
    start = time.perf_counter()
    train_epoch(loaded, forward, loader, step, keep, epoch=2, seed=2)
    synchronise(device)
    return len(loader.dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--model", default="cxrprobe-tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="default: adapt's (the usable cores, one fewer on CUDA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--png-pool", type=Path, default=REPO / "tests" / "data" / "nih" / "images",
                        help="real PNGs copied under generated ids [default: the six real NIH images in tests/data]")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = choose_precision(args.precision, device, training=True)
    use_device(device)
    workers = default_workers(args.workers, device)
    loaded = load_model(args.model, "none", device, visual_only=True)
    unfreeze_top(loaded.model.visual, 3 if len(loaded.model.visual.transformer.resblocks) >= 3 else 1)
    head = PaperHead(loaded.embed_dim).to(device)
    defaults = AdaptOptions(data_dir=Path(), out=Path())
    optimiser = make_optimiser(loaded.model.visual, head, defaults.lr_encoder, defaults.lr_head,
                               defaults.weight_decay, device)
    step = TrainStep(optimiser, precision, device)
    keep = torch.ones(14, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        ids = write_nih_folder(Path(tmp) / "data", args.images, png_pool=sorted(args.png_pool.glob("*.png")))
        paths = [str(Path(tmp) / "data" / "images" / i) for i in ids]
        labels = np.random.default_rng(0).integers(0, 2, (len(paths), 14)).astype(np.uint8)
        start = time.perf_counter()
        pixels = build_pixel_cache(paths, Path(tmp) / "pixels.npy", loaded.preprocessing, workers)
        build = time.perf_counter() - start
        pin = device.type == "cuda"
        sources = {
            "pixel cache": pixel_loader(PixelDataset(pixels, labels, augment=True), args.batch_size, True, workers,
                                        pin, 7),
            "PNG every epoch": pixel_loader(DecodeEveryEpoch(paths, labels, loaded.preprocessing), args.batch_size,
                                            True, workers, pin, 7),
        }
        print(f"{args.model} {running_on(device, precision)}, {len(paths)} images, batch {args.batch_size}, "
              f"workers {workers}")
        print(f"  pixel cache built once: {build:.1f} s ({len(paths) / build:.0f} images/s)")
        loading = {name: loading_rate(loader) for name, loader in sources.items()}
        print("  loading + augmentation alone: " + ", ".join(f"{k} {v:.0f}/s" for k, v in loading.items()))
        training = {name: epoch_rate(loaded, head, loader, step, keep, device) for name, loader in sources.items()}
        print("  one epoch of adapt's training step: " + ", ".join(f"{k} {v:.1f}/s" for k, v in training.items()))
        bound = "the model" if training["pixel cache"] < 0.9 * loading["pixel cache"] else "loading"
        print(f"  with the pixel cache an epoch is bound by {bound} (training {training['pixel cache']:.0f}/s, "
              f"loading alone {loading['pixel cache']:.0f}/s)")
    cached, png = training["pixel cache"], training["PNG every epoch"]
    print(f"pixel_cache_ips={cached:.1f} png_ips={png:.1f} speedup={cached / png:.2f}")


if __name__ == "__main__":
    main()
