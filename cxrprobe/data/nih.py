"""NIH ChestX-ray14: metadata tables, official split lists, multi-hot labels.

Datasheet: 112,120 frontal chest X-rays (1024x1024 8-bit PNG) of 30,805 patients, NIH
Clinical Center (Wang et al., CVPR 2017). 14 findings text-mined from reports (>90% accuracy
claimed); "No Finding" is an all-zero row. Official patient-wise split: train_val_list.txt
(86,524 images, 28,008 patients) and test_list.txt (25,596 images, 2,797 patients).

Two label tables exist. Data_Entry_2017_v2020.csv (NIH's 2020 revision) is preferred: it
fixes 181 test labels so that every bounding box agrees with its image's labels.
Data_Entry_2017.csv (the 2017 original) is read when it is the only one present. Quirks
handled here: CRLF line endings, a trailing comma in the 2017 header, ages like ``058Y``,
zero-padded patient ids. Every file may also be gzipped (``Data_Entry_2017_v2020.csv.gz``),
as downloads and cxrprobe's own bundled copy (``bundled_metadata_dir()``) are.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from cxrprobe.data.files import find_table, read_text
from cxrprobe.data.locate import find_images
from cxrprobe.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED, carve_validation
from cxrprobe.data.table import DatasetMetadata, ImageTable, LocatedDataset
from cxrprobe.errors import DataError
from cxrprobe.labels import FINDINGS, NO_FINDING

DATASET_NAME = "nih-chestxray14"
METADATA_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
# A plain file name: no folder part, so a metadata row can never point outside the data dir.
SAFE_IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
PATIENT_ID = re.compile(r"^[0-9]+$")


def bundled_metadata_dir() -> Path:
    """The NIH metadata shipped inside the package (gzipped; no images): see its README.md."""
    return Path(__file__).resolve().parent / "nih_metadata"


def load_nih_metadata(
    data_dir: Path,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_seed: int = DEFAULT_VAL_SEED,
) -> DatasetMetadata:
    """Read the label table and split lists in ``data_dir``; raise DataError on any defect."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} does not exist or is not a folder")
    metadata_path = next(filter(None, (find_table(data_dir, name) for name in METADATA_FILES)), None)
    if metadata_path is None:
        raise DataError(
            f"no NIH metadata in {data_dir}: expected {' or '.join(METADATA_FILES)} (or the same, gzipped)"
        )
    image_ids, finding_labels, patient_ids, view = _read_data_entry(metadata_path)
    labels = _multi_hot(finding_labels, image_ids, metadata_path.name)
    # One canonical row order (by file name) whatever order a copy of the table is in.
    order = np.argsort(image_ids, kind="stable")
    image_ids, patient_ids, view, labels = image_ids[order], patient_ids[order], view[order], labels[order]
    official = _official_split(data_dir, image_ids)
    try:
        split = carve_validation(patient_ids, official == "train_val", val_fraction, val_seed)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    table = ImageTable(
        image_ids=image_ids, patient_ids=patient_ids, split=split, labels=labels, view=view
    )
    # The table's name, not its file's: a gzipped copy of the same table describes a cache alike.
    label_source = metadata_path.name.removesuffix(".gz")
    origin = "bundled" if metadata_path.resolve().parent == bundled_metadata_dir() else "data dir"
    return DatasetMetadata(table=table, label_source=label_source, val_fraction=val_fraction, val_seed=val_seed,
                       origin=origin)


def locate_dataset(data_dir: Path, val_fraction: float = DEFAULT_VAL_FRACTION,
                   val_seed: int = DEFAULT_VAL_SEED) -> LocatedDataset:
    """What embed and adapt both start from: the metadata, and its images found under ``data_dir``."""
    metadata = load_nih_metadata(data_dir, val_fraction, val_seed)
    return LocatedDataset(metadata, find_images(Path(data_dir), metadata.table.image_ids))


def _read_data_entry(path: Path) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    try:
        return _parse_data_entry(path, csv.reader(io.StringIO(read_text(path), newline="")))
    except csv.Error as exc:  # e.g. a field longer than the csv module's limit
        raise DataError(f"{path.name} is not a readable CSV table ({exc})") from None


