"""VinDr-CXR on the real Kaggle (VinBigData) table, torchxrayvision's package data: one label
per image, the union of its radiologists' rows, and a seeded split. No PhysioNet table is at
hand, so that layout is built from the same real rows: each radiologist's rows of an image
pivoted into one row of 0/1 columns under PhysioNet's header (the 13 labels Kaggle's table
lacks all 0), a share of the images made the official test set, one row each (the union of
its rows, standing in for the radiologists' consensus). End to end on both layouts with
generated DICOMs, and bad tables refused in one line."""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from helpers import assert_one_line_error, rewrite_csv, snapshot

from cxrprobe.data.datasets import detect
from cxrprobe.data.synthetic_dicom import write_dicom
from cxrprobe.data.vindr import KAGGLE_CLASSES, OFFICIAL_TEST_SOURCE, load_vindr_metadata

KAGGLE_HEADER = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
# PhysioNet's label columns, in its order: 22 local labels, then 6 global ones
PHYSIONET_LABELS = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
                    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
                    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
                    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
                    "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
CLASSES = PHYSIONET_LABELS[:-1]
LACKING = tuple(c for c in CLASSES if c not in KAGGLE_CLASSES)  # no Kaggle row marks them
ANNOTATIONS = Path("annotations")


@pytest.fixture(scope="module")
def real_rows():
    source = importlib.resources.files("torchxrayvision") / "data" / "vinbigdata-train.csv.gz"
    return list(csv.reader(io.StringIO(gzip.decompress(source.read_bytes()).decode(), newline="")))


@pytest.fixture(scope="module")
def by_image(real_rows):
    """Image id -> its rows, in the table's order."""
    found = {}
    for row in real_rows[1:]:
        found.setdefault(row[0], []).append(row)
    return found


def marked(rows):
    """The class names the rows mark (No finding included)."""
    return {row[1] for row in rows}


def first_of_each_class(by_image, per_class, normals):
    """The first ``per_class`` images positive for each Kaggle class, then ``normals`` normal ones."""
    marks = {i: marked(rows) for i, rows in by_image.items()}
    chosen = []
    for name in KAGGLE_CLASSES:
        chosen += [i for i, found in marks.items() if name in found and i not in chosen][:per_class]
    return chosen + [i for i, found in marks.items() if found == {"No finding"}][:normals]


def write_dicoms(folder, images):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, image in enumerate(images):
        write_dicom(folder / f"{image}.dicom", rng.integers(0, 4096, (48, 48)), window=(2048, 4096),
                    photometric="MONOCHROME1" if k % 4 == 0 else "MONOCHROME2")


def kaggle_folder(root, by_image, images):
    """Kaggle's layout: the real rows of ``images`` in train.csv, a DICOM each under train/."""
    root.mkdir()
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([KAGGLE_HEADER, *[row for i in images for row in by_image[i]]])
    write_dicoms(root / "train", images)
    return root


def physionet_tables(by_image, train, test):
    """PhysioNet's two label tables built from real Kaggle rows: a row per (train image,
    radiologist), a row per test image; the test table spells "Other disease" as the real one."""
    train_rows = [["image_id", "rad_ID", *PHYSIONET_LABELS]]
    for image in train:
        for rad in dict.fromkeys(row[3] for row in by_image[image]):
            found = marked(row for row in by_image[image] if row[3] == rad)
            train_rows.append([image, rad, *[str(int(c in found)) for c in PHYSIONET_LABELS]])
    test_rows = [["image_id", *[c.removesuffix("s") if c == "Other diseases" else c for c in PHYSIONET_LABELS]]]
    for image in test:
        found = marked(by_image[image])
        found = found - {"No finding"} or found
        test_rows.append([image, *[str(int(c in found)) for c in PHYSIONET_LABELS]])
    return train_rows, test_rows


