"""SIIM-ACR Pneumothorax on its real mask table (torchxrayvision's package data): one label
per image from its rows, names and values stripped, DICOMs found anywhere below the data dir."""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import json

import numpy as np
import pytest
from conftest import TINY
from helpers import assert_one_line_error, rewrite_csv, snapshot

from cxrprobe.data.siim import load_siim_metadata
from cxrprobe.data.synthetic_dicom import write_dicom


def real_rows():
    source = importlib.resources.files("torchxrayvision") / "data" / "siim-pneumothorax-train-rle.csv.gz"
    with gzip.open(source, "rt", newline="") as f:
        return list(csv.reader(f))


def test_the_whole_real_table_gives_one_label_per_image(tmp_path):
    rows = real_rows()
    assert rows[0] == ["ImageId", " EncodedPixels"]  # the real file's leading space
    with gzip.open(tmp_path / "train-rle.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows(rows)
    metadata, notes = load_siim_metadata(tmp_path)
    table = metadata.table
    masked = {}
    for image, mask in rows[1:]:
        masked[image.strip()] = masked.get(image.strip(), False) or mask.strip() != "-1"
    assert len(table) == len(masked) == 12_047
    assert dict(zip([i.removesuffix(".dcm") for i in table.image_ids], table.labels[:, 0].astype(bool))) == masked
    assert int(table.labels.sum()) == sum(masked.values())
    assert set(table.split) == {"train", "val", "test"}
    assert metadata.test_source.startswith("a seeded patient-disjoint split") and "own patient" in notes[0]
    # copies differ on spaces around the values (" -1" where GLoRIA-style loaders expect it)
    with gzip.open(tmp_path / "train-rle.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows([rows[0], *[[image, f" {mask.strip()} "] for image, mask in rows[1:]]])
    assert load_siim_metadata(tmp_path)[0].table.fingerprint() == table.fingerprint()


def siim_folder(root, n_images=90):
    """The real rows of ``n_images`` images (those with several masks among them), and a DICOM
    for each under Kaggle's nested study / series folders."""
    rows = real_rows()
    by_image = {}
    for row in rows[1:]:
        by_image.setdefault(row[0], []).append(row)
    several = [i for i, r in by_image.items() if len(r) > 1][:10]
    chosen = several + [i for i in by_image if i not in several][: n_images - len(several)]
    root.mkdir()
    with open(root / "train-rle.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[r for i in chosen for r in by_image[i]]])
    rng = np.random.default_rng(0)
    for k, image in enumerate(chosen):
        folder = root / "dicom-images-train" / f"1.2.{k}" / f"1.3.{k}"
        folder.mkdir(parents=True)
        write_dicom(folder / f"{image}.dcm", rng.integers(0, 4096, (48, 48)), window=(2048, 4096))
    return root, chosen, by_image


def test_embed_info_fewshot_on_a_siim_layout(tmp_path, cli):
    data, chosen, by_image = siim_folder(tmp_path / "siim")
    cache = tmp_path / "siim.h5"
    embedded = cli("embed", "--data-dir", data, "--out", cache, *TINY)
    assert embedded.code == 0, embedded.stderr
    assert "each image is taken as its own patient" in embedded.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["dataset"] == "siim-acr-pneumothorax" and summary["classes"] == ["Pneumothorax"]
    assert summary["rows"] == len(chosen) and not summary["failures"]
    from cxrprobe.cache.reader import FeatureCache

    with FeatureCache(cache) as opened:
        expected = [any(r[1].strip() != "-1" for r in by_image[i.removesuffix(".dcm")]) for i in opened.table.image_ids]
        assert opened.labels[:, 0].astype(bool).tolist() == expected
    out = tmp_path / "grid"
    grid = cli("fewshot", "--cache", cache, "--shots", "1,2", "--seeds", "2", "--heads", "prototype",
               "--jobs", "1", "--out", out)
    assert grid.code == 0, grid.stderr
    assert json.loads((out / "config.json").read_text())["labels"]["test"].startswith("a seeded")


@pytest.mark.parametrize("change, phrase", [
    (lambda rows: [["ImageId", "Mask"], *rows[1:]], "has no 'EncodedPixels' column"),
    (lambda rows: [rows[0], [rows[1][0], "lots"], *rows[2:]], "line 2: EncodedPixels 'lots' is neither -1"),
    (lambda rows: [rows[0], ["../../x", "-1"], *rows[2:]], "line 2: ImageId '../../x' is not a DICOM UID"),
])
def test_bad_mask_tables_end_in_one_line(tmp_path, cli, change, phrase):
    data, _, _ = siim_folder(tmp_path / "siim", n_images=20)
    rewrite_csv(data / "train-rle.csv", change)
    before = snapshot(tmp_path)
    assert_one_line_error(cli("embed", "--data-dir", data, "--out", tmp_path / "out.h5", *TINY), phrase)
    assert snapshot(tmp_path) == before
