"""CheXpert: the real train.csv (torchxrayvision's package data, never copied here) parses as
documented, the label policies set labels and known-masks, and embed -> info -> fewshot ->
zeroshot runs end to end on generated JPEGs laid out as the real download."""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error
from PIL import Image

from cxrprobe.data.chexpert import CLASSES, load_chexpert_metadata
from cxrprobe.data.policies import LabelPolicy
from cxrprobe.errors import DataError
from cxrprobe.labels import NORMAL_IF_NO_FINDING

TINY = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--workers", "0")


@pytest.fixture(scope="module")
def real_train_csv() -> Path:
    """CheXpert's real train.csv, as torchxrayvision ships it (a pinned test dependency)."""
    return Path(str(importlib.resources.files("torchxrayvision") / "data" / "chexpert_train.csv.gz"))


@pytest.fixture(scope="module")
def real_rows(real_train_csv) -> tuple[list[str], list[list[str]]]:
    with gzip.open(real_train_csv, "rt", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_the_whole_real_table_parses_with_its_views_and_four_values(tmp_path, real_train_csv, real_rows):
    header, rows = real_rows
    shutil.copy(real_train_csv, tmp_path / "train.csv.gz")
    valid = [[r[0].replace("/train/", "/valid/", 1), *r[1:]] for r in rows[:20]]
    write_csv(tmp_path / "valid.csv", header, valid)
    everything = load_chexpert_metadata(tmp_path, views="all")
    train = everything.table.split != "test"
    assert train.sum() == 223_414 and (~train).sum() == 20
    views = everything.table.view[train]
    assert [(views == v).sum() for v in ("AP", "PA", "lateral")] == [161_590, 29_420, 32_387]
    assert (views == "LL").sum() + (views == "RL").sum() == 17  # frontal, neither AP nor PA: left out by default
    frontal = load_chexpert_metadata(tmp_path)
    assert len(frontal.table) == 161_590 + 29_420 + sum(r[3] == "Frontal" and r[4] in ("AP", "PA") for r in rows[:20])
    table = everything.table
    assert table.label_set.classes == CLASSES and table.label_set.normal_rule == NORMAL_IF_NO_FINDING
    # patients and studies from the path; validation carved patient-wise from train
    assert table.patient_ids[0].startswith("patient") and table.study_ids[0].count("/") == 1
    assert not set(table.patient_ids[table.split == "val"]) & set(table.patient_ids[table.split == "train"])
    # the four values: 1 positive, 0 negative, -1 uncertain (unknown by default), blank negative
    column = header.index("Pleural Effusion")
    raw = {v: sum(r[column] == v for r in rows) for v in ("1.0", "0.0", "-1.0", "")}
    c = CLASSES.index("Pleural Effusion")
    labels, known = table.labels[train, c], table.known[train, c]
    assert labels.sum() == raw["1.0"] and (~known).sum() == raw["-1.0"]
    assert ((labels == 0) & known).sum() == raw["0.0"] + raw[""]
    normal_column = header.index("No Finding")
    assert table.normal[train].sum() == sum(r[normal_column] == "1.0" for r in rows)


@pytest.mark.parametrize("uncertain, blank", [("ignore", "negative"), ("zero", "negative"), ("one", "ignore")])
def test_each_policy_sets_labels_and_known_as_named(uncertain, blank):
    values = np.array([[1.0, 0.0, -1.0, np.nan]])
    labels, known = LabelPolicy(uncertain, blank).apply(values)
    expected_label = {"ignore": 0, "zero": 0, "one": 1}[uncertain]
    assert labels.tolist() == [[1, 0, expected_label, 0]]
    assert known.tolist() == [[True, True, uncertain != "ignore", blank != "ignore"]]


def chexpert_folder(root: Path, header: list[str], rows: list[list[str]], prefix: str = "CheXpert-v1.0-small/",
                    n_train: int = 240, n_valid: int = 60) -> Path:
    """A CheXpert download in miniature: real train rows, real rows re-filed as valid (0/1
    labels, as the radiologists' are), a generated JPEG at every path."""
    frontal = [r for r in rows if r[3] == "Frontal" and r[4] in ("AP", "PA")]
    train = frontal[:n_train]
    valid = [[re.sub(r"/train/patient[0-9]+/", f"/valid/patient{64541 + k}/", r[0]),  # patients of its own
              *[("1.0" if v == "1.0" else "0.0") if i >= 5 else v for i, v in enumerate(r[1:], start=1)]]
             for k, r in enumerate(frontal[n_train:n_train + n_valid])]
    rng = np.random.default_rng(0)
    for row in train + valid:
        relative = row[0].removeprefix("CheXpert-v1.0-small/")
        path = root / prefix / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path, quality=90)
    strip = (lambda p: p.removeprefix("CheXpert-v1.0-small/")) if prefix == "" else (lambda p: p)
    write_csv(root / "train.csv", header, [[strip(r[0]), *r[1:]] for r in train])
    write_csv(root / "valid.csv", header, [[strip(r[0]), *r[1:]] for r in valid])
    return root