def physionet_folder(root, by_image, train, test, dicoms=True):
    (root / ANNOTATIONS).mkdir(parents=True)
    for name, rows in zip(("image_labels_train.csv", "image_labels_test.csv"), physionet_tables(by_image, train, test)):
        with open(root / ANNOTATIONS / name, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    if dicoms:
        write_dicoms(root / "train", train)
        write_dicoms(root / "test", test)
    return root


def reference_labels(table, by_image, classes):
    """Each row's labels as the union of its image's Kaggle rows, computed here plainly."""
    return [[c in marked(by_image[i.removesuffix(".dicom")]) for c in classes] for i in table.image_ids]


def test_the_whole_real_kaggle_table(tmp_path, real_rows, by_image):
    assert real_rows[0] == KAGGLE_HEADER
    with gzip.open(tmp_path / "train.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows(real_rows)
    assert detect(tmp_path) == "vindr"
    metadata, notes = load_vindr_metadata(tmp_path)
    table = metadata.table
    assert len(table) == len(by_image) == 15_000 and len(real_rows) - 1 == 67_914
    assert table.classes == KAGGLE_CLASSES and metadata.dataset == "vindr-cxr"
    assert table.labels.astype(bool).tolist() == reference_labels(table, by_image, KAGGLE_CLASSES)
    assert table.normal.tolist() == [marked(by_image[i.removesuffix(".dicom")]) == {"No finding"}
                                     for i in table.image_ids]
    assert int(table.normal.sum()) == 10_606
    assert set(table.split) == {"train", "val", "test"}
    assert metadata.test_source.startswith("a seeded patient-disjoint split") and "own patient" in notes[0]


def test_a_physionet_layout_built_from_the_real_rows(tmp_path, by_image):
    images = sorted(by_image)
    test = images[::5]
    train = [i for i in images if i not in set(test)]
    data = physionet_folder(tmp_path / "vindr", by_image, train, test, dicoms=False)
    assert detect(data) == "vindr"
    metadata = load_vindr_metadata(data)[0]
    table = metadata.table
    assert len(table) == 15_000 and table.classes == CLASSES  # "Other disease" of the test table is "Other diseases"
    assert table.labels.astype(bool).tolist() == reference_labels(table, by_image, CLASSES)  # the union
    assert not table.labels[:, [CLASSES.index(c) for c in LACKING]].any()
    assert table.normal.tolist() == [marked(by_image[i.removesuffix(".dicom")]) == {"No finding"}
                                     for i in table.image_ids]
    split = dict(zip(table.image_ids, table.split))
    assert {split[f"{i}.dicom"] for i in test} == {"test"}  # the official test set as it is
    assert {split[f"{i}.dicom"] for i in train} == {"train", "val"}  # validation carved from train alone
    assert metadata.test_source == OFFICIAL_TEST_SOURCE and metadata.label_policy["readers"].startswith("union")
    # the radiologist column in either case
    rewrite_csv(data / ANNOTATIONS / "image_labels_train.csv",
                lambda rows: [["image_id", "rad_id", *rows[0][2:]], *rows[1:]])
    assert load_vindr_metadata(data)[0].table.fingerprint() == table.fingerprint()


def test_a_chexpert_folder_is_still_chexpert(tmp_path):
    """CheXpert's real train.csv: VinDr's detector, which goes first, reads its header and lets it pass."""
    real = importlib.resources.files("torchxrayvision") / "data" / "chexpert_train.csv.gz"
    (tmp_path / "train.csv.gz").symlink_to(real)
    assert detect(tmp_path) == "chexpert"


def embedded(cli, tmp_path, data, classes):
    """The cache of ``data`` (its dataset detected), checked, and a few-shot grid's config."""
    cache = tmp_path / "vindr.h5"
    embedding = cli("embed", "--data-dir", data, "--out", cache, *TINY)
    assert embedding.code == 0, embedding.stderr
    assert "each image is taken as its own patient" in embedding.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["dataset"] == "vindr-cxr" and summary["classes"] == list(classes) and not summary["failures"]
    return cache, summary


def fewshot(cli, tmp_path, cache, *flags):
    out = tmp_path / "grid"
    grid = cli("fewshot", "--cache", cache, "--shots", "1,2", "--seeds", "2", "--heads", "prototype", "--jobs", "1",
               "--out", out, *flags)
    assert grid.code == 0, grid.stderr
    return json.loads((out / "config.json").read_text())


def test_embed_info_fewshot_on_a_kaggle_layout(tmp_path, cli, by_image):
    # 4 normals: the fewest for which the seeded split leaves every class a positive in train and in test
    chosen = first_of_each_class(by_image, per_class=4, normals=4)
    data = kaggle_folder(tmp_path / "vinbigdata", by_image, chosen)
    cache, summary = embedded(cli, tmp_path, data, KAGGLE_CLASSES)
    assert summary["rows"] == len(chosen) == 60
    from cxrprobe.cache.reader import FeatureCache

    with FeatureCache(cache) as opened:
        labels, split = opened.labels, opened.table.split
        assert labels.astype(bool).tolist() == reference_labels(opened.table, by_image, KAGGLE_CLASSES)
    for name in ("train", "test"):
        assert labels[split == name].any(axis=0).all(), name
    config = fewshot(cli, tmp_path, cache)
    assert config["labels"]["test"].startswith("a seeded") and not config["undefined_findings"]


def test_embed_info_fewshot_on_a_physionet_layout(tmp_path, cli, by_image):
    chosen = first_of_each_class(by_image, per_class=4, normals=4)
    test = chosen[::4]  # one in four of each class's images, and of the normals
    train = [i for i in chosen if i not in test]
    data = physionet_folder(tmp_path / "vindr", by_image, train, test)
    cache, summary = embedded(cli, tmp_path, data, CLASSES)
    assert summary["rows"] == len(chosen) and summary["splits"]["test"]["images"] == len(test)
    from cxrprobe.cache.reader import FeatureCache

    with FeatureCache(cache) as opened:
        labels, split = opened.labels, opened.table.split
        assert {s for i, s in zip(opened.table.image_ids, split) if i.removesuffix(".dicom") in test} == {"test"}
    kaggle = [CLASSES.index(c) for c in KAGGLE_CLASSES]
    for name in ("train", "test"):
        assert labels[split == name][:, kaggle].any(axis=0).all(), name
    # the 13 labels no Kaggle row marks have no positive, so no AUC: fewshot refuses them unless allowed
    config = fewshot(cli, tmp_path, cache, "--allow-undefined")
    assert config["labels"]["test"] == OFFICIAL_TEST_SOURCE and config["undefined_findings"] == list(LACKING)


def drop(rows, column):
    at = rows[0].index(column)
    return [[v for j, v in enumerate(row) if j != at] for row in rows]


def first_cell(rows, column, value):
    """Line 2's ``column`` set to ``value``."""
    at = rows[0].index(column)
    return [rows[0], [value if j == at else v for j, v in enumerate(rows[1])], *rows[2:]]


TRAIN, TEST = ANNOTATIONS / "image_labels_train.csv", ANNOTATIONS / "image_labels_test.csv"


@pytest.mark.parametrize("layout, table, change, phrase", [
    ("kaggle", "train.csv", lambda rows: drop(rows, "class_name"), "train.csv has no 'class_name' column"),
    ("kaggle", "train.csv", lambda rows: first_cell(rows, "image_id", "../../x"),
     "train.csv: line 2: image_id '../../x' is not a VinDr-CXR image id"),
    ("kaggle", "train.csv", lambda rows: first_cell(rows, "class_name", "Dragon"),
     "train.csv: line 2: class_name 'Dragon' with class_id"),
    ("physionet", TRAIN, lambda rows: drop(rows, "rad_ID"), "image_labels_train.csv has no 'rad_ID' column"),
    ("physionet", TRAIN, lambda rows: drop(rows, "No finding"), "image_labels_train.csv has no 'No finding' column"),
    ("physionet", TRAIN, lambda rows: first_cell(rows, "Atelectasis", "2"),
     "image_labels_train.csv: line 2: Atelectasis '2' must be 0 or 1"),
    ("physionet", TEST, lambda rows: first_cell(rows, "image_id", "/etc/passwd"),
     "image_labels_test.csv: line 2: image_id '/etc/passwd' is not a VinDr-CXR image id"),
    ("physionet", TEST, lambda rows: drop(rows, "Edema"), "different label columns: 'Edema' is in one only"),
])
def test_bad_vindr_tables_end_in_one_line(tmp_path, cli, by_image, layout, table, change, phrase):
    chosen = first_of_each_class(by_image, per_class=1, normals=2)
    if layout == "kaggle":
        data = kaggle_folder(tmp_path / "vindr", by_image, chosen)
    else:
        data = physionet_folder(tmp_path / "vindr", by_image, chosen[1:], chosen[:1])
    rewrite_csv(data / table, change)
    before = snapshot(tmp_path)
    assert_one_line_error(cli("embed", "--data-dir", data, "--out", tmp_path / "out.h5", "--dataset", "vindr", *TINY),
                          phrase)
    assert snapshot(tmp_path) == before
