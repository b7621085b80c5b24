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


def is_mimic(data_dir: Path) -> bool:
    return find_table(Path(data_dir), f"{PREFIX}split.csv") is not None


def load_mimic_metadata(data_dir: Path, policy: LabelPolicy = LabelPolicy(), views: str = "frontal",
                        labeler: str = "chexpert") -> DatasetMetadata:
    if views not in VIEWS:
        raise InputError(f"--views must be one of {', '.join(VIEWS)}, got {views!r}")
    if labeler not in LABELERS:
        raise InputError(f"--labeler must be one of {', '.join(LABELERS)}, got {labeler!r}")
    data_dir = Path(data_dir)
    with collector_paused():
        split = _read(data_dir, "split.csv", ("dicom_id", "study_id", "subject_id", "split"))
        meta = _read(data_dir, "metadata.csv", ("dicom_id", "ViewPosition"))
        labels = _read(data_dir, f"{labeler}.csv", ("subject_id", "study_id", NO_FINDING, *CLASSES))
    dicom = _checked(split["dicom_id"], DICOM_ID, "dicom_id", "split.csv")
    refuse_duplicates(dicom, f"{PREFIX}split.csv", "dicom_id ")
    studies = _checked(split["study_id"], NUMBER, "study_id", "split.csv")
    subjects = _checked(split["subject_id"], NUMBER, "subject_id", "split.csv")
    split_names, split_index = np.unique(np.asarray(split["split"], dtype=str), return_inverse=True)
    bad = [s for s in split_names.tolist() if s not in SPLITS]
    if bad:
        raise DataError(f"{PREFIX}split.csv: split {bad[0]!r} is none of {', '.join(SPLITS)}")
    splits = np.array([SPLITS[s] for s in split_names.tolist()], dtype=str)[split_index]
    # lookups go through the tables' lists: iterating numpy string arrays is several times slower
    view_of = dict(zip(meta["dicom_id"], meta["ViewPosition"]))
    view = np.array([view_of.get(d, "") for d in split["dicom_id"]], dtype=str)
    row_of = {s: i for i, s in enumerate(labels["study_id"])}
    label_row = np.array([row_of.get(s, -1) for s in split["study_id"]], dtype=np.int64)
    keep = _view_mask(view, views) & (label_row >= 0)  # images of a study without labels are left out
    order = np.flatnonzero(keep)[np.argsort(dicom[keep], kind="stable")]
    label_rows = label_row[order]
    names = (*CLASSES, NO_FINDING)
    values = parse_values([labels[c] for c in names], names, f"{PREFIX}{labeler}.csv")[label_rows]
    label_matrix, known = policy.apply(values[:, :-1])
    no_finding = values[:, -1]
    table = ImageTable(
        image_ids=np.char.add(dicom[order], ".jpg"), patient_ids=subjects[order],
        split=splits[order], labels=label_matrix,
        view=np.where(np.isin(view[order], FRONTAL), view[order], np.char.lower(view[order])), known=known,
        normal=no_finding == 1, study_ids=studies[order], label_set=LABELS,
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


def _checked(values: list[str], pattern: str, name: str, source: str) -> np.ndarray:
    """``values`` as an array, each one matching ``pattern`` whole (one regex pass over them all)."""
    if re.fullmatch(f"(?:{pattern}\n)*", "\n".join(values) + "\n" if values else "") is None:
        bad = next(i for i, v in enumerate(values) if re.fullmatch(pattern, v) is None)
        raise DataError(f"{PREFIX}{source}: line {bad + 2}: {name} {values[bad]!r} is malformed")
    return np.asarray(values, dtype=str)


def _view_mask(view: np.ndarray, views: str) -> np.ndarray:
    if views == "all":
        return np.ones(len(view), dtype=bool)
    if views == "lateral":
        return ~np.isin(view, FRONTAL) & (view != "")
    return np.isin(view, FRONTAL if views == "frontal" else (views,))
