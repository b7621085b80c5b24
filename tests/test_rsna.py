"""RSNA Pneumonia on its real label table (torchxrayvision's package data): one label per
image from its box rows, DICOMs found anywhere below the data dir, the NIH overlap said."""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import zipfile

import numpy as np
import pytest
from conftest import TINY
from helpers import assert_one_line_error, rewrite_csv, snapshot

from cxrprobe.data.rsna import load_rsna_metadata
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.data.synthetic_dicom import write_dicom


def real_rows():
    source = importlib.resources.files("torchxrayvision") / "data" / "kaggle_stage_2_train_labels.csv.zip"
    with zipfile.ZipFile(source) as archive, archive.open("stage_2_train_labels.csv") as f:
        return list(csv.reader(io.TextIOWrapper(f, "utf-8", newline="")))


def test_the_whole_real_table_gives_one_label_per_image(tmp_path):
    rows = real_rows()
    with open(tmp_path / "stage_2_train_labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    metadata, notes = load_rsna_metadata(tmp_path)
    positive = {}
    for row in rows[1:]:
        positive[row[0]] = positive.get(row[0], False) or row[5] == "1"
    table = metadata.table
    assert len(table) == len(positive) == 26_684 and len(rows) - 1 == 30_227  # boxes: several rows an image
    assert dict(zip([i.removesuffix(".dcm") for i in table.image_ids], table.labels[:, 0].astype(bool))) == positive
    assert "re-annotated subset of NIH ChestX-ray14" in notes[0]


def rsna_folder(root, n_images=80):
    rows = real_rows()
    by_image = {}
    for row in rows[1:]:
        by_image.setdefault(row[0], []).append(row)
    chosen = list(by_image)[:n_images]
    (root / "stage_2_train_images").mkdir(parents=True)
    with open(root / "stage_2_train_labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[r for i in chosen for r in by_image[i]]])
    rng = np.random.default_rng(1)
    for image in chosen:
        write_dicom(root / "stage_2_train_images" / f"{image}.dcm", rng.integers(0, 256, (48, 48)), bits=8)
    return root, chosen, by_image


def test_embed_and_info_on_an_rsna_layout(tmp_path, cli):
    data, chosen, by_image = rsna_folder(tmp_path / "rsna")
    cache = tmp_path / "rsna.h5"
    embedded = cli("embed", "--data-dir", data, "--out", cache, *TINY)
    assert embedded.code == 0, embedded.stderr
    assert "re-annotated subset of NIH ChestX-ray14" in embedded.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["dataset"] == "rsna-pneumonia" and summary["classes"] == ["Pneumonia"]
    assert summary["rows"] == len(chosen) and summary["splits"]["test"]["images"] > 0
    assert "note: RSNA Pneumonia: its images are a re-annotated subset" in cli("info", cache).stdout
    own = cli("fewshot", "--cache", cache, "--shots", "1,2", "--seeds", "2", "--heads", "prototype", "--jobs", "1",
              "--out", tmp_path / "own")
    assert own.code == 0, own.stderr
    assert json.loads((tmp_path / "own" / "config.json").read_text())["labels"]["test"].startswith("a seeded")
    # scored as the external test of an NIH cache: said to be none, on NIH's Pneumonia
    write_nih_folder(tmp_path / "nih", 60, seed=2, image_size=64)
    assert cli("embed", "--data-dir", tmp_path / "nih", "--out", tmp_path / "nih.h5", *TINY).code == 0
    out = tmp_path / "cross"
    cross = cli("fewshot", "--cache", tmp_path / "nih.h5", "--test-cache", cache, "--shots", "1", "--seeds", "2",
                "--heads", "prototype", "--jobs", "1", "--out", out)
    assert cross.code == 0, cross.stderr
    assert "re-annotated subset of NIH ChestX-ray14" in cross.stderr and "no independent external test" in cross.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == ["Pneumonia"] and "no independent external test" in config["test_set"]["notes"][0]


@pytest.mark.parametrize("change, phrase", [
    (lambda rows: [rows[0], [*rows[1][:5], "2"], *rows[2:]], "line 2: Target '2' must be 0 or 1"),
    (lambda rows: [["patientId", "x", "y", "width", "height"], *[r[:5] for r in rows[1:]]], "has no 'Target' column"),
])
def test_bad_label_tables_end_in_one_line(tmp_path, cli, change, phrase):
    data, _, _ = rsna_folder(tmp_path / "rsna", n_images=10)
    rewrite_csv(data / "stage_2_train_labels.csv", change)
    before = snapshot(tmp_path)
    assert_one_line_error(cli("embed", "--data-dir", data, "--out", tmp_path / "out.h5", *TINY), phrase)
    assert snapshot(tmp_path) == before
