"""CheXpert (Irvin et al., AAAI'19): train.csv and valid.csv, images per study and view.

Datasheet: 224,316 chest radiographs of 65,240 patients (Stanford), 14 observations labelled
from reports by the CheXpert labeller as 1 (positive), 0 (negative), -1 (uncertain) or blank
(not mentioned); valid.csv (234 studies of 200 patients) was labelled by radiologists, 0/1.
"No Finding" is a column of its own: the label set's normal rule reads it. The other 13
observations are the classes. How -1 and blank become labels is the ``LabelPolicy``.

``Path`` values start with ``CheXpert-v1.0-small/``, ``CheXpert-v1.0/`` or nothing (the Kaggle
mirror unzips ``train/`` straight into the folder). The rest, ``train/patientN/studyM/viewK_frontal.jpg``,
is the image id: it is matched against the files found under the data dir by their last four
path components, never joined into a path. Splits: valid.csv serves as test (the official test
set's labels are not part of the download); validation is carved patient-wise from train.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cxrprobe.data.files import collector_paused, find_table, read_csv_columns, refuse_duplicates
from cxrprobe.data.locate import find_by_path_suffix
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


def is_chexpert(data_dir: Path) -> bool:
    return find_table(Path(data_dir), TABLES[0]) is not None


def load_chexpert_metadata(data_dir: Path, policy: LabelPolicy = LabelPolicy(), views: str = "frontal",
                           val_fraction: float = DEFAULT_VAL_FRACTION,
                           val_seed: int = DEFAULT_VAL_SEED) -> DatasetMetadata:
    """train.csv and valid.csv in ``data_dir``, the ``views`` kept, labels under ``policy``."""
    if views not in VIEWS:
        raise InputError(f"--views must be one of {', '.join(VIEWS)}, got {views!r}")
    data_dir = Path(data_dir)
    with collector_paused():
        parts = [_read_table(data_dir, name) for name in TABLES]
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    is_test = np.concatenate([np.full(len(parts[0]["image_ids"]), False), np.full(len(parts[1]["image_ids"]), True)])
    keep = _view_mask(rows["frontal"], rows["ap_pa"], views)
    rows, is_test = {k: v[keep] for k, v in rows.items()}, is_test[keep]
    order = np.argsort(rows["image_ids"], kind="stable")
    rows, is_test = {k: v[order] for k, v in rows.items()}, is_test[order]
    labels, known = policy.apply(rows["values"])
    try:
        split = carve_validation(rows["patients"], ~is_test, val_fraction, val_seed)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    table = ImageTable(
        image_ids=rows["image_ids"], patient_ids=rows["patients"], split=split, labels=labels,
        view=np.where(rows["frontal"], rows["ap_pa"], "lateral"), known=known, normal=rows["no_finding"] == 1,
        study_ids=rows["studies"], label_set=LABELS,
    )
    return DatasetMetadata(table=table, label_source=" + ".join(TABLES), val_fraction=val_fraction,
                           val_seed=val_seed, dataset=DATASET_NAME, label_policy=policy.as_dict(),
                           test_source=TEST_SOURCE)


def locate_chexpert(data_dir: Path, policy: LabelPolicy = LabelPolicy(), views: str = "frontal",
                    val_fraction: float = DEFAULT_VAL_FRACTION, val_seed: int = DEFAULT_VAL_SEED) -> LocatedDataset:
    metadata = load_chexpert_metadata(data_dir, policy, views, val_fraction, val_seed)
    return LocatedDataset(metadata, find_by_path_suffix(Path(data_dir), metadata.table.image_ids, PATH_DEPTH))


def _read_table(data_dir: Path, name: str) -> dict[str, np.ndarray]:
    path = find_table(data_dir, name)
    if path is None:
        raise DataError(f"no CheXpert {name} in {data_dir} (or {name}.gz)")
    table = read_csv_columns(path, REQUIRED_COLUMNS, f"a CheXpert table has {', '.join(REQUIRED_COLUMNS)}")
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
    matches = [IMAGE_PATH.match(value) for value in paths]
    if not all(matches):
        line = next(i for i, m in enumerate(matches) if m is None)
        raise DataError(f"{source}: line {line + 2}: Path {paths[line]!r} is not a CheXpert image path "
                        "([CheXpert-v1.0[-small]/]train|valid/patientN/studyM/viewK_frontal|lateral.jpg)")
    groups = [m.groups() for m in matches]  # (id, folder, patient, study)
    ids = np.array([g[0] for g in groups], dtype=str)
    refuse_duplicates(ids, source)
    return (ids, np.array([g[2] for g in groups], dtype=str),
            np.array([f"{g[2]}/{g[3]}" for g in groups], dtype=str))


def _view_mask(frontal: np.ndarray, ap_pa: np.ndarray, views: str) -> np.ndarray:
    if views == "all":
        return np.ones(len(frontal), dtype=bool)
    if views == "lateral":
        return ~frontal
    wanted = ("AP", "PA") if views == "frontal" else (views,)
    return frontal & np.isin(ap_pa, wanted)