def test_embed_info_fewshot_zeroshot_on_a_chexpert_layout(tmp_path, real_rows, cli):
    header, rows = real_rows
    data = chexpert_folder(tmp_path / "chexpert", header, rows)
    cache = tmp_path / "chexpert.h5"
    embedded = cli("embed", "--data-dir", data, "--out", cache, *TINY)  # --dataset auto detects it
    assert embedded.code == 0, embedded.stderr
    shown = cli("info", cache, "--json")
    summary = json.loads(shown.stdout)
    assert summary["dataset"] == "chexpert" and summary["classes"] == list(CLASSES)
    assert summary["label_policy"] == {"uncertain": "ignore", "blank": "negative"}
    assert summary["normal_rule"] == NORMAL_IF_NO_FINDING
    assert sum(summary["splits"]["train"]["unknown"].values()) > 0  # uncertain labels, unknown under ignore
    assert sum(summary["splits"]["test"]["unknown"].values()) == 0  # the radiologists' labels are 0/1
    assert "positives / negatives / unknown" in " ".join(cli("info", cache).stdout.split())
    out = tmp_path / "fewshot"
    grid = cli("fewshot", "--cache", cache, "--shots", "1,2", "--seeds", "2", "--heads", "prototype,logreg,zeroshot",
               "--jobs", "1", "--out", out, "--allow-undefined")
    assert grid.code == 0, grid.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == list(CLASSES)
    assert config["labels"]["policy"] == {"uncertain": "ignore", "blank": "negative"}
    assert (out / "per_class.csv").read_text().splitlines()[0] == "head,shots,metric," + ",".join(CLASSES)
    zero = cli("zeroshot", "--cache", cache, "--out", tmp_path / "zs", "--allow-undefined", "--bootstrap", "20")
    assert zero.code == 0, zero.stderr
    # another policy, another known-mask: U-Zeros knows every label
    zeros = tmp_path / "zeros.h5"
    assert cli("embed", "--data-dir", data, "--out", zeros, "--uncertain", "zero", *TINY).code == 0
    summary_zeros = json.loads(cli("info", zeros, "--json").stdout)
    assert sum(summary_zeros["splits"]["train"]["unknown"].values()) == 0
    assert summary_zeros["splits"]["train"]["labels"] == summary["splits"]["train"]["labels"]


def test_the_kaggle_layout_without_a_release_folder_is_found(tmp_path, real_rows, cli):
    header, rows = real_rows
    data = chexpert_folder(tmp_path / "kaggle", header, rows, prefix="", n_train=30, n_valid=10)
    metadata = load_chexpert_metadata(data)
    assert metadata.table.image_ids[0].startswith(("train/", "valid/"))
    from cxrprobe.data.datasets import locate

    assert (locate(data)[0].paths != "").all()


