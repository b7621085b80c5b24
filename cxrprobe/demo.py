"""``cxrprobe demo``: the whole pipeline offline, on generated data, in about a minute.

It writes a small NIH-shaped dataset (findings drawn as bright discs at places of their own),
embeds it with the bundled tiny model's random weights, runs the few-shot grid and the report.
Random weights carry no knowledge of text, so zero-shot sits at chance here by construction;
the learned heads rise with shots because the discs are there to be seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cxrprobe.cache.extract import EmbedOptions, embed
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.errors import InputError
from cxrprobe.eval.experiment import run_fewshot

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
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; give the demo a new folder with --out")
    out.mkdir(parents=True, exist_ok=True)
    paths = DemoPaths(out / "data", out / "demo.h5", out / "results")
    notify(f"1/3 writing {DEMO_IMAGES} generated chest X-ray stand-ins to {paths.data}")
    write_nih_folder(paths.data, DEMO_IMAGES, seed=0, image_size=224)
    notify("2/3 embedding them with cxrprobe-tiny (random weights) into the feature cache")
    embed(EmbedOptions(data_dir=paths.data, out=paths.cache, model="cxrprobe-tiny", pretrained="none", device="cpu"))
    notify(f"3/3 few-shot grid: shots {DEMO_SHOTS} x {DEMO_SEEDS} seeds x every base head")
    run_fewshot(paths.cache, paths.results, DEMO_SHOTS, DEMO_SEEDS, "all", jobs, strict_shots=False)
    return paths
