"""Adaptation input pipeline: the decode-once pixel cache against decoding PNGs every epoch.

    python benchmarks/adapt_throughput.py [--images 400] [--model cxrprobe-tiny] [--workers 2]

Images are copies of the 40 real NIH PNGs (1024x1024). Two sources feed the same augmented
training batches: (a) the uint8 pixel cache built once by ``cxrprobe adapt`` (its one-off
build is timed apart), (b) decoding and resizing each PNG in every epoch, as the paper's
notebook did. For each, images/s are measured for loading alone (all workers) and for full
training steps (forward, focal loss, backward, AdamW) with ``--model`` on the device present.
The last line reads ``pixel_cache_ips=<n> png_ips=<n> speedup=<ratio>`` (training steps).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrprobe.data.images import load_grey
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.models.loading import load_model
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.models.unfreeze import unfreeze_top
from cxrprobe.train.losses import focal_bce_with_logits
from cxrprobe.train.pixels import PixelDataset, build_pixel_cache

REPO = Path(__file__).resolve().parents[1]


class DecodeEveryEpoch(PixelDataset):
    """The same items as PixelDataset, but each read decodes the PNG again."""

    def __init__(self, paths: list[str], labels: np.ndarray, prep, augment: bool) -> None:  # noqa: ANN001
        super().__init__(np.empty((len(paths), 1, 1), dtype=np.uint8), labels, prep, augment)
        self.paths = paths

    def __getitem__(self, row: int):  # noqa: ANN204
        self.pixels = {row: load_grey(self.paths[row], self.prep)}  # one image at a time
        return super().__getitem__(row)


def rate(dataset, batch_size: int, workers: int, step=None) -> float:  # noqa: ANN001
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    start, seen = None, 0
    for x, y in loader:
        if step is not None:
            step(x, y)
        if start is None:  # steady state: from the first batch on
            start = time.perf_counter()
            continue
        seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--model", default="cxrprobe-tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--png-pool", type=Path, default=REPO / "tests" / "data" / "nih" / "images",
                        help="real PNGs copied under generated ids [default: the six real NIH images in tests/data]")
    args = parser.parse_args()
    loaded = load_model(args.model, "none", args.device)
    prep, device = loaded.preprocessing, loaded.device
    unfreeze_top(loaded.model.visual, 3 if len(loaded.model.visual.transformer.resblocks) >= 3 else 1)
    head = PaperHead(loaded.embed_dim).to(device)
    params = [p for p in loaded.model.visual.parameters() if p.requires_grad] + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=1e-5)

    def train_step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = focal_bce_with_logits(head(loaded.model.encode_image(x.to(device)).float()), y.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    with tempfile.TemporaryDirectory() as tmp:
        ids = write_nih_folder(Path(tmp) / "data", args.images, png_pool=sorted(args.png_pool.glob("*.png")))
        paths = [str(Path(tmp) / "data" / "images" / i) for i in ids]
        labels = np.zeros((len(paths), 14), dtype=np.uint8)
        start = time.perf_counter()
        pixels = build_pixel_cache(paths, Path(tmp) / "pixels.npy", prep, args.workers)
        build = time.perf_counter() - start
        cached = PixelDataset(pixels, labels, prep, augment=True)
        decoded = DecodeEveryEpoch(paths, labels, prep, augment=True)
        print(f"device {device}, model {args.model}, {len(paths)} images, batch {args.batch_size}, workers {args.workers}")
        print(f"  pixel cache built once: {build:.1f} s ({len(paths) / build:.0f} images/s)")
        load_cached = rate(cached, args.batch_size, args.workers)
        load_png = rate(decoded, args.batch_size, args.workers)
        print(f"  loading + augmentation alone: pixel cache {load_cached:.0f}/s, PNG every epoch {load_png:.0f}/s")
        train_cached = rate(cached, args.batch_size, args.workers, train_step)
        train_png = rate(decoded, args.batch_size, args.workers, train_step)
        print(f"  training steps: pixel cache {train_cached:.1f}/s, PNG every epoch {train_png:.1f}/s")
    print(f"pixel_cache_ips={train_cached:.1f} png_ips={train_png:.1f} speedup={train_cached / train_png:.2f}")


if __name__ == "__main__":
    main()