@pytest.mark.parametrize("change, phrase", [
    (lambda h, r: (h[:-1], [x[:-1] for x in r]), "no 'Support Devices' column"),
    (lambda h, r: (h, [[r[0][0], *r[0][1:5], "2.0", *r[0][6:]], *r[1:]]), "a label must be 1, 0, -1 or blank"),
    (lambda h, r: (h, [["CheXpert-v1.0-small/train/../../etc/passwd.jpg", *r[0][1:]], *r[1:]]),
     "is not a CheXpert image path"),
    (lambda h, r: (h, [r[0], r[0], *r[1:]]), "is listed more than once"),
])
def test_bad_chexpert_tables_end_in_one_line(tmp_path, real_rows, cli, change, phrase):
    header, rows = real_rows
    data = chexpert_folder(tmp_path / "bad", header, rows, n_train=20, n_valid=5)
    with open(data / "train.csv", newline="") as f:
        table = list(csv.reader(f))
    write_csv(data / "train.csv", *change(table[0], table[1:]))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("embed", "--data-dir", data, "--out", tmp_path / "out.h5", *TINY)
    assert_one_line_error(result, phrase)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(DataError, match=phrase):
        load_chexpert_metadata(data)


def add_official_test(root: Path, n_studies: int = 6, without_images: int = 1) -> list[list[str]]:
    """groundtruth.csv as rajpurkarlab/cheXpert-test-set-labels has it (per study, 0/1, No
    Finding first), a frontal and a lateral JPEG for every study but the last
    ``without_images``, and one image of a study it does not list."""
    rng = np.random.default_rng(1)
    header = ["Study", "No Finding", *CLASSES]
    rows = []
    for i in range(n_studies):
        labels = [str(int(v)) for v in rng.integers(0, 2, len(CLASSES))]
        rows.append([f"CheXpert-v1.0/test/patient{64741 + i}/study1", "0" if "1" in labels else "1", *labels])
        if i < n_studies - without_images:
            for view in ("view1_frontal", "view2_lateral"):
                path = root / "CheXpert-v1.0" / "test" / f"patient{64741 + i}" / "study1" / f"{view}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path, quality=90)
    stray = root / "CheXpert-v1.0" / "test" / "patient69999" / "study1" / "view1_frontal.jpg"
    stray.parent.mkdir(parents=True)
    shutil.copy(path, stray)
    write_csv(root / "groundtruth.csv", header, rows)
    return rows


def test_the_official_test_set_is_test_per_study_and_valid_csv_is_val(tmp_path, real_rows, cli):
    from cxrprobe.data.chexpert import OFFICIAL_TEST_SOURCE
    from cxrprobe.data.datasets import DatasetOptions, locate

    header, rows = real_rows
    data = chexpert_folder(tmp_path / "chexpert", header, rows, n_train=40, n_valid=10)
    truth = add_official_test(data)
    located, notes = locate(data, DatasetOptions(views="all"))
    table = located.metadata.table
    test = table.split == "test"
    assert located.metadata.test_source == OFFICIAL_TEST_SOURCE
    assert notes == ["groundtruth.csv: 1 of 6 test studies have no image under the data dir"]
    # two images (frontal, lateral) of each of the five studies with images; the stray one left out
    assert test.sum() == 10 and set(table.patient_ids[test]) == {f"patient{64741 + i}" for i in range(5)}
    assert (located.paths[test] != "").all()
    for row in truth[:5]:
        study = row[0].removeprefix("CheXpert-v1.0/test/")
        images = table.study_ids == study
        assert images.sum() == 2 and (table.labels[images] == [int(v) for v in row[2:]]).all()
        assert (table.normal[images] == (row[1] == "1")).all() and table.known[images].all()
    # valid.csv is val as it is, train.csv all train: no carving
    assert (table.split == "val").sum() == 10 and all(i.startswith("valid/") for i in table.image_ids[table.split == "val"])
    assert all(i.startswith("train/") for i in table.image_ids[table.split == "train"])
    frontal = locate(data)[0].metadata.table  # the default, frontal: the test images' frontal views
    assert sorted(frontal.view[frontal.split == "test"]) == ["frontal"] * 5
    refused = cli("embed", "--data-dir", data, "--out", tmp_path / "ap.h5", "--views", "AP", *TINY)
    assert_one_line_error(refused, "records no AP/PA")
    assert not (tmp_path / "ap.h5").exists()


