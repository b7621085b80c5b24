"""CheXpert (Irvin et al., AAAI'19): train.csv and valid.csv, images per study and view.

Datasheet: 224,316 chest radiographs of 65,240 patients (Stanford), 14 observations labelled
from reports by the CheXpert labeller as 1 (positive), 0 (negative), -1 (uncertain) or blank
(not mentioned); valid.csv (234 studies of 200 patients) was labelled by radiologists, 0/1.
"No Finding" is a column of its own: the label set's normal rule reads it. The other 13
observations are the classes. How -1 and blank become labels is the ``LabelPolicy``.

``Path`` values start with ``CheXpert-v1.0-small/``, ``CheXpert-v1.0/`` or nothing (the Kaggle
mirror unzips ``train/`` straight into the folder). The rest, ``train/patientN/studyM/viewK_frontal.jpg``,
is the image id: it is matched against the files found under the data dir by their last four
path components, never joined into a path.

Splits: where the official test set's ``groundtruth.csv`` is in the folder
(rajpurkarlab/cheXpert-test-set-labels: 500 studies of 500 patients, the majority of five
radiologists, 0/1 *per study*), it is test, each study's labels joined to its images found
under ``test/patientN/studyM/``, and the radiologist-labelled valid.csv is val, as its authors
use it. Otherwise valid.csv serves as test, recorded as such, and validation is carved
patient-wise from train. The test images carry no AP/PA, so with groundtruth.csv ``--views``
is frontal, lateral or all.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cxrprobe.data.files import collector_paused, find_table, read_csv_columns, read_dataset_table, refuse_duplicates
from cxrprobe.data.locate import index_files, path_suffix, paths_in
from cxrprobe.data.policies import LabelPolicy, parse_values
from cxrprobe.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED, carve_validation
from cxrprobe.data.table import DatasetMetadata, ImageTable, LocatedDataset
from cxrprobe.errors import DataError, InputError
from cxrprobe.labels import NORMAL_IF_NO_FINDING, LabelSet

DATASET_NAME = "chexpert"
TABLES = ("train.csv", "valid.csv")
CLASSES = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
           "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
           "Support Devices")
NO_FINDING = "No Finding"
REQUIRED_COLUMNS = ("Path", "Frontal/Lateral", "AP/PA", NO_FINDING, *CLASSES)
# an optional release folder, then the image id: train|valid/patientN/studyM/viewK_frontal|lateral.jpg
IMAGE_PATH = re.compile(r"(?:CheXpert-v1\.0(?:-small)?/)?((train|valid)/(patient[0-9]+)/(study[0-9]+)/"
                        r"view[0-9]+_(?:frontal|lateral)\.jpg)\Z")
PATH_DEPTH = 4  # train/patientN/studyM/file.jpg
VIEWS = ("frontal", "AP", "PA", "lateral", "all")  # frontal: AP and PA
LABELS = LabelSet.from_classes(CLASSES, NORMAL_IF_NO_FINDING)
TEST_SOURCE = "valid.csv (the radiologist-labelled validation set, as test)"
TEST_TABLE = "groundtruth.csv"
OFFICIAL_TEST_SOURCE = "groundtruth.csv (the official test set: 5 radiologists' majority, per study)"
TEST_STUDY = re.compile(r"(?:CheXpert-v1\.0(?:-small)?/)?test/(patient[0-9]+)/(study[0-9]+)/?\Z")
TEST_IMAGE = re.compile(r"test/(patient[0-9]+)/(study[0-9]+)/view[0-9]+_(frontal|lateral)\.jpg\Z")
SPLIT_OF_SOURCE = ("train", "val", "test")  # with groundtruth.csv: train.csv, valid.csv, it
FRONTAL_UNKNOWN = "frontal"  # the view of a test image: frontal, AP or PA not recorded


def is_chexpert(data_dir: Path) -> bool:
    return find_table(Path(data_dir), TABLES[0]) is not None


def load_chexpert_metadata(data_dir: Path, policy: LabelPolicy = LabelPolicy(), views: str = "frontal",
                           val_fraction: float = DEFAULT_VAL_FRACTION,
                           val_seed: int = DEFAULT_VAL_SEED) -> DatasetMetadata:
    """train.csv, valid.csv and groundtruth.csv where present in ``data_dir``, the ``views``
    kept, labels under ``policy``."""
    return _load(Path(data_dir), policy, views, val_fraction, val_seed)[0]


def locate_chexpert(data_dir: Path, policy: LabelPolicy = LabelPolicy(), views: str = "frontal",
                    val_fraction: float = DEFAULT_VAL_FRACTION,
                    val_seed: int = DEFAULT_VAL_SEED) -> tuple[LocatedDataset, list[str]]:
    """The metadata, each row's image file (one walk of the folder) and notes for the user."""
    files = index_files(Path(data_dir), path_suffix(PATH_DEPTH))
    metadata, notes = _load(Path(data_dir), policy, views, val_fraction, val_seed, files)
    return LocatedDataset(metadata, paths_in(files, metadata.table.image_ids)), notes


