"""``cxrprobe demo``: the whole pipeline offline, on generated data, in about a minute.

It writes a small NIH-shaped dataset (findings drawn as bright discs at places of their own),
embeds it with the bundled tiny model's random weights, runs the few-shot grid and the report.
Random weights carry no knowledge of text, so zero-shot sits at chance here by construction;
the learned heads rise with shots because the discs are there to be seen.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cxrprobe.cache.extract import EmbedOptions, embed
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.errors import InputError
from cxrprobe.eval.experiment import run_fewshot
from cxrprobe.fsutil import check_writable_folder, reporting_no_room

DEMO_IMAGES = 600
DEMO_SHOTS = "1,2,4,8"
DEMO_SEEDS = 5


@dataclass(frozen=True)
class DemoPaths:
    data: Path
    cache: Path
    results: Path


def run_demo(out: Path, jobs: int, notify: Callable[[str], None]) -> DemoPaths:
    out = Path(out)
    if jobs < 1:  # checked now, not after a minute of work
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give the demo a new folder with --out")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; give the demo a new folder with --out")
    new_folders = [folder for folder in (out, *out.parents) if not folder.exists()]
    check_writable_folder(new_folders[-1].parent if new_folders else out)
    try:
        with reporting_no_room(out):
            return _run(out, jobs, notify)
    except Exception:  # an interrupt keeps what was written, as the CLI says
        if new_folders:  # everything in them is this run's, and unfinished
            shutil.rmtree(new_folders[-1], ignore_errors=True)
        raise


def _run(out: Path, jobs: int, notify: Callable[[str], None]) -> DemoPaths:
    out.mkdir(parents=True, exist_ok=True)
    paths = DemoPaths(out / "data", out / "demo.h5", out / "results")
    notify(f"1/3 writing {DEMO_IMAGES} generated chest X-ray stand-ins to {paths.data}")
    write_nih_folder(paths.data, DEMO_IMAGES, seed=0, image_size=224)
    notify("2/3 embedding them with cxrprobe-tiny (random weights) into the feature cache")
    embed(EmbedOptions(data_dir=paths.data, out=paths.cache, model="cxrprobe-tiny", pretrained="none", device="cpu"))
    notify(f"3/3 few-shot grid: shots {DEMO_SHOTS} x {DEMO_SEEDS} seeds x every base head")
    run_fewshot(paths.cache, paths.results, DEMO_SHOTS, DEMO_SEEDS, "all", jobs, strict_shots=False)
    return paths