def _parse_data_entry(path: Path, rows: Iterator[list[str]]) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    header = next(rows, None)
    if header is None:
        raise DataError(f"{path.name} is empty")
    while header and header[-1] == "":  # the 2017 header ends with a stray comma
        header.pop()
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path.name} lacks column(s) {', '.join(missing)}")
    col = {name: header.index(name) for name in REQUIRED_COLUMNS}
    view_col = header.index("View Position") if "View Position" in header else None
    width = max(col.values()) + 1
    image_ids: list[str] = []
    findings: list[str] = []
    patients: list[str] = []
    views: list[str] = []
    for line_no, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) < width:
            raise DataError(f"{path.name} line {line_no}: {len(row)} fields, expected {len(header)}")
        name = row[col["Image Index"]].strip()
        if not SAFE_IMAGE_NAME.match(name) or ".." in name:
            raise DataError(
                f"{path.name} line {line_no}: image name {name!r} is not a plain file name "
                "(names must stay inside the data dir)"
            )
        image_ids.append(name)
        findings.append(row[col["Finding Labels"]])
        patients.append(_patient_id(row[col["Patient ID"]], path.name, line_no))
        views.append(row[view_col].strip() if view_col is not None and view_col < len(row) else "")
    if not image_ids:
        raise DataError(f"{path.name} has a header but no rows")
    ids = np.array(image_ids)
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        dup = unique[counts > 1]
        raise DataError(f"{path.name} lists {len(dup)} image(s) more than once, e.g. {dup[0]}")
    return ids, findings, np.array(patients), np.array(views)


def _patient_id(raw: str, source: str, line_no: int) -> str:
    raw = raw.strip()
    if not PATIENT_ID.match(raw):  # ASCII digits only: str.isdigit() also takes '²', which int() refuses
        raise DataError(f"{source} line {line_no}: patient id {raw!r} is not a number")
    return raw.lstrip("0") or "0"  # "00000001" (2017) and "1" (v2020) are the same patient


def _multi_hot(finding_labels: list[str], image_ids: np.ndarray, source: str) -> np.ndarray:
    column = {name: i for i, name in enumerate(FINDINGS)}
    labels = np.zeros((len(finding_labels), len(FINDINGS)), dtype=np.uint8)
    for row, text in enumerate(finding_labels):
        names = [t.strip() for t in text.split("|") if t.strip()]
        if not names:
            raise DataError(f"{source}: {image_ids[row]} has no finding label (not even {NO_FINDING!r})")
        for name in names:
            if name == NO_FINDING:
                if len(names) > 1:
                    raise DataError(f"{source}: {image_ids[row]} is labelled {NO_FINDING!r} and {text!r}")
                continue
            if name not in column:
                raise DataError(
                    f"{source}: {image_ids[row]} has unknown label {name!r}; expected "
                    f"{NO_FINDING!r} or one of {', '.join(FINDINGS)}"
                )
            labels[row, column[name]] = 1
    return labels


def _official_split(data_dir: Path, image_ids: np.ndarray) -> np.ndarray:
    """'train_val' or 'test' per metadata row, from the official lists, checked for consistency."""
    lists: dict[str, set[str]] = {}
    for split, filename in SPLIT_FILES.items():
        path = find_table(data_dir, filename)
        if path is None:
            raise DataError(f"no {filename} in {data_dir}: the official NIH split lists are required")
        lists[split] = {line.strip() for line in read_text(path).splitlines() if line.strip()}
    overlap = lists["train_val"] & lists["test"]
    if overlap:
        raise DataError(f"{len(overlap)} image(s) are in both split lists, e.g. {min(overlap)}")
    in_train_val = np.isin(image_ids, list(lists["train_val"]))
    in_test = np.isin(image_ids, list(lists["test"]))
    unlisted = image_ids[~(in_train_val | in_test)]
    if len(unlisted):
        raise DataError(f"{len(unlisted)} metadata image(s) are in neither split list, e.g. {unlisted[0]}")
    return np.where(in_test, "test", "train_val")