def _load(data_dir: Path, policy: LabelPolicy, views: str, val_fraction: float, val_seed: int,
          files: dict[str, str] | None = None) -> tuple[DatasetMetadata, list[str]]:
    if views not in VIEWS:
        raise InputError(f"--views must be one of {', '.join(VIEWS)}, got {views!r}")
    groundtruth = find_table(data_dir, TEST_TABLE)
    if groundtruth is not None and views in ("AP", "PA"):
        raise InputError(f"--views {views}: the official test set ({TEST_TABLE}) records no AP/PA; "
                         "use --views frontal, lateral or all, or move groundtruth.csv aside")
    notes: list[str] = []
    with collector_paused():
        parts = [_read_table(data_dir, name) for name in TABLES]
        if groundtruth is not None:
            files = index_files(data_dir, path_suffix(PATH_DEPTH)) if files is None else files
            test, notes = _read_test(groundtruth, files)
            parts.append(test)
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # which table each row came from: 0 train.csv, 1 valid.csv, 2 groundtruth.csv
    source = np.concatenate([np.full(len(p["image_ids"]), i) for i, p in enumerate(parts)])
    keep = _view_mask(rows["frontal"], rows["ap_pa"], views)
    rows, source = {k: v[keep] for k, v in rows.items()}, source[keep]
    order = np.argsort(rows["image_ids"], kind="stable")
    rows, source = {k: v[order] for k, v in rows.items()}, source[order]
    labels, known = policy.apply(rows["values"])
    if groundtruth is None:
        try:
            split = carve_validation(rows["patients"], source == 0, val_fraction, val_seed)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    else:  # the official splits as they are
        split = np.array(SPLIT_OF_SOURCE, dtype=str)[source]
        val_fraction, val_seed = 0.0, 0
    table = ImageTable(
        image_ids=rows["image_ids"], patient_ids=rows["patients"], split=split, labels=labels,
        view=np.where(rows["frontal"], rows["ap_pa"], "lateral"), known=known, normal=rows["no_finding"] == 1,
        study_ids=rows["studies"], label_set=LABELS,
    )
    tables = TABLES if groundtruth is None else (*TABLES, TEST_TABLE)
    return DatasetMetadata(table=table, label_source=" + ".join(tables), val_fraction=val_fraction,
                           val_seed=val_seed, dataset=DATASET_NAME, label_policy=policy.as_dict(),
                           test_source=TEST_SOURCE if groundtruth is None else OFFICIAL_TEST_SOURCE), notes


