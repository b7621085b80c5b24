"""A small NIH-shaped dataset folder, generated, for tests, benchmarks and the demo.

The folder looks like a real NIH download (a v2020 metadata CSV, both split lists, PNGs in
``images/`` or the Kaggle ``images_NNN/images/`` layout), so every code path that reads NIH
reads it. Findings leave a visible mark (a bright disc at a place of their own), so a model
can learn them. Images are either drawn here or copied from a pool of real PNGs (to time
real decoding).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

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
    if layout not in ("flat", "kaggle"):
        raise ValueError("layout must be 'flat' or 'kaggle'")
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows: list[tuple[str, str, int, int]] = []
    patient = 0
    while len(rows) < n_images:
        patient += 1
        for follow_up in range(min(int(rng.integers(1, 4)), n_images - len(rows))):
            image_id = f"{patient:08d}_{follow_up:03d}.png"
            rows.append((image_id, _draw_labels(rng), follow_up, patient))
    test_patients = set(
        rng.choice(np.arange(1, patient + 1), size=max(1, round(test_fraction * patient)), replace=False).tolist()
    )
    for index, (image_id, labels, _, _) in enumerate(rows):
        folder = root / "images" if layout == "flat" else root / f"images_{index // 50 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        if png_pool:
            shutil.copyfile(png_pool[index % len(png_pool)], folder / image_id)
        else:
            _draw_image(labels, image_size, rng).save(folder / image_id, compress_level=1)
    lines = [HEADER]
    for image_id, labels, follow_up, pid in rows:
        view = "PA" if pid % 3 else "AP"
        lines.append(f"{image_id},{labels},{follow_up},{pid},{40 + pid % 40},{'MF'[pid % 2]},{view},1024,1024,0.143,0.143")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    test = [r[0] for r in rows if r[3] in test_patients]
    train_val = [r[0] for r in rows if r[3] not in test_patients]
    (root / "test_list.txt").write_text("\n".join(test))
    (root / "train_val_list.txt").write_text("\n".join(train_val))
    return [r[0] for r in rows]


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
