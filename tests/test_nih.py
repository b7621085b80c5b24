"""The NIH adapter on the real metadata files, their quirks, and malformed copies."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import pytest

from cxrprobe.data.nih import bundled_metadata_dir, load_nih_metadata
from cxrprobe.data.splits import carve_validation
from cxrprobe.errors import DataError
from cxrprobe.labels import FINDINGS

# Images per finding in the v2020 labels, counted from Data_Entry_2017_v2020.csv: (train_val, test)
V2020_COUNTS = {
    "Infiltration": (13782, 6112), "Effusion": (8659, 4658), "Atelectasis": (8280, 3279),
    "Nodule": (4708, 1623), "Mass": (4034, 1748), "Pneumothorax": (2637, 2665),
    "Consolidation": (2852, 1815), "Pleural_Thickening": (2242, 1143), "Cardiomegaly": (1707, 1069),
    "Emphysema": (1423, 1093), "Edema": (1378, 925), "Fibrosis": (1251, 435),
    "Pneumonia": (876, 555), "Hernia": (141, 86),
}


@pytest.fixture(scope="module")
def nih(nih_metadata):
    return nih_metadata


def test_real_table_shape_and_splits(nih):
    table = nih.table
    assert nih.label_source == "Data_Entry_2017_v2020.csv"
    assert len(table) == 112_120
    assert len(np.unique(table.patient_ids)) == 30_805
    assert np.count_nonzero(table.split == "test") == 25_596
    assert np.count_nonzero(table.split != "test") == 86_524


def test_real_v2020_label_counts_per_official_split(nih):
    table = nih.table
    train_val = table.split != "test"
    for name, (n_train_val, n_test) in V2020_COUNTS.items():
        column = table.labels[:, FINDINGS.index(name)]
        assert column[train_val].sum() == n_train_val, name
        assert column[~train_val].sum() == n_test, name
    no_finding = table.labels.sum(axis=1) == 0
    assert no_finding.sum() == 60_361


def test_validation_is_patient_disjoint_and_about_a_tenth(nih):
    table = nih.table
    train = set(table.patient_ids[table.split == "train"])
    val = set(table.patient_ids[table.split == "val"])
    test = set(table.patient_ids[table.split == "test"])
    assert not train & val and not train & test and not val & test
    assert len(val) == round(0.1 * 28_008)


def test_validation_carve_out_is_seeded():
    patients = np.repeat(np.arange(200).astype(str), 3)
    train_val = np.ones(len(patients), dtype=bool)
    a = carve_validation(patients, train_val, 0.2, seed=1)
    b = carve_validation(patients, train_val, 0.2, seed=1)
    c = carve_validation(patients, train_val, 0.2, seed=2)
    assert (a == b).all() and not (a == c).all()
    assert len(set(patients[a == "val"])) == 40


def test_2017_table_read_when_alone_with_its_quirks(nih_copy):
    folder = nih_copy("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt")
    raw = (folder / "Data_Entry_2017.csv").read_bytes()
    assert b"\r\n" in raw and raw.split(b"\r\n")[0].endswith(b",")  # the quirks are really there
    meta = load_nih_metadata(folder)
    assert meta.label_source == "Data_Entry_2017.csv"
    assert len(meta.table) == 112_120
    assert meta.table.labels[:, FINDINGS.index("Pneumonia")].sum() == 1_353
    assert (meta.table.labels.sum(axis=1) == 0).sum() == 60_412


def test_both_versions_agree_on_patients_and_differ_on_181_test_labels(nih, nih_copy):
    folder = nih_copy("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt")
    old = load_nih_metadata(folder).table
    assert (old.image_ids == nih.table.image_ids).all()
    assert (old.patient_ids == nih.table.patient_ids).all()  # "00000001" and "1" are one patient
    differ = (old.labels != nih.table.labels).any(axis=1)
    assert differ.sum() == 181 and (nih.table.split[differ] == "test").all()


def _edit_csv(folder, edit):
    path = folder / "Data_Entry_2017_v2020.csv"
    lines = path.read_text().split("\n")
    path.write_text("\n".join(edit(lines)))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ls: [ls[0].replace("Finding Labels", "Findings")] + ls[1:], "lacks column"),
        (lambda ls: ls[:1] + [ls[1].replace("Cardiomegaly", "Cardiomegally")] + ls[2:], "unknown label 'Cardiomegally'"),
        (lambda ls: ls[:2] + [ls[1]] + ls[2:], "more than once"),
        (lambda ls: ls[:1] + [ls[1].replace("00000001_000.png", "../../etc/passwd")] + ls[2:], "not a plain file name"),
        (lambda ls: ls[:1] + [ls[1].replace("Cardiomegaly", "No Finding|Mass")] + ls[2:], "'No Finding' and"),
        (lambda ls: ls[:1], "no rows"),
    ],
    ids=["missing-column", "unknown-label", "duplicate-id", "path-escape", "no-finding-plus", "header-only"],
)
def test_malformed_metadata_is_a_data_error(nih_copy, edit, message):
    folder = nih_copy("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt")
    _edit_csv(folder, edit)
    with pytest.raises(DataError, match=message):
        load_nih_metadata(folder)


def test_missing_pieces_are_named(tmp_path, nih_copy):
    with pytest.raises(DataError, match="does not exist"):
        load_nih_metadata(tmp_path / "absent")
    with pytest.raises(DataError, match="no NIH metadata"):
        load_nih_metadata(tmp_path)
    folder = nih_copy("Data_Entry_2017_v2020.csv", "train_val_list.txt")
    with pytest.raises(DataError, match="test_list.txt"):
        load_nih_metadata(folder)


def test_split_lists_must_cover_the_metadata(nih_copy):
    folder = nih_copy("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt")
    names = (folder / "test_list.txt").read_text().split("\n")
    (folder / "test_list.txt").write_text("\n".join(names[1:]))
    with pytest.raises(DataError, match="neither split list"):
        load_nih_metadata(folder)


def test_bundled_metadata_is_nih_byte_for_byte_as_its_readme_says():
    folder = bundled_metadata_dir()
    block = (folder / "README.md").read_text().split("```")[1]
    recorded = dict(reversed(line.split()) for line in block.strip().splitlines())
    assert sorted(recorded) == sorted(p.name.removesuffix(".gz") for p in folder.glob("*.gz"))
    for name, digest in recorded.items():
        assert hashlib.sha256(gzip.decompress((folder / f"{name}.gz").read_bytes())).hexdigest() == digest, name


def test_gzipped_and_plain_files_read_as_the_same_table(nih, nih_copy):
    folder = nih_copy("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt")
    plain = load_nih_metadata(folder)
    for name in ("Data_Entry_2017_v2020.csv", "test_list.txt"):  # a mix of plain and gzipped files
        path = folder / name
        (folder / f"{name}.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    mixed = load_nih_metadata(folder)
    for meta in (plain, mixed):
        assert meta.label_source == nih.label_source == "Data_Entry_2017_v2020.csv"
        assert meta.table.fingerprint() == nih.table.fingerprint()
        assert meta.origin == "data dir"


@pytest.mark.skipif(bool(os.environ.get("CXRPROBE_NIH_DIR")), reason="the tests read a user's NIH folder")
def test_the_bundled_copy_is_known_as_such_also_through_a_symlink(nih):
    assert nih.origin == "bundled"  # real_nih links to the bundled files
    assert load_nih_metadata(bundled_metadata_dir()).origin == "bundled"


def test_broken_or_oversized_gzip_metadata_is_a_data_error(nih_copy, monkeypatch):
    folder = nih_copy("train_val_list.txt", "test_list.txt")
    target = folder / "Data_Entry_2017_v2020.csv.gz"
    target.write_bytes(gzip.compress(b"Image Index,Finding Labels,Patient ID\n")[:-12])  # truncated
    with pytest.raises(DataError, match="is not a readable gzip file"):
        load_nih_metadata(folder)
    target.write_bytes(b"plain text named .gz\n")
    with pytest.raises(DataError, match="is not a readable gzip file"):
        load_nih_metadata(folder)
    monkeypatch.setattr("cxrprobe.data.files.MAX_METADATA_BYTES", 1000)  # a bomb, in miniature
    target.write_bytes(gzip.compress(b"Image Index,Finding Labels,Patient ID\n" + b"x" * 5000))
    with pytest.raises(DataError, match="decompresses to more than"):
        load_nih_metadata(folder)
