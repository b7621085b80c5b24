"""``cxrprobe demo``: the whole pipeline offline, on generated data, in about a minute.

It takes about 600 real rows of the NIH metadata bundled with cxrprobe (their ids, patients,
labels and official split; every finding with positives in train and test), draws an image for
each (its findings as bright discs at places of their own), embeds them with the bundled tiny
model's random weights, runs the few-shot grid and the report.
Random weights carry no knowledge of text, so zero-shot sits at chance here by construction;
the learned heads rise with shots because the discs are there to be seen.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cxrprobe.commands.embed import EmbedOptions, embed
from cxrprobe.commands.fewshot import FewshotResult, run_fewshot
from cxrprobe.cores import usable_cores
from cxrprobe.data.nih import bundled_metadata_dir, load_nih_metadata
from cxrprobe.data.synthetic import stratified_rows, write_nih_folder_for
from cxrprobe.errors import InputError
from cxrprobe.eval.options import at_least_one
from cxrprobe.fsutil import check_writable_folder, reporting_no_room

# (train_val, test) images drawn positive for each finding, and "No Finding" images: ~600 in all
DEMO_PER_FINDING = (20, 10)
DEMO_NORMALS = (120, 60)
DEMO_SHOTS = (1, 2, 4, 8)
DEMO_SEEDS = 5


@dataclass(frozen=True)
class DemoPaths:
    data: Path
    cache: Path
    results: Path
    fewshot: FewshotResult | None = None  # the grid, in memory, once it has run


def run_demo(out: Path, jobs: int | None = None, notify: Callable[[str], None] = lambda _: None) -> DemoPaths:
    """The demo into the new or empty folder ``out``; ``jobs`` None is one process per usable core."""
    out = Path(out)
    jobs = at_least_one(usable_cores() if jobs is None else jobs, "jobs")  # now, not after a minute of work
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
    table = load_nih_metadata(bundled_metadata_dir()).table
    rows = stratified_rows(table, DEMO_PER_FINDING, DEMO_NORMALS, seed=0)
    notify(f"1/3 drawing chest X-ray stand-ins for {len(rows)} real NIH metadata rows into {paths.data}")
    write_nih_folder_for(paths.data, table.take(rows), seed=0, image_size=224)
    notify("2/3 embedding them with cxrprobe-tiny (random weights) into the feature cache")
    embed(EmbedOptions(data_dir=paths.data, out=paths.cache, model="cxrprobe-tiny", pretrained="none", device="cpu"))
    notify(f"3/3 few-shot grid: shots {','.join(map(str, DEMO_SHOTS))} x {DEMO_SEEDS} seeds x every head, "
           f"{jobs} processes")
    result = run_fewshot(paths.cache, shots=DEMO_SHOTS, seeds=DEMO_SEEDS, jobs=jobs, out=paths.results)
    return dataclasses.replace(paths, fewshot=result)
