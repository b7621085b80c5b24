"""Does an interrupted run, resumed, end where an uninterrupted one ends? On this machine's device.

    python benchmarks/resume_check.py --data-dir DIR [--model ViT-B-32] [--device cuda]

The real ``cxrprobe`` command in subprocesses, on an NIH-layout folder (gpu_suite.sh makes one):
- embed: one uninterrupted run, and one SIGKILLed once a third of its rows are committed, then
  resumed; the two cache files compared byte for byte.
- adapt: two epochs uninterrupted, and one epoch then ``--resume`` to two (the same state a kill
  after epoch 1 leaves); the trained tensors of the two last.pt compared: identical, or the
  largest absolute difference.

On the CPU both are identical (the test suite checks it); on CUDA this measures what holds.
The last line reads ``embed_resume_identical=<bool> adapt_resume_identical=<bool>
adapt_resume_max_abs_diff=<x>``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

# Caches record when their embed started; pinned, two runs can write the same bytes.
ENV = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}


def cxrprobe(*args: object) -> list[str]:
    return [sys.executable, "-m", "cxrprobe", *map(str, args)]


def run(*args: object) -> None:
    done = subprocess.run(cxrprobe(*args), capture_output=True, text=True, env=ENV)
    if done.returncode != 0:
        sys.exit(f"cxrprobe {' '.join(map(str, args))} failed: {done.stderr.strip()}")


def rows_done(partial: Path) -> int:
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return int(np.count_nonzero(f["status"][()]))
    except (OSError, KeyError):
        return 0


def embed_resume(data: Path, tmp: Path, common: tuple) -> bool:
    reference, cut = tmp / "reference.h5", tmp / "cut.h5"
    run("embed", "--data-dir", data, "--out", reference, *common)
    process = subprocess.Popen(cxrprobe("embed", "--data-dir", data, "--out", cut, *common), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = cut.with_name(cut.name + ".partial")
    with h5py.File(reference, "r") as f:
        third = len(f["image_id"]) // 3
    while process.poll() is None and rows_done(partial) < third:
        time.sleep(0.01)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
        process.wait()
    print(f"  embed: killed at {rows_done(partial)} committed rows" if killed else "  embed: ended before the kill")
    run("embed", "--data-dir", data, "--out", cut, *common, "--resume")
    return reference.read_bytes() == cut.read_bytes()


def adapt_resume(data: Path, tmp: Path, common: tuple) -> tuple[bool, float]:
    whole, split = tmp / "whole", tmp / "split"
    run("adapt", "--data-dir", data, "--out", whole, *common, "--epochs", "2")
    run("adapt", "--data-dir", data, "--out", split, *common, "--epochs", "1")
    run("adapt", "--data-dir", data, "--out", split, *common, "--epochs", "2", "--resume")
    a = torch.load(whole / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(split / "last.pt", map_location="cpu", weights_only=True)
    worst, identical = 0.0, True
    for part in ("visual", "head"):
        for name, tensor in a[part].items():
            identical &= torch.equal(tensor, b[part][name])
            worst = max(worst, float((tensor.float() - b[part][name].float()).abs().max()))
    return identical, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=1200, help="images embedded")
    parser.add_argument("--adapt-limit", type=int, default=400, help="train (and val) images adapted on")
    parser.add_argument("--unfreeze", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        model = ("--model", args.model, "--pretrained", "none", "--device", args.device, "-q")
        embed_same = embed_resume(args.data_dir, tmp, (*model, "--limit", args.limit, "--batch-size", "64"))
        adapt_same, worst = adapt_resume(args.data_dir, tmp, (*model, "--limit", args.adapt_limit,
                                                               "--batch-size", "32", "--unfreeze", args.unfreeze))
    print(f"  embed --resume gives the uninterrupted run's bytes: {embed_same}")
    print(f"  adapt --resume ends with the uninterrupted run's tensors: {adapt_same} "
          f"(largest absolute difference {worst:.3g})")
    print(f"embed_resume_identical={embed_same} adapt_resume_identical={adapt_same} "
          f"adapt_resume_max_abs_diff={worst:.3g}")


if __name__ == "__main__":
    main()
