"""VinDr-CXR (Nguyen et al., Scientific Data 2022): de-identified radiographs from two Hanoi
hospitals, labelled by radiologists, in one of two layouts. Either way an image is the DICOM
``image_id.dicom`` (a hex id), found anywhere below the data dir, and as the tables name no
patients, each image is its own patient.

PhysioNet (vindr-cxr 1.0.0): ``annotations/image_labels_train.csv`` lists ``image_id``, the
radiologist (``rad_ID``; any case is accepted, as copies spell it ``rad_id``), then a 0/1
column per label: 22 local and 6 global labels, ``No finding`` among them. Each training image
has a row per radiologist (three); it is positive for a label where any of them marked it
(the union, as torchxrayvision takes Kaggle's table), and normal where all of them marked
``No finding`` and none a label. ``annotations/image_labels_test.csv`` has a row per test image
(the consensus of five radiologists), with or without a radiologist column: the official test
split; validation is carved from train. The classes are the train table's label columns in
its order, ``No finding`` apart (the normal rule); the test table must have the same (its
``Other disease`` is the train table's ``Other diseases``: the release spells them apart).

Kaggle (VinBigData Chest X-ray Abnormalities Detection, 2020): ``train.csv`` lists
``image_id, class_name, class_id, rad_id`` and a box, a row per box a radiologist drew and a
``No finding`` row (class_id 14, no box) for a radiologist who drew none. An image's labels
are the union of its rows' 14 classes; it is normal where it has no other row. Kaggle's test
images have no labels, so the split is seeded and recorded. CheXpert's table is also called
train.csv: this one is told apart by its header alone.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from cxrprobe.data.files import collector_paused, find_table, read_csv_columns, read_dataset_table
from cxrprobe.data.locate import find_images
from cxrprobe.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED, carve_validation, seeded_split
from cxrprobe.data.table import DatasetMetadata, ImageTable, LocatedDataset
from cxrprobe.errors import DataError
from cxrprobe.labels import NORMAL_IF_NO_FINDING, LabelSet

DATASET_NAME = "vindr-cxr"
ANNOTATIONS = "annotations"  # the PhysioNet release's label folder
TRAIN_TABLE, TEST_TABLE = "image_labels_train.csv", "image_labels_test.csv"
KAGGLE_TABLE = "train.csv"
IMAGE_ID, RAD, NO_FINDING = "image_id", "rad_id", "No finding"  # RAD: matched whatever its case
ALIASES = {"Other disease": "Other diseases"}  # the test table's spelling -> the train table's
EXPECTED = (f"a VinDr-CXR label table has {IMAGE_ID}, rad_ID (train), then a 0/1 column per label, {NO_FINDING} "
            "among them")
KAGGLE_CLASSES = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
                  "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
                  "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis")  # class_id 0-13; 14 is No finding
KAGGLE_COLUMNS = (IMAGE_ID, "class_name", "class_id", RAD)
KAGGLE_HEADER = {IMAGE_ID, "class_name", RAD}  # what detection looks for in train.csv's first line
CLASS_IDS = {name: str(i) for i, name in enumerate((*KAGGLE_CLASSES, NO_FINDING))}
HEX_ID = re.compile(r"[0-9a-f]+")
SUFFIX = ".dicom"
HEADER_BYTES = 4096
OFFICIAL_TEST_SOURCE = f"{TEST_TABLE} (the official test set: the consensus of 5 radiologists)"
READERS = {"readers": "union: a label is positive where any radiologist marked it"}
LabelTable = tuple[str, tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]  # _read_labels'


def is_vindr(data_dir: Path) -> bool:
    data_dir = Path(data_dir)
    return find_table(data_dir / ANNOTATIONS, TRAIN_TABLE) is not None or _is_kaggle(data_dir)


def load_vindr_metadata(data_dir: Path, val_fraction: float = DEFAULT_VAL_FRACTION,
                        val_seed: int = DEFAULT_VAL_SEED) -> tuple[DatasetMetadata, list[str]]:
    """The PhysioNet layout's tables where ``annotations/`` holds them, else Kaggle's train.csv."""
    data_dir = Path(data_dir)
    if find_table(data_dir / ANNOTATIONS, TRAIN_TABLE) is not None:
        metadata = _physionet(data_dir / ANNOTATIONS, val_fraction, val_seed)
    elif find_table(data_dir, KAGGLE_TABLE) is not None:
        metadata = _kaggle(data_dir, val_fraction, val_seed)
    else:
        raise DataError(f"no VinDr-CXR {ANNOTATIONS}/{TRAIN_TABLE} (PhysioNet) or {KAGGLE_TABLE} (Kaggle) in "
                        f"{data_dir} (or their .gz)")
    source = metadata.label_source.split(" + ")[0]
    return metadata, [(f"{source} names no patients: each image is taken as its own patient, so a patient's "
                       "images may fall in different splits")]


def locate_vindr(data_dir: Path, val_fraction: float = DEFAULT_VAL_FRACTION,
                 val_seed: int = DEFAULT_VAL_SEED) -> tuple[LocatedDataset, list[str]]:
    metadata, notes = load_vindr_metadata(data_dir, val_fraction, val_seed)
    return LocatedDataset(metadata, find_images(Path(data_dir), metadata.table.image_ids)), notes


def _is_kaggle(data_dir: Path) -> bool:
    """Whether train.csv(.gz)'s first line names Kaggle's columns; only that line is read."""
    path = find_table(data_dir, KAGGLE_TABLE)
    if path is None:
        return False
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            first = handle.readline(HEADER_BYTES)
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        return False
    return KAGGLE_HEADER <= {name.strip().strip('"') for name in first.decode("utf-8-sig", "replace").split(",")}


def _physionet(folder: Path, val_fraction: float, val_seed: int) -> DatasetMetadata:
    with collector_paused():
        train_source, classes, train_ids, train_labels, train_normal = _read_labels(folder, TRAIN_TABLE, True)
        test_source, test_classes, test_ids, test_labels, test_normal = _read_labels(folder, TEST_TABLE, False)
    if set(test_classes) != set(classes):
        odd = min(set(test_classes) ^ set(classes))
        raise DataError(f"{test_source} and {train_source} have different label columns: {odd!r} is in one only")
    shared = np.intersect1d(train_ids, test_ids)
    if len(shared):
        raise DataError(f"{test_source}: image {shared[0]} is also in {train_source}")
    order = [test_classes.index(name) for name in classes]
    ids = np.concatenate([train_ids, test_ids])
    labels = np.concatenate([train_labels, test_labels[:, order]])
    normal = np.concatenate([train_normal, test_normal])
    rows = np.argsort(ids, kind="stable")
    try:  # rows < len(train_ids): the train table's
        split = carve_validation(ids[rows], rows < len(train_ids), val_fraction, val_seed)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return _metadata(ids[rows], labels[rows], normal[rows], split, classes, f"{train_source} + {test_source}",
                     OFFICIAL_TEST_SOURCE, val_fraction, val_seed)


def _read_labels(folder: Path, name: str, radiologists: bool) -> LabelTable:
    """(file name, classes, sorted image ids, labels, normal flags) of a PhysioNet label table,
    an image's rows united; ``radiologists``: the table must name each row's radiologist."""
    path = find_table(folder, name)
    if path is None:
        raise DataError(f"no VinDr-CXR {name} in {folder} (or {name}.gz)")
    table = read_csv_columns(path)
    rad = [c for c in table if c.lower() == RAD]
    required = ((IMAGE_ID, IMAGE_ID in table), ("rad_ID", bool(rad) or not radiologists),
                (NO_FINDING, NO_FINDING in table))
    missing = [column for column, present in required if not present]
    if missing:
        raise DataError(f"{path.name} has no {missing[0]!r} column; {EXPECTED}")
    columns = [c for c in table if c != IMAGE_ID and c not in rad]
    named = [ALIASES[c] if c in ALIASES and ALIASES[c] not in table else c for c in columns]
    classes = tuple(c for c in named if c != NO_FINDING)
    if not classes:
        raise DataError(f"{path.name} has no label column besides {NO_FINDING!r}; {EXPECTED}")
    ids = _image_ids(table[IMAGE_ID], path.name)
    values = np.array([table[c] for c in columns], dtype=str).T  # [rows, columns]
    bad = np.argwhere((values != "0") & (values != "1"))
    if len(bad):
        row, column = bad[0]
        value = str(values[row, column])
        raise DataError(f"{path.name}: line {row + 2}: {columns[column]} {value!r} must be 0 or 1")
    names, anyone, everyone = _united(ids, values == "1")
    labels = anyone[:, [named.index(c) for c in classes]]
    return path.name, classes, names, labels, everyone[:, named.index(NO_FINDING)] & ~labels.any(axis=1)


def _kaggle(data_dir: Path, val_fraction: float, val_seed: int) -> DatasetMetadata:
    path, table = read_dataset_table(data_dir, KAGGLE_TABLE, KAGGLE_COLUMNS, "VinDr-CXR",
                                     f"the VinBigData (Kaggle) table has {', '.join(KAGGLE_COLUMNS)}")
    ids = _image_ids(table[IMAGE_ID], path.name)
    codes = np.empty(len(ids), dtype=np.int64)
    for row, (name, number) in enumerate(zip(table["class_name"], table["class_id"])):
        if CLASS_IDS.get(name) != number:
            raise DataError(f"{path.name}: line {row + 2}: class_name {name!r} with class_id {number!r} is not "
                            f"a VinBigData class (class_id 0-13, {NO_FINDING} 14)")
        codes[row] = int(number)
    marked = np.zeros((len(ids), len(CLASS_IDS)), dtype=bool)
    marked[np.arange(len(ids)), codes] = True
    names, anyone, _ = _united(ids, marked)
    labels = anyone[:, :len(KAGGLE_CLASSES)]
    try:
        split, test_source = seeded_split(names, val_fraction, val_seed)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return _metadata(names, labels, ~labels.any(axis=1), split, KAGGLE_CLASSES, path.name, test_source,
                     val_fraction, val_seed)


def _image_ids(values: list[str], source: str) -> np.ndarray:
    """Each row's image id; one that is not hex digits (a path, say) is refused, naming its line."""
    if not values:
        raise DataError(f"{source} lists no image")
    bad = next((i for i, value in enumerate(values) if HEX_ID.fullmatch(value) is None), None)
    if bad is not None:
        raise DataError(f"{source}: line {bad + 2}: {IMAGE_ID} {values[bad]!r} is not a VinDr-CXR image id "
                        "(hex digits)")
    return np.array(values, dtype=str)


def _united(ids: np.ndarray, marked: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the sorted distinct ids, whether any of an id's rows is marked in each column, whether all are)."""
    names, rows = np.unique(ids, return_inverse=True)
    counts = np.zeros((len(names), marked.shape[1]), dtype=np.int64)
    np.add.at(counts, rows, marked)
    return names, counts > 0, counts == np.bincount(rows, minlength=len(names))[:, None]


def _metadata(names: np.ndarray, labels: np.ndarray, normal: np.ndarray, split: np.ndarray, classes: tuple[str, ...],
              source: str, test_source: str, val_fraction: float, val_seed: int) -> DatasetMetadata:
    image_ids = np.char.add(names, SUFFIX)
    table = ImageTable(image_ids=image_ids, patient_ids=image_ids, split=split, labels=labels.astype(np.uint8),
                       view=np.full(len(names), "", dtype=str), normal=normal,
                       label_set=LabelSet.from_classes(classes, NORMAL_IF_NO_FINDING))
    return DatasetMetadata(table=table, label_source=source, val_fraction=val_fraction, val_seed=val_seed,
                           dataset=DATASET_NAME, label_policy=READERS, test_source=test_source)