def _read_table(data_dir: Path, name: str) -> dict[str, np.ndarray]:
    path, table = read_dataset_table(data_dir, name, REQUIRED_COLUMNS, "CheXpert",
                                     f"a CheXpert table has {', '.join(REQUIRED_COLUMNS)}")
    image_ids, patients, studies = _parse_paths(table["Path"], path.name)
    values = parse_values([table[c] for c in (*CLASSES, NO_FINDING)], (*CLASSES, NO_FINDING), path.name)
    return {
        "image_ids": image_ids, "patients": patients, "studies": studies, "values": values[:, :-1],
        "no_finding": values[:, -1],
        "frontal": np.asarray(table["Frontal/Lateral"], dtype=str) == "Frontal",
        "ap_pa": np.char.strip(np.asarray(table["AP/PA"], dtype=str)),
    }


def _parse_paths(paths: list[str], source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image id, patient, study) of each ``Path``; a path of another shape (one that climbs
    out with '..', an absolute one, another file type) is refused."""
    matches = _match_each(IMAGE_PATH, paths, source, "Path", "a CheXpert image path "
                          "([CheXpert-v1.0[-small]/]train|valid/patientN/studyM/viewK_frontal|lateral.jpg)")
    groups = [m.groups() for m in matches]  # (id, folder, patient, study)
    ids = np.array([g[0] for g in groups], dtype=str)
    refuse_duplicates(ids, source)
    return (ids, np.array([g[2] for g in groups], dtype=str),
            np.array([f"{g[2]}/{g[3]}" for g in groups], dtype=str))


def _match_each(pattern: re.Pattern, values: list[str], source: str, column: str, shape: str) -> list[re.Match]:
    """``pattern``'s match of every value; the first value of another shape is refused, naming its line."""
    matches = [pattern.match(value) for value in values]
    if not all(matches):
        line = next(i for i, m in enumerate(matches) if m is None)
        raise DataError(f"{source}: line {line + 2}: {column} {values[line]!r} is not {shape}")
    return matches


def _read_test(path: Path, files: dict[str, str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The official test set's rows: each image found under ``test/patientN/studyM/`` of a
    study groundtruth.csv lists, with that study's labels; notes count what is missing."""
    columns = ("Study", NO_FINDING, *CLASSES)
    table = read_csv_columns(path, columns, f"the official test labels have {', '.join(columns)}")
    matches = _match_each(TEST_STUDY, table["Study"], path.name, "Study",
                          "a CheXpert test study ([CheXpert-v1.0/]test/patientN/studyM)")
    studies = np.array(["/".join(m.groups()) for m in matches], dtype=str)
    refuse_duplicates(studies, path.name, "study ")
    values = parse_values([table[c] for c in (*CLASSES, NO_FINDING)], (*CLASSES, NO_FINDING), path.name)
    row_of = {study: i for i, study in enumerate(studies.tolist())}
    images = [(key, m) for key in files if (m := TEST_IMAGE.match(key)) and f"{m[1]}/{m[2]}" in row_of]
    if not images:
        raise DataError(f"{path.name} lists {len(studies)} test studies, but no image "
                        "test/patientN/studyM/viewK_frontal|lateral.jpg of them is under the data dir")
    rows = np.array([row_of[f"{m[1]}/{m[2]}"] for _, m in images], dtype=np.int64)
    notes = []
    without = len(studies) - len(np.unique(rows))
    if without:
        notes.append(f"{path.name}: {without} of {len(studies)} test studies have no image under the data dir")
    frontal = np.array([m[3] == "frontal" for _, m in images], dtype=bool)
    return {
        "image_ids": np.array([key for key, _ in images], dtype=str),
        "patients": np.array([m[1] for _, m in images], dtype=str), "studies": studies[rows],
        "values": values[rows, :-1], "no_finding": values[rows, -1], "frontal": frontal,
        "ap_pa": np.where(frontal, FRONTAL_UNKNOWN, ""),
    }, notes


def _view_mask(frontal: np.ndarray, ap_pa: np.ndarray, views: str) -> np.ndarray:
    if views == "all":
        return np.ones(len(frontal), dtype=bool)
    if views == "lateral":
        return ~frontal
    wanted = ("AP", "PA", FRONTAL_UNKNOWN) if views == "frontal" else (views,)
    return frontal & np.isin(ap_pa, wanted)