def test_the_official_test_set_embeds_and_scores_per_study(tmp_path, real_rows, cli):
    header, rows = real_rows
    data = chexpert_folder(tmp_path / "chexpert", header, rows, n_train=40, n_valid=10)
    add_official_test(data, without_images=0)
    cache = tmp_path / "cache.h5"
    embedded = cli("embed", "--data-dir", data, "--out", cache, "--views", "all", *TINY)
    assert embedded.code == 0, embedded.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["test_source"].startswith("groundtruth.csv") and summary["splits"]["test"]["images"] == 12
    zero = cli("zeroshot", "--cache", cache, "--out", tmp_path / "zs", "--aggregate", "study-max",
               "--allow-undefined", "--bootstrap", "10")
    assert zero.code == 0, zero.stderr
    config = json.loads((tmp_path / "zs" / "config.json").read_text())
    assert config["aggregate"] == {"how": "study-max", "test_units": 6}  # 12 images of 6 studies
    assert config["labels"]["test"] == summary["test_source"]
    assert "test split: groundtruth.csv" in " ".join(cli("info", cache).stdout.split())


@pytest.mark.parametrize("change, phrase", [
    (lambda rows: [["CheXpert-v1.0/test/../../etc", *rows[0][1:]], *rows[1:]], "is not a CheXpert test study"),
    (lambda rows: [rows[0], rows[0], *rows[1:]], "is listed more than once"),
    (lambda rows: [[rows[0][0], "2", *rows[0][2:]], *rows[1:]], "a label must be 1, 0, -1 or blank"),
])
def test_bad_official_test_labels_end_in_one_line(tmp_path, real_rows, cli, change, phrase):
    header, rows = real_rows
    data = chexpert_folder(tmp_path / "bad", header, rows, n_train=20, n_valid=5)
    truth = add_official_test(data, n_studies=3)
    write_csv(data / "groundtruth.csv", ["Study", "No Finding", *CLASSES], change(truth))
    result = cli("embed", "--data-dir", data, "--out", tmp_path / "out.h5", *TINY)
    assert_one_line_error(result, phrase)
    assert not (tmp_path / "out.h5").exists()


def test_adapt_trains_on_chexpert_s_classes_with_unknown_labels_masked(tmp_path, real_rows, cli):
    import h5py

    from cxrprobe.data.synthetic import write_nih_folder

    header, rows = real_rows
    data = chexpert_folder(tmp_path / "chexpert", header, rows, n_train=60, n_valid=10)
    run = tmp_path / "run"
    adapt_flags = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--unfreeze", "1",
                   "--batch-size", "16", "--workers", "0")
    refused = cli("adapt", "--data-dir", data, "--out", run, *adapt_flags, "--hold-out", "Hernia")
    assert_one_line_error(refused, "unknown finding 'Hernia' in --hold-out; expected some of Enlarged Cardiomediastinum")
    assert not run.exists()
    result = cli("adapt", "--data-dir", data, "--out", run, *adapt_flags, "--epochs", "2", "--hold-out", "Fracture")
    assert result.code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == list(CLASSES) and config["dataset_name"] == "chexpert"
    assert (config["uncertain"], config["blank"], config["views"]) == ("ignore", "negative", "frontal")
    with open(run / "metrics.csv", newline="") as f:
        history = list(csv.DictReader(f))
    # train.csv's uncertain labels are NaN targets: a leak would make the loss NaN
    assert all(np.isfinite(float(r["train_loss"])) for r in history)
    assert {f"val_auc_{c}" for c in CLASSES} <= set(history[0])
    # embedding the same dataset stores the head's 13 logits; another dataset's cache gets none
    cache = tmp_path / "adapted.h5"
    assert cli("embed", "--data-dir", data, "--out", cache, "--checkpoint", run, "--device", "cpu",
               "--workers", "0").code == 0
    with h5py.File(cache) as f:
        assert f["head/logits"].shape == (int((f["split"][()] != b"").sum()), len(CLASSES))
    nih = tmp_path / "nih"
    write_nih_folder(nih, 20, seed=3, image_size=64)
    other = cli("embed", "--data-dir", nih, "--out", tmp_path / "nih.h5", "--checkpoint", run, "--device", "cpu",
                "--workers", "0")
    assert other.code == 0, other.stderr
    assert "its logits are not stored" in other.stderr
    with h5py.File(tmp_path / "nih.h5") as f:
        assert "head" not in f
