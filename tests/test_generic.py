"""A user's own export: a CSV or imagefolder's metadata.jsonl naming images and labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import assert_one_line_error
from PIL import Image

from cxrprobe.data.generic import Columns, load_csv_metadata

TINY = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--workers", "0")
VALUES = ("1", "0", "-1", "")


def export(root, n=120, seed=0, split=True):
    """Images under hospital/<site>/, a labels.csv with two findings, patients and splits."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        patient = f"P{i // 2:04d}"
        relative = f"hospital/site{i % 3}/img{i:04d}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / relative)
        part = ["train", "val", "test", "train", "test"][(i // 2) % 5]
        rows.append({"path": relative, "patient": patient, "split": part, "study": f"{patient}-1",
                     "Edema": str(rng.choice(VALUES, p=[0.3, 0.5, 0.1, 0.1])),
                     "Effusion": str(rng.choice(VALUES, p=[0.3, 0.6, 0.05, 0.05]))})
    fields = ["path", "patient", *(["split"] if split else []), "study", "Edema", "Effusion"]
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


COLUMNS = ("--dataset", "csv", "--labels", "labels.csv", "--image-col", "path", "--label-cols", "Edema,Effusion",
           "--patient-col", "patient", "--split-col", "split", "--study-col", "study")


def test_a_csv_export_runs_embed_info_fewshot_zeroshot(tmp_path, cli, monkeypatch):
    rows = export(tmp_path)
    monkeypatch.chdir(tmp_path)
    embedded = cli("embed", "--data-dir", tmp_path, "--out", tmp_path / "mine.h5", *COLUMNS, *TINY)
    assert embedded.code == 0, embedded.stderr
    summary = json.loads(cli("info", tmp_path / "mine.h5", "--json").stdout)
    assert summary["dataset"] == "csv" and summary["classes"] == ["Edema", "Effusion"]
    unknown = sum(r["Edema"] == "-1" for r in rows if r["split"] == "train")
    assert summary["splits"]["train"]["unknown"]["Edema"] == unknown  # -1 is unknown under U-Ignore
    grid = cli("fewshot", "--cache", tmp_path / "mine.h5", "--shots", "1,2", "--seeds", "2", "--jobs", "1",
               "--heads", "prototype,logreg,zeroshot", "--out", tmp_path / "grid")
    assert grid.code == 0, grid.stderr
    assert (tmp_path / "grid" / "per_class.csv").read_text().startswith("head,shots,metric,Edema,Effusion")
    zero = cli("zeroshot", "--cache", tmp_path / "mine.h5", "--out", tmp_path / "zs", "--bootstrap", "20")
    assert zero.code == 0, zero.stderr


def test_imagefolder_metadata_without_patients_or_splits_gets_a_recorded_seeded_split(tmp_path, cli):
    rows = export(tmp_path, split=False)
    with open(tmp_path / "metadata.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"file_name": r["path"], "Edema": None if r["Edema"] == "" else float(r["Edema"]),
                                "Effusion": r["Effusion"] or None}) + "\n")
    metadata, notes = load_csv_metadata(tmp_path, Columns(("Edema", "Effusion")))
    assert notes and "own patient" in notes[0]
    table = metadata.table
    assert set(table.split) == {"train", "val", "test"} and "seeded patient-disjoint split" in metadata.test_source
    again, _ = load_csv_metadata(tmp_path, Columns(("Edema", "Effusion")))
    assert np.array_equal(again.table.split, table.split)  # seeded: the same split every time
    embedded = cli("embed", "--data-dir", tmp_path, "--out", tmp_path / "folder.h5", "--dataset", "csv",
                   "--label-cols", "Edema,Effusion", *TINY)
    assert embedded.code == 0, embedded.stderr
    assert "own patient" in embedded.stderr


@pytest.mark.parametrize("change, extra, phrase", [
    (lambda rows: [{**rows[0], "path": "../outside.png"}, *rows[1:]], (), "must be relative to the data dir"),
    (lambda rows: [{**rows[0], "path": "/etc/passwd"}, *rows[1:]], (), "must be relative to the data dir"),
    (lambda rows: [{**rows[0], "Edema": "maybe"}, *rows[1:]], (), "a label must be 1, 0, -1 or blank"),
    (lambda rows: [rows[0], *rows], (), "is listed more than once"),
    (lambda rows: [{**r, "split": "train"} for r in rows], (), "no image is in the test split"),
    (lambda rows: rows, ("--label-cols", "Edema,Mass"), "has no 'Mass' column"),
    (lambda rows: [{**r, "split": "holdout"} for r in rows], (), "split 'holdout' is none of"),
    (lambda rows: [{**rows[0], "split": "test"}, {**rows[1], "split": "train"}, *rows[2:]], (),
     "has images in both train and test; splits must be patient-disjoint"),
])
def test_bad_exports_end_in_one_line(tmp_path, cli, monkeypatch, change, extra, phrase):
    rows = change(export(tmp_path, n=30))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.chdir(tmp_path)
    result = cli("embed", "--data-dir", tmp_path, "--out", tmp_path / "out.h5", *COLUMNS, *extra, *TINY)
    assert_one_line_error(result, phrase)
    assert not (tmp_path / "out.h5").exists()


def test_label_columns_are_required_with_the_csv_adapter(tmp_path, cli):
    export(tmp_path, n=10)
    result = cli("embed", "--data-dir", tmp_path, "--out", tmp_path / "out.h5", "--dataset", "csv", *TINY)
    assert_one_line_error(result, "--label-cols must name the label columns")
