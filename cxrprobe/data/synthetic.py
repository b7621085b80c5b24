"""A small NIH-shaped dataset folder, generated, for tests, benchmarks and the demo.

The folder looks like a real NIH download (a v2020 metadata CSV, both split lists, PNGs in
``images/`` or the Kaggle ``images_NNN/images/`` layout), so every code path that reads NIH
reads it. Its rows are either made up here or real NIH rows (``write_nih_folder_for``: real
ids, patients, labels and splits, e.g. from the bundled metadata). Findings leave a visible mark (a bright disc at a place of their own), so a model
can learn them. Images are either drawn here or copied from a pool of real PNGs (to time
real decoding).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxrprobe.data.table import ImageTable
from cxrprobe.labels import FINDINGS, NO_FINDING

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def write_nih_folder(
    root: Path,
    n_images: int,
    seed: int = 0,
    image_size: int = 256,
    layout: str = "flat",
    test_fraction: float = 0.25,
    png_pool: list[Path] | None = None,
) -> list[str]:
    """Write an NIH-like dataset of ``n_images`` under ``root``; returns the image ids.

    Patients have 1-3 images each; a quarter of the patients are test. Half the images are
    "No Finding", the rest carry 1-3 findings.
    """
    rng = np.random.default_rng(seed)
    rows: list[_Row] = []
    patient = 0
    while len(rows) < n_images:
        patient += 1
        for follow_up in range(min(int(rng.integers(1, 4)), n_images - len(rows))):
            rows.append(_Row(f"{patient:08d}_{follow_up:03d}.png", _draw_labels(rng), follow_up, patient,
                             "PA" if patient % 3 else "AP"))
    test_patients = set(
        rng.choice(np.arange(1, patient + 1), size=max(1, round(test_fraction * patient)), replace=False).tolist()
    )
    return _write_folder(Path(root), rows, {r.image_id for r in rows if r.patient in test_patients}, rng,
                         image_size, layout, png_pool)


def write_nih_folder_for(root: Path, table: ImageTable, seed: int = 0, image_size: int = 256) -> list[str]:
    """Write a dataset for real metadata rows: their ids, patients, views, labels and official
    split, with a generated image of those labels for each. Returns the image ids."""
    rng = np.random.default_rng(seed)
    rows = [
        _Row(str(image_id), "|".join(f for f, on in zip(FINDINGS, labels) if on) or NO_FINDING,
             int(str(image_id).rsplit("_", 1)[1].split(".")[0]), int(patient), str(view))
        for image_id, labels, patient, view in zip(table.image_ids, table.labels, table.patient_ids, table.view)
    ]
    test = set(table.image_ids[table.split == "test"].tolist())
    return _write_folder(Path(root), rows, test, rng, image_size, "flat", None)


def stratified_rows(table: ImageTable, per_finding: tuple[int, int], normals: tuple[int, int], seed: int) -> np.ndarray:
    """Row indices of a small sample of ``table`` in which every finding has positives in both
    official splits: ``per_finding`` = (train_val, test) images drawn positive for each finding,
    ``normals`` = the same for "No Finding" images. Sorted, without repeats."""
    rng = np.random.default_rng(seed)
    test = table.split == "test"
    groups = [table.labels[:, k] == 1 for k in range(len(FINDINGS))] + [table.labels.sum(axis=1) == 0]
    counts = [per_finding] * len(FINDINGS) + [normals]
    chosen: set[int] = set()
    for in_group, (n_train_val, n_test) in zip(groups, counts):
        for in_split, n in ((~test, n_train_val), (test, n_test)):
            pool = np.setdiff1d(np.flatnonzero(in_group & in_split), list(chosen))
            chosen.update(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist())
    return np.array(sorted(chosen))


@dataclass(frozen=True)
class _Row:
    image_id: str
    labels: str  # NIH's "Finding Labels" text
    follow_up: int
    patient: int
    view: str


def _write_folder(root: Path, rows: list[_Row], test: set[str], rng: np.random.Generator, image_size: int,
                  layout: str, png_pool: list[Path] | None) -> list[str]:
    if layout not in ("flat", "kaggle"):
        raise ValueError("layout must be 'flat' or 'kaggle'")
    for index, row in enumerate(rows):
        folder = root / "images" if layout == "flat" else root / f"images_{index // 50 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        if png_pool:
            shutil.copyfile(png_pool[index % len(png_pool)], folder / row.image_id)
        else:
            _draw_image(row.labels, image_size, rng).save(folder / row.image_id, compress_level=1)
    lines = [HEADER]
    for r in rows:
        pid = r.patient
        lines.append(f"{r.image_id},{r.labels},{r.follow_up},{pid},{40 + pid % 40},{'MF'[pid % 2]},{r.view},"
                     "1024,1024,0.143,0.143")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    (root / "test_list.txt").write_text("\n".join(r.image_id for r in rows if r.image_id in test))
    (root / "train_val_list.txt").write_text("\n".join(r.image_id for r in rows if r.image_id not in test))
    return [r.image_id for r in rows]


def _draw_labels(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return NO_FINDING
    count = int(rng.integers(1, 4))
    return "|".join(sorted(rng.choice(FINDINGS, size=count, replace=False).tolist()))


def _draw_image(labels: str, size: int, rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels = 60 + 80 * (1 - np.abs(xx - 0.5) * 2) + rng.normal(0, 12, (size, size))
    for name in labels.split("|"):
        if name in FINDINGS:
            k = FINDINGS.index(name)
            cy, cx = 0.2 + 0.6 * ((k * 5) % 14) / 13, 0.2 + 0.6 * k / 13
            pixels += 90 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 0.012)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
