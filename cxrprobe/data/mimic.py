"""MIMIC-CXR-JPG (Johnson et al., 2019; PhysioNet, versions 2.0.0 and 2.1.0).

Datasheet: 377,110 JPEGs of 227,835 studies of 65,379 patients (Beth Israel Deaconess).
Three tables: ``mimic-cxr-2.0.0-split.csv.gz`` (dicom_id, study_id, subject_id, split:
train / validate / test, the official patient-disjoint split, used as it is: validate is
val), ``-metadata.csv.gz`` (ViewPosition per image) and the labels *per study*,
``-chexpert.csv.gz`` or ``-negbio.csv.gz`` (``--labeler``): the CheXpert observations as 1, 0,
-1 or blank, which the ``LabelPolicy`` turns into labels. A study's labels are joined to each of
its images; images of a study the label table does not list are left out (and counted).
Files live at ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``; dicom ids are unique, so each file
is matched by its name (``DICOM_ID.jpg``), never joined into a path.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cxrprobe.data.chexpert import CLASSES, LABELS, NO_FINDING, VIEWS
from cxrprobe.data.files import collector_paused, find_table, read_csv_columns, refuse_duplicates
from cxrprobe.data.locate import find_images
from cxrprobe.data.policies import LabelPolicy, parse_values
from cxrprobe.data.table import DatasetMetadata, ImageTable, LocatedDataset
from cxrprobe.errors import DataError, InputError

DATASET_NAME = "mimic-cxr-jpg"
PREFIX = "mimic-cxr-2.0.0-"
LABELERS = ("chexpert", "negbio")
SPLITS = {"train": "train", "validate": "val", "test": "test"}
FRONTAL = ("AP", "PA")
DICOM_ID = r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}"
NUMBER = r"[0-9]+"
DICOM_ID_LENGTH = 44
HEX_DIGIT = np.isin(np.arange(256), list(b"0123456789abcdef"))


def is_mimic(data_dir: Path) -> bool:
    return find_table(Path(data_dir), f"{PREFIX}split.csv") is not None


def load_mimic_metadata(data_dir: Path, policy: LabelPolicy = LabelPolicy(), views: str = "frontal",
                        labeler: str = "chexpert") -> DatasetMetadata:
    if views not in VIEWS:
        raise InputError(f"--views must be one of {', '.join(VIEWS)}, got {views!r}")
    if labeler not in LABELERS:
        raise InputError(f"--labeler must be one of {', '.join(LABELERS)}, got {labeler!r}")
    with collector_paused():
        return _parse(Path(data_dir), policy, views, labeler)


def _parse(data_dir: Path, policy: LabelPolicy, views: str, labeler: str) -> DatasetMetadata:
    # Columns stay lists until the rows' order is known, then each becomes one array: iterating
    # numpy string arrays is several times slower, and each large array costs time to allocate.
    split = _read(data_dir, "split.csv", ("dicom_id", "study_id", "subject_id", "split"))
    meta = _read(data_dir, "metadata.csv", ("dicom_id", "ViewPosition"))
    labels = _read(data_dir, f"{labeler}.csv", ("subject_id", "study_id", NO_FINDING, *CLASSES))
    dicom = split["dicom_id"]
    _check(dicom, DICOM_ID, "dicom_id", "split.csv")
    refuse_duplicates(dicom, f"{PREFIX}split.csv", "dicom_id ")
    _check(split["study_id"], NUMBER, "study_id", "split.csv")
    _check(split["subject_id"], NUMBER, "subject_id", "split.csv")
    splits = list(map(SPLITS.get, split["split"]))
    if None in splits:
        bad = split["split"][splits.index(None)]
        raise DataError(f"{PREFIX}split.csv: split {bad!r} is none of {', '.join(SPLITS)}")
    if meta["dicom_id"] == dicom:  # the tables as PhysioNet ships them: the same rows
        view = meta["ViewPosition"]
    else:
        view_of = dict(zip(meta["dicom_id"], meta["ViewPosition"]))
        view = [view_of.get(d, "") for d in dicom]
    row_of = {s: i for i, s in enumerate(labels["study_id"])}
    label_row = np.array([row_of.get(s, -1) for s in split["study_id"]], dtype=np.int64)
    keep = _view_mask(np.array(view, dtype=str), views) & (label_row >= 0)  # images of unlabelled studies are left out
    order = sorted(np.flatnonzero(keep).tolist(), key=dicom.__getitem__)

    def in_order(column: list[str]) -> np.ndarray:
        return np.array([column[i] for i in order], dtype=str)

    names = (*CLASSES, NO_FINDING)
    values = parse_values([labels[c] for c in names], names, f"{PREFIX}{labeler}.csv")[label_row[order]]
    label_matrix, known = policy.apply(values[:, :-1])
    table = ImageTable(
        image_ids=np.array([dicom[i] + ".jpg" for i in order], dtype=str), patient_ids=in_order(split["subject_id"]),
        split=in_order(splits), labels=label_matrix, view=in_order([v if v in FRONTAL else v.lower() for v in view]),
        known=known, normal=values[:, -1] == 1, study_ids=in_order(split["study_id"]), label_set=LABELS,
    )
    return DatasetMetadata(table=table, label_source=f"{PREFIX}{labeler}.csv", val_fraction=0.0, val_seed=0,
                           dataset=DATASET_NAME, label_policy={**policy.as_dict(), "labeler": labeler},
                           test_source="the official split's test")


def locate_mimic(data_dir: Path, policy: LabelPolicy = LabelPolicy(), views: str = "frontal",
                 labeler: str = "chexpert") -> LocatedDataset:
    metadata = load_mimic_metadata(data_dir, policy, views, labeler)
    return LocatedDataset(metadata, find_images(Path(data_dir), metadata.table.image_ids))


def _read(data_dir: Path, suffix: str, columns: tuple[str, ...]) -> dict[str, list[str]]:
    name = PREFIX + suffix
    path = find_table(data_dir, name)
    if path is None:
        raise DataError(f"no MIMIC-CXR-JPG {name}.gz in {data_dir} (or {name})")
    return read_csv_columns(path, columns)


def _check(values: list[str], pattern: str, name: str, source: str) -> None:
    """Each of ``values`` must match ``pattern`` whole; the first that does not is refused."""
    if not _all_match(values, pattern):
        bad = next(i for i, v in enumerate(values) if re.fullmatch(pattern, v) is None)
        raise DataError(f"{PREFIX}{source}: line {bad + 2}: {name} {values[bad]!r} is malformed")


def _all_match(values: list[str], pattern: str) -> bool:
    """Whether each value matches ``pattern`` whole; the two patterns used here are checked
    without a regex pass over the whole column, several times faster on MIMIC's tables."""
    joined = "".join(values)
    if not joined.isascii():  # isdigit and the hex check below would take other scripts' characters
        return False
    if pattern == NUMBER:
        return all(values) and (joined.isdigit() or not joined)
    if pattern == DICOM_ID:
        if set(map(len, values)) - {DICOM_ID_LENGTH}:
            return False
        chars = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).reshape(len(values), DICOM_ID_LENGTH)
        dashes = np.zeros(DICOM_ID_LENGTH, dtype=bool)
        dashes[8::9] = True
        return bool((chars[:, dashes] == ord("-")).all() and HEX_DIGIT[chars[:, ~dashes]].all())
    return re.fullmatch(f"(?:{pattern}\n)*", "\n".join(values) + "\n" if values else "") is not None


def _view_mask(view: np.ndarray, views: str) -> np.ndarray:
    if views == "all":
        return np.ones(len(view), dtype=bool)
    if views == "lateral":
        return ~np.isin(view, FRONTAL) & (view != "")
    return np.isin(view, FRONTAL if views == "frontal" else (views,))
